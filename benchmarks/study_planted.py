"""Study 11: does the default find near-identity blocks planted in a model of random weights?

The demo's random Llama (8 blocks, hidden 96) with the output projections of a few blocks'
residual branches scaled by 1e-3 (they pass their input through), calibrated on the demo's
seeded sentences (32 windows x 64 tokens): ``prune`` with the default options, once with each
``--criterion``, for several seeds and planted sets. On random weights the next-token loss is
noise the model cannot predict, and removing a random block can lower it by chance; the KL
divergence from the unpruned model is near zero only for blocks that change nothing.

Run: ``PYTHONPATH=python:benchmarks python benchmarks/study_planted.py``.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from miprun.pipeline.demo import demo_model, demo_text, demo_tokenizer
from miprun.pipeline.prune import prune
from study_common import machine

PLANTED = ((2, 5, 6), (1, 4), (3, 4, 7))


def main() -> None:
    torch.set_num_threads(1)
    print(machine(1))
    tok = demo_tokenizer()
    found = {"kl": 0, "loss": 0}
    print("| seed | planted | default, criterion kl | default, criterion loss |")
    print("|---|---|---|---|")
    for seed in range(4):
        for planted in PLANTED:
            model = demo_model(tok, seed=seed, planted=planted)
            plans = {}
            with tempfile.TemporaryDirectory() as work:
                calib = Path(work) / "stories.txt"
                calib.write_text(demo_text(seed))
                for criterion in ("kl", "loss"):
                    result = prune(copy.deepcopy(model), calib, tokenizer=tok, num_remove=len(planted), n_samples=32,
                                   seq_len=64, progress=False, criterion=criterion)
                    plans[criterion] = result.plan.removed
                    found[criterion] += result.plan.removed == sorted(planted)
            print(f"| {seed} | {list(planted)} | {plans['kl']} | {plans['loss']} |", flush=True)
    print(f"found the planted blocks: kl {found['kl']} / 12, loss {found['loss']} / 12")


if __name__ == "__main__":
    main()
