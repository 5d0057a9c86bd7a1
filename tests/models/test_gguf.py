"""GGUF in: a .gguf file (or a folder holding one) is a MODEL for every command, loaded dequantised."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch
from support import DATA, requires_native, torch_threads
from tiny_models import greedy
from transformers import AutoModelForCausalLM

from miprun.cli import main as cli
from miprun.models import gguf as gguf_mod
from miprun.models.gguf import check_placement, find_gguf, require_gguf
from miprun.models.loading import inspect_model, load_config, load_model, load_tokenizer, local_dir
from miprun.output.surgery import remove_blocks

SMOL = DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CALIB = DATA / "text" / "wikitext-2-raw" / "wiki.valid.raw"
HAS_GGUF = importlib.util.find_spec("gguf") is not None



@pytest.fixture(autouse=True)
def two_threads():
    with torch_threads(2):
        yield


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- finding the file (no gguf needed)
def test_find_gguf_file_folder_and_refusals(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "m.Q4_0.gguf").write_bytes(b"GGUF")
    (one / "README.md").write_text("x")
    assert find_gguf(one) == (one / "m.Q4_0.gguf").resolve()
    assert find_gguf(one / "m.Q4_0.gguf") == (one / "m.Q4_0.gguf").resolve()
    assert local_dir(one / "m.Q4_0.gguf") == one.resolve()  # the folder holding it: protected from output

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(b"")
    (hf / "extra.gguf").write_bytes(b"GGUF")
    assert find_gguf(hf) is None  # safetensors: a Hugging Face folder

    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (two / name).write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="holds 2 GGUF files .*give the one to use"):
        find_gguf(two)

    split = tmp_path / "m-00001-of-00002.gguf"
    split.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="split GGUF .*llama-gguf-split --merge"):
        find_gguf(split)

    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        local_dir(tmp_path / "weights.bin")


def test_missing_gguf_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(gguf_mod.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'miprun\[gguf\]'"):
        require_gguf()


def test_offload_and_device_map_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="--offload .*quantised blocks in one file.*drop --offload"):
        check_placement("m.gguf", offload=True)
    with pytest.raises(ValueError, match="--device-map .*drop --device-map"):
        check_placement("m.gguf", device_map="auto")
    check_placement("m.gguf", offload="auto")  # auto: loaded whole


# ----------------------------------------------------------------------------- the real SmolLM2 file
@pytest.fixture(scope="module")
def smol():
    """SmolLM2-135M-Instruct loaded dequantised from its Q4_1 file (once for the module)."""
    if not HAS_GGUF or not SMOL.exists():
        pytest.skip(f"needs the gguf package and {SMOL}")
    torch.set_num_threads(2)
    return load_model(SMOL)


@pytest.mark.parametrize("where", ["file", "folder"])
def test_config_tokenizer_and_model_load_dequantised(smol, where):
    model_path = SMOL if where == "file" else SMOL.parent
    info = inspect_model(model_path)
    assert info.num_blocks == 30 and info.config.model_type == "llama"
    assert info.gguf_file == SMOL.resolve() and info.folder == SMOL.parent.resolve()
    assert load_config(model_path).num_hidden_layers == 30
    tok = load_tokenizer(model_path)
    assert tok.decode(tok("The capital of France")["input_ids"], skip_special_tokens=True) == "The capital of France"
    # dequantised: plain float32 Linear layers, no quantiser left to be saved with the model
    q = smol.model.layers[0].self_attn.q_proj
    assert type(q) is torch.nn.Linear and q.weight.dtype == torch.float32
    assert getattr(smol.config, "quantization_config", None) is None
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = smol(ids).logits
    assert torch.isfinite(logits).all()


@requires_native
@pytest.mark.requires_data(SMOL, CALIB)
def test_cli_prune_gguf_to_hf_checkpoint_reloads_and_generates(smol, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, err = _run(["prune", SMOL, "--num-remove", 4, "--calib", CALIB, "--n-samples", 2, "--seq-len", 64,
                              "--out", out, "--quiet", "--no-plots"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    removed = report["pruned_blocks"]
    assert len(removed) == 4 and report["num_blocks_after"] == 26
    assert report["kept_blocks"] == [i for i in range(30) if i not in removed]
    assert report["settings"]["options"]["output"]["format"] == "hf"
    assert report["settings"]["options"]["calibration"]["n_samples"] == 2
    assert not list(out.glob("*.gguf")) and (out / "tokenizer.json").exists()

    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 26
    tok = load_tokenizer(out)
    ids = tok("Once upon a time, there was", return_tensors="pt").input_ids
    with_cache, without = greedy(reloaded, ids, 6, True), greedy(reloaded, ids, 6, False)
    assert torch.equal(with_cache, without)
    # the checkpoint holds the dequantised model with the same blocks removed
    expected = copy.deepcopy(smol)
    remove_blocks(expected, removed)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(ids).logits, expected(ids).logits, rtol=0, atol=0)


@requires_native
@pytest.mark.requires_data(SMOL, CALIB)
def test_cli_offload_with_gguf_is_one_clear_line(tmp_path, capsys):
    if not HAS_GGUF:
        pytest.skip("the gguf package is not installed")
    out = tmp_path / "never"
    code, _, err = _run(["prune", SMOL, "--num-remove", 2, "--calib", CALIB, "--n-samples", 2, "--seq-len", 32,
                         "--offload", "--out", out, "--quiet"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "--offload" in err and "quantised blocks in one file" in err
    assert not out.exists()


@pytest.mark.requires_data(SMOL)
def test_cli_eval_device_map_with_gguf_is_refused(tmp_path, capsys):
    if not HAS_GGUF:
        pytest.skip("the gguf package is not installed")
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 50)
    code, _, err = _run(["eval", SMOL, "--ppl", text, "--device-map", "auto"], capsys)
    assert code == 2 and "--device-map" in err and "GGUF" in err
