"""What the ShortGPT and Gromov companion tables add to a hist scoring pass (``score_blocks(..., companions=)``).

stories260K, 64 x 256 random token windows, one torch thread, median of 5 interleaved runs
with and without ``companions={"cosine": 1, "angular": N}``, for N = 2 and 4.

Run: ``PYTHONPATH=python python benchmarks/bench_companions.py``
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import miprun  # noqa: E402
from study_common import DATA  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(DATA / "models" / "stories260K-hf").eval()
    ids = torch.randint(3, 512, (64, 256), generator=torch.Generator().manual_seed(0))
    print("| N | without s | with s | extra |\n|---|---|---|---|")
    for n in (2, 4):
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(5):
            for key, companions in (("without", None), ("with", {"cosine": 1, "angular": n})):
                t = time.perf_counter()
                miprun.score_blocks(model, ids, estimator="hist", max_run=n, companions=companions, progress=False)
                times[key].append(time.perf_counter() - t)
        a, b = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"| {n} | {a:.3f} | {b:.3f} | {(b / a - 1) * 100:+.1f} % |")


if __name__ == "__main__":
    main()
