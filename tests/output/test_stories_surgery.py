"""Surgery on the real pretrained stories260K Llama: reload equals the identity reference; input untouched."""

from __future__ import annotations

import copy

import torch
import transformers as tf
from support import STORIES, requires_stories
from tiny_models import blocks_as_identity, folder_digest, greedy, one_thread  # noqa: F401

from miprun.selection.plan import Plan
from miprun.output.plots import standard_plots
from miprun.output.report import build_report, describe_source
from miprun.output.save import save_pruned
from miprun.models.blocks import find_blocks
from miprun.output.surgery import remove_blocks


@requires_stories
def test_stories260k_remove_save_reload(tmp_path):
    tf.logging.set_verbosity_error()
    digest = folder_digest(STORIES)
    tok = tf.AutoTokenizer.from_pretrained(STORIES)
    model = tf.AutoModelForCausalLM.from_pretrained(STORIES, attn_implementation="eager", dtype=torch.float32)
    ids = tok("Once upon a time there was a little dog named", return_tensors="pt")["input_ids"]
    blocks, _ = find_blocks(model)
    with torch.no_grad():
        full = model(ids).logits
        with blocks_as_identity(blocks, [1, 3]):
            reference = model(ids).logits
    assert (full - reference).abs().max() > 1e-2
    source = describe_source(model, STORIES)
    pruned = remove_blocks(copy.deepcopy(model), [1, 3])
    plan = Plan(removed=[1, 3], num_blocks=5, selector="manual")
    out = save_pruned(pruned, tok, tmp_path / "stories-pruned", report=build_report(plan, None, {}, {}, source),
                      source_dir=STORIES, plots=standard_plots(None))
    reloaded = tf.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert reloaded.config.num_hidden_layers == 3
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, reference, atol=1e-5, rtol=0)
    assert torch.equal(greedy(reloaded, ids, 8, use_cache=True), greedy(reloaded, ids, 8, use_cache=False))
    assert tf.AutoTokenizer.from_pretrained(out)("a dog")["input_ids"] == tok("a dog")["input_ids"]
    assert folder_digest(STORIES) == digest
