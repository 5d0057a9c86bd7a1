"""GGUF out: the input file's kept blocks copied as they are, renumbered, with the per-layer metadata trimmed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import DATA, requires_native, torch_threads
from tiny_models import save_sharded, tiny_model

import miprun
from miprun.cli import main as cli
from miprun.models.loading import load_model, load_tokenizer
from miprun.output.gguf import write_pruned_gguf
from miprun.output.surgery import remove_blocks

SMOL = DATA / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = Path.home() / ".cache" / "miprun" / "models" / "gemma-3-270m" / "gemma-3-270m-q4_k_m.gguf"
CALIB = DATA / "text" / "wikitext-2-raw" / "wiki.valid.raw"
HAS_GGUF = importlib.util.find_spec("gguf") is not None
needs_gguf = pytest.mark.skipif(not HAS_GGUF, reason="the gguf package is not installed (pip install 'miprun[gguf]')")

# The pruned file holds the very bytes of the kept blocks, which transformers dequantises with the
# same code into the same float32 weights as the model pruned in memory: the two forwards run the
# same operations on the same numbers. A tolerance of a few float32 ulps (rtol 1e-5, atol 1e-5 on
# logits of size ~10-30) covers only a different summation order in a matmul kernel (threads).
RTOL = ATOL = 1e-5


@pytest.fixture(autouse=True)
def two_threads():
    with torch_threads(2):
        yield


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _block_bytes(reader) -> tuple[int, dict[int, int]]:
    """The file's block count and the tensor bytes of each block."""
    arch = reader.fields["general.architecture"].contents()
    per_block: dict[int, int] = {}
    for t in reader.tensors:
        if t.name.startswith("blk."):
            i = int(t.name.split(".")[1])
            per_block[i] = per_block.get(i, 0) + int(t.n_bytes)
    return int(reader.fields[f"{arch}.block_count"].contents()), per_block


# ----------------------------------------------------------------------------- a synthetic file (fast, exact)
@needs_gguf
def test_tensors_copied_renumbered_and_per_layer_arrays_trimmed(tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

    src = tmp_path / "in" / "toy.gguf"
    src.parent.mkdir()
    w = GGUFWriter(src, arch="llama")
    w.add_block_count(4)
    w.add_key_value("llama.attention.head_count", [1, 2, 3, 4], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT32)
    w.add_key_value("llama.feed_forward_length", [10, 20, 30, 40], GGUFValueType.ARRAY,
                    sub_type=GGUFValueType.UINT32)
    w.add_key_value("llama.rope.sections", [7, 8, 9], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
    w.add_key_value("tokenizer.ggml.tokens", ["a", "b", "c", "d"], GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((4, 32), dtype=np.float32))
    for i in range(4):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.full(32, float(i), dtype=np.float32))
        q = quants.quantize(rng.standard_normal((8, 32), dtype=np.float32), GGMLQuantizationType.Q8_0)
        w.add_tensor(f"blk.{i}.ffn_up.weight", q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    before = _sha256(src)

    out = write_pruned_gguf(src, [1, 2], tmp_path / "out", report={"pruned_blocks": [1, 2], "format_version": 1})
    assert _sha256(src) == before
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "toy.gguf"]
    old, new = GGUFReader(src), GGUFReader(out / "toy.gguf")
    assert new.fields["llama.block_count"].contents() == 2
    assert new.fields["llama.attention.head_count"].contents() == [1, 4]
    assert new.fields["llama.feed_forward_length"].contents() == [10, 40]
    assert new.fields["llama.rope.sections"].contents() == [7, 8, 9]  # not per layer
    assert new.fields["tokenizer.ggml.tokens"].contents() == ["a", "b", "c", "d"]  # not the model's namespace
    assert "llama.attention.sliding_window_pattern" not in new.fields
    tensors_old = {t.name: t for t in old.tensors}
    names = [t.name for t in new.tensors]
    assert names == ["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.ffn_up.weight", "blk.1.attn_norm.weight",
                     "blk.1.ffn_up.weight"]
    for t in new.tensors:
        source = t.name.replace("blk.1.", "blk.3.")
        assert t.tensor_type == tensors_old[source].tensor_type  # Q8_0 stays Q8_0
        assert list(t.shape) == list(tensors_old[source].shape)
        assert np.array_equal(np.asarray(t.data), np.asarray(tensors_old[source].data))  # the very bytes

    with pytest.raises(ValueError, match="cannot remove all 4 blocks"):
        write_pruned_gguf(src, [0, 1, 2, 3], tmp_path / "all")
    with pytest.raises(ValueError, match=r"must lie in 0..3"):
        write_pruned_gguf(src, [4], tmp_path / "bad")
    with pytest.raises(ValueError, match="output.*inside|inside.*input"):
        write_pruned_gguf(src, [1], src.parent / "nested")
    assert not (tmp_path / "all").exists() and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- real files
def _check_pruned_file(src: Path, out_file: Path, removed: list[int], arch: str) -> dict:
    from gguf import GGUFReader
    reader = GGUFReader(out_file)
    total, per_block = _block_bytes(GGUFReader(src))
    new_total, _ = _block_bytes(reader)
    assert new_total == total - len(removed)
    for name, field in reader.fields.items():  # every per-layer array has one entry per kept block
        if name.startswith(f"{arch}.") and len(field.types) > 1:
            assert len(field.data) != total, name
    shrink = src.stat().st_size - out_file.stat().st_size
    expected = sum(per_block[i] for i in removed)
    # the removed blocks' bytes, give or take the alignment padding and a few metadata bytes
    assert abs(shrink - expected) < 64 * 1024, (shrink, expected)
    return {"before": src.stat().st_size, "after": out_file.stat().st_size, "removed_bytes": expected}


@requires_native
@needs_gguf
@pytest.mark.requires_data(SMOL, CALIB)
def test_smollm2_pruned_gguf_matches_the_model_pruned_in_memory(tmp_path):
    before = _sha256(SMOL)
    result = miprun.prune(SMOL, CALIB, num_remove=6, n_samples=2, seq_len=64, out_dir=tmp_path / "out",
                          format="gguf", plots=False, progress=False)
    removed = list(result.plan.removed)
    out_file = tmp_path / "out" / SMOL.name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([SMOL.name, "report.json"])
    assert _sha256(SMOL) == before
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pruned_blocks"] == removed and report["num_blocks_after"] == 24
    assert report["settings"]["options"]["output"]["format"] == "gguf"
    sizes = _check_pruned_file(SMOL, out_file, removed, "llama")
    assert sizes["after"] < sizes["before"] * (1 - 0.5 * 6 / 30)

    # result.model is the model loaded from the original file, dequantised, with remove_blocks applied
    reloaded = load_model(tmp_path / "out")  # the output folder holds one .gguf: it is a MODEL again
    assert reloaded.config.num_hidden_layers == 24
    tok = load_tokenizer(tmp_path / "out")
    ids = tok("The quick brown fox jumps over the lazy dog because", return_tensors="pt").input_ids
    with torch.inference_mode():
        got, want = reloaded(ids).logits, result.model(ids).logits
    print(f"SmolLM2 Q4_1: {sizes}, max |logit difference| {(got - want).abs().max().item():.3g}")
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@needs_gguf
@pytest.mark.requires_data(GEMMA)
def test_gemma3_pruned_gguf_keeps_attention_kinds_and_logits(tmp_path):
    """Gemma 3 computes sliding or full attention (and a different RoPE base) by block; removing
    blocks 1, 2 and 9 moves the full-attention blocks 5, 11, 17 to 3, 8, 14, which the file must record."""
    before = _sha256(GEMMA)
    removed = [1, 2, 9]
    expected = load_model(GEMMA)
    kinds = list(expected.config.layer_types)
    remove_blocks(expected, removed)
    out = write_pruned_gguf(GEMMA, removed, tmp_path / "out")
    out_file = out / GEMMA.name
    assert _sha256(GEMMA) == before
    sizes = _check_pruned_file(GEMMA, out_file, removed, "gemma3")
    assert sizes["after"] < sizes["before"]

    from gguf import GGUFReader
    fields = GGUFReader(out_file).fields
    assert fields["gemma3.block_count"].contents() == 15
    kept = [i for i in range(18) if i not in removed]
    assert fields["gemma3.attention.sliding_window_pattern"].contents() == [kinds[i] == "sliding_attention"
                                                                            for i in kept]
    reloaded = load_model(out_file)
    assert list(reloaded.config.layer_types) == [kinds[i] for i in kept]
    tok = load_tokenizer(out_file)
    ids = tok("The capital of France is Paris, and the capital of Italy is", return_tensors="pt").input_ids
    with torch.inference_mode():
        got, want = reloaded(ids).logits, expected(ids).logits
    print(f"Gemma-3-270M Q4_K_M: {sizes}, max |logit difference| {(got - want).abs().max().item():.3g}")
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- refusals
@requires_native
def test_format_gguf_with_a_safetensors_input_is_refused(tmp_path, capsys):
    folder = save_sharded(tiny_model("llama", num_blocks=4), tmp_path / "hf")
    calib = tmp_path / "calib.txt"
    calib.write_text("hello world " * 100)
    out = tmp_path / "never"
    code = cli.main([str(a) for a in ["prune", folder, "--num-remove", 1, "--calib", calib, "--format", "gguf", "--out", out, "--quiet"]])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--format gguf" in err and "is not one" in err and "format='hf'" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="format must be one of hf, gguf"):
        miprun.OutputOptions(format="onnx")
