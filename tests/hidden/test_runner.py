"""iter_hidden_states against Hugging Face's own forward, on tiny models of every supported family."""

from __future__ import annotations

import pytest
import torch
from tiny_models import HF_INIT_FAMILIES, final_norm, tiny_model

from miprun.hidden.in_memory import InMemorySource
from miprun.hidden.runner import iter_hidden_states


def _reference_states(model, ids):
    """HF's hidden states: inputs of blocks 0..T-1 from output_hidden_states, h_T = the final norm's input."""
    captured = {}
    hook = final_norm(model).register_forward_pre_hook(lambda mod, args: captured.__setitem__("h", args[0]))
    try:
        with torch.no_grad():
            out = model(ids, output_hidden_states=True, use_cache=False)
    finally:
        hook.remove()
    T = model.config.num_hidden_layers
    return list(out.hidden_states[:T]) + [captured["h"]]


@pytest.mark.parametrize("family", sorted(HF_INIT_FAMILIES))
def test_states_equal_hf_forward(family):
    model = tiny_model(family, preset="hf_init")
    g = torch.Generator().manual_seed(1)
    # seq 24 > sliding window 8: families with sliding layers get per-layer masks that must be kept apart
    ids = torch.randint(3, model.config.vocab_size, (5, 24), generator=g)
    ref = _reference_states(model, ids)
    got = list(iter_hidden_states(model, ids, batch_size=2, progress=False))  # 5 = 2 + 2 + 1: a short last batch
    assert [b for b, _ in got] == list(range(len(ref)))
    for (b, h), r in zip(got, ref):
        assert h.shape == (5, 24, 32) and h.dtype == r.dtype
        torch.testing.assert_close(h, r, rtol=0, atol=1e-6, msg=f"{family}: state {b}")
    # h_T is not the post-norm state HF returns last
    assert not torch.allclose(got[-1][1], model(ids, output_hidden_states=True).hidden_states[-1], atol=1e-3)


def test_states_do_not_depend_on_batch_size():
    model = tiny_model("llama", preset="hf_init")
    ids = torch.randint(3, model.config.vocab_size, (6, 16), generator=torch.Generator().manual_seed(2))
    one = [h for _, h in iter_hidden_states(model, ids, batch_size=6, progress=False)]
    few = [h for _, h in iter_hidden_states(model, ids, batch_size=4, progress=False)]
    for a, b in zip(one, few):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_each_state_is_a_fresh_tensor_and_model_is_restored():
    model = tiny_model("gpt2", preset="hf_init")
    model.train()  # dropout must be off while scoring, and the mode restored afterwards
    ids = torch.randint(3, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(3))
    states = [h for _, h in iter_hidden_states(model, ids, batch_size=2, progress=False)]
    assert model.training
    assert len({h.data_ptr() for h in states}) == len(states)
    model.eval()
    ref = _reference_states(model, ids)
    for h, r in zip(states, ref):
        torch.testing.assert_close(h, r, rtol=0, atol=1e-6)
    assert all("forward" not in blk.__dict__ for blk in model.transformer.h)  # catchers removed


class _TupleBlock(torch.nn.Module):
    """Wraps a block so that it returns (hidden, None), as older and remote-code blocks do."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs), None


def test_tuple_returning_blocks_take_element_zero():
    model = tiny_model("llama", preset="hf_init")
    ids = torch.randint(3, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(4))
    ref = _reference_states(model, ids)
    model.model.layers = torch.nn.ModuleList(_TupleBlock(b) for b in model.model.layers)
    got = [h for _, h in iter_hidden_states(model, ids, progress=False)]
    for h, r in zip(got, ref):
        torch.testing.assert_close(h, r, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [torch.zeros(3, 4), torch.zeros(5, dtype=torch.long),
                                 torch.zeros(0, 4, dtype=torch.long)])
def test_bad_input_ids_are_refused(bad):
    with pytest.raises(ValueError, match="input_ids"):
        next(iter_hidden_states(tiny_model("llama", preset="hf_init"), bad, progress=False))


def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_hidden_states(tiny_model("llama", preset="hf_init"), torch.ones(2, 4, dtype=torch.long), batch_size=0))


def test_stopping_early_restores_the_model():
    model = tiny_model("llama", preset="hf_init")
    model.train()
    states = iter_hidden_states(model, torch.ones(2, 4, dtype=torch.long), progress=False)
    next(states)
    next(states)
    assert not model.training
    states.close()
    assert model.training


def test_device_and_blocks_belong_to_a_loaded_model():
    model = tiny_model("llama", preset="hf_init")
    source = InMemorySource(model)
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="loaded model only"):
        iter_hidden_states(source, ids, device="cpu")
    with pytest.raises(ValueError, match="BlockSource"):
        iter_hidden_states(object(), ids)
