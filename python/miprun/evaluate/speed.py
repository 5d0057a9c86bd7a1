"""Parameter counts and measured prefill/decode speed of a causal LM."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from miprun.evaluate.perplexity import device_of, model_max_length

__all__ = ["SpeedResult", "prefill_and_decode", "measure_speed"]


@dataclass
class SpeedResult:
    """Measured throughput of a model (median over repeats, after warm-up).

    Attributes
    ----------
    prefill_tokens_per_s : float
        ``batch * length`` prompt tokens per second of a forward pass that fills the KV cache.
    decode_tokens_per_s : float
        ``batch * decode_tokens / decode_s``: tokens per second of ``decode_tokens`` greedy
        one-token steps on that cache.
    prefill_s, decode_s : float
        Median seconds of one prefill and of the whole decode loop.
    batch, length, decode_tokens, warmup, repeats : int
        The settings.
    device, dtype : str
    """

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prefill_s: float
    decode_s: float
    batch: int
    length: int
    decode_tokens: int
    warmup: int
    repeats: int
    device: str
    dtype: str

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def prefill_and_decode(model, prompt: torch.Tensor, decode_tokens: int) -> tuple[float, float, torch.Tensor]:
    """One timed run: prefill ``prompt: (batch, length)``, then greedy one-token steps on the KV cache.

    Returns
    -------
    prefill_s, decode_s : float
        Wall seconds of the prefill and of the ``decode_tokens`` steps (CUDA synchronised).
    tokens : LongTensor, shape (batch, decode_tokens + 1)
        The greedy tokens: the prefill's prediction, then one per decode step.
    """
    device = prompt.device
    _sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    _sync(device)
    t1 = time.perf_counter()
    past = out.past_key_values
    nxt = out.logits[:, -1:].argmax(-1)  # (batch, 1)
    tokens = [nxt]
    for _ in range(decode_tokens):
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        tokens.append(nxt)
    _sync(device)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, torch.cat(tokens, dim=1)


@torch.inference_mode()
def measure_speed(model, *, batch: int = 1, length: int = 128, decode_tokens: int = 32,
                  warmup: int = 1, repeats: int = 5, seed: int = 0) -> SpeedResult:
    """Measure prefill and decode throughput on random token ids.

    One repeat (:func:`prefill_and_decode`) = a prefill of a ``(batch, length)`` prompt with
    the KV cache on, then ``decode_tokens`` greedy one-token steps reusing the cache. The
    first ``warmup`` repeats
    are discarded; the medians of the rest are reported.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM, run on the device of its parameters.
    batch, length : int
        Prompt shape.
    decode_tokens : int
        New tokens generated per repeat (``length + decode_tokens`` must fit the model).
    warmup, repeats : int
        Untimed and timed repeats.
    seed : int
        Seed of the random prompt.
    """
    for name, v, lo in (("batch", batch, 1), ("length", length, 1), ("decode_tokens", decode_tokens, 1),
                        ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if v < lo:
            raise ValueError(f"{name}={v} must be at least {lo}")
    limit = model_max_length(model)
    if limit is not None and length + decode_tokens > limit:
        raise ValueError(f"length={length} + decode_tokens={decode_tokens} exceeds the model's maximum "
                         f"length {limit}; lower --length")
    device = device_of(model)
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (batch, length), generator=gen).to(device)  # (batch, length)
    was_training = model.training
    model.eval()
    prefill_times, decode_times = [], []
    try:
        for rep in range(warmup + repeats):
            pre, dec, _ = prefill_and_decode(model, prompt, decode_tokens)
            if rep >= warmup:
                prefill_times.append(pre)
                decode_times.append(dec)
    finally:
        model.train(was_training)
    pre, dec = statistics.median(prefill_times), statistics.median(decode_times)
    return SpeedResult(prefill_tokens_per_s=batch * length / pre, decode_tokens_per_s=batch * decode_tokens / dec,
                       prefill_s=pre, decode_s=dec, batch=batch, length=length, decode_tokens=decode_tokens,
                       warmup=warmup, repeats=repeats, device=str(device),
                       dtype=str(next(model.parameters()).dtype).replace("torch.", ""))
