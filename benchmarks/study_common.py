"""Shared pieces of the study scripts: data, models, tables and the machine description.

Run the studies from the repository root with ``PYTHONPATH=python``; they read the shared
data folder (``$MIPRUN_DATA`` or ``../shared/data``) and write PNGs to ``benchmarks/plots``.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIPRUN_DATA", REPO.parent / "shared" / "data"))
STORIES = DATA / "models" / "stories260K-hf"
TEXT = DATA / "text"
PLOTS = REPO / "benchmarks" / "plots"
#: Calibration sets of the stability study (the paper's tables 7-8 use WikiText-2, C4 and Alpaca).
#: The data folder holds WikiText-2's valid and test splits (no train split): valid stands in.
CALIBRATION_SETS = {
    "wikitext2": TEXT / "wikitext-2-raw" / "wiki.valid.raw",
    "c4": TEXT / "c4" / "c4_demo_300docs.json",
    "alpaca": TEXT / "alpaca" / "alpaca_5000.json",
    "tinystories": TEXT / "tinystories" / "TinyStories-valid.head45.txt",
}
TINYSTORIES = TEXT / "tinystories" / "TinyStories-valid.head45.txt"
STORY_SEPARATOR = "<|endoftext|>"


def require(path: Path) -> Path:
    """Exit with a clear message when a data file is missing."""
    if not path.exists():
        raise SystemExit(f"{path} not found: set MIPRUN_DATA to the shared data folder")
    return path


def machine(threads: int) -> str:
    """One line describing the machine and the library versions."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"machine: {cpu}, {os.cpu_count()} logical CPUs, torch threads {threads}; python "
            f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")


def load_stories():
    """The stories260K model (fp32, eval mode) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    require(STORIES / "config.json")
    return AutoModelForCausalLM.from_pretrained(STORIES).eval(), AutoTokenizer.from_pretrained(STORIES)


def stories(path: Path = TINYSTORIES) -> list[str]:
    """The TinyStories file split into stories."""
    text = require(path).read_text(encoding="utf-8")
    return [s.strip() for s in text.split(STORY_SEPARATOR) if s.strip()]


def story_tokens(texts: list[str], tokenizer) -> torch.Tensor:
    """Each story tokenised with its BOS (how llama2.c's TinyStories models were trained), concatenated.

    Returns
    -------
    LongTensor, shape (n_tokens,)
    """
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=True)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)


@functools.lru_cache(maxsize=16)
def token_stream(path: Path, tokenizer, max_tokens: int = 300_000) -> torch.Tensor:
    """A text file's documents tokenised and joined as ``miprun.calibration.windows`` does, up to ``max_tokens``.

    ``.raw`` WikiText files are read whole (one document); other files go through
    :func:`miprun.calibration.windows.read_documents`. Cached: the studies draw many calibrations per file.
    """
    from miprun.calibration.windows import read_documents, tokenise_stream
    docs = [require(path).read_text(encoding="utf-8")] if path.suffix == ".raw" else read_documents(path)
    return tokenise_stream(docs, tokenizer, max_tokens=max_tokens)


def calibration_ids(path: Path, tokenizer, *, n_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """Calibration windows ``(n_samples, seq_len)`` drawn from :func:`token_stream` as ``miprun.calibration.windows`` does."""
    import warnings

    from miprun.calibration.windows import draw_windows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overlap of small sets is reported by the caller
        return draw_windows(token_stream(path, tokenizer), n_samples=n_samples, seq_len=seq_len, seed=seed,
                            source=path)


def distinct_windows(path: Path, tokenizer, seq_len: int) -> int:
    """How many non-overlapping windows of ``seq_len`` the file's (capped) token stream holds."""
    return int(token_stream(path, tokenizer).numel() // seq_len)


def synthetic_llama(*, num_blocks: int = 32, hidden: int = 64, intermediate: int | None = None, heads: int = 4,
                    vocab: int = 512, max_positions: int = 1024, seed: int = 0, head_scale: float = 3.0):
    """A random Llama whose blocks matter unequally, like a trained model's.

    Every linear weight is drawn N(0, 1/fan_in) and the embeddings N(0, 1), so a block with
    full weights changes the residual stream as much as it carries. Block ``b``'s residual
    branches (attention ``o_proj`` and MLP ``down_proj``) are then scaled by
    ``s_b = (1 - 0.85 b / (T - 1)) * LogNormal(0, 0.6)``, clipped to ``[0.02, 1.5]``, with the
    last block kept at 1: deeper blocks mostly pass their input through, with noise, and the
    last block matters (both seen in trained LLMs). The output head is scaled by
    ``head_scale`` so that predictions are peaked and removals show in perplexity.

    Returns
    -------
    model : LlamaForCausalLM (fp32, eval mode)
    scales : ndarray, shape (num_blocks,)
        The ``s_b``.
    """
    import transformers as tf
    g = torch.Generator().manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
                         num_hidden_layers=num_blocks, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=False, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(cfg)
    depth = np.arange(num_blocks) / max(num_blocks - 1, 1)
    noise = np.exp(0.6 * torch.randn(num_blocks, generator=g, dtype=torch.float64).numpy())
    scales = np.clip((1.0 - 0.85 * depth) * noise, 0.02, 1.5)
    scales[-1] = 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed_tokens" in name:
                p.normal_(0.0, 1.0, generator=g)
            elif p.ndim == 2:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=g)
        for b, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.weight.mul_(float(scales[b]))
            layer.mlp.down_proj.weight.mul_(float(scales[b]))
        model.lm_head.weight.mul_(head_scale)
    return model.eval(), scales


@torch.inference_mode()
def sample_text(model, *, n_sequences: int, length: int, seed: int, bos: int = 1) -> torch.Tensor:
    """Sequences sampled from the model itself (temperature 1), shape (n_sequences * length,)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((n_sequences, 1), bos, dtype=torch.long)
    res = model(input_ids=out, use_cache=True)
    past = res.past_key_values
    for _ in range(length - 1):
        probs = torch.softmax(res.logits[:, -1].double(), -1)
        nxt = torch.multinomial(probs, 1, generator=g)
        out = torch.cat([out, nxt], dim=1)
        res = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = res.past_key_values
    return out.reshape(-1)


def markdown(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with 4 significant decimals."""
    def cell(v):
        if isinstance(v, float):
            if math.isnan(v):
                return "nan"
            text = f"{v:.4g}" if abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
            return "0" if text == "-0" else text
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def plot_path(name: str) -> Path:
    PLOTS.mkdir(parents=True, exist_ok=True)
    return PLOTS / name


def prefix_bos(ids: torch.Tensor, bos: int | None) -> torch.Tensor:
    """Calibration windows (n, L) that start with ``bos`` (their last token dropped); unchanged for None."""
    if bos is None:
        return ids
    return torch.cat([torch.full((ids.shape[0], 1), bos, dtype=ids.dtype), ids[:, :-1]], dim=1)


def windows(stream: torch.Tensor, n: int, length: int, bos: int | None) -> torch.Tensor:
    """Up to ``n`` non-overlapping windows of ``length`` tokens of a stream; with ``bos``, each starts with it
    (and holds one text token fewer)."""
    body = length - (bos is not None)
    n = min(n, stream.numel() // body)
    w = stream[:n * body].reshape(n, body)
    return w if bos is None else torch.cat([torch.full((n, 1), bos, dtype=w.dtype), w], dim=1)
