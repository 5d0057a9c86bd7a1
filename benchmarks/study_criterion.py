"""Study 9: which criterion should verify and refine rank measured plans by, and what does screening cost?

``miprun compare`` on one real model at about 10, 20 and 30 % of its blocks removed, every
selector beside the measured ones: Fast-Block-Select, optimal and greedy on the hist and
Gaussian pooled tables, ShortGPT, Gromov, random, SLEB, and prune's default (verify K = 2
with its portfolio, then up to 3 rounds of measured swaps) with each criterion: ``kl`` (the
KL divergence of the plan's next-token distribution from the unpruned model's) and ``loss``
(next-token cross-entropy), each screened (the default: a quarter of the held-back windows
first, the best 3 confirmed on all) and, for ``kl``, unscreened (``:full``). Plans are
judged on held-out text of three domains: WikiText-2 test (the calibration text's own
distribution), C4 (web text) and PTB test (news), by the geometric mean of the three
perplexities. The exhaustive oracle runs where the subsets are few (stories260K).

Models (``--model``): SmolLM2-135M-Instruct (30 blocks) and Gemma-3-270M (18 blocks, fetched
by ``../shared/data/fetch-gemma3-270m.sh`` into ``~/.cache/miprun/models``), both from their
GGUF files, dequantised in float32 on the CPU; stories260K (5 blocks). Gemma gets a BOS
token at the start of every window (calibration and evaluation). Calibration: 32 windows x
512 tokens of WikiText-2 valid (seed 0); the last quarter (8 windows) is held back, as
``prune`` holds it back.

Run: ``PYTHONPATH=python:benchmarks python benchmarks/study_criterion.py --model smollm2
--out /tmp/criterion_smollm2.json`` (one model at a time; prints the table and writes the JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from miprun.evaluate.summary import read_text, tokenize_text
from miprun.models.loading import load_model, load_tokenizer
from miprun.pipeline.compare import compare
from study_common import DATA, TEXT, calibration_ids, machine, prefix_bos, token_stream, windows

MODELS = {
    "smollm2": (DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf", False, "3,6,9"),
    "gemma3": (Path.home() / ".cache" / "miprun" / "models" / "gemma-3-270m" / "gemma-3-270m-q4_k_m.gguf", True,
               "2,4,5"),
    "stories": (DATA / "models" / "stories260K-hf", False, "1,2"),
}
TEXTS = {"wikitext2": TEXT / "wikitext-2-raw" / "wiki.test.raw", "c4": TEXT / "c4" / "c4_demo_300docs.json",
         "ptb": TEXT / "ptb" / "ptb.test.txt"}
MEASURED = ("default:kl", "default:loss", "default:kl:full", "sleb")


def eval_windows(tok, n: int, seq_len: int, bos: int | None) -> dict[str, torch.Tensor]:
    """Up to ``n`` windows of ``seq_len`` tokens of each held-out text (each starting with BOS where needed)."""
    out = {}
    for name, path in TEXTS.items():
        stream = tokenize_text(read_text(path), tok) if path.suffix in (".raw", ".txt") else token_stream(path, tok)
        out[name] = windows(stream, n, seq_len, bos)
    return out


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(result, texts) -> list[dict]:
    """One line per row: its plan, the perplexity on each text, their geometric mean, the mean KL."""
    lines = []
    for r in [result.baseline] + result.rows:
        lines.append({"method": r.method, "n": r.num_remove, "removed": r.removed,
                      **{t: r.perplexity[t] for t in texts}, "geomean": geometric_mean(r.perplexity[t] for t in texts),
                      "kl": sum(r.kl[t] for t in texts) / len(texts), "measured": r.evaluations,
                      "select_s": r.select_s})
    return lines


def markdown(lines, texts) -> str:
    head = ["method", "N", "removed", *texts, "geomean", "KL", "measured", "select s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for x in lines:
        out.append("| " + " | ".join([x["method"], str(x["n"]), " ".join(map(str, x["removed"])),
                                      *(f"{x[t]:.1f}" for t in texts), f"{x['geomean']:.1f}", f"{x['kl']:.3f}",
                                      str(x["measured"]), f"{x['select_s']:.1f}"]) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--out", default=None, help="default /tmp/criterion_<model>.json")
    ap.add_argument("--counts", default=None, help="blocks removed, e.g. 3,6,9 (default: the model's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--measured", default=",".join(MEASURED))
    ap.add_argument("--oracle-limit", type=int, default=64)
    args = ap.parse_args()
    path, needs_bos, counts = MODELS[args.model]
    counts = [int(c) for c in (args.counts or counts).split(",")]
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(path, dtype=torch.float32).eval()
    tok = load_tokenizer(path)
    bos = tok.bos_token_id if needs_bos else None
    calib = prefix_bos(calibration_ids(TEXT / "wikitext-2-raw" / "wiki.valid.raw", tok, n_samples=args.n_samples,
                                       seq_len=args.seq_len, seed=0), bos)
    texts = eval_windows(tok, args.eval_windows, args.seq_len, bos)
    result = compare(model, tok, calib, counts, eval_ids=texts, seq_len=args.seq_len,
                     variants=(("hist", "pooled"), ("gaussian", "pooled")), oracle_limit=args.oracle_limit,
                     measured=tuple(m for m in args.measured.split(",") if m), seed=0,
                     log=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}", flush=True))
    lines = summary(result, list(texts))
    out = {"machine": machine(args.threads), "args": vars(args), "seconds": time.perf_counter() - t0,
           "eval_windows": {k: list(v.shape) for k, v in texts.items()}, "lines": lines,
           "result": result.to_dict()}
    Path(args.out or f"/tmp/criterion_{args.model}.json").write_text(json.dumps(out, indent=1))
    print(out["machine"])
    print(markdown(lines, list(texts)))


if __name__ == "__main__":
    main()
