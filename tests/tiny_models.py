"""Tiny randomly initialised causal LMs for the tests, and the helpers that go with them.

One factory, :func:`tiny_model`, builds every test model. A *preset* fixes the sizes,
the attention windows and the initialisation that a group of tests was written against
(their expected numbers depend on them, so the presets stay as they are):

``"standard"``
    Every supported family (:data:`ALL_FAMILIES`), 6 blocks (5 for Mixtral, GPT-2, OPT and
    GPT-NeoX), vocabulary 96, windows of 4 tokens, all weights N(0, 0.25): HF's default
    init (std 0.02) makes blocks nearly the identity; a wider one makes a wrong block show
    in the logits far above the test tolerances. For the surgery tests.
``"stream"``
    The families that stream from sharded checkpoints (:data:`STREAM_FAMILIES`), 5 blocks,
    Gemma 3 alternating sliding/full, OPT with a 16-wide projection in and out of its
    blocks; otherwise as ``"standard"``. For the streaming and offload tests (with
    :func:`save_sharded` and :func:`calibration_ids`).
``"hf_init"``
    :data:`HF_INIT_FAMILIES`, 4 blocks, vocabulary 101, windows of 8 tokens, HF's default
    initialisation. For the hidden-state runner and the one-pass scoring tests.
``"eval"``
    Llama only: 4 blocks, vocabulary 64, 2 key/value heads, 128 positions, the matrices
    N(0, 0.15) and the norms as HF sets them, transformers' default attention. For the
    evaluation tests (with :func:`word_tokenizer` and :func:`random_text`).

A window of 4 (or 8) tokens, shorter than the test sequences, makes sliding-window blocks
get other masks than full ones, so code that hands each block its own arguments is tested.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from pathlib import Path

import pytest
import torch
from support import torch_threads
import transformers as tf

#: Vocabulary of the ``"standard"`` and ``"stream"`` models and of :func:`calibration_ids`.
VOCAB = 96

#: Families of each preset; ``ALL_FAMILIES`` are those of ``"standard"``, every family miprun supports.
ALL_FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2",
            "opt", "gpt_neox")
STREAM_FAMILIES = ("llama", "qwen2", "gemma3_text", "gpt2", "opt", "gpt_neox")
HF_INIT_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2", "opt", "gpt_neox")

# Sizes and initialisation of each preset. init: "hf" (transformers' own), "all" (every
# parameter N(0, weight_std)) or "matrices" (parameters of 2+ dimensions only).
_PRESETS = {
    "standard": dict(families=ALL_FAMILIES, num_blocks=6, vocab=VOCAB, intermediate=48, kv_heads=1, positions=64,
                     window=4, pad=0, init="all", weight_std=0.25, attn="eager"),
    "stream": dict(families=STREAM_FAMILIES, num_blocks=5, vocab=VOCAB, intermediate=48, kv_heads=1, positions=64,
                   window=4, pad=0, init="all", weight_std=0.25, attn="eager"),
    "hf_init": dict(families=HF_INIT_FAMILIES, num_blocks=4, vocab=101, intermediate=64, kv_heads=1, positions=64,
                    window=8, pad=None, init="hf", weight_std=None, attn="eager"),
    "eval": dict(families=("llama",), num_blocks=4, vocab=64, intermediate=64, kv_heads=2, positions=128,
                 window=None, pad=0, init="matrices", weight_std=0.15, attn=None),
}
PRESETS = tuple(_PRESETS)

#: ``weight_std`` default: the preset's.
PRESET_STD = "preset"


def _config(family: str, preset: str, *, num_blocks: int | None, hidden: int, vocab: int | None,
            max_positions: int | None, tie: bool | None):
    p = _PRESETS[preset]
    if family not in p["families"]:
        raise ValueError(f"family {family!r} is not in preset {preset!r}: {p['families']}")
    blocks = num_blocks if num_blocks is not None else (
        5 if preset == "standard" and family in ("mixtral", "gpt2", "opt", "gpt_neox") else p["num_blocks"])
    window, hf_init = p["window"], preset == "hf_init"
    common = dict(vocab_size=vocab or p["vocab"], bos_token_id=1, eos_token_id=2)
    if p["pad"] is not None:
        common["pad_token_id"] = p["pad"]
    if tie is not None:
        common["tie_word_embeddings"] = tie
    positions = max_positions or p["positions"]
    # Llama-like families: 2 heads of hidden / 2.
    llama = dict(hidden_size=hidden, intermediate_size=p["intermediate"], num_attention_heads=2,
                 num_key_value_heads=p["kv_heads"], head_dim=hidden // 2, max_position_embeddings=positions,
                 num_hidden_layers=blocks, **common)
    if family == "llama":
        return tf.LlamaConfig(**llama)
    if family == "mistral":
        return tf.MistralConfig(**llama, sliding_window=window)
    if family == "mixtral":
        return tf.MixtralConfig(**llama, num_local_experts=4, num_experts_per_tok=2)
    if family == "qwen2":  # blocks 0, 1 full attention, the rest sliding
        return tf.Qwen2Config(**llama, use_sliding_window=True, sliding_window=window, max_window_layers=2)
    if family == "qwen3":
        if hf_init:
            return tf.Qwen3Config(**llama)
        return tf.Qwen3Config(**llama, use_sliding_window=True, sliding_window=window,
                              layer_types=["full_attention", "sliding_attention"] * (blocks // 2)
                              + ["full_attention"] * (blocks % 2))
    if family == "gemma":
        return tf.GemmaConfig(**llama)
    if family == "gemma2":
        return tf.Gemma2Config(**llama, sliding_window=window, **({} if hf_init else dict(query_pre_attn_scalar=16)))
    if family == "gemma3_text":
        if hf_init:
            return tf.Gemma3TextConfig(**llama, sliding_window=window, layer_types=[
                "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(blocks)])
        return tf.Gemma3TextConfig(**llama, sliding_window=window, query_pre_attn_scalar=16,
                                   sliding_window_pattern=3 if preset == "standard" else 2)
    if family == "phi3":
        llama.pop("head_dim")
        if hf_init:
            llama["pad_token_id"] = 0
        return tf.Phi3Config(**llama)
    if family == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=blocks, n_head=2, n_positions=positions, **common)
    if family == "opt":
        opt = dict(hidden_size=hidden, ffn_dim=p["intermediate"], num_hidden_layers=blocks, num_attention_heads=2,
                   word_embed_proj_dim=hidden // 2 if preset == "stream" else hidden,
                   max_position_embeddings=positions, **common)
        if hf_init:
            opt["pad_token_id"] = 1
        return tf.OPTConfig(**opt)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(hidden_size=hidden, intermediate_size=p["intermediate"], num_hidden_layers=blocks,
                                num_attention_heads=2, max_position_embeddings=positions, **common,
                                **(dict(rotary_pct=0.5) if hf_init else {}))
    raise AssertionError(family)


def tiny_config(family: str = "llama", *, preset: str = "standard", num_blocks: int | None = None,
                hidden: int = 32, vocab: int | None = None, max_positions: int | None = None,
                tie: bool | None = None):
    """The config :func:`tiny_model` builds (see the module docstring for the presets)."""
    return _config(family, preset, num_blocks=num_blocks, hidden=hidden, vocab=vocab, max_positions=max_positions,
                   tie=tie)


def tiny_model(family: str = "llama", *, preset: str = "standard", num_blocks: int | None = None, seed: int = 0,
               hidden: int = 32, weight_std: float | None | str = PRESET_STD, dtype: torch.dtype = torch.float32,
               vocab: int | None = None, max_positions: int | None = None, tie: bool | None = None, config=None):
    """A tiny causal LM of ``family`` with random weights, in eval mode.

    ``preset`` picks the sizes and initialisation (module docstring); ``num_blocks``,
    ``hidden``, ``vocab``, ``max_positions`` and ``tie`` (tied input/output embeddings)
    override its sizes, or ``config`` (from :func:`tiny_config`) gives the whole config.
    ``weight_std``: None keeps transformers' initialisation; a number draws the preset's
    parameters from N(0, weight_std) instead. The weights are drawn in float32 after
    ``torch.manual_seed(seed)``, then cast to ``dtype``: the same arguments give the same weights.
    """
    p = _PRESETS[preset]
    if config is None:
        config = _config(family, preset, num_blocks=num_blocks, hidden=hidden, vocab=vocab,
                         max_positions=max_positions, tie=tie)
    std = p["weight_std"] if weight_std == PRESET_STD else weight_std
    torch.manual_seed(seed)
    kw = {} if p["attn"] is None else dict(attn_implementation=p["attn"])
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kw)
    if std is not None:
        with torch.no_grad():
            for param in model.parameters():
                if p["init"] != "matrices" or param.ndim > 1:
                    param.normal_(0.0, std)
    return model.to(dtype).eval()


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


# --- checkpoints and token ids ---

def save_sharded(model, folder: Path, *, max_shard_size: str = "20KB") -> Path:
    """Save with small shards so that blocks straddle several files."""
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    return Path(folder)


def calibration_ids(n: int = 5, seq_len: int = 12, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    """Random token ids in [3, vocab) (clear of BOS/EOS/PAD)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, seq_len), generator=g)


def folder_digest(folder: Path) -> str:
    """Hash of every file's relative path, bytes and modification time under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


# --- references ---

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


@torch.inference_mode()
def reference_perplexity(model, ids: torch.Tensor, seq_len: int, stride: int | None):
    """The perplexity protocol written the plain ``transformers`` way, in float64.

    One window at a time, ``labels`` = the window with the unscored positions set to -100,
    and the model's own shifted cross-entropy (``out.loss``, a mean over the labels it
    scores) weighted by the number of scored tokens. Returns ``(perplexity, tokens_scored)``.
    """
    m64 = copy.deepcopy(model).double()
    n = int(ids.numel())
    nll, count, prev_end = 0.0, 0, 0
    step = seq_len if stride is None else stride
    for begin in range(0, n, step):
        end = min(begin + seq_len, n)
        if stride is None and end - begin < seq_len:
            break  # non-overlapping protocol: the incomplete tail is dropped
        x = ids[begin:end].unsqueeze(0)
        labels = x.clone()
        if stride is not None:
            labels[:, : (end - begin) - (end - prev_end)] = -100
        out = m64(input_ids=x, labels=labels, use_cache=False)
        scored = int((labels[:, 1:] != -100).sum())
        nll += float(out.loss) * scored
        count += scored
        prev_end = end
        if end == n:
            break
    return math.exp(nll / count), count


# --- text ---

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "big", "small", "red", "blue", "and", "then",
         "saw", "bird", "tree", "under", "over", "happy", "sad", "day", "night", "home", "went", "to", "."]


def word_tokenizer():
    """A word-level fast tokenizer over :data:`WORDS` with BOS/EOS/UNK/PAD, built without files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="<pad>")


class CharTokenizer:
    """One token per character (ids 10..), EOS 2: calibration lengths are easy to predict."""

    eos_token_id = 2

    def __call__(self, texts, add_special_tokens=False, verbose=True):
        return {"input_ids": [[10 + (ord(c) % 200) for c in t] for t in texts]}


def random_text(n_words: int, seed: int) -> str:
    """``n_words`` words of :data:`WORDS` drawn with ``seed``, space separated."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n_words,), generator=g)
    return " ".join(WORDS[i] for i in idx.tolist())


# --- fixtures (import them into a test module to use them) ---

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; more only add contention on a busy machine."""
    with torch_threads(1):
        yield
