"""``compare``: every selector on one model and calibration, each pruned model evaluated the same way."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from tiny_models import random_text, tiny_model, word_tokenizer

from miprun.cli.main import main
from miprun.pipeline.compare import compare, parse_variants
from miprun.pipeline.compare_report import to_markdown, write_outputs
from miprun.evaluate.summary import perplexity
from miprun.selection.select import select
from miprun.output.surgery import remove_blocks
from miprun.scoring.table import ScoreTable

VARIANTS = (("hist", "pooled"), ("gaussian", "per_dim"))


@pytest.fixture(scope="module")
def compared():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest.py; a module fixture runs outside the per-test setting
    model = tiny_model("llama", preset="eval", num_blocks=5, seed=4)
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, 64, (4, 32), generator=g)
    eval_ids = {"held_out": torch.randint(0, 64, (200,), generator=g)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = compare(model, None, calib, 2, eval_ids=eval_ids, seq_len=40, variants=VARIANTS, seed=3)
    torch.set_num_threads(threads)
    return model, calib, eval_ids, before, result


def _independent_ppl(model, removed, ids):
    return perplexity(remove_blocks(copy.deepcopy(model), removed), ids, seq_len=40).perplexity


def test_every_selector_has_a_valid_row(compared):
    model, _, _, before, result = compared
    methods = [r.method for r in result.rows]
    for est, red in VARIANTS:
        for sel in ("fast_block_select", "optimal", "greedy"):
            assert f"{sel}[{est}/{red}]" in methods
    assert {"shortgpt", "gromov", "random(seed=3)", "oracle", "default", "sleb"} <= set(methods)
    for r in result.rows:
        assert len(r.removed) == 2 == len(set(r.removed)) and all(0 <= b < 5 for b in r.removed)
    # the input model is untouched
    assert len(model.model.layers) == 5
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_plans_come_from_the_recorded_tables(compared):
    _, _, _, _, result = compared
    for r in result.rows:
        if r.selector in ("fast_block_select", "optimal", "greedy") and r.method != "default":
            table = ScoreTable.from_dict(result.tables[f"{r.estimator}/{r.reduction}"])
            plan = select(table, 2, selector=r.selector)
            assert plan.removed == r.removed and plan.evaluations == r.evaluations
            assert plan.objective == pytest.approx(r.objective)


def test_perplexities_are_measured_the_same_way_for_all(compared):
    model, _, eval_ids, _, result = compared
    ids = eval_ids["held_out"]
    for r in result.rows:  # measured in shared sweeps: equal, to float32 rounding, to each pruned model's own pass
        assert r.perplexity["held_out"] == pytest.approx(_independent_ppl(model, r.removed, ids), rel=1e-5)
        assert r.kl["held_out"] >= 0
    assert result.baseline.perplexity["held_out"] == pytest.approx(perplexity(model, ids, seq_len=40).perplexity)


def test_oracle_is_the_best_subset(compared):
    model, _, eval_ids, _, result = compared
    oracle = next(r for r in result.rows if r.method == "oracle")
    assert oracle.evaluations == 10  # C(5, 2)
    every = {s: _independent_ppl(model, list(s), eval_ids["held_out"]) for s in itertools.combinations(range(5), 2)}
    assert tuple(oracle.removed) == min(every, key=every.get)
    assert all(oracle.perplexity["held_out"] <= r.perplexity["held_out"] for r in result.rows)


def test_outputs_written_and_not_overwritten(compared, tmp_path):
    *_, result = compared
    paths = write_outputs(result, tmp_path / "cmp")
    md = paths["markdown"].read_text()
    assert md.count("\n| ") == len(result.rows) + 1  # one line per row plus the unpruned model
    data = json.loads(paths["json"].read_text())
    assert [r["method"] for r in data["rows"]] == [r.method for r in result.rows]
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="--overwrite"):
        write_outputs(result, tmp_path / "cmp")
    write_outputs(result, tmp_path / "cmp", overwrite=True)
    assert to_markdown(result) == paths["markdown"].read_text()


def test_oracle_skipped_above_the_limit():
    model = tiny_model("llama", preset="eval", num_blocks=4, seed=1)
    g = torch.Generator().manual_seed(0)
    result = compare(model, None, torch.randint(0, 64, (2, 16), generator=g), 1,
                     eval_ids={"t": torch.randint(0, 64, (64,), generator=g)}, seq_len=32,
                     variants=(("gaussian", "pooled"),), oracle_limit=3)
    assert "oracle" not in [r.method for r in result.rows] and result.settings["subsets"] == 4


def test_parse_variants():
    assert parse_variants("hist:per_dim, ksg:projection,gaussian") == \
        (("hist", "per_dim"), ("ksg", "projection"), ("gaussian", "pooled"))
    assert len(parse_variants(None)) == 7
    for bad in ("cosine:pooled", "hist:projection", ","):
        with pytest.raises(ValueError):
            parse_variants(bad)


def test_compare_command(tmp_path, capsys):
    tok = word_tokenizer()
    model = tiny_model("llama", preset="eval", num_blocks=4, vocab=len(tok), seed=2)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    calib, held = tmp_path / "calib.txt", tmp_path / "held.txt"
    calib.write_text(random_text(600, seed=5))
    held.write_text(random_text(300, seed=6))
    argv = ["compare", str(tmp_path / "m"), "--num-blocks", "1", "--calib", str(calib), "--eval-text", str(held),
            "--n-samples", "4", "--calib-seq-len", "32", "--seq-len", "64", "--estimators", "gaussian:pooled",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["settings"]["held_out"] is True and len(data["rows"]) == 3 + 2 + 2 + 1 + 1  # oracle: C(4,1)=4 <= 64
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(argv[:-1] + ["--estimators", "cosine", "--overwrite"]) == 2


def test_heals_add_a_healed_row_per_selector_measured_on_the_healed_model():
    from miprun.calibration.split import split_windows
    from miprun.heal.fit import heal_cuts
    from miprun.heal.options import HealOptions

    model = tiny_model("llama", preset="eval", num_blocks=5, seed=6)
    g = torch.Generator().manual_seed(2)
    calib = torch.randint(0, 64, (8, 32), generator=g)
    eval_ids = {"held_out": torch.randint(0, 64, (200,), generator=g)}
    result = compare(model, None, calib, 2, eval_ids=eval_ids, seq_len=40, variants=(("hist", "pooled"),),
                     seed=3, heals=("linear",), oracle_limit=0)
    assert result.settings["heals"] == ["linear"]
    plain = {r.method: r for r in result.rows if r.heal is None}
    healed = [r for r in result.rows if r.heal == "linear"]
    assert {r.method for r in healed} == {f"{m}+heal:linear" for m in plain if not m.startswith("random")}
    split = split_windows(8, 0.25, score_held_back=False)
    for r in healed:
        base = plain[r.method.removesuffix("+heal:linear")]
        assert r.removed == base.removed
        copy_ = copy.deepcopy(model)  # an independent heal, folded, then surgery: the model the row describes
        report = heal_cuts(copy_, r.removed, split.rows(calib, "heal_fit"), split.rows(calib, "heal_check"),
                           options=HealOptions(heal="linear")).report
        expect = perplexity(remove_blocks(copy_, r.removed), eval_ids["held_out"], seq_len=40).perplexity
        assert r.perplexity["held_out"] == pytest.approx(expect, rel=1e-5)
        assert [c["method"] for c in r.healed_cuts] == [c["method"] for c in report["cuts"]]
        if any(c["method"] for c in report["cuts"]):
            assert r.perplexity["held_out"] != pytest.approx(base.perplexity["held_out"], rel=1e-6)


def test_compare_refuses_an_unknown_heal(tmp_path, capsys):
    with pytest.raises(ValueError, match="not a heal"):
        compare(tiny_model("llama", preset="eval", num_blocks=4), None, torch.randint(0, 64, (2, 16)), 1,
                eval_ids={"t": torch.randint(0, 64, (64,))}, seq_len=16, heals=("full",))
    code = main(["compare", str(tmp_path / "model"), "--num-remove", "1", "--calib", str(tmp_path / "c.txt"),
                 "--heal", "linear,full", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "full is not a heal" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("placement", [["--offload"], ["--device-map", "auto"]])
def test_compare_command_streamed_or_mapped_gives_the_rows_in_memory_gives(tmp_path, placement):
    tok = word_tokenizer()
    model = tiny_model("llama", preset="eval", num_blocks=4, vocab=len(tok), seed=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    calib, held = tmp_path / "calib.txt", tmp_path / "held.txt"
    calib.write_text(random_text(600, seed=7))
    held.write_text(random_text(300, seed=8))
    base = ["compare", str(tmp_path / "m"), "--num-remove", "1,2", "--calib", str(calib), "--eval-text", str(held),
            "--n-samples", "8", "--calib-seq-len", "32", "--seq-len", "64", "--estimators", "hist:pooled",
            "--heal", "linear", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + placement + ["--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / x / "compare.json").read_text()) for x in ("a", "b"))
    assert a["settings"]["placement"] == "in_memory" and b["settings"]["placement"] != "in_memory"
    assert [(r["method"], r["removed"]) for r in a["rows"]] == [(r["method"], r["removed"]) for r in b["rows"]]
    assert {r["method"] for r in a["rows"]} >= {"default", "sleb", "oracle", "default+heal:linear"}
    for x, y in zip(a["rows"], b["rows"]):
        for text, value in x["perplexity"].items():
            assert y["perplexity"][text] == pytest.approx(value, rel=1e-5), x["method"]
