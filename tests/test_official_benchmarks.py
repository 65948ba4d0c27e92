"""The real benchmarks: the MMEB-V2 and UVRB registries, the readers of their published layouts, scores
computed by hand on the fixtures, partial coverage, leaderboard files, and `embedrl evaluate` end to end."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import MICRO_PROFILE
from official_fixture import FRAMES_PER_CLIP, materialize

from embedrl.eval.registry import load_registry

MMEB_V2_COUNTS = {
    ("image", "classification"): 10, ("image", "vqa"): 10, ("image", "retrieval"): 12, ("image", "grounding"): 4,
    ("video", "classification"): 5, ("video", "qa"): 5, ("video", "retrieval"): 5, ("video", "moment_retrieval"): 3,
    ("visdoc", "vidore_v1"): 10, ("visdoc", "vidore_v2"): 4, ("visdoc", "visrag"): 6, ("visdoc", "visdoc_ood"): 4,
}
FIXTURE_MMEB_TASKS = ["ImageNet-1K", "MSR-VTT", "ViDoRe_arxivqa"]
FIXTURE_UVRB_TASKS = ["MSRVTT", "MSRVTT-I2V"]


@pytest.fixture()
def roots(tmp_path) -> dict[str, Path]:
    return materialize(tmp_path / "data")


def _load(roots: dict[str, Path], benchmark: str, name: str, quarantine_dir: Path):
    from embedrl.eval.benchmarks import discover_tasks
    from embedrl.eval.evaluator import load_task

    task = next(t for t in discover_tasks(roots[benchmark], load_registry(benchmark)).present if t.name == name)
    return task, load_task(roots[benchmark], task, quarantine_dir=quarantine_dir)


def _score(task, data, query_rows: list[list[float]]) -> float:
    """The task's score with one-hot candidate vectors: query row q gives the similarity to each candidate."""
    from embedrl.eval.evaluator import score_task

    vectors = np.vstack([np.array(query_rows, dtype=float), np.eye(len(data.candidates))])
    return score_task(task, data, [None] * len(vectors), vectors).score


# ------------------------------------------------------------------------------------------ registries
def test_mmeb_v2_registry_has_the_78_leaderboard_tasks():
    registry = load_registry("mmeb-v2")
    names = registry.names()
    assert len(names) == len(set(names)) == 78
    assert Counter(t.modality for t in registry) == {"image": 36, "video": 18, "visdoc": 24}
    assert Counter((t.modality, t.meta_task) for t in registry) == MMEB_V2_COUNTS
    assert {t.metric for t in registry if t.modality in ("image", "video")} == {"hit@1"}
    assert {t.metric for t in registry if t.modality == "visdoc"} == {"ndcg@5"}
    assert {t.layout for t in registry} == {"official"}
    pooled = {t.name for t in registry if t.candidates == "global"}
    assert pooled == {t.name for t in registry.select(modality="visdoc")} | {
        "K700", "HMDB51", "UCF101", "Breakfast", "DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2"}
    assert [t.name for t in registry if t.meta_task == "vidore_v2"] == [
        "ViDoRe_esg_reports_human_labeled_v2", "ViDoRe_biomedical_lectures_v2_multilingual",
        "ViDoRe_economics_reports_v2_multilingual", "ViDoRe_esg_reports_v2_multilingual"]
    assert {"ImageNet-1K", "Visual7W-Pointing", "SmthSmthV2", "MomentSeeker", "MMLongBench-doc"} <= set(names)


def test_uvrb_registry_has_16_data_sets_with_their_metrics_and_groups():
    registry = load_registry("uvrb")
    assert registry.names() == ["MSRVTT", "DiDeMo", "CRB-G", "CRB-S", "VDC-O", "CRB-T", "CMRB", "DREAM-E", "LoVR-TH",
                                "PEV-K", "LoVR-V", "VDC-D", "MS-TI", "MS-TV", "MSRVTT-I2V", "LoVR-C2V"]
    metric = {t.name: t.metric for t in registry}
    assert {n for n, m in metric.items() if m == "recall@10"} == {"CMRB", "LoVR-TH"}
    assert {n for n, m in metric.items() if m == "precision@1"} == {"MS-TI", "MS-TV"}
    assert Counter(metric.values())["recall@1"] == 12
    groups = {t.name: t.meta_task for t in registry}
    assert [n for n in groups if groups[n] == "coarse_grained"] == ["MSRVTT", "DiDeMo", "CRB-G"]
    assert [n for n in groups if groups[n] == "long_context"] == ["LoVR-V", "VDC-D"]
    assert Counter(groups.values())["fine_grained"] == 7
    assert all(t.kind == "uvrb" and t.candidates == "global" and t.instruction for t in registry)


def test_unknown_benchmark_names_the_packaged_ones():
    with pytest.raises(ValueError, match="did you mean 'mmeb-v2'.*packaged registries: .*mmeb-v2.*uvrb"):
        load_registry("mmeb_v2")


def test_registry_rejects_an_unknown_layout(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("benchmark: x\nlayout: hub\ntasks:\n  - {name: A, modality: image, meta_task: vqa, "
                    "metric: hit@1, candidates: local, kind: mmeb_eval}\n")
    with pytest.raises(ValueError, match="'layout' must be one of embedrl, official, got 'hub'"):
        load_registry(path)


# ------------------------------------------------------------------------------------------- frames
def test_eight_frames_are_sampled_evenly_from_a_longer_video(tmp_path):
    from official_fixture import draw_clip

    from embedrl.data.sides import MediaStore, SideRef, uniform_frame_indices

    assert uniform_frame_indices(12, 8) == [0, 1, 3, 4, 6, 7, 9, 11]
    assert uniform_frame_indices(5, 8) == [0, 1, 2, 3, 4]
    draw_clip(tmp_path / "clip", n_frames=FRAMES_PER_CLIP)
    frames = MediaStore(tmp_path, frames_per_video=8).load(SideRef("", "clip"))
    assert [round(frame.getpixel((5, 5))[0] / 20) for frame in frames] == [0, 1, 3, 4, 6, 7, 9, 11]
    assert len(MediaStore(tmp_path).load(SideRef("", "clip"))) == FRAMES_PER_CLIP


# ----------------------------------------------------------------------------------------- discovery
def test_discover_tasks_finds_the_fixture_tasks_and_names_the_missing(roots):
    from embedrl.eval.benchmarks import discover_tasks

    selection = discover_tasks(roots["mmeb-v2"], load_registry("mmeb-v2"))
    assert [t.name for t in selection.present] == FIXTURE_MMEB_TASKS
    assert len(selection.missing) == 75 and "VisDial" in {t.name for t in selection.missing}
    uvrb = discover_tasks(roots["uvrb"], load_registry("uvrb"))
    assert [t.name for t in uvrb.present] == FIXTURE_UVRB_TASKS and len(uvrb.missing) == 14


def test_a_task_stored_as_one_file_beside_its_folder_name_is_found(roots):
    from embedrl.eval.benchmarks import discover_tasks

    folder = roots["mmeb-v2"] / "video-query" / "MSR-VTT"
    (folder / "test.jsonl").rename(folder.parent / "MSR-VTT.jsonl")
    folder.rmdir()
    task = next(t for t in discover_tasks(roots["mmeb-v2"], load_registry("mmeb-v2")).present if t.name == "MSR-VTT")
    assert task.path == "video-query/MSR-VTT.jsonl"


# ------------------------------------------------------------------------------------ image and video
def test_image_rows_map_onto_eval_records_and_a_bad_row_is_quarantined(roots, tmp_path):
    from embedrl.data.official import read_official_eval

    quarantine = tmp_path / "q.jsonl"
    result = read_official_eval(roots["mmeb-v2"] / "image-query/ImageNet-1K", data_root=roots["mmeb-v2"],
                                media_root="image-tasks/MMEB", quarantine=quarantine)
    assert (result.n_valid, result.n_rejected) == (3, 1)
    first = result.records[0].to_dict()
    assert first["qry_img_path"] == "image-tasks/MMEB/ImageNet-1K/val_0001.jpg"
    assert first["qry_text"] == "Name the class of the object in this picture:"  # instruction, token stripped
    assert first["id"] == "image-query/ImageNet-1K/test.jsonl:1"
    [line] = quarantine.read_text().splitlines()
    rejected = json.loads(line)
    assert rejected["source"] == "image-query/ImageNet-1K/test.jsonl" and rejected["index"] == 4
    assert rejected["errors"] == [{"field": "tgt_img_path", "reason": "2 paths for 3 candidates in tgt_text"}]
    assert rejected["record"]["qry_img_path"] == "ImageNet-1K/val_0004.jpg"  # the official row, as read


def test_parquet_shards_read_like_the_jsonl(tmp_path):
    from embedrl.data.official import read_official_eval

    root = materialize(tmp_path / "data", image_rows_as_parquet=True)["mmeb-v2"]
    result = read_official_eval(root / "image-query/ImageNet-1K", data_root=root, media_root="image-tasks/MMEB")
    assert (result.n_valid, result.n_rejected) == (3, 1)
    assert result.rejected[0].index == 3  # parquet rows count from 0
    assert result.records[2].to_dict()["tgt_text"] == ["great white shark", "hammerhead", "tench"]


def test_local_image_task_scores_hit_at_1_over_each_row_own_candidates(roots, tmp_path):
    task, data = _load(roots, "mmeb-v2", "ImageNet-1K", tmp_path)
    assert task.candidates == "local" and data.n_rejected == 1
    col = {item.ref.text: j for j, item in enumerate(data.candidates)}
    assert sorted(col) == ["goldfish", "great white shark", "hammerhead", "tench"]
    queries = np.zeros((3, 4))
    queries[0, [col["tench"], col["hammerhead"]]] = [0.5, 0.9]  # hammerhead is not in row 1's list: a hit
    queries[1, [col["goldfish"], col["tench"]]] = [0.2, 0.9]  # tench outranks the positive: a miss
    queries[2, [col["great white shark"], col["hammerhead"]]] = [0.3, 0.8]  # a miss
    assert _score(task, data, queries.tolist()) == pytest.approx(100 / 3)


def test_global_video_task_ranks_each_query_against_the_whole_pool(roots, tmp_path):
    from embedrl.data.sides import MediaStore

    task, data = _load(roots, "mmeb-v2", "MSR-VTT", tmp_path)
    assert task.candidates == "global" and data.mask is None
    paths = [item.ref.media_path for item in data.candidates]
    assert paths == [f"video-tasks/frames/video_ret/MSR-VTT/video701{k}" for k in range(3)]
    assert len(MediaStore(roots["mmeb-v2"], frames_per_video=8).load(data.candidates[0].ref)) == 8
    # Row 2 ships only its own video; in the pool, video 3 outranks it: a miss that a local list would hide.
    assert _score(task, data, [[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.0, 0.1, 0.9]]) == pytest.approx(200 / 3)


# ---------------------------------------------------------------------------------- visual documents
def test_visdoc_graded_qrels_give_ndcg_at_5_as_computed_by_hand(roots, tmp_path):
    task, data = _load(roots, "mmeb-v2", "ViDoRe_arxivqa", tmp_path)
    assert [item.ref.media_path for item in data.candidates] == [
        f"visdoc-tasks/ViDoRe_arxivqa/{page}.png" for page in (10, 11, 12)]
    assert data.queries[0].ref.text.startswith(task.instruction) and data.query_ids == ["1", "2"]
    assert data.relevance.tolist() == [[2, 1, 0], [0, 0, 1]]
    # Query 1 ranks page 11 (gain 1) above page 10 (gain 2); query 2 finds its only page first.
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    expected = 100 * (dcg / ideal + 1.0) / 2
    assert _score(task, data, [[0.5, 0.9, 0.1], [0.0, 0.2, 0.8]]) == pytest.approx(expected)
    [line] = (tmp_path / "ViDoRe_arxivqa.eval_quarantine.jsonl").read_text().splitlines()
    rejected = json.loads(line)
    assert rejected["errors"][0]["field"] == "query-id" and "unknown query-id" in rejected["errors"][0]["reason"]
    assert rejected["record"] == {"query-id": 3, "corpus-id": 10, "score": 1}


# ------------------------------------------------------------------------------------------------ UVRB
def test_uvrb_text_queries_read_with_prompt_and_frames_folders(roots, tmp_path):
    task, data = _load(roots, "uvrb", "MSRVTT", tmp_path)
    assert data.queries[0].ref.text == f"{task.instruction} a red square slides from left to right"
    assert [item.ref.media_path for item in data.candidates] == [f"MSRVTT/videos_frames/video{k}" for k in range(3)]
    assert _score(task, data, [[0.9, 0.0, 0.1], [0.1, 0.3, 0.6]]) == pytest.approx(50.0)


def test_uvrb_image_queries_in_the_unpacked_archive_layout(roots, tmp_path):
    task, data = _load(roots, "uvrb", "MSRVTT-I2V", tmp_path)
    base = "MSRVTT-I2V/UVRB/MSRVTT-I2V"
    assert [item.ref.media_path for item in data.queries] == [f"{base}/images/i0.jpg", f"{base}/images/i1.jpg"]
    assert data.candidates[1].ref.media_path == f"{base}/videos_frames/all/video1"
    assert _score(task, data, [[0.8, 0.2], [0.3, 0.7]]) == pytest.approx(100.0)


def test_a_uvrb_query_with_two_media_is_rejected_naming_the_field(roots, tmp_path):
    from embedrl.data.official import read_official_uvrb

    folder = roots["uvrb"] / "MSRVTT"
    with (folder / "jsonl/queries.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "q9", "text": "x", "video": "video0.mp4", "image": "a.jpg"}) + "\n")
    data = read_official_uvrb(folder, data_root=roots["uvrb"], quarantine=tmp_path / "q.jsonl")
    [rejected] = data.queries.rejected
    assert rejected.id == "q9" and rejected.errors[0].field == "image_path"
    assert rejected.record["video"] == "video0.mp4"


# ----------------------------------------------------------------------------------------- aggregation
def test_partial_mmeb_run_reports_no_overall_only_a_partial_mean():
    from embedrl.eval.aggregate import aggregate
    from embedrl.eval.benchmarks import apply_coverage

    registry = load_registry("mmeb-v2")
    tasks = registry.select(FIXTURE_MMEB_TASKS)
    result = apply_coverage(aggregate({"ImageNet-1K": 30.0, "MSR-VTT": 60.0, "ViDoRe_arxivqa": 90.0}, tasks),
                            registry, FIXTURE_MMEB_TASKS)
    assert result["overall"] is None and result["overall_partial"] == pytest.approx(60.0)
    coverage = result["coverage"]
    assert (coverage["complete"], coverage["n_evaluated"], coverage["n_expected"]) == (False, 3, 78)
    assert len(coverage["missing"]) == 75 and "ImageNet-1K" not in coverage["missing"]
    assert coverage["by_modality"] == {"image": {"expected": 36, "evaluated": 1},
                                       "video": {"expected": 18, "evaluated": 1},
                                       "visdoc": {"expected": 24, "evaluated": 1}}


def test_complete_mmeb_run_overall_is_the_unweighted_mean_over_78_tasks():
    from embedrl.eval.aggregate import aggregate
    from embedrl.eval.benchmarks import apply_coverage

    registry = load_registry("mmeb-v2")
    scores = {t.name: float(i % 7) * 10 for i, t in enumerate(registry)}
    result = apply_coverage(aggregate(scores, registry), registry, scores)
    assert result["coverage"]["complete"] and "overall_partial" not in result
    assert result["overall"] == pytest.approx(sum(scores.values()) / 78)
    image = [scores[t.name] for t in registry.select(modality="image")]
    assert result["by_modality"]["image"] == pytest.approx(sum(image) / 36)
    vidore = [scores[t.name] for t in registry if t.meta_task == "vidore_v1"]
    assert result["by_meta_task"]["visdoc/vidore_v1"] == pytest.approx(sum(vidore) / 10)


def test_partial_uvrb_run_moves_the_mean_aside():
    from embedrl.eval.aggregate import aggregate
    from embedrl.eval.benchmarks import apply_coverage

    registry = load_registry("uvrb")
    result = apply_coverage(aggregate({"MSRVTT": 40.0, "MSRVTT-I2V": 80.0}, registry.select(FIXTURE_UVRB_TASKS)),
                            registry, FIXTURE_UVRB_TASKS)
    assert result["uvrb"]["mean"] is None and result["uvrb"]["mean_partial"] == pytest.approx(60.0)
    assert result["uvrb"]["by_meta_task"] == {"coarse_grained": 40.0, "visual": 80.0}


def test_leaderboard_json_and_comparison_table():
    from embedrl.eval.aggregate import aggregate
    from embedrl.eval.benchmarks import (
        apply_coverage,
        comparison_markdown,
        leaderboard_json,
        reference_scores,
    )

    registry = load_registry("mmeb-v2")
    result = apply_coverage(aggregate({"ImageNet-1K": 30.0, "MSR-VTT": 60.0, "ViDoRe_arxivqa": 90.0},
                                      registry.select(FIXTURE_MMEB_TASKS)), registry, FIXTURE_MMEB_TASKS)
    result.update(benchmark="mmeb-v2", variant="no_cot", n_queries={"ImageNet-1K": 3, "MSR-VTT": 3,
                                                                    "ViDoRe_arxivqa": 2})
    board = leaderboard_json(result, model_name="tiny")
    assert board["metrics"]["image"]["ImageNet-1K"] == {"hit@1": 0.3, "num_data": 3}
    assert board["metrics"]["visdoc"]["ViDoRe_arxivqa"] == {"ndcg_linear@5": 0.9, "num_data": 2}
    assert board["metadata"]["partial"] is True and board["metadata"]["n_tasks_expected"] == 78
    references = reference_scores("mmeb-v2")
    assert references["models"]["Embed-RL-2B"] == {"overall": 66.8, "image": 69.2, "video": 52.1, "visdoc": 74.1}
    table = comparison_markdown(result, "mmeb-v2", label="this run")
    assert "| this run | 60.0 (partial: 3 of 78 tasks) | 30.0 (partial: 1 of 36 tasks) |" in table
    assert "| Embed-RL-4B | 68.1 | 71.2 | 53.0 | 74.7 |" in table and "Partial run: 3 of 78" in table


# ------------------------------------------------------------------------------------------ end to end
def _evaluate_cli(*args: str) -> int:
    from embedrl.cli import main

    return main(["evaluate", "--profile", str(MICRO_PROFILE), *args])


def test_evaluate_mmeb_v2_on_the_fixture_end_to_end(tmp_path, tiny_models, capsys):
    root = materialize(tmp_path / "data", image_rows_as_parquet=True)["mmeb-v2"]
    out = tmp_path / "report"
    code = _evaluate_cli("--benchmark", "mmeb-v2", "--data-root", str(root), "--embedder",
                         str(tiny_models["embedder"]), "--variant", "no_cot", "--out", str(out))
    assert code == 0
    assert "PARTIAL 3/78 mmeb-v2 tasks" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"] is None and metrics["coverage"]["n_evaluated"] == 3
    assert set(metrics["tasks"]) == set(FIXTURE_MMEB_TASKS)
    assert metrics["overall_partial"] == pytest.approx(np.mean([r["score"] for r in metrics["tasks"].values()]))
    assert metrics["rejected_records"] == {"ImageNet-1K": 1, "MSR-VTT": 0, "ViDoRe_arxivqa": 1}
    assert metrics["n_queries"] == {"ImageNet-1K": 3, "MSR-VTT": 3, "ViDoRe_arxivqa": 2}
    assert (out / "ImageNet-1K.eval_quarantine.jsonl").is_file()  # beside the report, not in the data
    assert not list(root.glob("*.eval_quarantine.jsonl"))
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for name in ("ImageNet-1K", "MSR-VTT"):
        hits = [p["hit@1"] for p in predictions if p["task"] == name]
        assert metrics["tasks"][name]["score"] == pytest.approx(100 * np.mean(hits))
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["metrics"]["video"]["MSR-VTT"]["hit@1"] == pytest.approx(metrics["tasks"]["MSR-VTT"]["score"] / 100)
    assert "partial" in (out / "comparison.md").read_text()
    assert "not reported, partial run (3 of 78" in (out / "report.md").read_text()


def test_evaluate_uvrb_with_a_reasoner_end_to_end(tmp_path, tiny_models, capsys):
    root = materialize(tmp_path / "data")["uvrb"]
    out = tmp_path / "report"
    code = _evaluate_cli("--benchmark", "uvrb", "--data-root", str(root), "--embedder", str(tiny_models["embedder"]),
                         "--reasoner", str(tiny_models["reasoner"]), "--variant", "sft_cot", "--out", str(out))
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variant"] == "sft_cot" and metrics["overall"] is None
    assert set(metrics["uvrb"]["tasks"]) == set(FIXTURE_UVRB_TASKS) and metrics["uvrb"]["mean"] is None
    assert 0.0 <= metrics["uvrb"]["mean_partial"] <= 100.0
    assert len(metrics["coverage"]["missing"]) == 14
    assert "GVE-7B" in (out / "comparison.md").read_text()


def test_evaluate_names_a_task_absent_from_the_data_root(roots, tiny_models, tmp_path):
    with pytest.raises(FileNotFoundError, match="VisDial of 'mmeb-v2' are not under the data root"):
        _evaluate_cli("--benchmark", "mmeb-v2", "--data-root", str(roots["mmeb-v2"]), "--tasks", "VisDial",
                      "--embedder", str(tiny_models["embedder"]), "--out", str(tmp_path / "r"))
