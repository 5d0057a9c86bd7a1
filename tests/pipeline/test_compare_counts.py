"""``compare`` over several block counts: one scoring pass per table, every selector at every count, figures."""

from __future__ import annotations

import json
import secrets

import pytest
import torch
from tiny_models import random_text, tiny_model, word_tokenizer

import miprun.pipeline.compare as compare_module
import miprun.pipeline.compare_report as report_module
from miprun.cli.main import main
from miprun.pipeline.compare import CompareResult, CompareRow, check_counts, compare
from miprun.pipeline.compare_report import count_figures, plot_counts, to_markdown, write_outputs
from miprun.scoring.table import ScoreTable
from miprun.selection.select import select

VARIANTS = (("hist", "pooled"),)
SELECTORS = ("fast_block_select", "optimal", "greedy", "shortgpt", "gromov", "random", "exhaustive_perplexity", "sleb")


@pytest.fixture(scope="module")
def runs():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seed = secrets.randbelow(2**31)
    model = tiny_model("llama", preset="eval", num_blocks=5, seed=seed % 1000)
    g = torch.Generator().manual_seed(seed)
    calib = torch.randint(0, 64, (3, 24), generator=g)
    eval_ids = {"a/held.txt": torch.randint(0, 64, (120,), generator=g),
                "b/held.txt": torch.randint(0, 64, (120,), generator=g)}
    calls = []
    real = compare_module.score_tokens

    def counted(model, ids, options, execution, **kw):
        calls.append((options.estimator, kw["max_run"]))
        return real(model, ids, options, execution, **kw)

    compare_module.score_tokens = counted
    try:
        many = compare(model, None, calib, [3, 1, 2], eval_ids=eval_ids, seq_len=40, variants=VARIANTS, seed=seed,
                       oracle_limit=5)
    finally:
        compare_module.score_tokens = real
    single = {n: compare(model, None, calib, n, eval_ids=eval_ids, seq_len=40, variants=VARIANTS, seed=seed,
                         oracle_limit=5) for n in (3, 1)}
    torch.set_num_threads(threads)
    return seed, many, single, calls


def test_every_table_is_scored_once_up_to_the_largest_count(runs):
    seed, many, _, calls = runs
    # the default row's hist table carries the companion tables its portfolio reads: scored once more
    assert sorted(calls) == sorted([("hist", 3), ("cosine", 1), ("angular", 3), ("hist", 3)]), seed
    assert many.settings["counts"] == [3, 1, 2] == many.settings["num_remove"] == many.counts
    assert many.settings["subsets"] == [10, 5, 10]


def test_every_selector_runs_at_every_count_from_the_recorded_tables(runs):
    seed, many, _, _ = runs
    for n in (3, 1, 2):
        rows = [r for r in many.rows if r.num_remove == n]
        selectors = {r.selector for r in rows}
        assert selectors == set(SELECTORS) - ({"exhaustive_perplexity"} if n != 1 else set()), (seed, n)  # C(5,n) <= 5
        for r in rows:
            assert len(r.removed) == n == len(set(r.removed)), (seed, r)
            if r.selector in ("fast_block_select", "optimal", "greedy", "shortgpt", "gromov") and r.method != "default":
                label = f"{r.estimator}/{r.reduction}" if r.reduction else r.estimator
                plan = select(ScoreTable.from_dict(many.tables[label]), n, selector=r.selector)
                assert plan.removed == r.removed and plan.objective == pytest.approx(r.objective), (seed, r)
    assert [r.num_remove for r in many.rows] == sorted([r.num_remove for r in many.rows],
                                                       key=[3, 1, 2].index)  # count by count, in the order given


def test_each_count_gives_the_single_count_rows(runs):
    seed, many, single, _ = runs
    for n, alone in single.items():
        rows = [r for r in many.rows if r.num_remove == n]
        assert [(r.method, r.removed) for r in rows] == [(r.method, r.removed) for r in alone.rows], (seed, n)
        assert [r.perplexity for r in rows] == [r.perplexity for r in alone.rows]
        assert alone.settings["num_remove"] == n and alone.settings["counts"] == [n]
        assert alone.settings["subsets"] == {3: 10, 1: 5}[n]
        assert count_figures(alone) == {}


def test_figures_against_the_share_removed(runs, tmp_path, monkeypatch):
    seed, many, _, _ = runs
    drawn = {}
    real = report_module.plot_against_removed

    def capture(series, path, **kw):
        drawn[path.name] = (series, kw)
        return real(series, path, **kw)

    monkeypatch.setattr(report_module, "plot_against_removed", capture)
    paths = write_outputs(many, tmp_path / "cmp")
    assert set(drawn) == {"perplexity_vs_removed_held.txt.png", "perplexity_vs_removed_held.txt_2.png"}
    for key, text in (("perplexity:a/held.txt", "a/held.txt"), ("perplexity:b/held.txt", "b/held.txt")):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        series, kw = drawn[paths[key].name]
        assert kw["baseline"] == many.baseline.perplexity[text] and kw["log_y"]
        assert "random" in series and "oracle" in series  # one line per selector across the counts
        for r in many.rows:
            label = "random" if r.selector == "random" else r.method
            assert (r.num_remove / 5, r.perplexity[text]) in series[label], (seed, r.method)
        assert all(len(points) == 3 for name, points in series.items() if name != "oracle")
    data = json.loads(paths["json"].read_text())
    assert data["settings"]["counts"] == [3, 1, 2] and {r["num_remove"] for r in data["rows"]} == {1, 2, 3}
    md = to_markdown(many)
    assert "| N |" in md and "3, 1, 2 removed" in md and md.count("\n| ") == len(many.rows) + 1


def test_accuracy_figure_per_task(tmp_path, monkeypatch):
    rng = torch.Generator().manual_seed(secrets.randbelow(2**31))
    acc = torch.rand(5, dtype=torch.float64, generator=rng).tolist()
    rows = [CompareRow(method=m, selector=m, estimator=None, reduction=None, removed=list(range(n)),
                       perplexity={"t": 10.0 + n}, tasks={"piqa": acc[i]}, num_remove=n)
            for i, (m, n) in enumerate([("greedy", 1), ("gromov", 1), ("greedy", 3), ("gromov", 3), ("greedy", 4)])]
    base = CompareRow(method="unpruned", selector="none", estimator=None, reduction=None, removed=[],
                      perplexity={"t": 9.0}, tasks={"piqa": 0.75}, num_remove=0)
    result = CompareResult(rows=rows, baseline=base, tables={},
                           settings={"num_blocks": 8, "num_remove": [1, 3, 4], "counts": [1, 3, 4]})
    drawn = {}
    monkeypatch.setattr(report_module, "plot_against_removed",
                        lambda series, path, **kw: drawn.setdefault(path.name, (series, kw)) and path)
    plot_counts(result, tmp_path)
    series, kw = drawn["accuracy_vs_removed_piqa.png"]
    assert kw["baseline"] == 0.75 and not kw["log_y"]
    assert series == {"greedy": [(1 / 8, acc[0]), (3 / 8, acc[2]), (4 / 8, acc[4])],
                      "gromov": [(1 / 8, acc[1]), (3 / 8, acc[3])]}


@pytest.mark.parametrize("bad,match", [([0], "0 removes no block"), ([2, -1], "-1 removes no block"),
                                       ([2, 3, 2], "2 is given twice"), ([1, 5], "5 but the model has 5 blocks"),
                                       ([2.0], "2.0 is not a whole number"), ([True], "True is not"),
                                       ([], "names no block count")])
def test_bad_counts_are_refused_naming_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        check_counts(bad, 5)
    model = tiny_model("llama", preset="eval", num_blocks=5)
    with pytest.raises(ValueError, match=match):
        compare(model, None, torch.zeros((1, 8), dtype=torch.long), bad, eval_ids={"t": torch.zeros(50).long()},
                seq_len=16)
    assert check_counts(4, 5) == [4] and check_counts((3, 1), 5) == [3, 1]


def test_compare_command_with_several_counts(tmp_path, capsys):
    tok = word_tokenizer()
    model = tiny_model("llama", preset="eval", num_blocks=4, vocab=len(tok), seed=secrets.randbelow(1000))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    calib, held = tmp_path / "calib.txt", tmp_path / "held.txt"
    calib.write_text(random_text(600, seed=5))
    held.write_text(random_text(300, seed=6))
    base = ["compare", str(tmp_path / "m"), "--calib", str(calib), "--eval-text", str(held), "--n-samples", "4",
            "--calib-seq-len", "32", "--seq-len", "64", "--estimators", "gaussian:pooled", "--quiet"]
    assert main(base + ["--num-remove", "1, 2", "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    data = json.loads((out / "compare.json").read_text())
    assert data["settings"]["counts"] == [1, 2] and len(data["rows"]) == (3 + 2 + 2 + 1 + 1) * 2  # oracle: C(4,n) <= 64
    assert (out / "perplexity_vs_removed_held.txt.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    for bad, said in (("2,2", "2 is given twice"), ("0,1", "'0'"), ("1,x", "'x'"), ("1,4", "4 but the model has 4")):
        assert main(base + ["--num-remove", bad, "--out", str(tmp_path / "bad")]) == 2, bad
        assert said in capsys.readouterr().err, bad
        assert not (tmp_path / "bad").exists()
