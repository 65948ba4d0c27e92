"""Records, media paths, readers and writers of embedrl.data (docs/data-formats.md)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from embedrl.data.paths import MediaPathError, check_media, frame_paths, resolve_media, verify_image
from embedrl.data.readers import (
    DataFormatError,
    detect_kind,
    find_data_root,
    iter_manifest_tasks,
    read_records,
    read_uvrb,
    read_visdoc,
    write_jsonl,
    write_parquet,
)
from embedrl.data.records import (
    RECORD_TYPES,
    MMEBEvalRow,
    MMEBTrainRow,
    RecordError,
    VisDocQrel,
    shorten,
)


# ------------------------------------------------------------------------------------------ helpers
def png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path, format="PNG")
    return path


def truncated_png(path: Path) -> Path:
    png(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    return path


GOOD_ROWS: dict[str, dict[str, Any]] = {
    "mmeb_train": {
        "qry": "<|image_1|> what shape?",
        "qry_image_path": "img.png",
        "pos_text": "a star",
        "pos_image_path": "",
        "id": "t1",
        "subset": "ImgCLS",
    },
    "mmeb_eval": {
        "id": "e1",
        "qry_inst": "Find the caption.",
        "qry_text": "<|image_1|>",
        "qry_img_path": "img.png",
        "tgt_text": ["a red star", "a blue ring"],
        "tgt_img_path": ["", ""],
        "scene": "{}",
    },
    "visdoc_query": {"query-id": "q1", "query": "price of pears?", "qry_inst": "Find the page."},
    "visdoc_page": {"corpus-id": "p1", "image_path": "img.png", "text": ""},
    "visdoc_qrel": {"query-id": "q1", "corpus-id": "p1", "score": 2},
    "uvrb_query": {"qid": "v1", "text": "a star moves left"},
    "uvrb_corpus": {"cid": "c1", "video_path": "frames", "caption": "a star"},
    "uvrb_instance": {"qid": "v1", "cid": "c1", "relevance": 1},
}


def row(kind: str, **changes: Any) -> dict[str, Any]:
    """A valid row of `kind` with fields changed (a value of `...` removes the field)."""
    out = dict(GOOD_ROWS[kind])
    for key, value in changes.items():
        key = key.replace("_DASH_", "-")
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def errors_of(kind: str, raw: Any, **kwargs: Any) -> list[tuple[str, str]]:
    _, errors = RECORD_TYPES[kind].parse(raw, **kwargs)
    return [(e.field, e.reason) for e in errors]


# ------------------------------------------------------------------------------------------ records
@pytest.mark.parametrize("kind", list(GOOD_ROWS))
def test_valid_rows_parse_and_keep_extra_fields(kind: str) -> None:
    record, errors = RECORD_TYPES[kind].parse(GOOD_ROWS[kind])
    assert errors == []
    assert record is not None and record.KIND == kind
    dumped = record.to_dict()
    for key, value in GOOD_ROWS[kind].items():
        assert dumped[key] == value


def test_record_ids_use_the_data_field_names() -> None:
    record, _ = RECORD_TYPES["visdoc_query"].parse(GOOD_ROWS["visdoc_query"])
    assert record is not None and record.record_id() == "q1"
    assert RECORD_TYPES["visdoc_query"].id_field_name() == "query-id"
    qrel, _ = VisDocQrel.parse(GOOD_ROWS["visdoc_qrel"])
    assert qrel is not None and qrel.record_id() is None and qrel.key() == ("q1", "p1")


BAD_ROWS = [
    ("mmeb_train", row("mmeb_train", qry=5), "qry", "expected str, got int 5"),
    ("mmeb_train", row("mmeb_train", pos_text=...), "pos_text", "required field missing"),
    (
        "mmeb_train",
        row("mmeb_train", qry_image_path=""),
        "qry",
        "contains <|image_1|> but qry_image_path is empty",
    ),
    ("mmeb_train", row("mmeb_train", qry="", qry_image_path=""), "qry", "neither text nor media"),
    ("mmeb_train", row("mmeb_train", pos_text=""), "pos_text", "neither text nor media"),
    ("mmeb_train", row("mmeb_train", neg_text="<|image_1|>"), "neg_text", "neg_image_path is empty"),
    ("mmeb_eval", row("mmeb_eval", tgt_text="a red star"), "tgt_text", "expected list, got str"),
    ("mmeb_eval", row("mmeb_eval", tgt_img_path=[""]), "tgt_img_path", "1 paths for 2 candidates"),
    ("mmeb_eval", row("mmeb_eval", tgt_text=["a"], tgt_img_path=[""]), "tgt_text", "at least 2"),
    ("mmeb_eval", row("mmeb_eval", tgt_relevance=[0, 0]), "tgt_relevance", "no positive candidate"),
    ("mmeb_eval", row("mmeb_eval", tgt_relevance=[1]), "tgt_relevance", "1 values for 2 candidates"),
    (
        "mmeb_eval",
        row("mmeb_eval", tgt_relevance=[True, 0]),
        "tgt_relevance[0]",
        "expected int, got bool true",
    ),
    ("mmeb_eval", row("mmeb_eval", tgt_relevance=[1, -1]), "tgt_relevance[1]", "negative relevance -1"),
    ("mmeb_eval", row("mmeb_eval", qry_text="", qry_img_path=""), "qry_text", "neither text nor media"),
    ("mmeb_eval", row("mmeb_eval", id=""), "id", "empty string"),
    ("mmeb_eval", row("mmeb_eval", id=7), "id", "expected str, got int 7"),
    ("mmeb_eval", row("mmeb_eval", tgt_text=["<|image_1|>", "b"]), "tgt_text[0]", "tgt_img_path[0] is empty"),
    ("mmeb_eval", row("mmeb_eval", tgt_text=["", "b"]), "tgt_text[0]", "neither text nor media"),
    ("visdoc_qrel", row("visdoc_qrel", score=True), "score", "expected int, got bool true"),
    ("visdoc_qrel", row("visdoc_qrel", score=1.0), "score", "expected int, got float 1.0"),
    ("visdoc_qrel", row("visdoc_qrel", score=-1), "score", "negative score -1"),
    ("visdoc_page", row("visdoc_page", image_path=""), "image_path", "a page needs its image"),
    ("visdoc_query", row("visdoc_query", query=""), "query", "empty query text"),
    ("uvrb_instance", row("uvrb_instance", relevance=0), "relevance", "must be > 0"),
    ("uvrb_query", row("uvrb_query", text=""), "text", "neither text nor media"),
    ("uvrb_corpus", row("uvrb_corpus", video_path=...), "video_path", "required field missing"),
    ("uvrb_query", ["not", "an", "object"], "<row>", "expected a JSON object, got list"),
]


@pytest.mark.parametrize(("kind", "raw", "field", "reason"), BAD_ROWS)
def test_bad_rows_name_the_field_and_the_reason(kind: str, raw: Any, field: str, reason: str) -> None:
    errors = errors_of(kind, raw)
    assert any(f == field and reason in r for f, r in errors), errors


def test_text_limit_is_configurable() -> None:
    raw = row("mmeb_eval", tgt_text=["short", "x" * 20_001])
    assert errors_of("mmeb_eval", raw) == [("tgt_text[1]", "text of 20001 chars exceeds the limit of 20000")]
    assert errors_of("mmeb_eval", raw, max_text_chars=30_000) == []


def test_null_optional_fields_read_as_empty() -> None:
    record, errors = MMEBTrainRow.parse(row("mmeb_train", neg_text=None, neg_image_path=None))
    assert errors == [] and record is not None and record.neg_text == "" and record.neg_image_path == ""
    assert errors_of("mmeb_train", row("mmeb_train", qry=None)) == [("qry", "expected str, got null null")]


def test_record_error_and_shorten_format() -> None:
    err = RecordError("eval/x.jsonl", 3, "e1", "tgt_text", "too short")
    assert str(err) == "eval/x.jsonl:3 id=e1 field=tgt_text: too short"
    assert str(RecordError("q.jsonl", 2, None, "score", "bad")) == "q.jsonl:2 id=- field=score: bad"
    assert shorten("x" * 500).endswith("...(502 chars)") and len(shorten("x" * 500)) < 80


# -------------------------------------------------------------------------------------------- paths
def test_resolve_media_accepts_paths_inside_the_root(tmp_path: Path) -> None:
    target = png(tmp_path / "images" / "a.png")
    assert resolve_media(tmp_path, "images/a.png") == target.resolve()
    assert resolve_media(tmp_path, "images/../images/a.png") == target.resolve()


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("../x.png", "escapes the data root"),
        ("images/../../x.png", "escapes the data root"),
        ("/etc/passwd", "absolute path"),
        ("", "empty media path"),
        ("link/x.png", "through a symbolic link"),
    ],
)
def test_resolve_media_rejects_unsafe_paths(tmp_path: Path, rel: str, reason: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    png(outside / "x.png")
    os.symlink(outside, root / "link")
    with pytest.raises(MediaPathError, match=reason):
        resolve_media(root, rel)


def test_symlink_inside_the_root_is_fine(tmp_path: Path) -> None:
    png(tmp_path / "real" / "a.png")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert check_media(tmp_path, "alias/a.png", "image") == (tmp_path / "real" / "a.png").resolve()


def test_frame_paths_are_sorted_images_only(tmp_path: Path) -> None:
    for name in ("frame_03.png", "frame_01.png", "frame_02.jpg"):
        png(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert [p.name for p in frame_paths(tmp_path)] == ["frame_01.png", "frame_02.jpg", "frame_03.png"]
    with pytest.raises(MediaPathError, match="not a directory"):
        frame_paths(tmp_path / "frame_01.png")


@pytest.mark.parametrize(
    ("setup", "expect", "reason"),
    [
        (lambda root: None, "image", "missing"),
        (lambda root: truncated_png(root / "m"), "image", "does not decode"),
        (lambda root: (root / "m").write_bytes(b"not an image"), "any", "does not decode"),
        (lambda root: (root / "m").mkdir(), "image", "an image file is expected"),
        (lambda root: png(root / "m"), "frames", "a directory of frames is expected"),
        (lambda root: (root / "m").mkdir(), "frames", "no image frames"),
        (
            lambda root: (png(root / "m" / "frame_01.png"), truncated_png(root / "m" / "frame_02.png")),
            "frames",
            "frame frame_02.png: image does not decode",
        ),
    ],
)
def test_check_media_rejects_bad_media(tmp_path: Path, setup: Any, expect: Any, reason: str) -> None:
    setup(tmp_path)
    with pytest.raises(MediaPathError, match=reason) as info:
        check_media(tmp_path, "m", expect)
    assert info.value.path == "m"


def test_truncated_png_fails_even_when_only_the_end_is_cut(tmp_path: Path) -> None:
    path = png(tmp_path / "a.png")
    verify_image(path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(MediaPathError, match="truncated PNG"):
        verify_image(path)


def test_check_media_without_decode_skips_decoding_only(tmp_path: Path) -> None:
    truncated_png(tmp_path / "bad.png")
    check_media(tmp_path, "bad.png", "image", decode=False)
    with pytest.raises(MediaPathError, match="missing"):
        check_media(tmp_path, "gone.png", "image", decode=False)


# ------------------------------------------------------------------------------------------ writers
def test_write_jsonl_keeps_key_order_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rows.jsonl"
    assert write_jsonl(path, [{"b": 1, "a": "café"}, {"z": [1, 2]}]) == 2
    assert path.read_bytes() == '{"b": 1, "a": "café"}\n{"z": [1, 2]}\n'.encode()
    with pytest.raises(ValueError):
        write_jsonl(path, [{"x": float("nan")}])
    assert path.read_bytes().endswith(b'{"z": [1, 2]}\n')  # a failed write leaves the old file whole


def test_write_parquet_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    png(tmp_path / "img.png")
    rows = [
        row("mmeb_train", id="t1"),
        row("mmeb_train", id="t2", scene='{"objects": []}'),
        row("mmeb_train", id="t3", pos_text="é ✓"),
    ]
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_parquet(first, rows)
    write_parquet(second, [dict(r) for r in rows])
    assert first.read_bytes() == second.read_bytes()
    result = read_records(first)
    assert result.kind == "mmeb_train" and result.n_rejected == 0
    assert [r.to_dict()["pos_text"] for r in result.records] == ["a star", "a star", "é ✓"]
    assert result.records[1].to_dict()["scene"] == '{"objects": []}'  # a key first seen on row 2 is kept
    assert result.records[0].to_dict()["scene"] is None


def test_write_parquet_names_a_column_of_mixed_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="column 'score'"):
        write_parquet(tmp_path / "x.parquet", [{"score": 1}, {"score": "high"}])


# ------------------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("kind", list(GOOD_ROWS))
def test_kind_is_detected_from_the_fields(kind: str, tmp_path: Path) -> None:
    assert detect_kind(GOOD_ROWS[kind]) == kind
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [GOOD_ROWS[kind]])
    assert read_records(path, check_media=False).kind == kind


def test_detection_skips_rows_that_tell_nothing(tmp_path: Path) -> None:
    png(tmp_path / "img.png")
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"unrelated": 1}, row("mmeb_eval")])
    result = read_records(path)
    assert result.kind == "mmeb_eval" and result.n_valid == 1
    assert [(r.index, r.errors[0].field) for r in result.rejected] == [(1, "id")]


def test_undetectable_kind_and_unknown_kind_list_the_known_kinds(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"foo": 1}])
    with pytest.raises(
        DataFormatError, match="cannot tell the record kind.*mmeb_train, mmeb_eval, visdoc, uvrb"
    ):
        read_records(path)
    with pytest.raises(DataFormatError, match="unknown record kind 'mmeb'.*visdoc_qrel"):
        read_records(path, "mmeb")
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataFormatError, match=r"unsupported file type '\.csv'.*mmeb_eval"):
        read_records(csv)


def test_truncated_parquet_is_a_data_format_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    write_parquet(path, [row("mmeb_train", id=f"t{i}") for i in range(50)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="train.parquet: not a readable parquet file"):
        read_records(path)


def test_bad_lines_are_rejected_by_line_number_and_quarantined(tmp_path: Path, caplog: Any) -> None:
    png(tmp_path / "img.png")
    path = tmp_path / "eval.jsonl"
    good = json.dumps(row("mmeb_eval"))
    path.write_text(f"{good}\n{{broken\n\n[1, 2]\n", encoding="utf-8")
    with path.open("ab") as handle:
        handle.write(b'{"id": "\xff"}\n')
    quarantine = tmp_path / "q.jsonl"
    with caplog.at_level(logging.WARNING):
        result = read_records(path, "mmeb_eval", quarantine=quarantine)
    assert (result.total, result.n_valid, result.n_rejected) == (4, 1, 3)
    assert [(r.index, r.errors[0].field) for r in result.rejected] == [
        (2, "<line>"),
        (4, "<row>"),
        (5, "<line>"),
    ]
    assert "invalid JSON" in result.rejected[0].errors[0].reason
    assert "not UTF-8" in result.rejected[2].errors[0].reason
    lines = [json.loads(line) for line in quarantine.read_text(encoding="utf-8").splitlines()]
    assert [line["index"] for line in lines] == [2, 4, 5]
    assert lines[0]["record"] == {"_raw_line": "{broken"} and lines[1]["record"] == [1, 2]
    assert "eval.jsonl: 3 of 4 records rejected" in caplog.text


def test_nothing_rejected_writes_no_quarantine(tmp_path: Path, caplog: Any) -> None:
    png(tmp_path / "img.png")
    path = tmp_path / "eval.jsonl"
    write_jsonl(path, [row("mmeb_eval")])
    with caplog.at_level(logging.WARNING):
        result = read_records(path, quarantine=tmp_path / "q.jsonl")
    assert result.n_valid == 1 and not (tmp_path / "q.jsonl").exists() and caplog.text == ""


def test_duplicates_are_rejected_naming_the_first(tmp_path: Path) -> None:
    png(tmp_path / "img.png")
    path = tmp_path / "eval.jsonl"
    write_jsonl(
        path,
        [
            row("mmeb_eval", id="a"),
            row("mmeb_eval", id="b"),
            row("mmeb_eval", id="a"),
            row("mmeb_eval", id="a", qry_text=3),
        ],
    )
    result = read_records(path)
    assert [r.record_id() for r in result.records] == ["a", "b"]
    assert [(r.index, r.id) for r in result.rejected] == [(3, "a"), (4, "a")]
    assert all(("id", 'duplicate id="a"; first at eval.jsonl:1') in r.errors for r in result.rejected)


def test_duplicate_qrel_pairs_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "qrels.jsonl"
    write_jsonl(path, [row("visdoc_qrel"), row("visdoc_qrel", score=0)])
    result = read_records(path)
    assert result.rejected[0].errors[0].field == "query-id,corpus-id"


def test_train_rows_without_id_get_file_and_row(tmp_path: Path) -> None:
    png(tmp_path / "img.png")
    path = tmp_path / "train.parquet"
    write_parquet(path, [row("mmeb_train", id=...), row("mmeb_train", id=...)])
    result = read_records(path)
    assert [r.record_id() for r in result.records] == ["train.parquet:0", "train.parquet:1"]


def test_media_are_checked_against_the_data_root(tmp_path: Path) -> None:
    png(tmp_path / "img.png")
    truncated_png(tmp_path / "bad.png")
    path = tmp_path / "eval.jsonl"
    write_jsonl(
        path,
        [
            row("mmeb_eval", id="ok"),
            row("mmeb_eval", id="cut", qry_img_path="bad.png"),
            row("mmeb_eval", id="gone", tgt_img_path=["", "nope.png"]),
        ],
    )
    lenient = read_records(path)
    assert [r.id for r in lenient.rejected] == ["gone"]
    assert lenient.rejected[0].errors[0].field == "tgt_img_path[1]"
    strict = read_records(path, check_media=True)
    assert [r.id for r in strict.rejected] == ["cut", "gone"]


# -------------------------------------------------------------------------------------- directories
def write_visdoc(directory: Path, queries: list[dict], pages: list[dict], qrels: list[dict]) -> Path:
    write_jsonl(directory / "queries.jsonl", queries)
    write_jsonl(directory / "corpus.jsonl", pages)
    write_jsonl(directory / "qrels.jsonl", qrels)
    return directory


def test_read_visdoc_cross_checks_qrels(tmp_path: Path) -> None:
    png(tmp_path / "p1.png")
    png(tmp_path / "p2.png")
    truncated_png(tmp_path / "p3.png")
    queries = [{"query-id": q, "query": f"question {q}"} for q in ("q1", "q2", "q3", "q4")]
    pages = [{"corpus-id": p, "image_path": f"{p}.png"} for p in ("p1", "p2", "p3")]
    qrels = [
        {"query-id": "q1", "corpus-id": "p1", "score": 2},
        {"query-id": "q1", "corpus-id": "p2", "score": 0},
        {"query-id": "q2", "corpus-id": "p2", "score": 0},  # q2 has no relevant page
        {"query-id": "q3", "corpus-id": "p3", "score": 1},  # p3 does not decode: q3 loses its only page
        {"query-id": "q9", "corpus-id": "p1", "score": 1},  # unknown query
        {"query-id": "q4", "corpus-id": "p7", "score": 1},  # unknown page: q4 has nothing relevant
    ]
    data = read_visdoc(
        write_visdoc(tmp_path / "doc", queries, pages, qrels), data_root=tmp_path, check_media=True
    )
    assert [r.record_id() for r in data.queries.records] == ["q1"]
    assert [r.record_id() for r in data.corpus.records] == ["p1", "p2"]
    assert [(r.query_id, r.corpus_id) for r in data.qrels.records] == [("q1", "p1"), ("q1", "p2")]
    reasons = {(r.source, r.index): r.errors[0].reason for r in data.rejected}
    assert "no relevant page" in reasons[("doc/queries.jsonl", 2)]
    assert "does not decode" in reasons[("doc/corpus.jsonl", 3)]
    assert reasons[("doc/qrels.jsonl", 3)].startswith('query-id "q2" was rejected')
    assert reasons[("doc/qrels.jsonl", 4)] == 'corpus-id "p3" was rejected in doc/corpus.jsonl'
    assert reasons[("doc/qrels.jsonl", 5)] == 'unknown query-id "q9": not in doc/queries.jsonl'
    assert reasons[("doc/qrels.jsonl", 6)] == 'unknown corpus-id "p7": not in doc/corpus.jsonl'
    assert data.total == 13 and data.n_rejected == 8


def test_read_uvrb_cross_checks_instances(tmp_path: Path) -> None:
    png(tmp_path / "frames" / "frame_01.png")
    directory = tmp_path / "vid"
    write_jsonl(directory / "queries.jsonl", [row("uvrb_query"), row("uvrb_query", qid="v2")])
    write_jsonl(directory / "corpus.jsonl", [row("uvrb_corpus")])
    write_jsonl(directory / "instances.jsonl", [row("uvrb_instance"), row("uvrb_instance", cid="c9")])
    quarantine = tmp_path / "q.jsonl"
    data = read_uvrb(directory, data_root=tmp_path, quarantine=quarantine, check_media=True)
    assert [r.record_id() for r in data.queries.records] == ["v1"]
    assert [(r.id, r.errors[0].field) for r in data.rejected] == [("v2", "qid"), (None, "cid")]
    assert len(quarantine.read_text().splitlines()) == 2


def test_read_visdoc_names_missing_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "queries.jsonl", [row("visdoc_query")])
    with pytest.raises(DataFormatError, match="missing corpus.jsonl, qrels.jsonl"):
        read_visdoc(tmp_path)


# ----------------------------------------------------------------------------------------- manifest
def test_manifest_tasks_and_data_root(tmp_path: Path) -> None:
    tasks = [
        {"name": "A", "split": "eval", "kind": "mmeb_eval", "path": "eval/a.jsonl", "metric": "hit@1"},
        {"name": "D", "split": "eval", "kind": "visdoc", "path": "visdoc/D"},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x", "tasks": tasks}))
    got = list(iter_manifest_tasks(tmp_path))
    assert [(t.name, t.kind, t.path) for t in got] == [
        ("A", "mmeb_eval", "eval/a.jsonl"),
        ("D", "visdoc", "visdoc/D"),
    ]
    assert got[0].model_extra == {"metric": "hit@1"}
    (tmp_path / "eval" / "image").mkdir(parents=True)
    assert find_data_root(tmp_path / "eval" / "image" / "x.jsonl") == tmp_path
    assert find_data_root(tmp_path / "eval") == tmp_path


def test_bad_manifest_tasks_are_named(tmp_path: Path) -> None:
    tasks = [
        {"name": "A", "kind": "mmeb_eval", "path": "a.jsonl"},
        {"name": "B", "kind": "video", "path": "b"},
        {"name": "C", "kind": "uvrb", "path": "../c"},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"tasks": tasks}))
    with pytest.raises(DataFormatError) as info:
        list(iter_manifest_tasks(tmp_path))
    assert "tasks[1] ('B') field kind" in str(info.value) and "'mmeb_train'" in str(info.value)
    assert "tasks[2] ('C') field path" in str(info.value) and "escapes the data root" in str(info.value)


def test_eval_row_model_is_strict_about_lists() -> None:
    record, errors = MMEBEvalRow.parse(row("mmeb_eval", tgt_img_path=("", "")))
    assert record is None and errors[0].field == "tgt_img_path"
