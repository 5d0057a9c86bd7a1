"""Every plan of a comparison evaluated the same way: measured on held-out text, healed where asked.

Perplexity (and the KL divergence from the unpruned model) comes from one
:class:`~miprun.measure.Measurer` per evaluation text, cut into windows of ``seq_len`` tokens
(the protocol of the pruning literature: every token but each window's first is scored):
every distinct plan, healed or not, is measured in as few sweeps as the memory budget
allows, wherever the weights are. The oracle's subsets are measured on the first text only.
Zero-shot tasks and sliding-window perplexity run the pruned model itself: each plan prunes a
copy of the model in memory.
"""

from __future__ import annotations

import copy
import itertools
import math

import torch

from miprun.calibration.split import WindowSplit
from miprun.evaluate.perplexity import perplexity
from miprun.evaluate.zeroshot import evaluate_tasks
from miprun.heal.fit import Healing, heal_cuts
from miprun.heal.options import HealOptions
from miprun.measure import Candidate, Measurer
from miprun.output.surgery import remove_blocks

__all__ = ["PlanEvaluator", "text_windows"]


def text_windows(ids: torch.Tensor, seq_len: int, bos: int | None = None) -> torch.Tensor:
    """A tokenised text ``(n,)`` as non-overlapping windows ``(n // seq_len, seq_len)`` (the tail dropped;
    a text shorter than one window is one window); windows given already ``(rows, length)`` are kept as they are.

    With ``bos`` (models that read nothing without it, :func:`miprun.models.families.bos_first`),
    every window starts with it and holds ``seq_len - 1`` tokens of the text (whose own leading
    BOS is dropped).
    """
    if ids.ndim == 2:
        return ids
    ids = ids.reshape(-1)
    if bos is not None:
        body = ids[1:] if ids.numel() and int(ids[0]) == bos else ids
        windows = text_windows(body, seq_len - 1)
        return torch.cat([torch.full((windows.shape[0], 1), bos, dtype=windows.dtype), windows], dim=1)
    if ids.numel() < 2:
        raise ValueError(f"an evaluation text of {ids.numel()} token(s) has nothing to predict; give a longer text")
    if ids.numel() < seq_len:
        return ids.unsqueeze(0)
    return ids[: ids.numel() // seq_len * seq_len].reshape(-1, seq_len)


class PlanEvaluator:
    """Evaluate the plans of a comparison: perplexity and KL per text by measurement, tasks on pruned copies."""

    def __init__(self, source, tokenizer, eval_ids: dict[str, torch.Tensor], *, seq_len: int, stride: int | None,
                 ppl_batch_size: int, tasks, limit, data_dir, task_batch_size: int, seed: int, batch_size: int,
                 data_parallel=None):
        self.source, self.tokenizer, self.eval_ids = source, tokenizer, eval_ids
        self.seq_len, self.stride, self.ppl_batch_size = seq_len, stride, ppl_batch_size
        self.tasks, self.limit, self.data_dir = tasks, limit, data_dir
        self.task_batch_size, self.seed, self.batch_size, self.dp = task_batch_size, seed, batch_size, data_parallel
        self.measurers = {label: Measurer(source, text_windows(ids, seq_len), batch_size=batch_size,
                                          data_parallel=data_parallel) for label, ids in eval_ids.items()}
        self.healings: dict[tuple, Healing] = {}

    def heal(self, removed, heal: str, calibration: torch.Tensor, split: WindowSplit) -> list[dict]:
        """Fit ``heal``'s maps for the plan ``removed`` (as ``prune --heal``); what it did to each cut."""
        key = (tuple(removed), heal)
        if key not in self.healings:
            fit, held = split.rows(calibration, "heal_fit"), split.rows(calibration, "heal_check")
            reducer = None
            if self.dp is not None and self.dp.world_size > 1:
                fit, held = self.dp.shard(fit).input_ids, held if self.dp.is_main else held[:0]
                reducer = self.dp.reducer
            self.healings[key] = heal_cuts(self.source, list(removed), fit, held, options=HealOptions(heal=heal),
                                           reducer=reducer, batch_size=self.batch_size, fold=False)
        report = self.healings[key].report
        return [{k: c[k] for k in ("removed", "method", "reason")} for c in report["cuts"]]

    def _candidate(self, row) -> Candidate:
        if row.heal is None:
            return Candidate(tuple(row.removed))
        name = f"{row.heal}:{','.join(map(str, row.removed))}"
        return self.healings[(tuple(row.removed), row.heal)].candidate(row.removed, name)

    def evaluate(self, baseline, rows: list, say) -> None:
        """Fill every row's (and the unpruned model's) perplexity, KL and task accuracies; pick the oracles' plans."""
        texts = list(self.eval_ids)
        first = self.measurers[texts[0]]
        for row in [r for r in rows if r.selector == "exhaustive_perplexity"]:
            subsets = list(itertools.combinations(range(self.source.num_blocks), row.num_remove))
            losses = [m.loss for m in first.measure(subsets)]
            row.removed = list(subsets[min(range(len(subsets)), key=lambda i: (losses[i], i))])
        for text in texts:
            wanted = [Candidate(())] + [self._candidate(r) for r in rows]
            results = self.measurers[text].measure(wanted)
            for row, m in zip([baseline] + rows, results):
                row.perplexity[text], row.kl[text] = m.perplexity, m.kl
        if self.stride is not None or self.tasks:
            self._on_copies([baseline] + rows)
        for row in rows:
            say(f"{row.method:<40} removes {row.removed}  perplexity {row.perplexity[texts[0]]:.4f}")

    def _on_copies(self, rows: list) -> None:
        """Sliding-window perplexity and zero-shot tasks, on a pruned (and healed) copy per distinct plan."""
        done: dict[tuple, tuple[dict, dict]] = {}
        for row in rows:
            key = (tuple(row.removed), row.heal)
            if key not in done:
                model = self.source.model
                if row.removed:
                    model = copy.deepcopy(model)
                    if row.heal is not None:
                        self.healings[key].fold(model)
                    remove_blocks(model, list(row.removed))
                done[key] = self._run_copy(model)
                del model
            ppl, acc = done[key]
            row.perplexity.update(ppl)
            row.tasks.update(acc)

    def _run_copy(self, model) -> tuple[dict, dict]:
        ppl = {}
        if self.stride is not None:
            ppl = {name: perplexity(model, ids, seq_len=self.seq_len, stride=self.stride,
                                    batch_size=self.ppl_batch_size).perplexity for name, ids in self.eval_ids.items()}
        acc = {}
        if self.tasks and (self.dp is None or self.dp.is_main):
            res = evaluate_tasks(model, self.tokenizer, self.tasks, data_dir=self.data_dir, limit=self.limit,
                                 batch_size=self.task_batch_size, seed=self.seed)
            acc = {name: r.metrics.get("acc", math.nan) for name, r in res.items()}
        return ppl, acc

    def cost(self) -> dict:
        """What each text's measurements cost."""
        return {text: m.summary() for text, m in self.measurers.items()}
