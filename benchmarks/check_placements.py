"""Is the default plan the same wherever the weights are, and do the measured values agree?

Saves a real model (SmolLM2-135M-Instruct from its GGUF, dequantised to float32, by default)
as a Hugging Face safetensors folder, then runs ``miprun.prune`` with the default options on
that folder three times: loaded in memory, streamed from the shards (``offload=True``) and
placed by accelerate (``device_map="auto"``, all on the CPU here). It prints each run's plan,
the plan check, what the measurements cost, and the largest relative difference between the
measured values (screened and full, loss and KL) of the candidates the runs share.

Run: ``PYTHONPATH=python:benchmarks python benchmarks/check_placements.py --num-remove 6``
(32 windows x 512 tokens of WikiText-2 valid, seed 0).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from miprun.models.loading import load_model, load_tokenizer
from miprun.pipeline.prune import prune
from study_common import DATA, TEXT, calibration_ids, machine

SMOLLM2 = DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PLACEMENTS = {"memory": {"device": "cpu"}, "offload": {"offload": True, "device": "cpu"},
              "device_map": {"device_map": "auto"}}


def values(report: dict) -> dict:
    """(plan, what) -> value of every candidate measurement the report lists."""
    out = {}
    for c in report["verify"]["candidates"]:
        for key in ("screened", "value", "loss", "kl"):
            if key in c:
                out[(tuple(c["removed"]), key)] = c[key]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(SMOLLM2))
    ap.add_argument("--num-remove", type=int, default=6)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, dtype=torch.float32)
    tok = load_tokenizer(args.model)
    ids = calibration_ids(TEXT / "wikitext-2-raw" / "wiki.valid.raw", tok, n_samples=args.n_samples,
                          seq_len=args.seq_len, seed=0)
    print(machine(args.threads))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        del model
        for name, placement in PLACEMENTS.items():
            t = time.perf_counter()
            result = prune(str(folder), ids, num_remove=args.num_remove, out_dir=Path(tmp) / name, plots=False,
                           progress=False, **placement)
            runs[name] = result.report
            check, measure = result.report["plan_check"], result.report["measure"]
            print(f"{name:10s} removed {result.plan.removed}  plan check {check['pruned_perplexity']:.2f} vs "
                  f"{check['dense_perplexity']:.2f} ({check['ratio']:.2f} x)  {measure['measured']} plans in "
                  f"{measure['sweeps']} sweeps  {time.perf_counter() - t:.0f} s", flush=True)
    base = values(runs["memory"])
    for name in ("offload", "device_map"):
        other = values(runs[name])
        shared = set(base) & set(other)
        worst = max((abs(other[k] - base[k]) / max(abs(base[k]), 1e-12) for k in shared), default=float("nan"))
        same = runs[name]["pruned_blocks"] == runs["memory"]["pruned_blocks"]
        print(f"{name:10s} vs memory: same plan {same}; {len(shared)} shared measured values, largest relative "
              f"difference {worst:.2e}")


if __name__ == "__main__":
    main()
