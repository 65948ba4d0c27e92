"""Aggregation of task scores (MMEB-V2 means, UVRB kept apart) and the report files."""

from __future__ import annotations

import json
import math

import pytest

from embedrl.eval.aggregate import aggregate, flatten_metrics
from embedrl.eval.registry import EvalTask
from embedrl.eval.report import comparison_table, markdown_table, write_report


def _task(name, modality="image", meta_task="retrieval", kind="mmeb_eval", metric="hit@1") -> EvalTask:
    candidates = "local" if kind == "mmeb_eval" else "global"
    return EvalTask(name, modality, meta_task, metric, candidates, kind, f"eval/{name}", "test")


TASKS = [
    _task("I-cls", meta_task="classification"),
    _task("I-ret-1"),
    _task("I-ret-2"),
    _task("V-ret", modality="video"),
    _task("D-1", modality="visdoc", meta_task="visdoc_retrieval", kind="visdoc", metric="ndcg@5"),
    _task("U-1", modality="video", meta_task="fine_grained", kind="uvrb", metric="recall@1"),
    _task("U-2", modality="video", meta_task="long_context", kind="uvrb", metric="recall@10"),
]
SCORES = {
    "I-cls": 90.0,
    "I-ret-1": 60.0,
    "I-ret-2": 45.0,
    "V-ret": 30.0,
    "D-1": 75.0,
    "U-1": 50.0,
    "U-2": 20.0,
}


@pytest.fixture()
def result() -> dict:
    return aggregate(SCORES, TASKS)


# ---------------------------------------------------------------------------------------- aggregate


def test_aggregate_hand_computed_example(result):
    # Unweighted mean over the five MMEB-style tasks; the UVRB tasks stay out of it.
    assert result["overall"] == pytest.approx((90 + 60 + 45 + 30 + 75) / 5)  # 60.0
    assert result["n_tasks"] == 5
    assert result["by_modality"] == pytest.approx({"image": 65.0, "video": 30.0, "visdoc": 75.0})
    assert list(result["by_modality"]) == ["image", "video", "visdoc"]
    assert result["by_meta_task"] == pytest.approx(
        {
            "image/classification": 90.0,
            "image/retrieval": 52.5,
            "video/retrieval": 30.0,
            "visdoc/visdoc_retrieval": 75.0,
        }
    )
    assert result["tasks"]["D-1"] == {
        "score": 75.0,
        "modality": "visdoc",
        "meta_task": "visdoc_retrieval",
        "metric": "ndcg@5",
    }
    assert set(result["tasks"]) == {"I-cls", "I-ret-1", "I-ret-2", "V-ret", "D-1"}


def test_aggregate_keeps_uvrb_apart(result):
    uvrb = result["uvrb"]
    assert uvrb["mean"] == pytest.approx(35.0) and uvrb["n_tasks"] == 2
    assert uvrb["by_meta_task"] == pytest.approx({"fine_grained": 50.0, "long_context": 20.0})
    assert uvrb["tasks"]["U-2"] == {
        "score": 20.0,
        "modality": "video",
        "meta_task": "long_context",
        "metric": "recall@10",
    }
    # The video mean is over V-ret only, not over the UVRB tasks.
    assert result["by_modality"]["video"] == 30.0
    assert aggregate({"V-ret": 30.0}, [TASKS[3]])["uvrb"] is None


def test_aggregate_with_only_uvrb_tasks_has_no_overall():
    result = aggregate({"U-1": 50.0}, [TASKS[5]])
    assert result["overall"] is None and result["n_tasks"] == 0 and result["uvrb"]["mean"] == 50.0


def test_aggregate_validates_scores():
    with pytest.raises(ValueError, match="no score for task\\(s\\) D-1"):
        aggregate({k: v for k, v in SCORES.items() if k != "D-1"}, TASKS)
    with pytest.raises(ValueError, match="task\\(s\\) Typo that are not in `tasks`"):
        aggregate({**SCORES, "Typo": 1.0}, TASKS)
    for bad in (100.5, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="score of task 'V-ret' .*percentages in 0..100"):
            aggregate({**SCORES, "V-ret": bad}, TASKS)
    with pytest.raises(TypeError, match="must be a number"):
        aggregate({**SCORES, "V-ret": "30"}, TASKS)
    with pytest.raises(ValueError, match="more than once: V-ret"):
        aggregate(SCORES, [*TASKS, TASKS[3]])
    with pytest.raises(ValueError, match="at least one task"):
        aggregate({}, [])


def test_flatten_metrics(result):
    flat = flatten_metrics(result)
    assert flat["overall"] == pytest.approx(60.0) and flat["modality/image"] == 65.0
    assert flat["meta_task/image/retrieval"] == 52.5 and flat["task/D-1"] == 75.0
    assert flat["uvrb/mean"] == 35.0 and flat["uvrb/task/U-1"] == 50.0 and "task/U-1" not in flat


# ------------------------------------------------------------------------------------------ tables


def test_markdown_table_formats_and_escapes():
    rows = [{"name": "a|b", "score": 12.345, "n": 3}, {"name": "c", "score": None, "n": 10}]
    table = markdown_table(rows, floatfmt=".2f")
    assert table.splitlines() == [
        "| name | score | n |",
        "| --- | ---: | ---: |",
        "| a\\|b | 12.35 | 3 |",
        "| c | — | 10 |",
    ]
    assert markdown_table(rows, columns=["n"]).splitlines()[2] == "| 3 |"
    assert markdown_table([]) == ""


def test_comparison_table(result):
    no_uvrb = aggregate({k: v for k, v in SCORES.items() if not k.startswith("U")}, TASKS[:5])
    worse = aggregate({**SCORES, "I-cls": 40.0}, TASKS)
    rows = comparison_table({"full": result, "ablated": worse, "mmeb only": no_uvrb}, baseline="full")
    assert [r["variant"] for r in rows] == ["full", "ablated", "mmeb only"]
    assert list(rows[0]) == ["variant", "overall", "delta_overall", "image", "video", "visdoc", "uvrb"]
    assert rows[1]["delta_overall"] == pytest.approx(-10.0) and rows[1]["image"] == pytest.approx(145 / 3)
    assert rows[2]["uvrb"] is None and rows[2]["overall"] == pytest.approx(60.0)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        comparison_table({"full": result}, baseline="nope")


# ------------------------------------------------------------------------------------------ report


def test_write_report_files(tmp_path, result):
    predictions = [{"task": "I-cls", "query": 0, "rank": 1}, {"task": "V-ret", "query": 4, "rank": 3}]
    ablation = comparison_table({"full": result, "raw input": aggregate({**SCORES, "D-1": 15.0}, TASKS)})
    paths = write_report(
        tmp_path / "out",
        result,
        title="Embed-RL tiny",
        predictions=predictions,
        extra_tables={"Ablations": ablation},
    )
    assert set(paths) == {"metrics", "predictions", "markdown", "html"}
    assert all(p.is_file() for p in paths.values())
    assert json.loads(paths["metrics"].read_text()) == result
    lines = paths["predictions"].read_text().splitlines()
    assert [json.loads(line) for line in lines] == predictions

    markdown = paths["markdown"].read_text()
    assert markdown.startswith("# Embed-RL tiny\n")
    assert "Overall (unweighted mean over 5 tasks): **60.0**" in markdown
    assert "| I-ret-2 | retrieval | hit@1 | 45.0 |" in markdown
    assert "| D-1 | visdoc_retrieval | ndcg@5 | 75.0 |" in markdown
    assert "| image | retrieval | 52.5 |" in markdown  # by meta-task
    assert "## UVRB" in markdown and "| U-2 | long_context | recall@10 | 20.0 |" in markdown
    assert "Mean over 2 tasks: 35.0" in markdown
    assert "## Ablations" in markdown and "| raw input | 48.0 |" in markdown

    page = paths["html"].read_text()
    assert '<img alt="Bar chart of task scores" src="data:image/png;base64,iVBORw0KGgo' in page
    assert "<td>I-ret-2</td>" in page and '<td class="num">45.0</td>' in page
    assert "<h2>Ablations</h2>" in page and not list((tmp_path / "out").glob("*.tmp"))


def test_write_report_without_predictions_and_escaping(tmp_path):
    evil = "<script>alert(1)</script>"
    tasks = [
        _task(evil),
        _task("Price$ & $x$", modality="visdoc", meta_task="m", kind="visdoc", metric="ndcg@5"),
    ]
    result = aggregate({evil: 50.0, "Price$ & $x$": 70.0}, tasks)
    paths = write_report(tmp_path, result, title="A <b>bold</b> title")
    assert "predictions" not in paths and not (tmp_path / "predictions.jsonl").exists()
    page = paths["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>" not in page and "Price$ &amp; $x$" in page and "data:image/png;base64," in page
    markdown = paths["markdown"].read_text()
    assert "<script>" not in markdown and "\\<script\\>" in markdown


def test_write_report_rejects_a_result_that_is_not_from_aggregate(tmp_path):
    with pytest.raises(ValueError, match="lacks key\\(s\\) by_modality, by_meta_task, tasks"):
        write_report(tmp_path, {"overall": 1.0}, title="x")
