"""Triton GPU kernels, one module per kernel family; each names its float64 reference twin.

- ``edges``: histogram bin edges on the device (twin: ``miprun.mi.codes.compute_edges_ref``);
- ``hist``: bin codes, joint counts and histogram MI (twins: ``miprun.mi.codes.codes_from_edges_ref``,
  ``joint_counts_ref``, ``miprun.mi.hist.hist_ref``);
- ``knn``: KSG mutual information by tiled k-nearest-neighbour search (twin: ``miprun.mi.ksg.ksg_points_ref``).

The modules import ``triton``; import them only where it is installed. The kernels run
CUDA tensors, or CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``, for tests).
"""

__all__ = ["edges", "hist", "knn", "MAX_BINS"]

#: Bins per variable at most: bin codes are uint8 everywhere (kernels, native core, score window).
MAX_BINS = 256
