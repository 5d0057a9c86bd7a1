"""``miprun mi X Y``: the estimate of two array files, or one line on stderr and exit 2 on bad input."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miprun import mutual_information
from miprun.cli.main import main
from miprun.cli.mi import read_array


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(code, err, *phrases):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


def _pair(n=1500, dx=3, dy=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    y = 0.7 * x[:, :1] + 0.5 * x[:, -1:] + rng.standard_normal((n, dy))
    return x, y


@pytest.fixture()
def files(tmp_path):
    """X as .npy (n, 3), Y as .csv with a header (n, 2), and the arrays."""
    x, y = _pair()
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "y.csv", y, delimiter=",", header="a,b", comments="")
    return tmp_path / "x.npy", tmp_path / "y.csv", x, y


def test_prints_the_joint_ksg_estimate_in_nats(files, capsys):
    xp, yp, x, y = files
    code, out, err = _run(["mi", xp, yp], capsys)
    assert code == 0, err
    expected = mutual_information(x, y, estimator="ksg", reduction="joint")
    assert expected > 0.2
    assert out == f"{expected:.6f} nats\n"


@pytest.mark.parametrize(("flags", "api"), [
    (["--estimator", "gaussian"], dict(estimator="gaussian", reduction="joint")),
    (["--k", "7", "--seed", "3", "--max-samples", "1000"], dict(estimator="ksg", reduction="joint", k=7, seed=3,
                                                                max_samples=1000)),
    (["--estimator", "hist", "--reduction", "pooled", "--bins", "12", "--binning", "uniform",
      "--bias-correction", "miller_madow"], dict(estimator="hist", reduction="pooled", bins=12, binning="uniform",
                                                 bias_correction="miller_madow")),
    (["--reduction", "projection", "--projection-dim", "2", "--backend", "reference"],
     dict(estimator="ksg", reduction="projection", projection_dim=2, backend="reference")),
    (["--metric", "chebyshev", "--k", "4"], dict(estimator="ksg", reduction="joint", metric="chebyshev", k=4)),
    (["--metric", "euclidean", "--reduction", "projection"], dict(estimator="ksg", reduction="projection",
                                                                  metric="euclidean")),
])
def test_json_holds_the_estimate_and_every_option(tmp_path, capsys, flags, api):
    x, y = _pair(dx=2, dy=2, seed=1)
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "y.csv", y, delimiter=",")
    code, out, err = _run(["mi", tmp_path / "x.npy", tmp_path / "y.csv", "--json", *flags], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["estimate"] == pytest.approx(mutual_information(x, y, **api), abs=1e-12)
    assert (record["n"], record["dx"], record["dy"]) == (1500, 2, 2)
    assert record["unit"] == "nats" and record["seconds"] > 0
    for key, value in api.items():
        assert record["options"][key] == value, key
    assert set(record["options"]) == {"estimator", "reduction", "bins", "binning", "k", "metric", "bias_correction",
                                      "max_samples", "seed", "projection_dim", "backend", "device"}


@pytest.mark.parametrize(("flags", "named"), [([], "euclidean"), (["--reduction", "projection"], "chebyshev"),
                                              (["--estimator", "gaussian"], None)])
def test_json_names_the_metric_ksg_used(tmp_path, capsys, flags, named):
    """Without --metric, --json names the reduction's default norm (KSG only: other estimators have none)."""
    x, y = _pair(n=600, dx=2, dy=2, seed=4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, out, err = _run(["mi", tmp_path / "x.npy", tmp_path / "y.npy", "--json", *flags], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["options"]["metric"] == named
    if named is not None:  # the named norm is the one used: the estimate is that norm's, not the other's
        other = {"euclidean": "chebyshev", "chebyshev": "euclidean"}[named]
        kw = dict(estimator="ksg", reduction=record["options"]["reduction"])
        assert record["estimate"] == pytest.approx(mutual_information(x, y, metric=named, **kw), abs=1e-12)
        assert abs(record["estimate"] - mutual_information(x, y, metric=other, **kw)) > 1e-4


def test_one_dimensional_arrays_are_one_column(tmp_path, capsys):
    x, y = _pair(dx=1, dy=1, seed=2)
    np.save(tmp_path / "x.npy", x[:, 0])
    np.savetxt(tmp_path / "y.csv", y[:, 0])  # one value per line
    code, out, err = _run(["mi", tmp_path / "x.npy", tmp_path / "y.csv", "--json"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert (record["dx"], record["dy"]) == (1, 1)
    assert record["estimate"] == pytest.approx(mutual_information(x, y, estimator="ksg", reduction="joint"), abs=1e-12)


def test_read_array_reads_csv_with_and_without_header(tmp_path):
    (tmp_path / "h.csv").write_text("u, v\n1, 2.5\n-3e-2,4\n\n5,6\n")
    (tmp_path / "n.csv").write_text("1,2.5\n-0.03,4\n5,6\n")
    want = np.array([[1, 2.5], [-0.03, 4], [5, 6]])
    assert np.array_equal(read_array(str(tmp_path / "h.csv")), want)
    assert np.array_equal(read_array(str(tmp_path / "n.csv")), want)
    np.save(tmp_path / "i.npy", np.arange(6, dtype=np.int32).reshape(3, 2))
    got = read_array(str(tmp_path / "i.npy"))
    assert got.dtype == np.float64 and got.shape == (3, 2) and got[2, 1] == 5.0


def _bad_files(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Each bad input: the two file names and the phrases its one-line error must hold."""
    x, y = _pair(n=40)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    np.save(root / "short.npy", y[:39])
    np.save(root / "three_rows.npy", x[:3])
    np.save(root / "three_rows_y.npy", y[:3])
    nan = y.copy()
    nan[5, 1] = math.nan
    np.save(root / "nan.npy", nan)
    np.save(root / "cube.npy", np.zeros((4, 3, 2)) + 1.5)
    np.save(root / "text.npy", np.array(["a", "b"]))
    (root / "words.csv").write_text("1,2\n3,abc\n")
    (root / "ragged.csv").write_text("1,2\n3\n")
    (root / "infs.csv").write_text("1,2\n3,inf\n")
    (root / "empty.csv").write_text("")
    (root / "data.txt").write_text("1,2\n")
    (root / "binary.npy").write_bytes(b"\x00\x01not numpy")
    return {
        "missing file": (["x.npy", "missing.npy"], ["no such file", "missing.npy"]),
        "wrong suffix": (["x.npy", "data.txt"], ["expected a .npy or .csv file", "'.txt'"]),
        "non-numeric csv": (["x.npy", "words.csv"], ["line 2, column 1", "'abc' is not a number"]),
        "ragged csv": (["x.npy", "ragged.csv"], ["line 2: 1 values", "first row has 2"]),
        "empty csv": (["x.npy", "empty.csv"], ["no rows of numbers"]),
        "NaN": (["x.npy", "nan.npy"], ["1 NaN or infinite values", "row 5, column 1"]),
        "infinite csv": (["x.npy", "infs.csv"], ["NaN or infinite", "row 1, column 1"]),
        "mismatched rows": (["x.npy", "short.npy"], ["has 40 rows", "has 39", "row for row"]),
        "too few rows for k": (["three_rows.npy", "three_rows_y.npy"], ["KSG with k=3 needs at least 4 samples, got 3"]),
        "3-D array": (["cube.npy", "y.npy"], ["shape (n,) or (n, d)", "(4, 3, 2)"]),
        "strings": (["text.npy", "y.npy"], ["real numeric array"]),
        "not npy": (["binary.npy", "y.npy"], ["cannot read it as a NumPy .npy array"]),
    }


CASES = ["missing file", "wrong suffix", "non-numeric csv", "ragged csv", "empty csv", "NaN", "infinite csv",
         "mismatched rows", "too few rows for k", "3-D array", "strings", "not npy"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    names, phrases = _bad_files(tmp_path)[case]
    code, out, err = _run(["mi", *(tmp_path / n for n in names)], capsys)
    _refused(code, err, *phrases)
    assert out == ""


def test_bad_options_are_one_line(files, capsys):
    xp, yp, _, _ = files
    for flags, phrase in ((["--k", "0"], "must be at least 1"), (["--estimator", "mine"], "invalid choice"),
                          (["--metric", "l2"], "invalid choice: 'l2'"),
                          (["--reduction", "per_dim"], "same number of columns; got 3 and 2"),
                          (["--estimator", "hist"], "dx + dy <= 4"), (["--device", "tpu"], "--device tpu")):
        code, _, err = _run(["mi", xp, yp, *flags], capsys)
        _refused(code, err, phrase)
    code, _, err = _run(["mi", xp, xp, "--estimator", "hist", "--reduction", "per_dim", "--bins", "300"], capsys)
    _refused(code, err, "bins must be between 2 and 256, got 300")
    code, _, err = _run(["mi", xp, yp, "--metric", "manhattan"], capsys)
    _refused(code, err, "--metric", "chebyshev", "euclidean")  # the choices are named


# --- any arguments: exit 0 or one line on stderr, never a traceback, nothing written ---
# good files (const.npy: a constant pair of columns) and bad ones; per option (good values, bad values)
FILES = (["x.npy", "y.csv", "y1.npy", "const.npy"], ["short.npy", "nan.csv", "missing.npy", "data.txt"])
OPTIONS = {"--estimator": (["hist", "ksg", "gaussian", "cosine", "angular"], ["nope", "KSG"]),
           "--reduction": (["pooled", "per_dim", "projection", "joint"], ["mean", ""]),
           "--bins": (["2", "7", "auto", "sturges"], ["1", "300", "x"]),
           "--binning": (["quantile", "uniform"], ["equal"]),
           "--bias-correction": (["none", "miller_madow"], ["mm"]),
           "--k": (["1", "3", "40"], ["0", "-2", "2.5", "200"]),
           "--metric": (["euclidean", "chebyshev"], ["l2", "Euclidean"]),
           "--max-samples": (["5", "100"], ["0", "x"]),
           "--projection-dim": (["1", "3"], ["0"]),
           "--seed": (["0", "-7"], ["x"]),
           "--backend": (["auto", "reference", "native", "triton"], ["gpu"]),
           "--device": (["cpu"], ["cuda:7", "nope"])}


def _files(root: Path) -> None:
    x, y = _pair(n=120, dx=2, dy=2, seed=5)
    np.save(root / "x.npy", x)
    np.savetxt(root / "y.csv", y, delimiter=",")
    np.save(root / "y1.npy", y[:, 0])
    np.save(root / "short.npy", y[:100])
    (root / "nan.csv").write_text("1,2\nnan,3\n")
    (root / "data.txt").write_text("1\n")
    np.save(root / "const.npy", np.full((120, 2), 3.0))


@st.composite
def _arguments(draw):
    """One command line with at most one fault (a bad file or a bad value), so later checks are reached."""
    fault = draw(st.sampled_from([None] * 12 + ["file", *OPTIONS]))
    good, bad = FILES
    argv = ["mi", draw(st.sampled_from(good)), draw(st.sampled_from(good))]
    if fault == "file":
        argv[draw(st.sampled_from([1, 2]))] = draw(st.sampled_from(bad))
    for flag, (ok, wrong) in OPTIONS.items():
        if flag == fault:
            argv += [flag, draw(st.sampled_from(wrong))]
        elif draw(st.booleans()):
            argv += [flag, draw(st.sampled_from(ok))]
    if draw(st.booleans()):
        argv.append("--json")
    return argv


def test_any_arguments_refuse_cleanly_or_succeed(monkeypatch):
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        _files(root)
        before = sorted(p.name for p in root.iterdir())

        @settings(max_examples=80, deadline=None, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(argv=_arguments())
        def check(argv):
            import contextlib
            import io
            out, err = io.StringIO(), io.StringIO()
            with monkeypatch.context() as m, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                m.chdir(root)
                code = main(argv)
            assert code in (0, 2), (argv, code, err.getvalue())
            assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
            if code == 2:
                assert len([ln for ln in err.getvalue().splitlines() if ln.strip()]) == 1, (argv, err.getvalue())
                assert out.getvalue() == "", argv
            else:
                text = out.getvalue()
                value = json.loads(text)["estimate"] if "--json" in argv else float(text.split()[0])
                assert math.isfinite(value), argv
            assert sorted(p.name for p in root.iterdir()) == before, argv  # mi writes nothing

        check()
