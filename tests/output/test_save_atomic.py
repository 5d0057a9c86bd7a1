"""save_pruned / atomic_output_dir: complete output or none, existing output and the input never harmed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
import transformers as tf
from tiny_models import VOCAB, folder_digest, one_thread, tiny_model  # noqa: F401

from miprun.output.guard import OutputDirError, atomic_output_dir, check_output_dir
from miprun.output.save import save_pruned
from miprun.output.surgery import remove_blocks


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture
def source(tmp_path):
    """A model saved to a folder and loaded back from it (so it knows its folder), and that folder."""
    tf.logging.set_verbosity_error()
    src = tmp_path / "input-model"
    tiny_model("llama").save_pretrained(src)
    model = tf.AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager")
    return remove_blocks(model, [2, 3]), src


def _marker(folder: Path) -> Path:
    """An earlier miprun output: its report.json, and a file to tell it apart."""
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"format_version": 1, "pruned_blocks": [1]}))
    (folder / "marker.txt").write_text("old output")
    return folder / "marker.txt"


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_save_writes_a_loadable_checkpoint_tokenizer_report_and_plots(source, tmp_path):
    model, src = source
    digest = folder_digest(src)
    tok = tiny_tokenizer()
    report = {"pruned_blocks": [2, 3], "score": float("nan"), "count": torch.tensor(3)}
    out = save_pruned(model, tok, tmp_path / "out", report=report,
                      plots={"raw.bin": b"\x89PNG-ish", "made.txt": lambda p: p.write_text("made")})
    assert out == (tmp_path / "out").absolute() and out.is_dir()
    assert (out / "config.json").exists() and list(out.glob("*.safetensors"))
    reloaded = tf.AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[5, 9, 17, 33]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-6, rtol=0)
    assert tf.AutoTokenizer.from_pretrained(out)("w5 w9 w17")["input_ids"] == tok("w5 w9 w17")["input_ids"]
    strict = json.loads((out / "report.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert strict == {"pruned_blocks": [2, 3], "score": None, "count": 3}
    assert (out / "raw.bin").read_bytes() == b"\x89PNG-ish" and (out / "made.txt").read_text() == "made"
    assert _entries(tmp_path) == {"input-model", "out"}  # no temporary folders left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert folder_digest(src) == digest


def test_existing_output_is_refused_and_untouched(source, tmp_path):
    model, _ = source
    marker = _marker(tmp_path / "out")
    with pytest.raises(OutputDirError, match=r"out .*already exists; pass overwrite=True"):
        save_pruned(model, None, tmp_path / "out")
    assert marker.read_text() == "old output" and _entries(tmp_path / "out") == {"marker.txt", "report.json"}
    assert _entries(tmp_path) == {"input-model", "out"}


def test_overwrite_replaces_the_output(source, tmp_path):
    model, _ = source
    _marker(tmp_path / "out")
    out = save_pruned(model, None, tmp_path / "out", overwrite=True, report={"a": 1})
    assert not (out / "marker.txt").exists() and (out / "config.json").exists()
    assert json.loads((out / "report.json").read_text()) == {"a": 1}
    assert _entries(tmp_path) == {"input-model", "out"}


@pytest.mark.parametrize("where", ["model", "plot"])
def test_failure_midway_leaves_nothing_and_keeps_old_output(source, tmp_path, monkeypatch, where):
    model, src = source
    digest = folder_digest(src)
    real_save = model.save_pretrained

    def save_then_fail(path, **kw):
        real_save(path, **kw)  # a partial output exists at this point
        raise RuntimeError("disk full")

    plots = None
    if where == "model":
        monkeypatch.setattr(model, "save_pretrained", save_then_fail)
    else:
        plots = {"broken.png": lambda p: (p.write_bytes(b"half"), 1 / 0)}
    error = RuntimeError if where == "model" else ZeroDivisionError

    with pytest.raises(error):  # a new folder, with parents to create
        save_pruned(model, None, tmp_path / "a" / "b" / "out", plots=plots)
    assert not (tmp_path / "a").exists()

    marker = _marker(tmp_path / "out")
    with pytest.raises(error):  # replacing an old output
        save_pruned(model, None, tmp_path / "out", overwrite=True, plots=plots)
    assert marker.read_text() == "old output" and _entries(tmp_path / "out") == {"marker.txt", "report.json"}
    assert _entries(tmp_path) == {"input-model", "out"}
    assert folder_digest(src) == digest


def test_interrupt_cleans_up(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "x").write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_writes_beside_and_renames(tmp_path):
    with atomic_output_dir(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        assert not (tmp_path / "out").exists()
        (tmp / "f").write_text("done")
    assert (tmp_path / "out" / "f").read_text() == "done"
    assert _entries(tmp_path) == {"out"}


def test_output_that_appears_while_writing_is_not_replaced(tmp_path):
    with pytest.raises(OutputDirError, match="appeared while writing"):
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("new")
            _marker(tmp_path / "out")
    assert _entries(tmp_path / "out") == {"marker.txt", "report.json"} and _entries(tmp_path) == {"out"}


def test_input_folder_is_protected(source, tmp_path):
    model, src = source
    digest = folder_digest(src)
    for out, overwrite in ((src, True), (src / "pruned", False), (tmp_path, True)):
        # the same folder, a folder inside it, and a folder whose replacement would delete it;
        # the source is found from the model itself (it was loaded from src).
        with pytest.raises(OutputDirError, match="input model folder"):
            save_pruned(model, None, out, overwrite=overwrite)
        with pytest.raises(OutputDirError, match="input model folder"):
            check_output_dir(out, overwrite=overwrite, source_dir=src)
    assert folder_digest(src) == digest and _entries(src) == {"config.json", "generation_config.json",
                                                             "model.safetensors"}


def test_symlink_and_file_outputs_are_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is a symlink"):
        check_output_dir(tmp_path / "link", overwrite=True)
    with pytest.raises(OutputDirError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file", overwrite=True)


def test_check_output_dir_is_absolute_and_accepts_new_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output_dir("new/deeper") == tmp_path.resolve() / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # validation only


def test_bad_plot_name_is_refused_before_writing(source, tmp_path):
    model, _ = source
    with pytest.raises(ValueError, match="plain file name"):
        save_pruned(model, None, tmp_path / "out", plots={"../escape.png": b""})
    assert not (tmp_path / "out").exists()
