"""Any damage to a tiny checkpoint is refused by any command in any placement, cleanly and without writing.

Hypothesis draws the damage (a file cut at any offset or lengthened, a size in config.json
changed to any other value, a tensor dropped, added or reshaped in a rewritten file), the
layout (one file, or shards with an index) and the command with its placement. Every
example must exit 2 with one line and no traceback, write nothing, and leave the model and
the calibration text as they were.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from checkpoint_damage import (COMMANDS, append_bytes, assert_refused, command_argv, digest, edit_config, listing,
                               rewrite_tensors, run_command, save_tiny, truncate, write_calibration)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import requires_native

pytestmark = [requires_native]

#: config.json fields that set a tensor shape or a block count: any other value is a mismatch.
SIZES = {"num_hidden_layers": 4, "intermediate_size": 64, "hidden_size": 32, "num_attention_heads": 2,
         "num_key_value_heads": 2, "vocab_size": 31, "head_dim": 16}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    save_tiny(root / "single", sharded=False)
    save_tiny(root / "sharded", sharded=True)
    write_calibration(root / "calib.txt")
    return root


def _weight_files(model: Path) -> list[Path]:
    return sorted(model.glob("*.safetensors"))


def _pick(items: list, pick: int):
    return items[pick % len(items)]


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(length))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


@st.composite
def damages(draw):
    """``(description, apply(model folder))``: one damage that makes the checkpoint disagree with itself."""
    kind = draw(st.sampled_from(["truncate", "append", "config", "drop", "add", "reshape"]))
    pick = draw(st.integers(min_value=0, max_value=2 ** 30))  # which file / tensor / offset, reduced when applied
    if kind == "truncate":
        def apply(model):
            f = _pick(_weight_files(model), pick)
            truncate(f, pick % f.stat().st_size)
        return f"truncate (pick {pick})", apply
    if kind == "append":
        n = draw(st.integers(min_value=1, max_value=64))
        return f"append {n} bytes", lambda model: append_bytes(_pick(_weight_files(model), pick), n)
    if kind == "config":
        field = draw(st.sampled_from(sorted(SIZES)))
        value = draw(st.integers(min_value=1, max_value=4 * SIZES[field]).filter(lambda v: v != SIZES[field]))
        return f"config {field}={value}", lambda model: edit_config(model, **{field: value})

    def apply(model):
        f = _pick(_weight_files(model), pick)
        shapes = _tensor_shapes(f)
        name = sorted(shapes)[pick % len(shapes)]
        if kind == "drop":
            rewrite_tensors(f, drop=name)
        elif kind == "add":
            rewrite_tensors(f, add=(f"{name.rsplit('.', 1)[0]}.extra", (3,)))
        else:
            shape = list(shapes[name])
            shape[0] += 1 + pick % 3
            rewrite_tensors(f, reshape=(name, tuple(shape)))
    return f"{kind} a tensor (pick {pick})", apply


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_any_damage_is_refused_cleanly_by_every_command(templates, layout):
    @settings(max_examples=30, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(damage=damages(), command=st.sampled_from(COMMANDS))
    def check(damage, command):
        description, apply = damage
        with tempfile.TemporaryDirectory(dir=templates) as name:
            root = Path(name)
            model = root / "model"
            shutil.copytree(templates / layout, model)
            calib = Path(shutil.copy(templates / "calib.txt", root / "calib.txt"))
            apply(model)
            inputs, names = (digest(model), digest(calib)), listing(root)
            out = root / ("out.json" if command[0] in ("score", "eval") else "out")
            code, _, err = run_command(command_argv(*command, model, calib, out))
            try:
                assert_refused(code, err)
            except AssertionError as exc:
                raise AssertionError(f"{layout}, {description}, {command}: {exc}") from None
            assert listing(root) == names, (description, command)
            assert (digest(model), digest(calib)) == inputs, (description, command)

    check()
