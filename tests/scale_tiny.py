"""Tiny random causal LMs saved as sharded safetensors checkpoints, for the streaming tests."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA_LIKE = dict(hidden_size=32, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=16, max_position_embeddings=64, num_hidden_layers=5, **COMMON)

# A window of 4 tokens, shorter than the test sequences, makes sliding blocks get other
# masks than full ones: streaming must hand each block its own arguments.
_BUILDERS = {
    "llama": lambda: tf.LlamaConfig(**LLAMA_LIKE),
    "qwen2": lambda: tf.Qwen2Config(**LLAMA_LIKE, use_sliding_window=True, sliding_window=4, max_window_layers=2),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**LLAMA_LIKE, sliding_window=4, sliding_window_pattern=2,
                                               query_pre_attn_scalar=16),
    "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=5, n_head=2, n_positions=64, **COMMON),
    "opt": lambda: tf.OPTConfig(hidden_size=32, ffn_dim=48, num_hidden_layers=5, num_attention_heads=2,
                                word_embed_proj_dim=16, max_position_embeddings=64, **COMMON),
    "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=5,
                                         num_attention_heads=2, max_position_embeddings=64, **COMMON),
}
MODEL_TYPES = tuple(_BUILDERS)


def tiny_model(model_type: str = "llama", *, seed: int = 0, dtype=torch.float32, num_blocks: int | None = None):
    """An eager-attention model with weights wide enough (std 0.25) that every block changes its input."""
    config = _BUILDERS[model_type]()
    if num_blocks is not None:
        config.num_hidden_layers = num_blocks
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.25)
    return model.to(dtype).eval()


def save_sharded(model, folder: Path, *, max_shard_size: str = "20KB") -> Path:
    """Save with small shards so that blocks straddle several files."""
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    return Path(folder)


def calibration_ids(n: int = 5, seq_len: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, seq_len), generator=g)
