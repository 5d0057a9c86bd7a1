"""Table 6 of the MI-PRUN paper (Llama2-7B, layers 17-31, runs up to 5 blocks), read from the text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

FIRST_LAYER = 17


def parse_table6(path: Path) -> np.ndarray:
    """MI in nats, shape (15, 5): ``values[i, L-1]`` is the run of layers 17+i .. 17+i+L-1.

    Every cell's label (``layer 20,21,22``) is checked against its row and column, so a
    misread of the text fails here rather than in a selector.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("NUM : 1"))
    rows = []
    for line in lines[head + 1:]:
        if not line.startswith("layer"):
            break
        rows.append(line.split("\t"))
    values = np.full((len(rows), 5), np.nan)
    for i, cells in enumerate(rows):
        for length in range(1, 6):
            label, value = cells[2 * (length - 1)], cells[2 * length - 1]
            if label == "-":
                continue
            layers = [int(x) for x in re.sub(r"^layer\s*", "", label).split(",")]
            expected = list(range(FIRST_LAYER + i, FIRST_LAYER + i + length))
            if layers != expected:
                raise ValueError(f"Table 6 row {i}, column {length}: label {label!r}, expected layers {expected}")
            values[i, length - 1] = float(value)
    return values
