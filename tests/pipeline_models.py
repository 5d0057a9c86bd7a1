"""Tiny randomly initialised causal LMs of several families, for the pipeline tests."""

from __future__ import annotations

import torch

VOCAB = 101

# Per family: config class name and keyword arguments (2 heads, hidden 32, 4 blocks, eager attention).
FAMILY_CONFIGS = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=1)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=1, sliding_window=8)),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=1, use_sliding_window=True, sliding_window=8,
                                  max_window_layers=2, layer_types=["full_attention", "full_attention",
                                                                    "sliding_attention", "sliding_attention"])),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=1, head_dim=16)),
    "gemma2": ("Gemma2Config", dict(num_key_value_heads=1, head_dim=16, sliding_window=8)),
    "gemma3_text": ("Gemma3TextConfig", dict(num_key_value_heads=1, head_dim=16, sliding_window=8,
                                             layer_types=["sliding_attention", "full_attention",
                                                          "sliding_attention", "full_attention"])),
    "phi3": ("Phi3Config", dict(num_key_value_heads=1, pad_token_id=0)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=4, n_head=2, n_positions=64)),
    "opt": ("OPTConfig", dict(ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=1)),
    "gpt_neox": ("GPTNeoXConfig", dict(rotary_pct=0.5)),
}


def tiny_model(family: str, *, num_blocks: int = 4, seed: int = 0):
    """A tiny fp32 causal LM of ``family`` with random weights, in eval mode."""
    import transformers
    from transformers import AutoModelForCausalLM
    cls_name, extra = FAMILY_CONFIGS[family]
    cls = getattr(transformers, cls_name)
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=num_blocks,
              num_attention_heads=2, max_position_embeddings=64)
    if family in ("gpt2",):
        kw = dict(vocab_size=VOCAB)
    kw.update(bos_token_id=1, eos_token_id=2)
    kw.update(extra)
    config = cls(**kw)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def final_norm(model):
    """The final norm module of a tiny model (h_T is its input)."""
    for path in ("model.norm", "model.decoder.final_layer_norm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if obj is not None:
            return obj
    raise AttributeError(f"no final norm found on {type(model).__name__}")
