"""Zero-shot accuracy through lm-evaluation-harness, offline, on an in-memory model.

miprun ships task definitions (``miprun/tasks/*.yaml``) that read the local benchmark files
(llm-foundry's jsonl layout: ``llm-foundry/piqa.jsonl``, ``hellaswag/hellaswag_val_full.jsonl``,
...) from a data folder, so nothing is downloaded. Their names are ``miprun_<task>``; the
plain names (``piqa``, ``arc_easy``, ...) are accepted as aliases. Any other name is handed to
the harness as is (its own tasks work where their data is already cached: downloads are
switched off). Prefix a name with ``lm_eval:`` to ask for the harness's own task of that name.

The data folder is, in order: the ``data_dir`` argument, ``$MIPRUN_DATA/bench``, or
``../shared/data/bench`` (from the working directory, then from the source tree) when it exists.
"""

from __future__ import annotations

import sys
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["TASKS", "TaskResult", "tasks_dir", "resolve_data_dir", "resolve_task_names", "evaluate_tasks"]

#: Plain name -> miprun task (the YAML file ``tasks/<miprun task>.yaml``), and the benchmark file it reads.
TASKS = {
    "piqa": ("miprun_piqa", "llm-foundry/piqa.jsonl"),
    "arc_easy": ("miprun_arc_easy", "llm-foundry/arc_easy.jsonl"),
    "arc_challenge": ("miprun_arc_challenge", "llm-foundry/arc_challenge.jsonl"),
    "winogrande": ("miprun_winogrande", "llm-foundry/winogrande.jsonl"),
    "boolq": ("miprun_boolq", "llm-foundry/boolq.jsonl"),
    "hellaswag": ("miprun_hellaswag", "hellaswag/hellaswag_val_full.jsonl"),
    "copa": ("miprun_copa", "llm-foundry/copa.jsonl"),
    "openbookqa": ("miprun_openbookqa", "llm-foundry/openbook_qa.jsonl"),
    "wsc273": ("miprun_wsc273", "llm-foundry/winograd_wsc.jsonl"),
    "lambada_openai": ("miprun_lambada_openai", "llm-foundry/lambada_openai.jsonl"),
}
_HARNESS_PREFIX = "lm_eval:"
#: The metrics reported per task, where the task has them.
_METRICS = ("acc", "acc_norm", "perplexity")


@dataclass
class TaskResult:
    """One task's zero-shot result.

    Attributes
    ----------
    task : str
        The harness task name that ran (e.g. ``miprun_piqa``).
    metrics : dict[str, float]
        ``acc`` (fraction in [0, 1]), ``acc_norm`` (length-normalised by characters) where
        the task has it, and ``perplexity`` for LAMBADA; ``<metric>_stderr`` beside each.
    samples : int
        Documents evaluated (after ``limit``).
    total : int
        Documents in the task.
    """

    task: str
    metrics: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    total: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def tasks_dir() -> Path:
    """Folder of miprun's task YAMLs (the harness's ``include_path``)."""
    return Path(__file__).resolve().parent / "tasks"


def _default_data_dirs() -> list[Path]:
    out = []
    env = os.environ.get("MIPRUN_DATA")
    if env:
        out.append(Path(env) / "bench")
    out.append(Path.cwd().parent / "shared" / "data" / "bench")
    # From a source checkout: <repo>/python/miprun/zeroshot.py -> <repo>/../shared/data/bench.
    out.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "bench")
    return out


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder of the benchmark files (see the module docstring for the search order).

    Raises
    ------
    ValueError
        When the given folder does not exist, or no default folder exists.
    """
    if data_dir is not None:
        p = Path(data_dir)
        if not p.is_dir():
            raise ValueError(f"--data-dir {str(p)!r} is not a folder; point it at the folder holding "
                             "llm-foundry/piqa.jsonl, hellaswag/hellaswag_val_full.jsonl, ...")
        return p
    tried = _default_data_dirs()
    for p in tried:
        if p.is_dir():
            return p
    raise ValueError("no benchmark folder found (looked in " + ", ".join(str(p) for p in tried) + "); "
                     "pass --data-dir or set MIPRUN_DATA to the data folder that holds bench/")


def resolve_task_names(names: Sequence[str] | str) -> list[str]:
    """Map user task names to harness task names: aliases to ``miprun_*``, ``lm_eval:x`` to ``x``.

    Accepts a list or a comma-separated string; drops empty entries and repeats.
    """
    if isinstance(names, str):
        names = names.split(",")
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name.startswith(_HARNESS_PREFIX):
            resolved = name[len(_HARNESS_PREFIX):]
        elif name in TASKS:
            resolved = TASKS[name][0]
        else:
            resolved = name
        if resolved not in out:
            out.append(resolved)
    if not out:
        raise ValueError(f"no task names in {names!r}; e.g. --tasks piqa,arc_easy "
                         f"(miprun's offline tasks: {', '.join(TASKS)})")
    return out


def _check_files(tasks: Sequence[str], data_dir: Path) -> None:
    own = {miprun_name: rel for miprun_name, rel in TASKS.values()}
    missing = [f"{t} needs {data_dir / own[t]}" for t in tasks if t in own and not (data_dir / own[t]).is_file()]
    if missing:
        raise ValueError("benchmark files are missing: " + "; ".join(missing)
                         + ". Pass --data-dir to the folder of the benchmark files.")


def _go_offline() -> None:
    """Make the harness's dataset and hub libraries use local files only."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ[var] = "1"
    # The libraries read these variables when first imported; set the flags too if they were.
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_DATASETS_OFFLINE = True
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True


def evaluate_tasks(model, tokenizer, tasks: Sequence[str] | str, *, data_dir: str | Path | None = None,
                   limit: int | None = None, batch_size: int = 8, num_fewshot: int = 0,
                   seed: int = 0, bootstrap_iters: int = 1000, verbose: bool = False) -> dict[str, TaskResult]:
    """Zero-shot accuracy of an in-memory model on lm-evaluation-harness tasks.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM, evaluated on the device of its parameters.
    tokenizer : transformers tokenizer
    tasks : list of str or comma-separated str
        Task names (see the module docstring).
    data_dir : path, optional
        Folder of the benchmark files; see :func:`resolve_data_dir`.
    limit : int, optional
        Evaluate only the first ``limit`` documents of each task.
    batch_size : int
        Harness batch size.
    num_fewshot : int
        Few-shot examples (0: zero-shot; miprun's tasks have no separate few-shot split).
    seed : int
        Seed of the harness's random generators.
    bootstrap_iters : int
        Bootstrap resamples for the standard error of non-mean metrics (LAMBADA's perplexity).
    verbose : bool
        Keep the harness's informational log lines (by default only its errors are shown).

    Returns
    -------
    dict[str, TaskResult]
        Keyed by harness task name, in the order asked.

    Raises
    ------
    ValueError
        Bad names, missing data files, or lm-eval not installed.
    """
    names = resolve_task_names(tasks)
    own = [t for t in names if t.startswith("miprun_")]
    data = resolve_data_dir(data_dir) if own else None
    if data is not None:
        _check_files(own, data)
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be at least 1")
    _go_offline()
    try:
        import lm_eval  # an optional extra (miprun[eval]): loaded only to run tasks
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ValueError("zero-shot tasks need lm-evaluation-harness: pip install 'miprun[eval]' "
                         f"(or pip install lm-eval) ({e})") from e
    # Indexing the harness's thousands of built-in tasks takes seconds; skip it when only ours are asked for.
    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=len(own) < len(names),
                          metadata={"miprun_data_dir": str(data) if data is not None else None})
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; miprun's offline tasks are {', '.join(TASKS)} "
                         "(or miprun_<name>); other names must be lm-evaluation-harness tasks")
    harness_log = logging.getLogger("lm_eval")
    level = harness_log.level
    if not verbose:
        # Its warnings about in-memory models and custom datasets are about this very use.
        harness_log.setLevel(logging.ERROR)
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit,
                                      num_fewshot=num_fewshot, random_seed=seed, numpy_random_seed=seed,
                                      torch_random_seed=seed, fewshot_random_seed=seed,
                                      bootstrap_iters=bootstrap_iters, log_samples=False)
    except OSError as e:  # the datasets library's "cannot reach the Hub" errors are OSErrors
        others = [t for t in names if t not in own]
        if not others:
            raise
        raise ValueError(f"{e}. Harness tasks {others} need their data in the local Hugging Face cache "
                         f"(downloads are off); miprun's offline tasks are {', '.join(TASKS)}") from e
    finally:
        harness_log.setLevel(level)
    results = {}
    for name in names:
        res = out["results"].get(name, {})
        metrics = {}
        for m in _METRICS:
            if f"{m},none" in res:
                metrics[m] = float(res[f"{m},none"])
                err = res.get(f"{m}_stderr,none")
                if isinstance(err, (int, float)):
                    metrics[f"{m}_stderr"] = float(err)
        counts = out.get("n-samples", {}).get(name, {})
        results[name] = TaskResult(task=name, metrics=metrics, samples=int(counts.get("effective", 0)),
                                   total=int(counts.get("original", 0)))
    return results
