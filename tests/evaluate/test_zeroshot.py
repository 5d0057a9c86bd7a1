"""Zero-shot tasks: names, data folder, the local benchmark formats, and the harness on stories260K."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from support import DATA, STORIES, data_file, requires_data, requires_stories

from miprun.evaluate.zeroshot import TASKS, resolve_data_dir, resolve_task_names, tasks_dir

sys.path.insert(0, str(tasks_dir()))  # the harness loads bench.py by path; so do these tests
import bench  # noqa: E402

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install lm-eval)")


def test_aliases_and_harness_names():
    assert resolve_task_names("piqa, arc_easy,,piqa") == ["miprun_piqa", "miprun_arc_easy"]
    assert resolve_task_names(["miprun_copa", "lm_eval:piqa", "lambada_standard"]) == \
        ["miprun_copa", "piqa", "lambada_standard"]
    with pytest.raises(ValueError, match="no task names"):
        resolve_task_names(" , ")


def test_every_task_has_a_yaml():
    for alias, (name, _) in TASKS.items():
        assert (tasks_dir() / f"{name}.yaml").is_file(), alias
    for required in ("piqa", "arc_easy", "arc_challenge", "winogrande", "boolq", "hellaswag", "copa"):
        assert required in TASKS


def test_data_dir_resolution(tmp_path, monkeypatch):
    assert resolve_data_dir(tmp_path) == tmp_path
    with pytest.raises(ValueError, match="is not a folder"):
        resolve_data_dir(tmp_path / "nope")
    (tmp_path / "bench").mkdir()
    monkeypatch.setenv("MIPRUN_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path / "bench"


def test_missing_benchmark_file_is_a_clear_error(tmp_path):
    from miprun.evaluate.zeroshot import evaluate_tasks
    with pytest.raises(ValueError, match="miprun_piqa needs .*llm-foundry/piqa.jsonl"):
        evaluate_tasks(None, None, "piqa", data_dir=tmp_path)


def test_formats_on_written_files(tmp_path):
    (tmp_path / "mc.jsonl").write_text(json.dumps({"query": "Question: why?\n", "choices": ["a", "b"], "gold": 1}))
    (tmp_path / "ws.jsonl").write_text(json.dumps({"context_options": ["Ann went", "Bob went "],
                                                   "continuation": " home.", "gold": 0}))
    (tmp_path / "hs.jsonl").write_text(json.dumps({"ctx": "Cooking: A man [title] cuts", "label": 2,
                                                   "endings": [" x", "y  z", "[step] w"]}))
    assert bench.read_docs(tmp_path, "mc.jsonl", "question_answer") == \
        [{"query": "Question: why?\nAnswer:", "choices": ["a", "b"], "gold": 1}]
    assert bench.read_docs(tmp_path, "ws.jsonl", "schema") == \
        [{"contexts": ["Ann went", "Bob went"], "continuation": "home.", "gold": 0}]
    assert bench.read_docs(tmp_path, "hs.jsonl", "hellaswag") == \
        [{"query": "Cooking: A man. cuts", "choices": ["x", "y z", " w"], "gold": 2}]
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        bench.read_docs(tmp_path, "absent.jsonl", "plain")
    with pytest.raises(ValueError, match="unknown benchmark format"):
        bench.read_docs(tmp_path, "mc.jsonl", "nope")


@requires_data(DATA / "bench")
@pytest.mark.parametrize("alias", list(TASKS))
def test_real_files_parse(alias):
    name, rel = TASKS[alias]
    path = data_file(f"bench/{rel}")
    fmt = {"miprun_winogrande": "schema", "miprun_wsc273": "schema", "miprun_hellaswag": "hellaswag",
           "miprun_lambada_openai": "lambada", "miprun_copa": "plain", "miprun_openbookqa": "plain"}
    docs = bench.read_docs(path.parents[1], rel, fmt.get(name, "question_answer"))
    assert len(docs) == sum(1 for line in path.open() if line.strip())
    for d in docs[:50]:
        if "choices" in d:
            assert 0 <= d["gold"] < len(d["choices"]) and d["query"]
        elif "contexts" in d:
            assert 0 <= d["gold"] < len(d["contexts"]) and d["continuation"]
        else:
            assert d["context"] and d["continuation"]


def _loglik(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context), summed over the continuation's tokens, in float64."""
    ctx = tok(context)["input_ids"]
    whole = tok(context + continuation)["input_ids"]
    ids = torch.tensor(whole)
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids[None, :-1]).logits[0].double(), -1)  # (len-1, vocab)
    pos = torch.arange(len(ctx), len(whole))
    return float(logp[pos - 1, ids[pos]].sum())


@pytest.mark.slow
@requires_stories
def test_harness_accuracy_equals_own_loglikelihood_on_stories260k():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from miprun.evaluate.zeroshot import evaluate_tasks
    data_file("bench/llm-foundry/piqa.jsonl")
    data_file("bench/llm-foundry/winogrande.jsonl")
    tok = AutoTokenizer.from_pretrained(STORIES)
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    limit = 12
    res = evaluate_tasks(model, tok, "piqa,winogrande,copa", data_dir=DATA / "bench", limit=limit, batch_size=4)
    assert list(res) == ["miprun_piqa", "miprun_winogrande", "miprun_copa"]
    for r in res.values():
        assert r.samples == limit
        assert 0.0 <= r.metrics["acc"] <= 1.0
        assert math.isclose(r.metrics["acc"] * limit, round(r.metrics["acc"] * limit))  # a count of hits
    assert res["miprun_piqa"].total == 1838 and res["miprun_winogrande"].total == 1267
    assert res["miprun_copa"].total == 100

    # The same items scored here, from the raw files, without the harness or miprun's converter.
    raw = [json.loads(line) for line in open(DATA / "bench/llm-foundry/piqa.jsonl")][:limit]
    hits = hits_norm = 0
    for r in raw:
        prompt = r["query"].rstrip() + "\nAnswer:"
        ll = [_loglik(model, tok, prompt, " " + c) for c in r["choices"]]
        hits += int(max(range(len(ll)), key=ll.__getitem__) == r["gold"])
        norm = [v / len(c) for v, c in zip(ll, r["choices"])]
        hits_norm += int(max(range(len(norm)), key=norm.__getitem__) == r["gold"])
    assert res["miprun_piqa"].metrics["acc"] == pytest.approx(hits / limit, abs=1e-12)
    assert res["miprun_piqa"].metrics["acc_norm"] == pytest.approx(hits_norm / limit, abs=1e-12)

    raw = [json.loads(line) for line in open(DATA / "bench/llm-foundry/winogrande.jsonl")][:limit]
    hits = 0
    for r in raw:
        ll = [_loglik(model, tok, c.rstrip(), " " + r["continuation"].strip()) for c in r["context_options"]]
        hits += int(max(range(len(ll)), key=ll.__getitem__) == r["gold"])
    assert res["miprun_winogrande"].metrics["acc"] == pytest.approx(hits / limit, abs=1e-12)
