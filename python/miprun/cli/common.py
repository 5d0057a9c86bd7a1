"""What the subcommands share: argument types, option groups, one-line errors, quiet libraries."""

from __future__ import annotations

import argparse
import os

from transformers.utils import logging as hf_logging

from miprun.hidden.sources import DEVICE_MAPS, parse_max_memory
from miprun.mi.scale import DISTANCE_ESTIMATORS, MI_ESTIMATORS
from miprun.scoring.distributed import DataParallel
from miprun.scoring.options import BINNINGS, TABLE_REDUCTIONS
from miprun.util.progress import progress_enabled

__all__ = ["Parser", "positive", "count", "non_negative", "fraction", "bins", "add_model_options",
           "add_calibration_options", "add_scoring_options", "quiet_libraries", "join_data_parallel",
           "execution_settings", "OPENED"]

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
OPENED: list = []  # data-parallel groups joined by this command, left when it ends


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong, and where to read the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive(text: str) -> int:
    v = _whole(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def non_negative(text: str) -> int:
    v = _whole(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {v}")
    return v


def verify_count(text: str):
    """``auto`` or a whole number >= 0 (``--verify``)."""
    return "auto" if text.strip().lower() == "auto" else non_negative(text)


def count(text: str) -> int:
    return _whole(text)


def fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.25, got {text!r}") from None


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-4, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def positive_float(text: str) -> float:
    v = non_negative_float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def ratio_limit(text: str) -> float | None:
    """A ratio ``>= 1``; ``inf`` or ``none``: no limit (None)."""
    if text.strip().lower() in ("inf", "none"):
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or inf, got {text!r}") from None
    if not v >= 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or inf), got {text!r}")
    return v


def bins(text: str):
    return int(text) if text.isdigit() else text


def add_model_options(p: argparse.ArgumentParser, *, offload: bool = True) -> None:
    """MODEL and how it runs: device, dtype, device map, memory limits, remote code."""
    p.add_argument("model", help="local model folder, a .gguf file, or a Hugging Face Hub id")
    p.add_argument("--device", default=None, help="compute device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="dtype to load the model in")
    p.add_argument("--device-map", choices=DEVICE_MAPS, default=None,
                   help="spread the model over the GPUs (and CPU) with accelerate; see docs/scaling.md")
    p.add_argument("--max-memory", default=None, metavar="SPEC",
                   help="memory per device for --device-map, e.g. 0=20GiB,1=20GiB,cpu=60GiB")
    if offload:
        p.add_argument("--offload", action="store_true",
                       help="stream weights one block at a time from the checkpoint (models larger than memory)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code to run")


def add_calibration_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--calib", required=required, metavar="PATH",
                   help="calibration text: .txt, .json or .jsonl file, or a folder of them")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer folder or hub id (default: the model's own)")
    p.add_argument("--n-samples", type=positive, default=128, help="calibration windows (default 128)")
    p.add_argument("--seq-len", type=positive, default=None,
                   help="tokens per window (default 2048, or the model's maximum length if shorter)")
    p.add_argument("--seed", type=int, default=0, help="seeds the calibration windows and the estimator")
    p.add_argument("--batch-size", type=positive, default=8, help="windows per forward call (default 8)")


def add_scoring_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--estimator", choices=MI_ESTIMATORS + DISTANCE_ESTIMATORS, default=None,
                   help="score: hist (default), ksg, gaussian; cosine/angular are the ShortGPT/Gromov baselines")
    p.add_argument("--reduction", choices=sorted({r for rs in TABLE_REDUCTIONS.values() for r in rs}), default="pooled",
                   help="how hidden dimensions become one number (default pooled)")
    p.add_argument("--bins", type=bins, default="auto", help="hist bins: 2..256 or auto/rice/sturges/sqrt")
    p.add_argument("--binning", choices=BINNINGS, default="quantile", help="hist binning (default quantile)")
    p.add_argument("--k", type=positive, default=3, help="KSG neighbours (default 3)")
    p.add_argument("--max-samples", type=positive, default=None, help="KSG subsample size")
    p.add_argument("--skip-first", type=count, default=0,
                   help="leave out the first positions of every window (attention sinks; default 0)")
    p.add_argument("--max-run", type=positive, default=None, help="longest run of blocks to score")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def quiet_libraries(quiet: bool) -> None:
    """transformers' own progress bars follow --quiet and the terminal rule."""
    if not progress_enabled(not quiet):
        hf_logging.disable_progress_bar()


def join_data_parallel(device):
    """The data-parallel run ``torchrun`` started (``WORLD_SIZE`` > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    dp = DataParallel.from_env(device=device)
    OPENED.append(dp)
    return dp


def execution_settings(args) -> dict:
    """The execution options the parsed arguments give (device, dtype, device map, ...)."""
    return {"device": args.device, "dtype": args.dtype, "device_map": args.device_map,
            "max_memory": None if args.max_memory is None else parse_max_memory(args.max_memory), "offload": bool(getattr(args, "offload", False)),
            "trust_remote_code": args.trust_remote_code,
            **({"batch_size": args.batch_size} if hasattr(args, "batch_size") else {})}
