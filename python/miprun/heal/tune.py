"""Tuning the heal's maps against the unpruned model: a few optimiser steps on the maps alone.

The closed-form maps (:mod:`miprun.heal.fit`) each fit one cut's hidden state by least
squares. Tuning starts from them and minimises, by Adam, the KL divergence of the pruned and
healed model's next-token distribution from the unpruned model's on the heal's calibration
windows, the maps the only trainable tensors (one per cut, applied where the fold puts them,
so the result folds into the same weights and the checkpoint stays a plain one). Each step
takes a few windows: the unpruned model's distributions come from its final hidden states,
computed once by one sweep and taken through the model's own tail for the step's windows
only (no logits outlive a step); the pruned model runs with its removed blocks bypassed and
the maps applied, and only what follows the first map is differentiated. Every
``eval_every`` steps the maps are measured on the held-back windows (the measurer's KL); the
best maps seen are kept, and only when they beat the closed form there.

With ``torchrun`` the steps' windows are drawn from all the windows, as one process draws
them; each process computes the part of a step's windows in its own share, and the maps'
gradients are summed over the processes before every step, so every process holds the maps
one process would. The weights must be where a forward pass can reach them: in memory, or placed by a
device map; streamed weights are refused (each step would read every shard twice).
"""

from __future__ import annotations

import contextlib
import math
import operator
import time

import torch
from torch import nn

from miprun.heal.options import DEFAULT_LR
from miprun.hidden.bypass import bypassed
from miprun.hidden.device_map import execution_device
from miprun.hidden.runner import as_source, iter_hidden_states
from miprun.measure import Measurer
from miprun.measure.measurer import window_share
from miprun.measure.criteria import log_probs
from miprun.measure.tail import Tail

__all__ = ["tune_maps"]


def tune_maps(source, removed, healing, fit_ids: torch.Tensor, held_ids: torch.Tensor, *, steps: int,
              lr: float = DEFAULT_LR, batch_size: int = 4, eval_every: int = 0, seed: int = 0,
              data_parallel=None, progress: bool = False) -> dict:
    """Tune ``healing``'s maps in place for ``steps`` steps (module docstring); return the report entry.

    Parameters
    ----------
    source : BlockSource or loaded model
        The unpruned model (in memory or placed by a device map), its maps not folded.
    removed : sequence of int
        The plan's blocks.
    healing : Healing
        Its ``maps`` are the starting point and, when tuning wins on the held-back windows,
        are replaced by the tuned ones.
    fit_ids, held_ids : LongTensor (n, seq_len)
        Every window to tune on, and every held-back window (the same on every process; each
        computes its share).
    steps, lr, batch_size
        Optimiser steps, Adam's step size, windows per step.
    eval_every : int
        Steps between measurements on the held-back windows (0: ``max(1, steps // 4)``).
    data_parallel : DataParallel, optional
        Average the gradients over the processes of a ``torchrun``.
    """
    t0 = time.perf_counter()
    source = as_source(source)
    if source.streams_weights:
        raise ValueError("tuning a heal runs the pruned model forward and backward at every step: it needs the "
                         "weights in memory or placed by a device map (--device-map), not streamed (--offload); "
                         "drop --heal-tune, or drop --offload")
    if not healing.maps:
        return {"steps": 0, "kept": False, "reason": "no cut was healed: nothing to tune"}
    every = eval_every or max(1, steps // 4)
    measurer = Measurer(source, held_ids, batch_size=batch_size, data_parallel=data_parallel)
    start = measurer.measure([healing.candidate(removed, "closed-form")])[0]
    rank, world = (0, 1) if data_parallel is None else (data_parallel.rank, data_parallel.world_size)
    share = window_share(int(fit_ids.shape[0]), rank, world)
    dense_final = _final_states(source, fit_ids[share], batch_size)
    maps = {b: nn.Parameter(T.to(torch.float32).to(execution_device(source.blocks[b])))
            for b, T in healing.maps.items()}
    optimiser = torch.optim.Adam(maps.values(), lr=lr)
    order = _window_order(int(fit_ids.shape[0]), steps * batch_size, seed)
    curve, best = [], (start.kl, {b: T.clone() for b, T in healing.maps.items()}, 0)
    with _frozen(source.model):
        for step in range(1, steps + 1):
            rows = order[(step - 1) * batch_size: step * batch_size]
            mine = rows[(rows >= share.start) & (rows < share.stop)]
            train_kl = _step(source, removed, healing.site, fit_ids[mine], dense_final[mine - share.start],
                             optimiser, maps, data_parallel, tokens=int(rows.numel()) * (int(fit_ids.shape[1]) - 1))
            if step % every == 0 or step == steps:
                now = {b: T.detach().double().cpu() for b, T in maps.items()}
                held = _held_kl(measurer, healing, removed, now, step)
                curve.append({"step": step, "train_kl": train_kl, "held_out_kl": held})
                if held < best[0]:
                    best = (held, now, step)
    kept = best[2] > 0
    if kept:
        healing.maps.update(best[1])
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "eval_every": every,
            "closed_form_held_out_kl": start.kl, "closed_form_held_out_loss": start.loss,
            "held_out_kl": best[0], "best_step": best[2], "kept": kept, "curve": curve,
            "reason": None if kept else "the tuned maps did not beat the closed form on the held-back windows",
            "seconds": time.perf_counter() - t0}


def _final_states(source, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The unpruned model's states after its last block, for every window (one sweep, kept on the device)."""
    last = None
    for _, h in iter_hidden_states(source, ids, batch_size=batch_size, progress=False):
        last = h
    return last


def _window_order(n: int, needed: int, seed: int) -> torch.Tensor:
    """Window indices for the steps: seeded permutations of ``0..n-1``, one after another."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(max(1, math.ceil(needed / max(n, 1))))])


def _step(source, removed, site, ids: torch.Tensor, dense_final: torch.Tensor, optimiser, maps: dict,
          data_parallel, tokens: int) -> float:
    """One Adam step on the maps: the KL summed over this process's windows of the step (``ids``, maybe none)
    divided by the step's ``tokens`` on every process, its gradients summed over the processes; the step's mean KL."""
    optimiser.zero_grad(set_to_none=False)
    total = torch.zeros((), dtype=torch.float64)
    if ids.shape[0]:
        with Tail(source) as tail, torch.inference_mode():
            dense = log_probs(tail.logits(ids, dense_final))
        dense = dense.clone()  # out of inference mode: autograd saves it for the backward pass
        with _pruned(source, removed, site, maps), torch.enable_grad():
            logp = log_probs(source.model(input_ids=ids.to(source.input_device), use_cache=False).logits)
            kl = (dense.to(logp.device).exp() * (dense.to(logp.device) - logp)).sum() / tokens
            kl.backward()
        total += kl.detach().double().cpu()
    if data_parallel is not None and data_parallel.world_size > 1:
        for T in maps.values():
            T.grad = data_parallel.reducer.all_reduce_sum(T.grad if T.grad is not None else torch.zeros_like(T))
        total = data_parallel.reducer.all_reduce_sum(total)
    optimiser.step()
    return float(total)


def _held_kl(measurer: Measurer, healing, removed, maps: dict, step: int) -> float:
    """The KL on the held-back windows of the plan with ``maps`` (the hooks are off while measuring)."""
    saved = dict(healing.maps)
    healing.maps.update(maps)
    try:
        return measurer.measure([healing.candidate(removed, f"tuned@{step}")])[0].kl
    finally:
        healing.maps.clear()
        healing.maps.update(saved)


@contextlib.contextmanager
def _frozen(model: nn.Module):
    """The model's own weights take no gradient inside (the maps are the only trainable tensors)."""
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _pruned(source, removed, site, maps: dict):
    """Inside: the plan's blocks bypassed and every map applied to its block's MLP output by a hook."""
    handles = [operator.attrgetter(site.output)(source.blocks[b]).register_forward_hook(_map_hook(T))
               for b, T in maps.items()]
    try:
        with bypassed(source.model, removed, blocks=source.blocks):
            yield
    finally:
        for h in handles:
            h.remove()


def _map_hook(T: nn.Parameter):
    """``m -> m T`` (or ``m * t``) on the module's output, computed in float32 and cast back."""
    def hook(module, args, output):
        m = output[0] if isinstance(output, tuple) else output
        x = m.to(T.dtype)
        mapped = (x * T if T.ndim == 1 else x @ T).to(m.dtype)
        return (mapped, *output[1:]) if isinstance(output, tuple) else mapped
    return hook
