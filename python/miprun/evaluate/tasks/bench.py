"""Load the local benchmark files (llm-foundry's jsonl layout) as lm-evaluation-harness documents.

The task YAMLs beside this file name :func:`load_docs` as their ``custom_dataset``; the
harness calls it with the task's ``dataset_kwargs`` (which file, which format) and the task
manager's metadata, where ``miprun_data_dir`` is the folder holding the benchmark files. Every
format becomes one of two document shapes:

- multiple choice: ``{"query": str, "choices": [str, ...], "gold": int}``, scored as
  ``query + " " + choice``;
- schema (Winograd-style): ``{"contexts": [str, ...], "continuation": str, "gold": int}``,
  scored as ``context + " " + continuation`` (the choice sits in the context);
- loglikelihood (LAMBADA): ``{"context": str, "continuation": str}``.

This module is loaded by file path by the harness, so it imports nothing from miprun.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _question_answer(r: dict) -> dict:
    # llm-foundry's queries are "Question: ..." (PIQA ends with a newline); the harness's own
    # PIQA/ARC/BoolQ prompts end with "\nAnswer:", which is what this builds.
    return {"query": r["query"].rstrip() + "\nAnswer:", "choices": list(r["choices"]), "gold": int(r["gold"])}


def _plain(r: dict) -> dict:
    return {"query": r["query"].rstrip(), "choices": list(r["choices"]), "gold": int(r["gold"])}


def _hellaswag_clean(text: str) -> str:
    # The WikiHow part of HellaSwag carries bracketed markup; clean it as the harness's own task does.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(r: dict) -> dict:
    return {"query": _hellaswag_clean(r["ctx"]), "choices": [_hellaswag_clean(e) for e in r["endings"]],
            "gold": int(r["label"])}


def _schema(r: dict) -> dict:
    return {"contexts": [c.rstrip() for c in r["context_options"]], "continuation": r["continuation"].strip(),
            "gold": int(r["gold"])}


def _lambada(r: dict) -> dict:
    return {"context": r["context"].rstrip(), "continuation": r["continuation"].strip()}


FORMATS = {"question_answer": _question_answer, "plain": _plain, "hellaswag": _hellaswag,
           "schema": _schema, "lambada": _lambada}


def read_docs(data_dir: str | Path, bench_file: str, bench_format: str) -> list[dict]:
    """Documents of one benchmark file, converted to the shapes in the module docstring.

    Parameters
    ----------
    data_dir : path
        Folder of the benchmark layout (``llm-foundry/piqa.jsonl``, ``hellaswag/...``).
    bench_file : str
        The file, relative to ``data_dir``.
    bench_format : str
        One of :data:`FORMATS`.
    """
    if bench_format not in FORMATS:
        raise ValueError(f"unknown benchmark format {bench_format!r}; expected one of {sorted(FORMATS)}")
    path = Path(data_dir) / bench_file
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {str(path)!r} not found; pass --data-dir (or set MIPRUN_DATA) "
                                "to the folder holding the benchmark files")
    convert = FORMATS[bench_format]
    return [convert(r) for r in _read_jsonl(path)]


def load_docs(*, bench_file: str, bench_format: str, miprun_data_dir: str | None = None, **_unused):
    """``custom_dataset`` entry point of the task YAMLs: a ``DatasetDict`` with one ``test`` split."""
    import datasets  # optional: loaded only for a datasets source

    if miprun_data_dir is None:
        raise ValueError("the miprun tasks need the benchmark folder: run them through miprun.zeroshot, "
                         "or give the task manager metadata={'miprun_data_dir': <folder>}")
    docs = read_docs(miprun_data_dir, bench_file, bench_format)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})
