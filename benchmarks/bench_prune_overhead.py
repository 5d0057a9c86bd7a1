"""What the whole pruning costs next to one plain forward pass over the same calibration tokens.

For each model it times, median of ``--repeats`` after ``--warmup`` untimed runs:
- ``forward``: one plain forward pass of the model (``use_cache=False``, batches of
  ``--batch-size``, LM head included) over the calibration tokens;
- ``prune``: :func:`miprun.pipeline.prune` on a fresh in-memory copy of the model with the same
  tokens: layer-by-layer hidden states, the one-pass score table, selection (with the
  default verify and refine, every candidate plan measured on the held-back windows),
  the plan check, surgery, and saving (weights, tokenizer when there is one, report.json,
  plots) - what ``miprun prune`` does after loading the model;
and prints the ratio ``prune / forward`` and the split of ``prune`` (targets: at most 4 x
in memory and 5 x streamed on SmolLM2). ``--placement offload`` (or ``device_map``) saves the
model once as a safetensors folder and prunes that folder streamed (or placed by
accelerate on the CPU) instead, the weights read from the shards for every sweep.
With ``--heal scale|linear`` the prune also heals (``heal`` column: the extra pass that fits
and folds the maps, also as a ratio to the forward pass).

Models: ``synthetic`` is a random Llama of 32 blocks, hidden 256; ``stories`` is the real
stories260K (5 blocks, hidden 64) from the shared data folder; ``smollm2`` is
SmolLM2-135M-Instruct (30 blocks, hidden 576) from its GGUF file, dequantised (each
skipped when absent).

Usage: PYTHONPATH=python python benchmarks/bench_prune_overhead.py [--models synthetic,stories]
       [--n-samples 32] [--seq-len 256] [--repeats 3] [--warmup 1] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import miprun  # noqa: E402
from miprun._native import native_available  # noqa: E402
from miprun.pipeline.prune import prune  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIPRUN_DATA", REPO.parent / "shared" / "data"))
STORIES = DATA / "models" / "stories260K-hf"
SMOLLM2 = DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def synthetic_model(seed: int = 0):
    """Random Llama: 32 blocks, hidden 256, 4 heads, MLP 688, vocab 2048."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=32,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048)
    return LlamaForCausalLM(config).eval(), None


def smollm2_model():
    from miprun.models.loading import load_model, load_tokenizer
    return load_model(SMOLLM2, dtype=torch.float32).eval(), load_tokenizer(SMOLLM2)


def stories_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(STORIES).eval(), AutoTokenizer.from_pretrained(STORIES)


def plain_forward(model, ids: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for i in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[i:i + batch_size], use_cache=False)


def _median_time(fn, repeats: int, warmup: int) -> tuple[float, list]:
    for _ in range(warmup):
        fn()
    times, results = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), results


def bench(name: str, model, tokenizer, args) -> dict:
    config = model.config
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, config.vocab_size, (args.n_samples, args.seq_len), generator=g)
    num_remove = args.num_blocks or max(1, config.num_hidden_layers // 4)
    forward_s, _ = _median_time(lambda: plain_forward(model, ids, args.batch_size), args.repeats, args.warmup)

    work = Path(tempfile.mkdtemp(prefix="bench-prune-"))

    folder = None
    if args.placement != "memory":  # a checkpoint folder to stream from (saving it is not timed)
        folder = work / "model"
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
    placement = {"offload": {"offload": True}, "device_map": {"device_map": "auto"}}.get(args.placement, {})

    def one_prune():
        source = copy.deepcopy(model) if folder is None else str(folder)  # prune removes blocks in place
        t = time.perf_counter()
        result = prune(source, ids, num_remove=num_remove, selector=args.selector, estimator=args.estimator,
                       out_dir=work / "out", overwrite=True, tokenizer=tokenizer, batch_size=args.batch_size,
                       progress=False, heal=args.heal, refine=args.refine, criterion=args.criterion,
                       screen=args.screen, **placement)
        return time.perf_counter() - t, result.timings

    for _ in range(args.warmup):
        one_prune()
    runs = [one_prune() for _ in range(args.repeats)]
    prune_s = statistics.median(r[0] for r in runs)
    steps = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
    return {"model": name, "blocks": config.num_hidden_layers, "hidden": config.hidden_size,
            "remove": num_remove, "tokens": ids.numel(), "forward_s": forward_s, "prune_s": prune_s,
            "ratio": prune_s / forward_s, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="synthetic,stories")
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-blocks", type=int, default=None, help="blocks to remove (default T // 4)")
    ap.add_argument("--estimator", default="hist")
    ap.add_argument("--selector", default="fast_block_select")
    ap.add_argument("--heal", default="none", choices=("none", "scale", "linear"))
    ap.add_argument("--refine", default="auto", type=lambda t: t if t == "auto" else int(t),
                    help="rounds of swap refinement after verify (default auto)")
    ap.add_argument("--criterion", default="kl", choices=("kl", "loss"))
    ap.add_argument("--screen", default="auto", type=lambda t: t if t == "auto" else int(t),
                    help="held-back windows that screen the candidates (default auto; 0: off)")
    ap.add_argument("--placement", default="memory", choices=("memory", "offload", "device_map"),
                    help="where prune reads the weights (forward is always the model in memory)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          f"load average {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}; "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, miprun {miprun.__version__}, native core {native_available()}")
    print(f"calibration: {args.n_samples} x {args.seq_len} tokens, batch {args.batch_size}; estimator "
          f"{args.estimator}, selector {args.selector}, refine {args.refine}, criterion {args.criterion}, screen "
          f"{args.screen}, heal {args.heal}, placement {args.placement}; median of {args.repeats} after "
          f"{args.warmup} warm-up")
    rows = []
    for name in args.models.split(","):
        where = {"stories": STORIES / "config.json", "smollm2": SMOLLM2}.get(name)
        if where is not None and not where.exists():
            print(f"{name}: skipped ({where} not found)")
            continue
        model, tok = {"synthetic": synthetic_model, "stories": stories_model, "smollm2": smollm2_model}[name]()
        rows.append(bench(name, model, tok, args))
    print()
    print("| model | blocks x hidden | remove | tokens | forward s | prune s | prune / forward | "
          "score s | select s | heal s (/ forward) | surgery s | save s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["steps"]
        heal = f"{s['heal']:.2f} ({s['heal'] / r['forward_s']:.2f} x)" if "heal" in s else "-"
        print(f"| {r['model']} | {r['blocks']} x {r['hidden']} | {r['remove']} | {r['tokens']} | "
              f"{r['forward_s']:.2f} | {r['prune_s']:.2f} | {r['ratio']:.2f} x | {s['score']:.2f} | "
              f"{s['select']:.3f} | {heal} | {s['surgery']:.3f} | {s['save']:.2f} |")


if __name__ == "__main__":
    main()
