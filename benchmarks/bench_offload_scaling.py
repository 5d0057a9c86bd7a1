"""Does streaming (offload) keep peak memory flat as models get deeper?

Writes synthetic sharded Llama checkpoints of the same width and 8, 32 and 80 blocks
(bf16 on disk, random weights), then runs ``miprun.pipeline.prune(..., offload=True)`` (score every
run, select, write the pruned checkpoint shard by shard) on each in a FRESH subprocess and
reports that process's peak resident memory (``VmHWM``, reset at its start) and time per block. For
contrast it also runs the in-memory path (``offload=False``) on the smallest and largest
model, and checks that streaming and in-memory give the identical score table and plan.

Target: peak RSS of the deepest streamed run within 1.25x of the shallowest.

    PYTHONPATH=python python benchmarks/bench_offload_scaling.py [--blocks 8 32 80] [--hidden 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.25


def write_checkpoint(folder: Path, num_blocks: int, hidden: int, intermediate: int, vocab: int,
                     shard_mb: int, seed: int = 0) -> int:
    """A random Llama checkpoint in bf16, written shard by shard straight from the tensor shapes."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=num_blocks,
                         num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
                         vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, dtype=torch.bfloat16)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    g = torch.Generator().manual_seed(seed)
    shards: list[dict] = [{}]
    size = 0
    for name, shape in shapes.items():
        if size > shard_mb * 2 ** 20:
            shards.append({})
            size = 0
        # Norm weights near 1, matrices with the usual 0.02 scale: a plausible, stable network.
        t = (1.0 + 0.1 * torch.randn(shape, generator=g)) if name.endswith("norm.weight") else \
            0.02 * torch.randn(shape, generator=g)
        shards[-1][name] = t.to(torch.bfloat16)
        size += t.numel() * 2
    weight_map, total = {}, 0
    for i, tensors in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, folder / fname, metadata={"format": "pt"})
        for k, v in tensors.items():
            weight_map[k] = fname
            total += v.numel() * 2
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return total


def reset_peak() -> None:
    """Start this process's peak RSS afresh: a child of fork + exec inherits its parent's peak in ``ru_maxrss``
    (Linux keeps the pre-exec high-water mark), which here is the parent that built the checkpoints."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_kb() -> int:
    """This process's peak RSS since :func:`reset_peak`, in kB (``VmHWM``; ``ru_maxrss`` where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args) -> None:
    """One measured run in this (fresh) process; prints one JSON line."""
    reset_peak()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import transformers.models.llama.modeling_llama  # noqa: F401  (imports are not the run's memory)
    from miprun.pipeline.prune import prune

    start_kb = peak_kb()

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, args.vocab, (args.n_samples, args.seq_len), generator=g)
    t0 = time.perf_counter()
    result = prune(args.model, ids, num_remove=args.remove, offload=args.mode == "offload", out_dir=args.out,
                   dtype=torch.float32, batch_size=args.batch_size, device="cpu", plots=False, progress=False)
    wall = time.perf_counter() - t0
    np.save(args.table, result.table.values)
    end_kb = peak_kb()
    print(json.dumps({"peak_mb": end_kb / 1024, "start_mb": start_kb / 1024, "wall_s": wall,
                      "score_s": result.timings.get("score"), "save_s": result.timings.get("save"),
                      "removed": list(result.plan.removed)}))


def block_flops(hidden: int, intermediate: int, seq_len: int) -> float:
    """Forward FLOPs per token of one Llama block: 2 per weight, plus causal attention (2 * seq_len * hidden).

    The synthetic models have as many key/value heads as query heads: q, k, v, o are hidden x hidden.
    """
    params = 4 * hidden * hidden + 3 * hidden * intermediate
    return 2.0 * params + 2.0 * seq_len * hidden


def planned_mb(model: Path, args) -> float:
    """The working set streaming plans for (miprun.hidden.memory): one block + states + batch + window, in MB."""
    import torch
    from miprun.hidden.memory import window_bytes
    from miprun.hidden.stream import prepare_offload

    tokens = args.n_samples * args.seq_len
    window = window_bytes("hist", n_tokens=tokens, hidden=args.hidden, max_run=args.remove)
    plan = prepare_offload(model, n_samples=args.n_samples, seq_len=args.seq_len, batch_size=args.batch_size,
                           dtype=torch.float32, device="cpu", window_bytes=window)
    return plan.estimate.peak_bytes / 2 ** 20


def run_child(model: Path, mode: str, out: Path, table: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", str(model), "--mode", mode, "--out", str(out),
           "--table", str(table), "--n-samples", str(args.n_samples), "--seq-len", str(args.seq_len),
           "--batch-size", str(args.batch_size), "--remove", str(args.remove), "--vocab", str(args.vocab),
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "python"),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run on {model} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, nargs="+", default=[8, 32, 80])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--shard-mb", type=int, default=40)
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--remove", type=int, default=2, help="blocks to remove (also the longest run scored)")
    p.add_argument("--repeats", type=int, default=1, help="runs per size (median reported)")
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--workdir", default=None, help="where checkpoints go (default: a temporary folder)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--table", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0

    import numpy as np
    import torch
    import transformers

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, {platform.platform()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"model: Llama, hidden {args.hidden}, intermediate {args.intermediate}, vocab {args.vocab}, bf16 on disk, "
          f"float32 compute on cpu, {args.threads} threads")
    print(f"calibration: {args.n_samples} x {args.seq_len} tokens, batch {args.batch_size}; hist pooled, "
          f"max_run {args.remove}; prune {args.remove} blocks; {args.repeats} run(s) per size, median")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="offload-bench-"))
    rows = []
    tables = {}
    try:
        for num_blocks in args.blocks:
            model = work / f"llama-{num_blocks}"
            if not model.exists():
                write_checkpoint(model, num_blocks, args.hidden, args.intermediate, args.vocab, args.shard_mb)
            size_mb = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 2 ** 20
            shards = len(list(model.glob("*.safetensors")))
            modes = ["offload"] + (["memory"] if num_blocks in (min(args.blocks), max(args.blocks)) else [])
            for mode in modes:
                runs = [run_child(model, mode, work / "out", work / f"table-{num_blocks}-{mode}.npy", args)
                        for _ in range(args.repeats)]
                tables[(num_blocks, mode)] = (np.load(work / f"table-{num_blocks}-{mode}.npy"), runs[0]["removed"])
                rows.append({"blocks": num_blocks, "mode": mode, "ckpt_mb": size_mb, "shards": shards,
                             "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                             "grown_mb": statistics.median(r["peak_mb"] - r["start_mb"] for r in runs),
                             "planned_mb": planned_mb(model, args) if mode == "offload" else float("nan"),
                             "score_s": statistics.median(r["score_s"] for r in runs),
                             "wall_s": statistics.median(r["wall_s"] for r in runs),
                             "save_s": statistics.median(r["save_s"] for r in runs)})
                r = rows[-1]
                print(f"  done: {num_blocks} blocks, {mode}: peak {r['peak_mb']:.0f} MB, {r['wall_s']:.1f} s",
                      flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    print()
    flops = block_flops(args.hidden, args.intermediate, args.seq_len) * args.n_samples * args.seq_len
    print(f"{'blocks':>6} {'mode':>8} {'ckpt MB':>8} {'shards':>6} {'peak RSS MB':>11} {'growth MB':>9} "
          f"{'planned MB':>10} {'score s/block':>13} {'GFLOP/s':>8} {'save s':>7} {'total s':>8}")
    for r in rows:
        per_block = r["score_s"] / r["blocks"]
        print(f"{r['blocks']:>6} {r['mode']:>8} {r['ckpt_mb']:>8.0f} {r['shards']:>6} {r['peak_mb']:>11.0f} "
              f"{r['grown_mb']:>9.0f} {r['planned_mb']:>10.1f} {per_block:>13.3f} {flops / per_block / 1e9:>8.1f} "
              f"{r['save_s']:>7.2f} {r['wall_s']:>8.1f}")
    print("growth = peak RSS minus RSS after imports; planned = miprun.hidden.memory's estimate for streaming "
          "(one block + 2 states + batch + window); GFLOP/s = block forward FLOPs / (score time per block), "
          "scoring and weight loading included")
    streamed = [r for r in rows if r["mode"] == "offload"]
    ratio = streamed[-1]["peak_mb"] / streamed[0]["peak_mb"]
    print(f"\npeak RSS ratio, streamed {streamed[-1]['blocks']} vs {streamed[0]['blocks']} blocks: {ratio:.3f} "
          f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    for n in (min(args.blocks), max(args.blocks)):
        if (n, "memory") in tables:
            (a, pa), (b, pb) = tables[(n, "offload")], tables[(n, "memory")]
            same = np.array_equal(a, b, equal_nan=True) and pa == pb
            print(f"{n} blocks: streamed and in-memory score tables {'identical' if same else 'DIFFER'} "
                  f"(max |diff| {np.nanmax(np.abs(a - b)):.3g}), plans {pa} vs {pb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
