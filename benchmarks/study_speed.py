"""Study 4: measured speed of pruned models against the share of blocks removed.

A synthetic Llama large enough for CPU timings to mean something (``--blocks`` blocks of
hidden ``--hidden``, MLP ``--intermediate``, vocabulary ``--vocab``; random weights - speed does
not depend on them) loses 0, 1/8, 1/4, 3/8, 1/2 and 3/4 of its blocks (the blocks removed do
not matter for speed: every block costs the same). For each model: prefill tokens/s of a
``(batch, length)`` prompt and decode tokens/s of ``--decode-tokens`` greedy steps on the KV
cache (:func:`miprun.evaluate.summary.prefill_and_decode`). Repeats are interleaved across the models
(round-robin), so drift of a shared machine hits all of them alike; medians after
``--warmup`` rounds. Speed-up is against the unpruned model measured in the same run;
"ideal" is ``T / (T - removed)``, what it would be if blocks were the whole cost (the
embedding lookup, final norm and output head are not removed).

Run: ``PYTHONPATH=python python benchmarks/study_speed.py`` (a few minutes on one CPU thread).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import transformers as tf
from study_common import machine, markdown, plot_path

from miprun.evaluate.summary import count_parameters, prefill_and_decode
from miprun.output.surgery import remove_blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(args.threads))
    T = args.blocks
    cfg = tf.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=T, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
                         max_position_embeddings=args.length + args.decode_tokens + 8, tie_word_embeddings=False)
    torch.manual_seed(0)
    base = tf.LlamaForCausalLM(cfg).eval()
    removed_counts = sorted({0, T // 8, T // 4, 3 * T // 8, T // 2, 3 * T // 4})
    models = {k: remove_blocks(copy.deepcopy(base), list(range(1, 1 + k))) if k else base for k in removed_counts}
    prompt = torch.randint(0, args.vocab, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    print(f"synthetic Llama: {T} blocks, hidden {args.hidden}, MLP {args.intermediate}, vocab {args.vocab}, "
          f"{count_parameters(base).total / 1e6:.1f} M parameters, fp32; prompt {args.batch} x {args.length}, "
          f"{args.decode_tokens} decode steps; {args.warmup} warm-up + {args.repeats} timed rounds, interleaved")
    times = {k: ([], []) for k in removed_counts}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for rnd in range(args.warmup + args.repeats):
            for k, m in models.items():
                pre, dec, _ = prefill_and_decode(m, prompt, args.decode_tokens)
                if rnd >= args.warmup:
                    times[k][0].append(pre)
                    times[k][1].append(dec)
    print(f"({time.perf_counter() - t0:.0f} s)\n")
    rows, points = [], []
    pre0, dec0 = (statistics.median(v) for v in times[0])
    for k in removed_counts:
        pre, dec = (statistics.median(v) for v in times[k])
        share = k / T
        pre_tps = args.batch * args.length / pre
        dec_tps = args.batch * args.decode_tokens / dec
        rows.append([k, f"{share:.3f}", f"{count_parameters(models[k]).total / 1e6:.1f}", f"{pre_tps:,.0f}",
                     f"{dec_tps:,.1f}", f"{pre0 / pre:.2f}x", f"{dec0 / dec:.2f}x", f"{T / (T - k):.2f}x"])
        points.append((share, pre0 / pre, dec0 / dec, T / (T - k)))
    print(markdown(["blocks removed", "share", "params (M)", "prefill tok/s", "decode tok/s", "prefill speed-up",
                    "decode speed-up", "ideal"], rows))
    _plot(points, T)


def _plot(points, T) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    share, pre, dec, ideal = zip(*points)
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=80)
    ax.plot(share, ideal, "k--", label="ideal T/(T-k)")
    ax.plot(share, pre, "o-", label="prefill")
    ax.plot(share, dec, "s-", label="decode")
    ax.set_xlabel(f"share of the {T} blocks removed")
    ax.set_ylabel("speed-up over unpruned")
    ax.legend(fontsize=8)
    ax.set_title("Measured speed-up of pruned models (CPU)", fontsize=9)
    fig.tight_layout()
    path = plot_path("study_speed.png")
    fig.savefig(path)
    print(f"\nplot: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
