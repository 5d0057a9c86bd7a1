"""Every Triton kernel compiles for an H100 (sm_90) in the configurations its launcher uses.

The interpreter runs the kernels' Python semantics and accepts code the GPU compiler
rejects (it once let a reassigned ``tl.constexpr`` through), so the kernels are also
compiled ahead of time for ``sm_90``, which needs no GPU. ptxas's report must show no
register spills. The compile runs in a subprocess with ``TRITON_INTERPRET=0``, since the
interpreter replaces ``@triton.jit`` at import time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed")

_SCRIPT = r'''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from miprun.kernels import edges, hist, knn

def build(fn, sig, const, num_warps=4, **options):
    print(f"@@ {fn.__name__} {const} warps={num_warps} {options}", flush=True)
    sig = dict(sig, **{k: "constexpr" for k in const})
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": num_warps, **options})

codes = dict(e_ptr="*fp32", out_ptr="*u8", n_total="i32", n_cols="i32")
for x, e in (("*bf16", "*fp32"), ("*fp64", "*fp64")):
    for per_col in (False, True):
        build(hist._codes_kernel, dict(codes, x_ptr=x, e_ptr=e),
              dict(EDGES_PER_COL=per_col, LOG_P=8, BLOCK=hist.CODES_BLOCK))
build(edges._key_count_kernel, dict(bits_ptr="*i16", counts_ptr="*i32", n_total="i32", chunk="i32"),
      dict(REPLICAS=16, BLOCK=edges._BLOCK))
for fv, v, e in ((True, "*bf16", "*fp32"), (False, "*u8", "*u8")):
    build(hist._joint_atomic_kernel, dict(x_ptr=v, y_ptr=v, ex_ptr=e, ey_ptr=e, out_ptr="*i32", n_total="i32",
          chunk="i32", bins="i32"),
          dict(FROM_VALUES=fv, LOG_P=8, REPLICAS=hist.ATOMIC_REPLICAS, BLOCK=hist.ATOMIC_BLOCK))
onehot = dict(x_ptr="*u8", y_ptr="*u8", out_ptr="*i32", n_rows="i32", n_cols="i32", stride_r="i32",
              rows_per_split="i32", bins="i32")
for per_dim, bins in ((True, 16), (True, 32), (True, 64), (True, 256), (False, 16), (False, 64)):
    bd, br, band, bp = hist._onehot_shape(bins, per_dim)
    build(hist._joint_onehot_kernel, onehot, dict(POOLED=not per_dim, BLOCK_D=bd, BLOCK_R=br, BAND=band, BP=bp), 8)
bm, bn = knn.GPU_BLOCKS
points = dict(z_ptr="*fp64", eps_ptr="*fp64", m="i32", dx="i32", dz="i32", stride_r="i32", stride_d="i32",
              col_step="i32")
for euclid in (False, True):  # as the launcher compiles them: without fused multiply-adds
    for k, kp in ((3, 4), (10, 16)):
        build(knn._kth_distance_kernel, points, dict(EUCLID=euclid, K=k, KP=kp, BLOCK_M=bm, BLOCK_N=bn),
              knn.NUM_WARPS, enable_fp_fusion=False)
    build(knn._range_count_kernel, dict(points, nx_ptr="*i32", ny_ptr="*i32"),
          dict(EUCLID=euclid, BLOCK_M=bm, BLOCK_N=bn), knn.NUM_WARPS, enable_fp_fusion=False)
'''


def _nvidia_backend() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return os.path.exists(get_ptxas(90).path)
    except Exception:  # noqa: BLE001 - any failure means the backend cannot compile here
        return False


@pytest.mark.skipif(not _nvidia_backend(), reason="triton's NVIDIA backend (ptxas) is not available")
def test_kernels_compile_for_sm90_without_spills(tmp_path):
    # a fresh cache: a cached kernel skips ptxas and leaves no report
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DUMP_PTXAS_LOG="1", TRITON_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    blocks = run.stdout.split("@@ ")[1:]
    assert len(blocks) == 19, run.stdout[-2000:]
    for block in blocks:
        name = block.splitlines()[0]
        regs = re.search(r"Used (\d+) registers", block)
        spills = re.search(r"(\d+) bytes spill stores", block)
        assert regs and spills, f"no ptxas report for {name}:\n{block}"
        assert int(spills.group(1)) == 0, f"{name} spills registers:\n{block}"
        print(f"{name}: {regs.group(1)} registers")
