"""Documents of a text source: plain text, JSON / JSONL records, folders of them, or a dataset name.

A plain-text file (``.txt``, or WikiText's ``.raw``/``.tokens``) holds documents separated by
``<|endoftext|>`` when the marker is present, else it is one document. A ``.json`` file
holds a list of records or strings, a ``.jsonl`` file one record per line. A record gives
its text in a ``text`` field, or as Alpaca's ``instruction`` / ``input`` / ``output``
fields (or the seed-task layout, one ``instruction`` with several ``instances``) joined by
newlines. Files must be UTF-8 text: binary data is refused, not tokenised.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["PLAIN_SUFFIXES", "TEXT_SUFFIXES", "DOC_SEPARATOR", "read_documents", "read_file_documents",
           "read_text_file", "record_text"]

# .raw and .tokens are WikiText's plain-text files
PLAIN_SUFFIXES = (".txt", ".raw", ".tokens")
TEXT_SUFFIXES = PLAIN_SUFFIXES + (".json", ".jsonl")
DOC_SEPARATOR = "<|endoftext|>"
# Control characters other than whitespace; real text has next to none, binary data ~12%.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]")
_MAX_CONTROL_SHARE = 0.10
# Characters checked for control characters: binary data shows from its start, and a
# large corpus need not be scanned twice.
_CHECK_CHARS = 1 << 20


def read_documents(source) -> list[str]:
    """All non-blank documents of ``source`` (file, folder or dataset name), in order.

    Raises
    ------
    FileNotFoundError
        A path that does not exist (or a dataset that is not available locally).
    ValueError
        No text, a file that is not text, bad JSON, or records without text.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"calibration folder {path} holds no {', '.join(TEXT_SUFFIXES)} files")
        docs = [d for f in files for d in read_file_documents(f)]
    elif path.is_file():
        docs = read_file_documents(path)
    elif _looks_like_path(str(source)):
        raise FileNotFoundError(f"calibration file {source} does not exist")
    else:
        docs = _read_dataset(str(source))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"calibration source {source} is empty (no non-blank text found)")
    return docs


def _looks_like_path(s: str) -> bool:
    """A dataset name is ``name``, ``owner/name`` or ``name:config``; anything else is a path."""
    return (s.startswith(("/", ".", "~")) or s.lower().endswith(TEXT_SUFFIXES) or s.count("/") > 1
            or "\\" in s)


def read_file_documents(path: Path, *, any_suffix: bool = False) -> list[str]:
    """The documents of one file, by its suffix (see the module docstring).

    Parameters
    ----------
    path : Path
    any_suffix : bool
        Read a file of another suffix as plain text instead of refusing it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES and not any_suffix:
        raise ValueError(f"calibration file {path} has an unsupported type {suffix!r}; "
                         f"use one of {', '.join(TEXT_SUFFIXES)} or a folder of them")
    text = read_text_file(path)
    if suffix == ".jsonl":
        records = _jsonl_records(path, text)
    elif suffix == ".json":
        records = _json_records(path, text)
    else:
        return text.split(DOC_SEPARATOR) if DOC_SEPARATOR in text else [text]
    return [record_text(r, where=str(path)) for r in records]


def read_text_file(path: Path) -> str:
    """The file's text, which must be UTF-8 and not binary data.

    Raises
    ------
    ValueError
        Naming the file, what share of it is control or undecodable bytes, and (when it is
        not UTF-8) where the first bad byte is.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        share = _control_share(data[:4 * _CHECK_CHARS].decode("utf-8", errors="replace"))
        raise ValueError(f"{path} is not text: {share:.0%} of its characters are control or undecodable bytes, "
                         f"and byte {exc.start} (0x{data[exc.start]:02x}) is not UTF-8; give a UTF-8 text file "
                         f"(convert other encodings with iconv)") from None
    share = _control_share(text[:_CHECK_CHARS])
    if share > _MAX_CONTROL_SHARE:
        raise ValueError(f"{path} is not text: {share:.0%} of its characters are control or undecodable bytes; "
                         f"give a UTF-8 text file")
    return text


def _control_share(text: str) -> float:
    """Share of ``text``'s characters that are control characters or U+FFFD replacements."""
    if not text:
        return 0.0
    bad = sum(1 for _ in _CONTROL.finditer(text))
    return bad / len(text)


def _jsonl_records(path: Path, text: str) -> list:
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {i} is not valid JSON: {exc}") from None
    return records


def _json_records(path: Path, text: str) -> list:
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}; one record per line needs the .jsonl suffix") from None
    return data if isinstance(data, list) else [data]


def record_text(record, *, where: str = "record") -> str:
    """Text of one record: a string, a ``text`` field, or Alpaca fields joined by newlines."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected records that are strings or objects, got {type(record).__name__}")
    if isinstance(record.get("text"), str):
        return record["text"]
    if "instruction" in record:
        parts = [record.get("instruction", "")]
        instances = record.get("instances")
        if isinstance(instances, list):  # the seed-task layout: one instruction, several instances
            for inst in instances:
                parts += [inst.get("input", ""), inst.get("output", "")]
        else:
            parts += [record.get("input", ""), record.get("output", "")]
        return "\n".join(str(p) for p in parts if p)
    raise ValueError(f"{where}: a record has neither a 'text' field nor Alpaca 'instruction'/'input'/'output' "
                     f"fields (keys: {sorted(record)[:8]})")


def _read_dataset(name: str) -> list[str]:
    try:
        import datasets  # optional: loaded only for a datasets source
    except ImportError:
        raise FileNotFoundError(
            f"calibration source {name} does not exist (no such file or folder; the `datasets` library, "
            f"needed to load it by name, is not installed)") from None
    ds_name, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(ds_name, config or None, split="train")
    except Exception as exc:  # datasets raises many types; all mean "not available here"
        raise FileNotFoundError(f"calibration source {name} is neither a file nor a folder, and the dataset "
                                f"could not be loaded locally: {exc}") from None
    return [record_text(r, where=name) for r in ds]
