"""``miprun mi X Y``: the mutual information of two arrays read from ``.npy`` or ``.csv`` files.

Rows are samples, columns dimensions; a 1-D array is one column. The estimate is printed
in nats, or with ``--json`` as one JSON object with the options, ``n``, ``dx``, ``dy`` and
the seconds the estimate took. Every option of :func:`miprun.mutual_information` is a flag;
the defaults are the API's except ``--estimator ksg --reduction joint``: the MI of the two
arrays as random vectors, whatever their widths.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from miprun._native import package_version
from miprun.cli.common import bins, positive
from miprun.mi import BACKENDS, ESTIMATORS, REDUCTIONS, mutual_information
from miprun.mi.hist import BIAS_CORRECTIONS
from miprun.mi.ksg import DEFAULT_PROJECTION_DIM, METRICS, resolve_metric
from miprun.mi.scale import MI_ESTIMATORS
from miprun.scoring.options import BINNINGS
from miprun.util.devices import resolve_device
from miprun.util.jsonio import dumps

__all__ = ["register", "run", "read_array"]

SUFFIXES = (".npy", ".csv")


def register(sub) -> None:
    p = sub.add_parser("mi", help="mutual information of two arrays (.npy or .csv files)",
                       description="Estimate the mutual information between the rows of X and of Y (rows are "
                                   "samples; a 1-D array is one column). Defaults: KSG on the joint space of X "
                                   "and Y (--estimator ksg --reduction joint).")
    p.add_argument("x", metavar="X", help="a .npy or .csv file of shape (n,) or (n, dx)")
    p.add_argument("y", metavar="Y", help="a .npy or .csv file of shape (n,) or (n, dy), row i paired with X's")
    p.add_argument("--estimator", choices=ESTIMATORS, default="ksg",
                   help="ksg (default), gaussian, hist; cosine/angular are distances, not MI")
    p.add_argument("--reduction", choices=sorted({r for rs in REDUCTIONS.values() for r in rs}), default="joint",
                   help="joint (default): MI of X and Y as random vectors; pooled, per_dim, projection: as in "
                        "the score table (X and Y of one width)")
    p.add_argument("--bins", type=bins, default="auto", help="hist bins: 2..256 or auto/rice/sturges/sqrt")
    p.add_argument("--binning", choices=BINNINGS, default="quantile", help="hist binning (default quantile)")
    p.add_argument("--bias-correction", choices=["none", *(c for c in BIAS_CORRECTIONS if c)], default="none",
                   help="hist bias correction (default none)")
    p.add_argument("--k", type=positive, default=3, help="KSG neighbours (default 3)")
    p.add_argument("--metric", choices=METRICS, default=None,
                   help="KSG norm within X and within Y (the joint distance is the larger of the two): "
                        "euclidean (default for --reduction joint, as BMI's KSG) or chebyshev (the max-norm; "
                        "default for the other reductions)")
    p.add_argument("--max-samples", type=positive, default=None,
                   help="KSG subsample size (default: every row for joint and per_dim)")
    p.add_argument("--projection-dim", type=positive, default=DEFAULT_PROJECTION_DIM,
                   help=f"KSG projection dimensions for --reduction projection (default {DEFAULT_PROJECTION_DIM})")
    p.add_argument("--seed", type=int, default=0, help="seeds subsamples, projections and KSG's tie-breaking jitter")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): Triton for CUDA tensors, the C++ core for CPU")
    p.add_argument("--device", default="cpu", help="where the arrays are estimated (default cpu; e.g. cuda)")
    p.add_argument("--json", action="store_true", help="print one JSON object: the estimate, options, n, dx, dy, seconds")
    p.set_defaults(func=run)


def run(args) -> int:
    x = read_array(args.x)
    y = read_array(args.y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{args.x} has {x.shape[0]} rows and {args.y} has {y.shape[0]}: "
                         f"X and Y must pair up row for row")
    device = resolve_device(args.device)
    # the norm KSG uses, named in --json whether given or the reduction's default; other estimators have none
    metric = resolve_metric(args.metric, args.reduction) if args.estimator == "ksg" else args.metric
    options = {"estimator": args.estimator, "reduction": args.reduction, "bins": args.bins, "binning": args.binning,
               "k": args.k, "metric": metric,
               "bias_correction": None if args.bias_correction == "none" else args.bias_correction,
               "max_samples": args.max_samples, "seed": args.seed, "projection_dim": args.projection_dim,
               "backend": args.backend}
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    start = time.perf_counter()
    value = mutual_information(tx, ty, **options)
    seconds = time.perf_counter() - start
    if args.json:
        print(dumps({"estimate": value, "unit": "nats" if args.estimator in MI_ESTIMATORS else "distance",
                     "x": args.x, "y": args.y, "n": x.shape[0], "dx": x.shape[1], "dy": y.shape[1],
                     "options": {**options, "device": str(device)}, "seconds": seconds,
                     "miprun": package_version()}), end="")
    else:
        print(f"{value:.6f} nats" if args.estimator in MI_ESTIMATORS else f"{value:.6f}")
    return 0


def read_array(path: str) -> np.ndarray:
    """The float64 array ``(n, d)`` in a ``.npy`` or ``.csv`` file; ValueError or OSError naming what is wrong.

    A 1-D array is one column. A CSV holds numbers separated by commas, one row per line; a
    first line without any number is read as a header and skipped.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: expected a .npy or .csv file, got {suffix or 'no suffix'!r}")
    if not p.is_file():
        raise FileNotFoundError(2, "no such file" if not p.exists() else "not a file", str(path))
    a = _read_npy(p) if suffix == ".npy" else _read_csv(p)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty array of shape (n,) or (n, d), got shape {tuple(a.shape)}")
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{path}: {int(bad.sum())} NaN or infinite values (the first at row {row}, column {col}); "
                         f"drop or fill them first")
    return a


def _read_npy(p: Path) -> np.ndarray:
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # not an .npy file, truncated, or objects that need pickle
        raise ValueError(f"{p}: cannot read it as a NumPy .npy array ({exc})") from None
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
                                             or a.dtype == np.bool_):
        raise ValueError(f"{p}: expected a real numeric array, got dtype {getattr(a, 'dtype', type(a).__name__)}")
    return a.astype(np.float64)


def _read_csv(p: Path) -> np.ndarray:
    try:
        with open(p, newline="", encoding="utf-8") as f:
            lines = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f)) if any(c.strip() for c in row)]
    except (UnicodeDecodeError, csv.Error):
        raise ValueError(f"{p}: not a text file of comma-separated numbers") from None
    if lines and not any(_is_number(c) for c in lines[0][1]):
        lines = lines[1:]  # a header of column names
    if not lines:
        raise ValueError(f"{p}: no rows of numbers")
    width = len(lines[0][1])
    rows = []
    for line, cells in lines:
        if len(cells) != width:
            raise ValueError(f"{p}, line {line}: {len(cells)} values, but the first row has {width}")
        for col, c in enumerate(cells):
            if not _is_number(c):
                raise ValueError(f"{p}, line {line}, column {col}: {c!r} is not a number")
        rows.append([float(c) for c in cells])
    return np.asarray(rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
