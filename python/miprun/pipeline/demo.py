"""``miprun demo``: prune a small random Llama whose redundant blocks are known in advance.

A Llama of 8 blocks is built with random weights, and in a few chosen blocks the output
projections of both residual branches (attention ``o_proj`` and MLP ``down_proj``) are
scaled by ``1e-3``: those blocks pass their input through almost unchanged. Calibration
text comes from a small seeded sentence generator, tokenised by a word-level tokenizer
built on the spot, so nothing is downloaded. The pipeline then runs with its defaults (scores,
Fast-Block-Select's plans verified and refined by measurement), removes the blocks, saves,
reloads with ``from_pretrained`` and generates; it should find exactly the planted blocks.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

from miprun.pipeline.prune import prune

__all__ = ["DemoResult", "run_demo", "demo_tokenizer", "demo_text", "demo_model", "PLANTED"]

PLANTED = (2, 5, 6)  # a single block and a run of two
NUM_BLOCKS = 8
HIDDEN = 96
PLANT_SCALE = 1e-3

_WORDS = {
    "det": "the a one every that this".split(),
    "adj": "little big red happy old quiet brave small green bright sleepy kind tall".split(),
    "noun": "cat dog bird girl boy tree house ball river friend mouse sun car book fox king".split(),
    "verb": "sees finds likes helps follows chases paints carries hears loves".split(),
    "adv": "slowly quickly happily again today softly".split(),
    "prep": "near under behind with over".split(),
}
_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


@dataclass
class DemoResult:
    """What the demo found.

    Attributes
    ----------
    planted : list[int]
        Blocks made near-identity.
    found : list[int]
        Blocks the pipeline removed.
    out_dir : Path
        The saved pruned model (with ``report.json``).
    generated : str
        Text the reloaded pruned model generated.
    single_block_scores : list[float]
        MI in nats of each block's input and output.
    """

    planted: list[int]
    found: list[int]
    out_dir: Path
    generated: str
    single_block_scores: list[float]

    @property
    def found_planted(self) -> bool:
        return sorted(self.found) == sorted(self.planted)


def _vocabulary() -> list[str]:
    words = sorted({w for group in _WORDS.values() for w in group} | {".", ","})
    return _SPECIALS + words


def demo_tokenizer():
    """A word-level fast tokenizer over the demo's vocabulary (built in memory, no files)."""
    vocab = {w: i for i, w in enumerate(_vocabulary())}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def demo_text(seed: int = 0, n_stories: int = 200) -> str:
    """Seeded short stories from a tiny grammar, separated by ``<|endoftext|>``."""
    rng = random.Random(seed)
    w = {k: v for k, v in _WORDS.items()}

    def phrase() -> str:
        return f"{rng.choice(w['det'])} {rng.choice(w['adj'])} {rng.choice(w['noun'])}"

    stories = []
    for _ in range(n_stories):
        sentences = []
        for _ in range(rng.randint(3, 7)):
            s = f"{phrase()} {rng.choice(w['verb'])} {phrase()}"
            if rng.random() < 0.5:
                s += f" {rng.choice(w['prep'])} {phrase()}"
            if rng.random() < 0.3:
                s += f" , {rng.choice(w['adv'])}"
            sentences.append(s + " .")
        stories.append(" ".join(sentences))
    return "<|endoftext|>".join(stories)


def demo_model(tokenizer, *, seed: int = 0, planted=PLANTED, num_blocks: int = NUM_BLOCKS, hidden: int = HIDDEN):
    """A random Llama with the ``planted`` blocks made near-identity (residual outputs scaled by 1e-3)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=num_blocks, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True, initializer_range=0.1, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for b in planted:
            layer = model.model.layers[b]
            layer.self_attn.o_proj.weight.mul_(PLANT_SCALE)
            layer.mlp.down_proj.weight.mul_(PLANT_SCALE)
    model.name_or_path = "miprun-demo (random Llama)"
    return model


def run_demo(out_dir=None, *, overwrite: bool = False, seed: int = 0, progress: bool = True,
             planted=PLANTED, print_fn=print) -> DemoResult:
    """Build, prune, save, reload and generate; print what was found.

    Parameters
    ----------
    out_dir : path, optional
        Where to save the pruned model; default a new temporary folder (kept, and printed).
    overwrite : bool
        Replace an existing ``out_dir``.
    seed : int
        Seeds the model, the text and the estimator.
    progress : bool
        Progress bars (only when stderr is a terminal).
    planted : sequence of int
        Blocks to make near-identity.
    print_fn : callable
        Where the summary lines go.
    """

    tokenizer = demo_tokenizer()
    model = demo_model(tokenizer, seed=seed, planted=planted)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="miprun-demo-")) / "pruned"
    print_fn(f"demo: random Llama, {NUM_BLOCKS} blocks, hidden {HIDDEN}; near-identity blocks planted at "
             f"{sorted(planted)}")
    with tempfile.TemporaryDirectory(prefix="miprun-demo-text-") as work:
        calib = Path(work) / "stories.txt"
        calib.write_text(demo_text(seed), encoding="utf-8")
        # the defaults: Fast-Block-Select's plans verified and refined by the KL divergence from the unpruned
        # model (on random weights the calibration loss would reward noise; the KL points at the planted blocks)
        result = prune(model, calib, tokenizer=tokenizer, num_remove=len(planted), out_dir=out, overwrite=overwrite,
                       seed=seed, n_samples=32, seq_len=64, batch_size=8, progress=progress)
    single = [float(v) for v in result.table.single_block()]
    print_fn("single-block MI (nats): " + "  ".join(f"{i}:{v:.3f}" for i, v in enumerate(single)))
    found = list(result.plan.removed)
    verdict = "found the planted blocks" if sorted(found) == sorted(planted) else "MISSED the planted blocks"
    measured = result.report.get("measure", {}).get("measured", 0)
    print_fn(f"removed {found} (Fast-Block-Select read {result.plan.evaluations} run scores; {measured} plans "
             f"measured by verify and refine): {verdict}")

    reloaded = AutoModelForCausalLM.from_pretrained(result.out_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.out_dir)
    prompt = tok("the little cat", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        ids = reloaded.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(ids[0], skip_special_tokens=True)
    print_fn(f"reloaded the pruned model ({reloaded.config.num_hidden_layers} blocks) and generated: {text!r}")
    print_fn(f"pruned model and report: {Path(result.out_dir) / 'report.json'}")
    return DemoResult(planted=sorted(planted), found=found, out_dir=Path(result.out_dir), generated=text,
                      single_block_scores=single)
