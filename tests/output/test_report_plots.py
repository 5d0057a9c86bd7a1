"""report.json content and the two PNG plots."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import transformers
from tiny_models import one_thread, tiny_model  # noqa: F401

import miprun
from miprun.selection.plan import Plan
from miprun.models.parameters import count_parameters
from miprun.util.jsonio import to_jsonable
from miprun.output.plots import plot_score_table, plot_single_block, standard_plots
from miprun.output.report import block_parameter_counts, build_report, describe_source
from miprun.output.save import save_pruned
from miprun.output.surgery import remove_blocks
from miprun.scoring.table import ScoreTable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _table(num_blocks: int, max_run: int, estimator: str = "hist", seed: int = 0) -> ScoreTable:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.2, 1.3, size=(num_blocks, max_run))
    for s in range(num_blocks):
        for length in range(1, max_run + 1):
            if s + length > num_blocks:
                values[s, length - 1] = np.nan
    return ScoreTable(values=values, estimator=estimator, settings={"reduction": "pooled", "bins": 32})


def _plan(removed, num_blocks):
    return Plan(removed=removed, num_blocks=num_blocks, selector="fast_block_select", evaluations=7,
                objective=1.25, trace=[{"iteration": 0, "P": removed}], estimator="hist")


def test_report_keys_and_values():
    model = tiny_model("gpt2")  # 5 blocks, tied embeddings
    source = describe_source(model, path="some/folder")
    plan, table = _plan([1, 2], 5), _table(5, 2)
    pruned = remove_blocks(copy.deepcopy(model), plan.removed)
    report = build_report(plan, table, {"n_samples": 8, "seq_len": 16}, {"score": 1.5, "save": np.float64(0.25)},
                          source)
    assert report["pruned_blocks"] == [1, 2] and report["kept_blocks"] == [0, 3, 4]
    assert report["runs"] == [[1, 2]]
    assert report["num_blocks_before"] == 5 and report["num_blocks_after"] == 3
    assert report["selector"] == "fast_block_select" and report["evaluations"] == 7
    assert report["estimator"] == {"name": "hist", "settings": {"reduction": "pooled", "bins": 32}}
    assert report["settings"] == {"n_samples": 8, "seq_len": 16}
    assert report["timings"] == {"score": 1.5, "save": 0.25}
    assert ScoreTable.from_dict(report["score_table"]).values.tobytes() == table.values.tobytes()
    params = report["parameters"]
    assert params["before"] == count_parameters(model).total
    assert params["after"] == count_parameters(pruned).total  # derived from per-block counts, no pruned model needed
    assert params["removed"] == sum(block_parameter_counts(model)[i] for i in (1, 2))
    assert params["removed_fraction"] == pytest.approx(params["removed"] / params["before"])
    assert report["source"]["path"] == "some/folder" and report["source"]["model_type"] == "gpt2"
    v = report["versions"]
    assert v["miprun"] == miprun.__version__ and v["torch"] == torch.__version__
    assert v["transformers"] == transformers.__version__ and v["python"].count(".") == 2
    # report.json is strict JSON once written
    text = json.dumps(to_jsonable(report), allow_nan=False)
    assert json.loads(text)["score_table"]["values"][4][1] is None


def test_report_with_pruned_model_and_plain_source():
    model = tiny_model("llama")
    pruned = remove_blocks(copy.deepcopy(model), [0])
    report = build_report(_plan([0], 6), None, None, None, "hub/name", pruned_model=pruned)
    assert report["parameters"]["after"] == count_parameters(pruned).total and report["parameters"]["before"] is None
    assert report["score_table"] is None and report["estimator"]["name"] == "hist"
    assert report["source"] == {"path": "hub/name"}


def test_report_refuses_inconsistent_block_counts():
    with pytest.raises(ValueError, match="plan is for 6 blocks but the score table has 5"):
        build_report(_plan([1], 6), _table(5, 1), {}, {}, None)
    with pytest.raises(ValueError, match="plan is for 6 blocks but the source model has 5"):
        build_report(_plan([1], 6), None, {}, {}, {"num_blocks": 5})


@pytest.mark.parametrize("estimator", ["hist", "cosine"])
def test_plots_are_valid_pngs(tmp_path, estimator):
    import matplotlib
    from matplotlib.image import imread

    backend = matplotlib.get_backend()
    table = _table(12, 3, estimator=estimator)
    a = plot_score_table(table, tmp_path / "table.png", pruned=[3, 4, 9])
    b = plot_single_block(table, tmp_path / "single.png", pruned=[3, 4, 9])
    for path in (a, b):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.05  # something was drawn
    assert matplotlib.get_backend() == backend  # the caller's backend is left alone


def test_pruned_runs_are_marked_in_the_plots(tmp_path):
    from matplotlib.image import imread

    table = _table(8, 2)
    plain = imread(plot_single_block(table, tmp_path / "a.png"))
    marked = imread(plot_single_block(table, tmp_path / "b.png", pruned=[2]))
    assert plain.shape == marked.shape and np.abs(plain - marked).max() > 0.1


def test_save_pruned_with_standard_plots(tmp_path):
    model = tiny_model("opt")
    plan, table = _plan([1, 4], 5), _table(5, 2)
    source = describe_source(model)
    remove_blocks(model, plan.removed)
    report = build_report(plan, table, {}, {}, source)
    out = save_pruned(model, None, tmp_path / "out", report=report, plots=standard_plots(table, plan))
    for name in ("score_table.png", "single_block.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    written = json.loads((out / "report.json").read_text())
    assert written["pruned_blocks"] == [1, 4] and written["num_blocks_after"] == 3
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
