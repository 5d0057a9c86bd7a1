"""Tiny randomly initialised causal LMs of every supported family, and the identity reference."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest
import torch
import transformers as tf

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA_LIKE = dict(hidden_size=32, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=16, max_position_embeddings=64, num_hidden_layers=6, **COMMON)


# Builders, not configs: constructing a config imports its model family, so build only what is asked.
# A window of 4 tokens, shorter than the test sequences, makes sliding layers differ from full ones.
_BUILDERS = {
    "llama": lambda: tf.LlamaConfig(**LLAMA_LIKE),
    "mistral": lambda: tf.MistralConfig(**LLAMA_LIKE, sliding_window=4),
    "mixtral": lambda: tf.MixtralConfig(**{**LLAMA_LIKE, "num_hidden_layers": 5}, num_local_experts=4,
                                        num_experts_per_tok=2),
    "qwen2": lambda: tf.Qwen2Config(**LLAMA_LIKE, use_sliding_window=True, sliding_window=4, max_window_layers=2),
    "qwen3": lambda: tf.Qwen3Config(**LLAMA_LIKE, use_sliding_window=True, sliding_window=4,
                                    layer_types=["full_attention", "sliding_attention"] * 3),
    "gemma": lambda: tf.GemmaConfig(**LLAMA_LIKE),
    "gemma2": lambda: tf.Gemma2Config(**LLAMA_LIKE, sliding_window=4, query_pre_attn_scalar=16),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**LLAMA_LIKE, sliding_window=4, sliding_window_pattern=3,
                                               query_pre_attn_scalar=16),
    "phi3": lambda: tf.Phi3Config(**{k: v for k, v in LLAMA_LIKE.items() if k != "head_dim"}),
    "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=5, n_head=2, n_positions=64, **COMMON),
    "opt": lambda: tf.OPTConfig(hidden_size=32, ffn_dim=48, num_hidden_layers=5, num_attention_heads=2,
                                word_embed_proj_dim=32, max_position_embeddings=64, **COMMON),
    "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=5,
                                         num_attention_heads=2, max_position_embeddings=64, **COMMON),
}
MODEL_TYPES = tuple(_BUILDERS)


def tiny_config(model_type: str):
    return _BUILDERS[model_type]()


def tiny_model(config, seed: int = 0):
    """An fp32 eager-attention model whose weights are large enough for every block to matter."""
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            # HF's default init (std 0.02) makes blocks nearly the identity; a wider one makes
            # a wrong block show in the logits far above the test tolerance.
            p.normal_(0.0, 0.25)
    return model.eval()


@contextlib.contextmanager
def blocks_as_identity(blocks, indices):
    """Make the given blocks return their input hidden state (forward hooks), for a reference run."""
    def hook(module, args, kwargs, out):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handles = [blocks[i].register_forward_hook(hook, with_kwargs=True) for i in indices]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def greedy(model, ids, n: int, use_cache: bool):
    """n greedy tokens after ids (no early stop at EOS)."""
    model.generation_config.eos_token_id = None
    out = model.generate(ids, max_new_tokens=n, do_sample=False, use_cache=use_cache, pad_token_id=0)
    return out[:, ids.shape[1]:]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; more only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def folder_digest(folder: Path) -> str:
    """Hash of every file's relative path, bytes and modification time under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()
