"""The MMEB-V2 video tasks read from their data sets' own annotation rows (`embedrl.data.official_video`):
one fixture task or more per schema family, the mapping onto queries, candidates and positives, bad rows
quarantined naming the column, and one `embedrl evaluate` run end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import MICRO_PROFILE
from official_fixture import FIXTURES, draw_clip, draw_image

from embedrl.eval.registry import load_registry

VIDEO_FIXTURES = FIXTURES / "mmeb-v2-video"
QA_INSTRUCTION = ("Given a video and a question, select the most accurate answer from the provided candidates. "
                  "Return only the exact text of your chosen answer. Question:")
FRAMES = "video-tasks/frames"
# Every frames folder (and the one query image) the fixture rows name, drawn at test time.
CLIPS = [
    *(f"video_cls/K700/k_000{k}" for k in (1, 2, 4)),
    "video_cls/SSv2/74225",
    "video_qa/MVBench/action_antonym/clip_a.mp4",
    "video_qa/Video-MME/fFjv93ACGo8",
    "video_qa/NExTQA/4010069381",
    "video_qa/EgoSchema/001934bb-3f1a",
    "video_qa/ActivityNetQA/v_abc123",
    "video_ret/MSR-VTT/video7020", "video_ret/MSR-VTT/video7021",
    "video_ret/MSVD/-4wsuPCjDBc_5_15",
    "video_ret/DiDeMo/12090392@N02_13482799053_87ef417396",
    "video_ret/VATEX/Ptf_2VRj-V0_000122_000132",
    "video_ret/YouCook2/GLd3aX16zBg_0",
    *(f"video_mret/QVHighlight/qv_0001/{c}" for c in ("query", "positive_0", "negative_0", "negative_1")),
    *(f"video_mret/QVHighlight/qv_0002/{c}" for c in ("query", "positive_0", "negative_0")),
    *(f"video_mret/MomentSeeker/video_frames/ms_{c}" for c in
      ("clip_01", "clip_02", "clip_03", "clip_04", "clip_05", "clip_06", "query_v")),
]
QUERY_IMAGES = ["video_mret/MomentSeeker/query_q_0003.jpg"]


@pytest.fixture()
def root(tmp_path) -> Path:
    """The video fixture rows under a data root, with the frames they name drawn."""
    data = tmp_path / "data"
    shutil.copytree(VIDEO_FIXTURES, data)
    for clip in CLIPS:
        draw_clip(data / FRAMES / clip, n_frames=9)
    for image in QUERY_IMAGES:
        draw_image(data / FRAMES / image)
    return data


def _task(name: str):
    return load_registry("mmeb-v2").get(name)


def _read(root: Path, name: str, quarantine: Path | None = None):
    from embedrl.data.official_video import read_official_video

    task = _task(name)
    return read_official_video(root / task.path, parser=task.parser, data_root=root, media_root=task.media_root,
                               instruction=task.instruction, pooled=task.candidates == "global",
                               quarantine=quarantine)


def _rows(result) -> list[dict]:
    return [record.to_dict() for record in result.records]


def _errors(result) -> list[tuple[int, str]]:
    return [(rejection.index, error.field) for rejection in result.rejected for error in rejection.errors]


# ------------------------------------------------------------------------------------------ registry
def test_every_video_task_names_a_registered_parser():
    from embedrl.data.official_video import video_parser_names

    video = [t for t in load_registry("mmeb-v2") if t.modality == "video"]
    assert len(video) == 18 and all(t.parser in video_parser_names() for t in video)
    assert not any(t.parser for t in load_registry("mmeb-v2") if t.modality != "video")


def test_registry_rejects_an_unknown_parser_and_one_on_another_kind(tmp_path):
    path = tmp_path / "x.yaml"
    entry = "{name: A, modality: video, meta_task: qa, metric: hit@1, candidates: local, kind: mmeb_eval"
    path.write_text(f"benchmark: x\nlayout: official\ntasks:\n  - {entry}, parser: mvbenh}}\n")
    with pytest.raises(ValueError, match="'parser' has value 'mvbenh' \\(did you mean 'mvbench'\\?\\); allowed: .*nextqa"):
        load_registry(path)
    path.write_text(f"benchmark: x\ntasks:\n  - {entry}, parser: mvbench}}\n")
    with pytest.raises(ValueError, match="'parser' is for official-layout mmeb_eval tasks"):
        load_registry(path)


def test_unknown_parser_name_lists_the_known_ones():
    from embedrl.data.official_video import get_video_parser

    with pytest.raises(ValueError, match="unknown video parser 'k700'; known: video_classification, ssv2, "):
        get_video_parser("k700")


# ------------------------------------------------------------------------------------ classification
def test_label_classification_ranks_against_labels_txt_and_skips_the_training_split(root, tmp_path):
    quarantine = tmp_path / "q.jsonl"
    result = _read(root, "K700", quarantine)
    rows = _rows(result)
    assert [r["qry_img_path"] for r in rows] == [f"{FRAMES}/video_cls/K700/k_000{k}" for k in (1, 2, 4)]
    assert rows[0]["qry_text"] == _task("K700").instruction
    assert rows[0]["tgt_text"] == ["archery", "abseiling", "juggling_balls", "yoga"]
    assert rows[1]["tgt_text"][0] == "yoga" and rows[1]["tgt_img_path"] == [""] * 4
    assert _errors(result) == [(3, "pos_text")]  # "surfing" is not in labels.txt
    rejected = json.loads(quarantine.read_text())
    assert rejected["record"] == {"video_id": "k_0003", "pos_text": "surfing"}
    assert "labels.txt" in rejected["errors"][0]["reason"]


def test_choice_classification_puts_the_label_first_among_the_row_choices(root):
    result = _read(root, "SmthSmthV2")
    [row] = _rows(result)
    assert row["tgt_text"] == ["Pushing something from left to right", "Pushing something from right to left",
                               "Tearing something into two pieces"]
    assert row["qry_img_path"] == f"{FRAMES}/video_cls/SSv2/74225"
    assert _errors(result) == [(2, "pos_text")]


# ---------------------------------------------------------------------------------------------- QA
def test_mvbench_takes_the_subset_from_the_file_and_frames_folders_named_like_videos(root):
    from embedrl.data.sides import eval_sides

    result = _read(root, "MVBench")
    [row] = _rows(result)
    assert row["qry_img_path"] == f"{FRAMES}/video_qa/MVBench/action_antonym/clip_a.mp4"
    assert row["qry_text"] == (f"{QA_INSTRUCTION} What is the person doing with the box?\nOptions:\n"
                               "(A) not sure\n(B) pushing the box\n(C) pulling the box")
    assert row["tgt_text"] == ["(C) pulling the box", "(A) not sure", "(B) pushing the box"]
    assert eval_sides(row)[0].media_kind == "video"  # a folder `clip_a.mp4/` of frames, not an image
    assert _errors(result) == [(1, "answer")]  # JSON arrays count rows from 0


def test_videomme_letters_and_ids(root, tmp_path):
    quarantine = tmp_path / "q.jsonl"
    result = _read(root, "Video-MME", quarantine)
    rows = _rows(result)
    assert [r["id"] for r in rows] == ["001-1", "001-2"]
    assert rows[0]["tgt_text"] == ["(C) Three.", "(A) One.", "(B) Two.", "(D) Four."]
    assert rows[1]["tgt_text"][0] == "(B) Blue."
    assert rows[0]["qry_img_path"] == f"{FRAMES}/video_qa/Video-MME/fFjv93ACGo8"
    rejected = json.loads(quarantine.read_text())
    assert rejected["index"] == 3 and rejected["errors"][0]["field"] == "answer"
    assert rejected["record"]["question_id"] == "002-1"  # the official row, as read


def test_nextqa_numeric_ids_from_jsonl_and_parquet(root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    result = _read(root, "NExTQA")
    [row] = _rows(result)
    assert row["id"] == "4010069381:6" and row["tgt_text"][0] == "(C) pushed by the triangle"
    assert row["qry_img_path"] == f"{FRAMES}/video_qa/NExTQA/4010069381"
    assert _errors(result) == [(2, "a3")]
    jsonl = root / "video-query/NExTQA/MC/test.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), jsonl.with_name("test-00000-of-00001.parquet"))
    jsonl.unlink()
    from_parquet = _read(root, "NExTQA")
    assert _rows(from_parquet) == [row] and _errors(from_parquet) == [(1, "a3")]


def test_egoschema_and_activitynetqa(root):
    [ego] = _rows(_read(root, "EgoSchema"))
    assert ego["id"] == "q-001" and ego["tgt_text"][0] == "(D) fixing a bike" and len(ego["tgt_text"]) == 5
    activity = _read(root, "ActivityNetQA")
    [row] = _rows(activity)
    assert row["tgt_text"] == ["(A) yes", "(B) no"]
    assert row["qry_img_path"] == f"{FRAMES}/video_qa/ActivityNetQA/v_abc123"
    assert _errors(activity) == [(2, "answer")]


# -------------------------------------------------------------------------------------- retrieval
@pytest.mark.parametrize(("name", "folder", "caption"), [
    ("MSR-VTT", "video_ret/MSR-VTT/video7020", "a red square slides from left to right"),
    ("MSVD", "video_ret/MSVD/-4wsuPCjDBc_5_15", "a man plays a guitar"),
    ("DiDeMo", "video_ret/DiDeMo/12090392@N02_13482799053_87ef417396", "a dog runs into the frame"),
    ("VATEX", "video_ret/VATEX/Ptf_2VRj-V0_000122_000132", "A woman is slicing bread."),
    ("YouCook2", "video_ret/YouCook2/GLd3aX16zBg_0", "spread butter on two slices of bread"),
])
def test_caption_retrieval_queries_a_caption_against_its_video(root, name, folder, caption):
    from embedrl.data.official_video import VIDEO_TARGET_INSTRUCTION

    task = _task(name)
    result = _read(root, name)
    first = _rows(result)[0]
    assert first["qry_text"] == f"{task.instruction} {caption}" and first["qry_img_path"] == ""
    assert first["tgt_text"] == [VIDEO_TARGET_INSTRUCTION] and first["tgt_img_path"] == [f"{FRAMES}/{folder}"]
    assert "never read" not in json.dumps(_rows(result))  # DiDeMo's training file is skipped


def test_a_caption_list_without_captions_is_quarantined(root):
    assert _errors(_read(root, "MSVD")) == [(2, "caption")]


# ------------------------------------------------------------------------------- moment retrieval
def test_moment_clips_are_read_from_the_video_frames_folder(root):
    result = _read(root, "QVHighlight")
    first, second = _rows(result)
    base = f"{FRAMES}/video_mret/QVHighlight/qv_0001"
    assert first["qry_img_path"] == f"{base}/query"
    assert first["tgt_img_path"] == [f"{base}/positive_0", f"{base}/negative_0", f"{base}/negative_1"]
    assert first["tgt_relevance"] == [1, 0, 0] and len(second["tgt_text"]) == 2
    assert _errors(result) == [(3, "video_path")]
    assert "qv_0404/query" in result.rejected[0].errors[0].reason


def test_momentseeker_queries_of_text_video_and_image(root):
    from embedrl.data.official_video import MOMENTSEEKER_INSTRUCTIONS

    result = _read(root, "MomentSeeker")
    text, video, image = _rows(result)
    clips = f"{FRAMES}/video_mret/MomentSeeker/video_frames"
    assert text["qry_img_path"] == "" and text["qry_text"].startswith(MOMENTSEEKER_INSTRUCTIONS["text"])
    assert text["tgt_img_path"] == [f"{clips}/ms_clip_01", f"{clips}/ms_clip_02", f"{clips}/ms_clip_03"]
    assert video["qry_img_path"] == f"{clips}/ms_query_v" and video["tgt_relevance"] == [1, 1, 0]
    assert image["qry_img_path"] == f"{FRAMES}/video_mret/MomentSeeker/query_q_0003.jpg"
    assert image["qry_inst"] == MOMENTSEEKER_INSTRUCTIONS["image"]
    assert _errors(result) == [(4, "positive_frames")]


# ------------------------------------------------------------------------------------- end to end
def test_evaluate_video_tasks_from_their_annotation_rows_end_to_end(root, tmp_path, tiny_models, capsys):
    from embedrl.cli import main

    out = tmp_path / "report"
    code = main(["evaluate", "--profile", str(MICRO_PROFILE), "--benchmark", "mmeb-v2", "--data-root", str(root),
                 "--tasks", "K700,Video-MME,QVHighlight", "--embedder", str(tiny_models["embedder"]),
                 "--variant", "no_cot", "--out", str(out)])
    assert code == 0
    assert "PARTIAL 3/78 mmeb-v2 tasks" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"K700", "Video-MME", "QVHighlight"}
    assert metrics["n_queries"] == {"K700": 3, "Video-MME": 2, "QVHighlight": 2}
    assert metrics["rejected_records"] == {"K700": 1, "Video-MME": 1, "QVHighlight": 1}
    assert all(0.0 <= row["score"] <= 100.0 for row in metrics["tasks"].values())
    [line] = (out / "QVHighlight.eval_quarantine.jsonl").read_text().splitlines()
    assert json.loads(line)["errors"][0]["field"] == "video_path"
