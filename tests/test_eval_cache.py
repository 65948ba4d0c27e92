"""Evaluation work done once: sides pooled across tasks, traces and vectors cached on disk by fingerprint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


def _scores(result: dict) -> dict[str, float]:
    return {name: info["score"] for name, info in result["tasks"].items()}


def test_pooling_sides_across_tasks_gives_the_per_task_scores(prepared_small, trained_embedder):
    from embedrl.data.sides import MediaStore
    from embedrl.eval.evaluator import StoredTrace, _truncate, evaluate, evaluate_task, load_task
    from embedrl.eval.registry import tasks_for_data
    from embedrl.models.embedder import Embedder, EmbedderInputs
    from embedrl.models.factory import load_model

    source = StoredTrace("teacher", "teacher_cot")
    pooled = evaluate(prepared_small, trained_embedder, source, max_queries=5)
    vlm, processor = load_model(trained_embedder)
    inputs = EmbedderInputs(processor)
    embedder = Embedder(vlm, inputs.emb_id).eval()
    store = MediaStore(prepared_small)
    per_task_sides = 0
    for task in tasks_for_data(prepared_small):
        data = _truncate(load_task(prepared_small, task), 5)
        per_task_sides += len(data.queries) + len(data.candidates)
        alone = evaluate_task(task, data, source, embedder, inputs, store)
        assert pooled["tasks"].get(task.name, pooled.get("uvrb", {}).get("tasks", {}).get(task.name))["score"] \
            == pytest.approx(alone.score, abs=1e-6), task.name
    assert 0 < pooled["unique_sides"] <= per_task_sides


def test_a_rerun_reads_traces_and_vectors_from_the_cache(prepared_small, trained_embedder, sft_reasoner, tmp_path):
    from embedrl.eval.cache import EvalCache
    from embedrl.eval.evaluator import ReasonerTrace, evaluate
    from embedrl.eval.registry import tasks_for_data
    from embedrl.models.reasoner import Reasoner

    tasks = [t for t in tasks_for_data(prepared_small) if t.name in ("I2T-Marked", "T2I-Marked")]
    model = sft_reasoner.out_dir / "model"

    def run():
        source = ReasonerTrace(Reasoner.load(model, max_new_tokens=48), "sft_cot", cache_dir=tmp_path)
        result = evaluate(prepared_small, trained_embedder, source, tasks=tasks, max_queries=3, cache_dir=tmp_path)
        return source, result

    first_source, first = run()
    assert first_source.generated == first["unique_sides"] > 0
    second_source, second = run()
    assert second_source.generated == 0
    assert _scores(second) == _scores(first)
    assert second["trace_stats"] == first["trace_stats"]
    vector_dirs = list((tmp_path / "vectors").iterdir())
    assert len(vector_dirs) == 1
    assert len(EvalCache(tmp_path, "vectors", vector_dirs[0].name)) == first["unique_sides"]
    assert not list(model.glob("*fingerprint*"))  # the model directory is never written


def test_another_budget_or_other_weights_never_read_stale_entries(sft_reasoner, trained_embedder, tmp_path):
    from embedrl.eval.cache import model_fingerprint
    from embedrl.eval.evaluator import ReasonerTrace
    from embedrl.models.reasoner import Reasoner

    model = sft_reasoner.out_dir / "model"
    short = ReasonerTrace(Reasoner.load(model, max_new_tokens=16), "a", cache_dir=tmp_path)
    long = ReasonerTrace(Reasoner.load(model, max_new_tokens=48), "b", cache_dir=tmp_path)
    assert short.cache.fingerprint != long.cache.fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(trained_embedder, copy)
    before = model_fingerprint(copy, memo_dir=tmp_path)
    assert model_fingerprint(trained_embedder) == before  # same bytes, other place: same fingerprint
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one changed bit of one weight
    weights.write_bytes(bytes(data))
    assert model_fingerprint(copy, memo_dir=tmp_path) != before


def test_a_half_written_shard_is_ignored_and_entries_survive_reopening(tmp_path):
    from embedrl.eval.cache import EvalCache

    cache = EvalCache(tmp_path, "vectors", "abc")
    cache.put_vectors(["k1", "k2"], np.eye(2, dtype=np.float32))
    (cache.directory / ".shard-dead.npz.tmp").write_bytes(b"partial")  # a writer killed mid-write
    cache.put_vectors(["k2", "k3"], np.ones((2, 2), dtype=np.float32))  # k2 already there: kept as first written
    reopened = EvalCache(tmp_path, "vectors", "abc")
    assert sorted(reopened.vectors) == ["k1", "k2", "k3"]
    np.testing.assert_array_equal(reopened.vectors["k2"], [0.0, 1.0])
    with pytest.raises(ValueError, match="3 keys for 2 vectors"):
        cache.put_vectors(["a", "b", "c"], np.eye(2))
