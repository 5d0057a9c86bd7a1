"""Fast-Block-Select on the Llama2-7B MI table printed in the paper's appendix (Table 6).

The table covers layers 17-31 and runs of up to 5 layers. Its NUM:5 column repeats the
NUM:4 column exactly (a typesetting error, most likely), so runs of 5 are scored as if
they were the first four of their layers; the plans below inherit that.
"""

from __future__ import annotations

import numpy as np
import pytest
from paper_table import FIRST_LAYER, parse_table6
from support import REPO, requires_data, requires_native

from miprun.selection.select import select
from miprun.scoring.table import ScoreTable

PAPER = REPO.parent / "shared" / "paper" / "mi-prun-paper.txt"

pytestmark = [
    requires_native,
    requires_data(PAPER),
]


@pytest.fixture(scope="module")
def table6() -> ScoreTable:
    return ScoreTable(values=parse_table6(PAPER), estimator="hist", settings={"source": "paper Table 6"})


def test_parse(table6):
    values = table6.values
    assert values.shape == (15, 5)
    assert np.count_nonzero(~np.isnan(values)) == 15 + 14 + 13 + 12 + 11
    # MI(h_s, h_{s+L}) cannot grow with L (data processing inequality): a misplaced column
    # would show up here
    with np.errstate(invalid="ignore"):
        assert not (np.diff(values, axis=1) > 0).any()
    assert values[14, 0] == pytest.approx(0.41455725)  # layer 31, the least redundant
    print(f"\nTable 6: NUM:5 equals NUM:4 in all {np.sum(values[:, 3] == values[:, 4])} rows that have both")


def test_fast_block_select_evaluations(table6, capsys):
    lines = []
    for num_remove in range(1, 6):
        plan = select(table6, num_remove)
        assert len(plan.removed) == num_remove == len(set(plan.removed))
        assert all(0 <= b < 15 for b in plan.removed)
        brute_force = sum(15 - length + 1 for length in range(1, num_remove + 1))
        assert plan.trace[-1]["single_evaluations"] == 15
        assert plan.evaluations <= brute_force
        best = select(table6, num_remove, selector="optimal")
        assert plan.objective >= best.objective - 1e-12
        layers = [FIRST_LAYER + b for b in plan.removed]
        lines.append(f"N={num_remove}: layers {layers}, {plan.evaluations} MI evaluations "
                     f"(15 single + {plan.evaluations - 15} runs) vs {brute_force} brute force; "
                     f"damage {plan.objective:.4f}, optimal {best.objective:.4f} "
                     f"(layers {[FIRST_LAYER + b for b in best.removed]})")
    with capsys.disabled():
        print("\nFast-Block-Select on the paper's Table 6 (layers 17-31):\n  " + "\n  ".join(lines))


def test_touching_reproduces_the_group_lengths_of_figure_3(table6):
    # Figure 3 (pruning 5 blocks of Llama2-7B) shows groups of length 2 and 3, then one of 5:
    # the chosen runs touched and merged, which allow_touching=True reproduces.
    plan = select(table6, 5, allow_touching=True)
    lengths = [[g["length"] for g in it["groups"]] for it in plan.trace if it["kind"] == "iteration"]
    assert lengths[0] == [2, 3] and lengths[1] == [5]
    assert select(table6, 5).removed == plan.removed  # touching is the default
    strict = select(table6, 5, allow_touching=False)
    for it in strict.trace[:-1]:
        assert sorted(g["length"] for g in it["groups"]) == [2, 3]
