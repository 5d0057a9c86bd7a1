"""Calls the type checker must refuse: they prove that miprun's annotations are read at all.

If mypy found no py.typed marker, every name would be Any and these would pass silently.
"""

from __future__ import annotations

import numpy as np

import miprun
from miprun.mi.bmi_adapter import MiprunEstimator

x = np.zeros((10, 2))
miprun.mutual_information(x, x, k="3")  # error: k is an int
miprun.mutual_information(x, x, bias_correction=1)  # error: None or a str
label: str = MiprunEstimator().estimate(x, x)  # error: a float
miprun.ScoringOptions(estimator="ksg", k=3).k.upper()  # error: int has no upper
miprun.mutual_information(x, x, metric=2)  # error: None or a str
