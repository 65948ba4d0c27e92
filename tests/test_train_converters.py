"""Converting the video and page training sets from their released formats to `mmeb_train` rows.

Each fixture writes a few rows exactly as the publisher's files hold them: LLaVA-Hound JSON lines
(`id`, `video`, `conversations`) beside a `train_300k/<video>/` frames folder per video, and the
colpali / VisRAG parquet files with the page as a Hugging Face image struct `{bytes, path}`, encoded here
with PIL. Each has rows that cannot be converted, which must be quarantined naming file, row and column.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from embedrl.cli import main
from embedrl.data.mmeb_train import UnknownTrainSetError, load_mix, locate, write_train_manifest
from embedrl.data.readers import read_records
from embedrl.data.records import IMAGE_TOKEN
from embedrl.data.train_converters import (
    CONVERTERS,
    PAGE_QUERY_INSTRUCTION,
    VIDEO_QA_QUERY_PROMPT,
    VIDEO_RETRIEVAL_QUERY_PROMPT,
    VIDEO_TOKEN,
    ConversionError,
    convert_training_set,
)

HOUND_ANNOTATIONS = "video_instruction/train/sft"


def _picture(seed: int, size: int = 48) -> Image.Image:
    image = Image.new("RGB", (size, size), ((41 * seed) % 256, (97 * seed) % 256, (13 * seed) % 256))
    ImageDraw.Draw(image).rectangle((4 + seed % 9, 6, 30, 20 + seed % 7), fill=(250, 30, (70 * seed) % 256))
    return image


def _encoded(seed: int, image_format: str) -> bytes:
    buffer = io.BytesIO()
    _picture(seed, size=80).save(buffer, format=image_format)
    return buffer.getvalue()


def _quarantined(path: Path) -> dict[tuple[str, int], set[str]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["source"], r["index"]): {e["field"] for e in r["errors"]} for r in lines}


def _turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


# ------------------------------------------------------------------------------------- LLaVA-Hound
@pytest.fixture
def hound(tmp_path) -> Path:
    """A data root holding the LLaVA-Hound download: caption and QA annotations, frames of two videos."""
    download = tmp_path / "train_video_and_instruction"
    for v, video in enumerate(("v_abc", "v_def")):
        for f in range(3):
            frame = download / "train_300k" / video / f"c01_{f + 1:04d}.jpeg"
            frame.parent.mkdir(parents=True, exist_ok=True)
            _picture(10 * v + f).save(frame)
    (download / "train_300k" / "v_empty").mkdir()
    captions = [
        {
            "id": "cap0",
            "video": "v_abc",
            "conversations": _turns("<video>\nDescribe the video.", "A red box slides."),
        },
        {
            "id": "cap1",
            "video": "v_def",
            "conversations": _turns("<video>\nWhat happens?", "Two squares blink."),
        },
        {"id": "cap2", "video": "v_missing", "conversations": _turns("<video>\nDescribe.", "Nothing there.")},
        {"id": "cap3", "video": "v_abc", "conversations": [{"from": "human", "value": "<video>\nDescribe."}]},
        {"id": "cap4", "video": "v_empty", "conversations": _turns("<video>\nDescribe.", "No frames.")},
    ]
    lines = [json.dumps(row) for row in captions] + ['{"id": "cap5", "video": "v_abc", "conversa']
    annotations = download / HOUND_ANNOTATIONS
    annotations.mkdir(parents=True)
    (annotations / "video_caption_300k.jsonl").write_text("\n".join(lines) + "\n")
    qa = [
        {"id": "qa0", "video": "v_def", "conversations": _turns("<video>\nHow many squares?", "Two.")},
        {"id": "qa1", "video": 7, "conversations": _turns("<video>\nWhich colour?", "Red.")},
    ]
    (annotations / "video_240k_caption_15k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    return tmp_path


CAPTIONS = f"{HOUND_ANNOTATIONS}/video_caption_300k.jsonl"


def test_llava_hound_captions_become_video_to_caption_rows(hound):
    result = convert_training_set("video_caption_300k", hound / "train_video_and_instruction", hound)
    assert (result.rows_written, result.rejected) == (2, 4)
    assert result.out_file == hound / "video_caption_300k" / "train.parquet"
    read = read_records(result.out_file, "mmeb_train", data_root=hound, check_media=True)
    assert read.n_rejected == 0 and read.n_valid == 2
    first = read.records[0]
    assert first.qry == f"{VIDEO_TOKEN}\nDescribe the video." and first.pos_text == "A red box slides."
    assert (
        first.qry_image_path == "train_video_and_instruction/train_300k/v_abc" and first.pos_image_path == ""
    )
    assert first.id == f"{CAPTIONS}:1"  # the source file and its line
    assert _quarantined(result.quarantine) == {
        (CAPTIONS, 3): {"video"},  # no frames folder
        (CAPTIONS, 4): {"conversations"},  # no answer turn
        (CAPTIONS, 5): {"video"},  # a frames folder without frames
        (CAPTIONS, 6): {"<line>"},  # a line cut short
    }
    quarantined = [json.loads(line) for line in result.quarantine.read_text().splitlines()]
    assert quarantined[0]["record"]["id"] == "cap2"  # the row as the released file holds it


def test_llava_hound_captions_also_become_caption_to_video_rows(hound):
    result = convert_training_set("video_caption_300k-video", hound / "train_video_and_instruction", hound)
    assert result.out_file == hound / "video_caption_300k-video" / "train.parquet"
    row = read_records(result.out_file, "mmeb_train", data_root=hound).records[1]
    assert row.qry == f"{VIDEO_RETRIEVAL_QUERY_PROMPT} Two squares blink." and row.qry_image_path == ""
    assert (
        VIDEO_TOKEN in row.pos_text and row.pos_image_path == "train_video_and_instruction/train_300k/v_def"
    )


def test_llava_hound_qa_from_the_file_with_its_frames_root(hound):
    download = hound / "train_video_and_instruction"
    result = convert_training_set(
        "video_qa_240k",
        download / HOUND_ANNOTATIONS / "video_240k_caption_15k.jsonl",
        hound,
        frames_dir=download / "train_300k",
    )
    row = read_records(result.out_file, "mmeb_train", data_root=hound).records[0]
    assert row.qry == f"{VIDEO_QA_QUERY_PROMPT} {VIDEO_TOKEN}\nHow many squares?" and row.pos_text == "Two."
    assert _quarantined(result.quarantine) == {("video_240k_caption_15k.jsonl", 2): {"video"}}  # an int id


def test_frames_outside_the_data_root_are_refused(hound, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(ConversionError, match=r"outside the output folder"):
        convert_training_set("video_caption_300k", hound / "train_video_and_instruction", elsewhere)
    with pytest.raises(ConversionError, match=r"no video_caption_300k\.jsonl"):
        convert_training_set("video_caption_300k", elsewhere, elsewhere, frames_dir=elsewhere)


# ------------------------------------------------------------------------------------------- pages
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _page_table(rows: list[dict], extra: dict[str, list]) -> pa.Table:
    images = pa.array([r["image"] for r in rows], type=IMAGE_STRUCT)
    return pa.table({"query": [r["query"] for r in rows], "image": images, **extra})


def _page(seed: int, image_format: str = "JPEG", name: str = "") -> dict:
    return {"bytes": _encoded(seed, image_format), "path": name or f"page_{seed}.jpg"}


@pytest.fixture
def colpali(tmp_path) -> Path:
    """vidore/colpali_train_set as downloaded: a train and a test parquet file under data/."""
    source = tmp_path / "download" / "colpali_train_set"
    (source / "data").mkdir(parents=True)
    shared = _page(1)
    rows = [
        {"query": "What is the revenue in 2019?", "image": shared},
        {"query": "Which year has the highest revenue?", "image": shared},  # the same page again
        {"query": "Who signed the letter?", "image": _page(2, "PNG")},
        {"query": "What does the chart show?", "image": {"bytes": b"\xff\xd8 not a jpeg", "path": "x.jpg"}},
        {"query": "  ", "image": _page(3)},
    ]
    extra = {
        "answer": ["12M", "2019", "the mayor", "?", "?"],
        "image_filename": [f"f{i}.jpg" for i in range(5)],
        "source": ["pdf"] * 5,
    }
    pq.write_table(_page_table(rows, extra), source / "data" / "train-00000-of-00001.parquet")
    test_rows = [{"query": "a test split query", "image": _page(9)}]
    pq.write_table(_page_table(test_rows, {"answer": ["x"]}), source / "data" / "test-00000-of-00001.parquet")
    return source


def test_colpali_pages_are_written_once_and_rows_read_back(colpali, tmp_path):
    root = tmp_path / "data_root"
    result = convert_training_set("colpali_train_set", colpali, root)
    assert (result.rows_written, result.rejected) == (3, 2)  # the test split is not read
    read = read_records(result.out_file, "mmeb_train", data_root=root, check_media=True)
    assert read.n_valid == 3 and read.n_rejected == 0
    first, second, third = read.records
    assert (
        first.qry == f"{PAGE_QUERY_INSTRUCTION} What is the revenue in 2019?" and first.qry_image_path == ""
    )
    assert first.pos_text == IMAGE_TOKEN
    assert first.pos_image_path == second.pos_image_path  # the same page: one file
    assert first.pos_image_path.startswith("colpali_train_set/pages/") and first.pos_image_path.endswith(
        ".jpg"
    )
    assert third.pos_image_path.endswith(".png") and (first.model_extra or {})["answer"] == "12M"
    pages = sorted((root / "colpali_train_set" / "pages").rglob("*.*"))
    assert len(pages) == 2
    with Image.open(root / third.pos_image_path) as page:
        assert page.convert("RGB").tobytes() == _picture(2, size=80).tobytes()  # PNG: lossless
    source = "data/train-00000-of-00001.parquet"
    assert _quarantined(result.quarantine) == {(source, 3): {"image.bytes"}, (source, 4): {"query"}}
    bad = json.loads(result.quarantine.read_text().splitlines()[0])["record"]
    assert bad["image"]["bytes"].endswith("bytes>")  # the bytes are shown by size, not copied


def test_visrag_rows_and_a_page_missing(tmp_path):
    source = tmp_path / "VisRAG-Ret-Train-In-domain-data" / "data"
    source.mkdir(parents=True)
    rows = [
        {"query": "What is the total for Q3?", "image": _page(4, "PNG", name="")},
        {"query": "Which slide shows the roadmap?", "image": None},
    ]
    pq.write_table(
        _page_table(rows, {"source": ["PlotQA", "SlideVQA"]}), source / "train-00000-of-00001.parquet"
    )
    root = tmp_path / "root"
    result = convert_training_set("visrag-indomain", source.parent, root)
    row = read_records(result.out_file, "mmeb_train", data_root=root, check_media=True).records[0]
    assert row.qry.endswith("What is the total for Q3?") and row.pos_image_path.startswith(
        "visrag-indomain/pages/"
    )
    assert (row.model_extra or {})["doc_source"] == "PlotQA"
    assert _quarantined(result.quarantine) == {("data/train-00000-of-00001.parquet", 1): {"image"}}


def test_converted_sets_are_found_by_the_registry_and_the_cli_converts(hound, colpali, capsys):
    code = main(
        ["data", "convert", "--set", "colpali_train_set", "--source", str(colpali), "--out", str(hound)]
    )
    assert code == 0 and "3 rows written, 2 source rows rejected" in capsys.readouterr().out
    convert_training_set("video_caption_300k", hound / "train_video_and_instruction", hound)
    mix_file = hound.parent / "mix.yaml"
    mix_file.write_text(
        "name: converted\nsets:\n  video_caption_300k: {weight: 1}\n  colpali_train_set: {weight: 1}\n"
    )
    mix = load_mix(mix_file)
    assert locate(hound, mix.entry("colpali_train_set")) == "colpali_train_set/train.parquet"
    tasks = json.loads(write_train_manifest(hound, mix).read_text())["tasks"]
    assert {t["name"]: t["path"] for t in tasks} == {
        "video_caption_300k": "video_caption_300k/train.parquet",
        "colpali_train_set": "colpali_train_set/train.parquet",
    }
    assert main(["data", "convert", "--set", "MSCOCO", "--source", str(colpali), "--out", str(hound)]) == 1
    assert "convertible sets: video_caption_300k" in capsys.readouterr().err


def test_unknown_set_lists_the_convertible_ones(tmp_path):
    assert set(CONVERTERS) == {
        "video_caption_300k",
        "video_caption_300k-video",
        "video_qa_240k",
        "colpali_train_set",
        "visrag-indomain",
    }
    with pytest.raises(
        UnknownTrainSetError, match=r"no converter for training set 'colpali'.*colpali_train_set"
    ):
        convert_training_set("colpali", tmp_path, tmp_path)
