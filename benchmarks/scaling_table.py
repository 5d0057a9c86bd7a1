"""What does streaming need for 7B, 13B, 70B (and 405B) Llama models? Memory, disk traffic and time.

Memory comes from the formula miprun plans with (:mod:`miprun.hidden.memory`: one block + two
hidden states + one batch's transient + the score window, or the embedding at the start),
checked against measured runs by ``bench_offload_scaling.py``. Time comes from FLOP counts
divided by a throughput: the CPU one measured by ``bench_offload_scaling.py`` on this
machine (``--cpu-gflops``), the GPU one ASSUMED (``--gpu-tflops``, no GPU was measured),
plus weight reading at ``--disk-gbs`` (not overlapped with compute in this version).

    PYTHONPATH=python python benchmarks/scaling_table.py --cpu-gflops 20
"""

from __future__ import annotations

import argparse
import math

from miprun.hidden.memory import USABLE_FRACTION, estimate_from_shapes, window_bytes

GIB = 2 ** 30

#: name: (blocks, hidden, intermediate, heads, kv heads, vocab, tied embeddings)
MODELS = {
    "Llama-2-7B": (32, 4096, 11008, 32, 32, 32000, False),
    "Llama-2-13B": (40, 5120, 13824, 40, 40, 32000, False),
    "Llama-3-70B": (80, 8192, 28672, 64, 8, 128256, False),
    "Llama-3.1-405B": (126, 16384, 53248, 128, 8, 128256, False),
}


def block_params(hidden, intermediate, heads, kv_heads) -> int:
    head_dim = hidden // heads
    return 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate + 2 * hidden


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ratio", type=float, default=0.25, help="fraction of blocks removed; max_run = that count")
    p.add_argument("--gpu-gib", type=float, default=80 * 1e9 / GIB, help="device memory (80 GB H100/A100)")
    p.add_argument("--gpu-tflops", type=float, default=400.0,
                   help="ASSUMED sustained bf16 TFLOP/s of block forwards (H100 dense peak is ~990)")
    p.add_argument("--cpu-gflops", type=float, required=True,
                   help="sustained GFLOP/s measured by bench_offload_scaling.py on this machine")
    p.add_argument("--disk-gbs", type=float, default=2.0, help="checkpoint read bandwidth, GB/s")
    args = p.parse_args()

    tokens = args.n_samples * args.seq_len
    usable = args.gpu_gib * GIB * USABLE_FRACTION
    print(f"calibration {args.n_samples} x {args.seq_len} = {tokens} tokens, batch {args.batch_size}, bf16, "
          f"hist window, max_run = {args.ratio:.0%} of the blocks; device {args.gpu_gib:.1f} GiB "
          f"({USABLE_FRACTION:.0%} usable)")
    print(f"time: GPU at an ASSUMED {args.gpu_tflops:.0f} TFLOP/s, CPU at the measured {args.cpu_gflops:.1f} "
          f"GFLOP/s, weights read at {args.disk_gbs:.1f} GB/s, not overlapped\n")
    head = (f"{'model':<15} {'blocks':>6} {'ckpt GB':>8} {'block GiB':>9} {'state GiB':>9} {'window GiB':>10} "
            f"{'device GiB':>10} {'fits':>5} {'max_run fit':>11} {'host GiB':>8} {'read GB':>8} {'write GB':>8} "
            f"{'GPU min':>8} {'CPU h':>8}")
    print(head)
    for name, (blocks, hidden, inter, heads, kv, vocab, tied) in MODELS.items():
        remove = max(1, round(args.ratio * blocks))
        window = window_bytes("hist", n_tokens=tokens, hidden=hidden, max_run=remove)
        est = estimate_from_shapes(hidden=hidden, intermediate=inter, num_heads=heads, num_kv_heads=kv,
                                   vocab=vocab, n_samples=args.n_samples, seq_len=args.seq_len,
                                   batch_size=args.batch_size, dtype_bytes=2, window=window)
        fixed = est.block_bytes + 2 * est.state_bytes + est.batch_bytes
        # hist codes take (max_run + 1) states; a run cannot be longer than the model.
        max_fit = min(blocks, math.floor((usable - fixed) / (tokens * hidden)) - 1)
        params_block = block_params(hidden, inter, heads, kv)
        embed = vocab * hidden * 2
        ckpt = blocks * est.block_bytes + embed * (1 if tied else 2) + hidden * 2
        read_score = ckpt - (0 if tied else embed)  # the output head is never read to score
        kept = ckpt - remove * est.block_bytes
        flops = blocks * tokens * (2.0 * params_block + 2.0 * args.seq_len * hidden)
        load_s = read_score / (args.disk_gbs * 1e9)
        gpu_min = (flops / (args.gpu_tflops * 1e12) + load_s) / 60
        cpu_h = (flops / (args.cpu_gflops * 1e9) + load_s) / 3600
        # Host during a GPU run: one block read from the shards before its copy to the device,
        # or, while writing, one input shard (5 GB, the usual Hub shard size); ~2 GiB of runtime.
        host = 2 * GIB + max(est.block_bytes, 5e9)
        print(f"{name:<15} {blocks:>6} {ckpt / 1e9:>8.1f} {est.block_bytes / GIB:>9.2f} {est.state_bytes / GIB:>9.2f} "
              f"{window / GIB:>10.2f} {est.peak_bytes / GIB:>10.1f} {'yes' if est.peak_bytes <= usable else 'NO':>5} "
              f"{max_fit:>11d} {host / GIB:>8.1f} {read_score / 1e9 + kept / 1e9:>8.0f} {kept / 1e9:>8.0f} "
              f"{gpu_min:>8.1f} {cpu_h:>8.1f}")
    print("\ndevice = max(embedding + state + batch, block + 2 states + batch + window); window = (max_run + 1) "
          "x tokens x hidden bytes of uint8 codes; max_run fit = the longest run scorable in the usable memory;\n"
          "read = checkpoint read once to score + kept weights read again to write; write = the pruned checkpoint.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
