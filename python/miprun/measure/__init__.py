"""Stage 4, measuring plans: each candidate plan's next-token loss and KL divergence from the unpruned model.

A plan is measured by running held-back calibration windows (or evaluation text) through the
model with its blocks bypassed. :class:`Measurer` measures a batch of candidates in one
:class:`~miprun.hidden.runner.Sweep` over the blocks, whatever holds the weights (in memory,
streamed from the shards, spread by a device map), carrying one hidden state per distinct
prefix of the plans; the unpruned model is a plan of every sweep, so each candidate's KL
divergence from it is computed token by token in the same pass. Across ``torchrun``
processes each measures its windows and the sums are all-reduced. Verify, refine, SLEB, the
plan check and ``compare`` are searches over this one measurer.
"""

from miprun.measure.candidates import Candidate, dense
from miprun.measure.measurer import CRITERIA, Measurement, Measurer

__all__ = ["Candidate", "dense", "Measurer", "Measurement", "CRITERIA"]
