"""`embedrl data validate` and `validate_path` on small data sets built in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from PIL import Image

from embedrl.cli import main
from embedrl.data.readers import write_jsonl, write_parquet
from embedrl.data.validate import validate_path

Rows = dict[str, list[dict[str, Any]]]


# ------------------------------------------------------------------------------------------ builder
def png(path: Path, colour: tuple[int, int, int] = (30, 90, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path, format="PNG")
    return path


def cut(path: Path, n_bytes: int = 20) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n_bytes])


TRAIN = "train/ImgCLS.parquet"
EVAL_IMAGE = "eval/image/ImgCLS.jsonl"
EVAL_VIDEO = "eval/video/VidRet.jsonl"
VISDOC = "visdoc/Doc"
UVRB = "uvrb/Vid"


def good_rows() -> Rows:
    """The rows of a small valid data set, by file (relative to the root)."""
    return {
        TRAIN: [
            {
                "qry": "<|image_1|> What shape?",
                "qry_image_path": "images/red.png",
                "pos_text": "a red star",
                "pos_image_path": "",
                "id": "t1",
                "subset": "ImgCLS",
            },
            {
                "qry": "a blue ring",
                "qry_image_path": "",
                "pos_text": "<|image_1|>",
                "pos_image_path": "images/blue.png",
                "id": "t2",
                "subset": "ImgCLS",
                "neg_text": "a red star",
                "neg_image_path": "",
            },
        ],
        EVAL_IMAGE: [
            {
                "id": "e1",
                "qry_inst": "Name the shape.",
                "qry_text": "<|image_1|>",
                "qry_img_path": "images/red.png",
                "tgt_text": ["a red star", "a blue ring"],
                "tgt_img_path": ["", ""],
                "scene": '{"objects": []}',
            },
            {
                "id": "e2",
                "qry_inst": "Find the image.",
                "qry_text": "a blue ring",
                "qry_img_path": "",
                "tgt_text": ["<|image_1|>", "<|image_1|>"],
                "tgt_img_path": ["images/blue.png", "images/red.png"],
                "tgt_relevance": [1, 0],
            },
            {
                "id": "e3",
                "qry_inst": "Name the shape.",
                "qry_text": "<|image_1|>",
                "qry_img_path": "images/blue.png",
                "tgt_text": ["a blue ring", "a red star"],
                "tgt_img_path": ["", ""],
            },
        ],
        EVAL_VIDEO: [
            {
                "id": "v1",
                "qry_inst": "Describe the motion.",
                "qry_text": "",
                "qry_img_path": "videos/v1",
                "tgt_text": ["moves left", "moves right"],
                "tgt_img_path": ["", ""],
            },
        ],
        f"{VISDOC}/queries.jsonl": [
            {"query-id": "q1", "query": "price of pears?"},
            {"query-id": "q2", "query": "how many nails?", "qry_inst": "Find the page."},
        ],
        f"{VISDOC}/corpus.jsonl": [
            {"corpus-id": "p1", "image_path": "pages/p1.png", "text": "pears 3"},
            {"corpus-id": "p2", "image_path": "pages/p2.png"},
        ],
        f"{VISDOC}/qrels.jsonl": [
            {"query-id": "q1", "corpus-id": "p1", "score": 2},
            {"query-id": "q1", "corpus-id": "p2", "score": 0},
            {"query-id": "q2", "corpus-id": "p2", "score": 1},
        ],
        f"{UVRB}/queries.jsonl": [
            {"qid": "u1", "text": "a star moves left"},
            {"qid": "u2", "text": "", "video_path": "videos/v2"},
        ],
        f"{UVRB}/corpus.jsonl": [
            {"cid": "c1", "video_path": "videos/v1", "caption": "a star"},
            {"cid": "c2", "video_path": "videos/v2"},
        ],
        f"{UVRB}/instances.jsonl": [
            {"qid": "u1", "cid": "c1", "relevance": 1},
            {"qid": "u2", "cid": "c2", "relevance": 1},
        ],
    }


def build_dataset(root: Path, mutate: Callable[[Rows, Path], None] | None = None) -> Path:
    """A MiniMMEB-like data set: manifest, images, frames directories, and one file of each kind."""
    for name, colour in (("red", (210, 40, 40)), ("blue", (40, 90, 200))):
        png(root / "images" / f"{name}.png", colour)
    for page in ("p1", "p2"):
        png(root / "pages" / f"{page}.png", (240, 240, 240))
    for video in ("v1", "v2"):
        for i in range(1, 4):
            png(root / "videos" / video / f"frame_{i:02d}.png", (20 * i, 60, 90))
    rows = good_rows()
    if mutate:
        mutate(rows, root)
    for rel, file_rows in rows.items():
        writer = write_parquet if rel.endswith(".parquet") else write_jsonl
        writer(root / rel, file_rows)
    tasks = [
        {"name": "ImgCLS", "split": "train", "kind": "mmeb_train", "path": TRAIN},
        {"name": "ImgCLS", "split": "eval", "kind": "mmeb_eval", "path": EVAL_IMAGE, "metric": "hit@1"},
        {"name": "VidRet", "split": "eval", "kind": "mmeb_eval", "path": EVAL_VIDEO},
        {"name": "Doc", "split": "eval", "kind": "visdoc", "path": VISDOC},
        {"name": "Vid", "split": "eval", "kind": "uvrb", "path": UVRB},
    ]
    (root / "manifest.json").write_text(
        json.dumps({"name": "MiniMMEB", "version": "1", "seed": 0, "tasks": tasks})
    )
    return root


def run_cli(capsys: Any, *args: str) -> tuple[int, str]:
    code = main(["data", "validate", *args])
    return code, capsys.readouterr().out


def quarantined(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------- good data
def test_good_data_set_passes(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data")
    code, out = run_cli(capsys, str(root))
    assert code == 0, out
    assert "OK: 19 records in 9 file(s), none rejected" in out
    assert not (tmp_path / "data.quarantine.jsonl").exists()


def test_a_stale_quarantine_is_left_untouched_on_good_data(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data")
    stale = tmp_path / "data.quarantine.jsonl"
    stale.write_text("old\n")
    code, out = run_cli(capsys, str(root))
    assert code == 0 and stale.read_text() == "old\n"
    assert f"the existing {stale} was left untouched" in out


# ---------------------------------------------------------------------------------------- bad data
class Bad(NamedTuple):
    """A rejection a corruption must cause: file, index, id (None: no id), field, part of the reason."""

    source: str
    index: int
    id: str | None
    field: str
    reason: str


def set_field(rel: str, i: int, **changes: Any) -> Callable[[Rows, Path], None]:
    def mutate(rows: Rows, root: Path) -> None:
        rows[rel][i].update(changes)

    return mutate


def outside_symlink(rows: Rows, root: Path) -> None:
    png(root.parent / "secret.png")
    os.symlink(root.parent / "secret.png", root / "images" / "link.png")
    rows[EVAL_IMAGE][2]["qry_img_path"] = "images/link.png"


def truncated_image(rows: Rows, root: Path) -> None:
    cut(png(root / "images" / "broken.png"))
    rows[EVAL_IMAGE][0]["qry_img_path"] = "images/broken.png"


def empty_frames(rows: Rows, root: Path) -> None:
    (root / "videos" / "v3").mkdir(parents=True)
    rows[EVAL_VIDEO][0]["qry_img_path"] = "videos/v3"


def bad_frame(rows: Rows, root: Path) -> None:
    (root / "videos" / "v2" / "frame_02.png").write_bytes(b"garbage")
    rows[f"{UVRB}/instances.jsonl"].pop()  # u2 now has no instance either: it is rejected for that


def duplicate_id(rows: Rows, root: Path) -> None:
    rows[EVAL_IMAGE].append(dict(rows[EVAL_IMAGE][1]))


def drop_relevant_qrel(rows: Rows, root: Path) -> None:
    rows[f"{VISDOC}/qrels.jsonl"][2]["score"] = 0


CORRUPTIONS: dict[str, tuple[Callable[[Rows, Path], None], list[Bad]]] = {
    "wrong type": (
        set_field(EVAL_IMAGE, 1, qry_text=5),
        [Bad(EVAL_IMAGE, 2, "e2", "qry_text", "expected str, got int 5")],
    ),
    "bool is not int": (
        set_field(f"{UVRB}/instances.jsonl", 0, relevance=True),
        [
            Bad(f"{UVRB}/instances.jsonl", 1, None, "relevance", "expected int, got bool true"),
            Bad(f"{UVRB}/queries.jsonl", 1, "u1", "qid", "no relevant video"),
        ],
    ),
    "missing field": (
        set_field(TRAIN, 0, pos_text=None),
        [Bad(TRAIN, 0, "t1", "pos_text", "expected str, got null")],
    ),
    "length mismatch": (
        set_field(EVAL_IMAGE, 0, tgt_img_path=[""]),
        [Bad(EVAL_IMAGE, 1, "e1", "tgt_img_path", "1 paths for 2 candidates")],
    ),
    "one candidate": (
        set_field(EVAL_IMAGE, 2, tgt_text=["a blue ring"], tgt_img_path=[""]),
        [Bad(EVAL_IMAGE, 3, "e3", "tgt_text", "at least 2 are needed")],
    ),
    "no positive": (
        set_field(EVAL_IMAGE, 1, tgt_relevance=[0, 0]),
        [Bad(EVAL_IMAGE, 2, "e2", "tgt_relevance", "no positive candidate")],
    ),
    "token without media": (
        set_field(EVAL_IMAGE, 0, qry_img_path=""),
        [Bad(EVAL_IMAGE, 1, "e1", "qry_text", "contains <|image_1|> but qry_img_path is empty")],
    ),
    "empty positive": (
        set_field(TRAIN, 1, pos_text="", pos_image_path=""),
        [Bad(TRAIN, 1, "t2", "pos_text", "neither text nor media")],
    ),
    "huge text": (
        set_field(f"{VISDOC}/queries.jsonl", 1, query="x" * 20_001),
        [
            Bad(f"{VISDOC}/queries.jsonl", 2, "q2", "query", "exceeds the limit of 20000"),
            Bad(f"{VISDOC}/qrels.jsonl", 3, None, "query-id", '"q2" was rejected'),
        ],
    ),
    "dot-dot escape": (
        set_field(EVAL_IMAGE, 0, qry_img_path="../x.png"),
        [Bad(EVAL_IMAGE, 1, "e1", "qry_img_path", "escapes the data root")],
    ),
    "absolute path": (
        set_field(EVAL_IMAGE, 1, tgt_img_path=["images/blue.png", "/etc/passwd"]),
        [Bad(EVAL_IMAGE, 2, "e2", "tgt_img_path[1]", "absolute path")],
    ),
    "symlink outside": (
        outside_symlink,
        [Bad(EVAL_IMAGE, 3, "e3", "qry_img_path", "through a symbolic link")],
    ),
    "missing file": (
        set_field(f"{VISDOC}/corpus.jsonl", 1, image_path="pages/p9.png"),
        [
            Bad(f"{VISDOC}/corpus.jsonl", 2, "p2", "image_path", "missing"),
            Bad(f"{VISDOC}/qrels.jsonl", 2, None, "corpus-id", '"p2" was rejected'),
            Bad(f"{VISDOC}/qrels.jsonl", 3, None, "corpus-id", '"p2" was rejected'),
            Bad(f"{VISDOC}/queries.jsonl", 2, "q2", "query-id", "no relevant page"),
        ],
    ),
    "truncated png": (truncated_image, [Bad(EVAL_IMAGE, 1, "e1", "qry_img_path", "does not decode")]),
    "empty frames directory": (empty_frames, [Bad(EVAL_VIDEO, 1, "v1", "qry_img_path", "no image frames")]),
    "bad frame": (
        bad_frame,
        [
            Bad(f"{UVRB}/queries.jsonl", 2, "u2", "video_path", "frame frame_02.png"),
            Bad(f"{UVRB}/corpus.jsonl", 2, "c2", "video_path", "frame frame_02.png"),
        ],
    ),
    "duplicate id": (
        duplicate_id,
        [Bad(EVAL_IMAGE, 4, "e2", "id", f'duplicate id="e2"; first at {EVAL_IMAGE}:2')],
    ),
    "qrel to unknown query": (
        set_field(f"{VISDOC}/qrels.jsonl", 1, **{"query-id": "q9"}),
        [Bad(f"{VISDOC}/qrels.jsonl", 2, None, "query-id", 'unknown query-id "q9"')],
    ),
    "query without relevant page": (
        drop_relevant_qrel,
        [
            Bad(f"{VISDOC}/queries.jsonl", 2, "q2", "query-id", "no relevant page"),
            Bad(f"{VISDOC}/qrels.jsonl", 3, None, "query-id", '"q2" was rejected'),
        ],
    ),
    "instance to unknown video": (
        set_field(f"{UVRB}/instances.jsonl", 1, cid="c9"),
        [
            Bad(f"{UVRB}/instances.jsonl", 2, None, "cid", 'unknown cid "c9"'),
            Bad(f"{UVRB}/queries.jsonl", 2, "u2", "qid", "no relevant video"),
        ],
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_bad_input_fails_and_is_quarantined_alone(name: str, tmp_path: Path, capsys: Any) -> None:
    mutate, expected = CORRUPTIONS[name]
    root = build_dataset(tmp_path / "data", mutate)
    code, out = run_cli(capsys, str(root))
    assert code == 1, out
    for bad in expected:
        shown_id = bad.id if bad.id is not None else "-"
        line = next((ln for ln in out.splitlines() if ln.startswith(f"{bad.source}:{bad.index} ")), "")
        assert line.startswith(f"{bad.source}:{bad.index} id={shown_id} field={bad.field}: "), out
        assert bad.reason in line, line
    lines = quarantined(tmp_path / "data.quarantine.jsonl")
    assert sorted((q["source"], q["index"]) for q in lines) == sorted((b.source, b.index) for b in expected)
    for q in lines:
        bad = next(b for b in expected if (b.source, b.index) == (q["source"], q["index"]))
        assert q["id"] == bad.id and any(
            e["field"] == bad.field and bad.reason in e["reason"] for e in q["errors"]
        )
    assert f"FAILED: {len(expected)} of" in out


def test_an_unparseable_line_is_rejected_by_line_number(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data")
    with (root / EVAL_IMAGE).open("a", encoding="utf-8") as handle:
        handle.write('{"id": "e4", "qry_text": \n')
    code, out = run_cli(capsys, str(root))
    assert code == 1
    assert f"{EVAL_IMAGE}:4 id=- field=<line>: invalid JSON" in out
    [line] = quarantined(tmp_path / "data.quarantine.jsonl")
    assert line["record"] == {"_raw_line": '{"id": "e4", "qry_text": '}


# ------------------------------------------------------------------------------------- file errors
def test_truncated_parquet_fails_naming_the_file(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data")
    cut(root / TRAIN, (root / TRAIN).stat().st_size // 2)
    code, out = run_cli(capsys, str(root))
    assert code == 1
    assert f"{TRAIN}: ERROR: " in out and "not a readable parquet file" in out
    assert "1 file error(s)" in out


def test_an_empty_split_file_fails_with_no_records(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data")
    (root / EVAL_VIDEO).write_text("")
    code, out = run_cli(capsys, str(root))
    assert code == 1 and f"{EVAL_VIDEO}: ERROR: no records" in out


def test_an_empty_directory_fails_with_no_records(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "empty").mkdir()
    code, out = run_cli(capsys, str(tmp_path / "empty"))
    assert code == 1 and "no records" in out and "FAILED" in out


def test_a_missing_task_path_fails(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data")
    shutil.rmtree(root / UVRB)
    code, out = run_cli(capsys, str(root))
    assert code == 1 and f"{UVRB}: ERROR: no such file or directory" in out


def test_a_bad_manifest_fails_naming_the_task(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["tasks"][1]["kind"] = "mmeb"
    (root / "manifest.json").write_text(json.dumps(manifest))
    code, out = run_cli(capsys, str(root))
    assert code == 1 and "tasks[1] ('ImgCLS') field kind" in out


def test_an_unknown_file_kind_lists_the_kinds(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    code, out = run_cli(capsys, str(path))
    assert (
        code == 1 and "unsupported file type '.csv'" in out and "mmeb_train, mmeb_eval, visdoc, uvrb" in out
    )
    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"question": "?"}])
    code, out = run_cli(capsys, str(rows))
    assert code == 1 and "cannot tell the record kind" in out and "pass kind=" in out


def test_a_missing_path_fails(tmp_path: Path, capsys: Any) -> None:
    code, out = run_cli(capsys, str(tmp_path / "nowhere"))
    assert code == 1 and "no such file or directory" in out


# ---------------------------------------------------------------------- single files, walk, options
def test_a_single_file_finds_its_data_root_and_quarantines_beside_it(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data", set_field(EVAL_IMAGE, 2, qry_img_path="images/none.png"))
    code, out = run_cli(capsys, str(root / EVAL_IMAGE))
    assert code == 1 and f"{EVAL_IMAGE}:3 id=e3 field=qry_img_path" in out
    beside = root / f"{EVAL_IMAGE}.quarantine.jsonl"
    assert [q["id"] for q in quarantined(beside)] == ["e3"]
    code, out = run_cli(capsys, str(root / EVAL_VIDEO))  # the earlier quarantine file is not read as data
    assert code == 0, out


def test_an_explicit_quarantine_and_data_root(tmp_path: Path, capsys: Any) -> None:
    root = build_dataset(tmp_path / "data", set_field(EVAL_IMAGE, 0, id=""))
    target = tmp_path / "q" / "bad.jsonl"
    code, _ = run_cli(capsys, str(root / EVAL_IMAGE), "--quarantine", str(target), "--data-root", str(root))
    assert code == 1 and [q["index"] for q in quarantined(target)] == [1]
    code, out = run_cli(capsys, str(root / EVAL_VIDEO), "--data-root", str(root / "eval"))
    assert code == 1 and "missing" in out  # media paths now resolve under eval/, where there are none


def test_a_directory_without_manifest_is_walked(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "data")
    (root / "manifest.json").unlink()
    (root / "stale.quarantine.jsonl").write_text("{}\n")
    report = validate_path(root)
    assert report.ok, report.describe()
    kinds = {source: f.kind for source, f in report.files.items()}
    assert kinds == {
        EVAL_IMAGE: "mmeb_eval",
        EVAL_VIDEO: "mmeb_eval",
        TRAIN: "mmeb_train",
        f"{UVRB}/queries.jsonl": "uvrb_query",
        f"{UVRB}/corpus.jsonl": "uvrb_corpus",
        f"{UVRB}/instances.jsonl": "uvrb_instance",
        f"{VISDOC}/queries.jsonl": "visdoc_query",
        f"{VISDOC}/corpus.jsonl": "visdoc_page",
        f"{VISDOC}/qrels.jsonl": "visdoc_qrel",
    }
    assert report.n_records == 19 and report.n_rejected == 0


def test_a_visdoc_directory_alone_is_cross_checked(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "data", drop_relevant_qrel)
    report = validate_path(root / VISDOC)
    assert not report.ok and [r.id for r in report.rejections] == ["q2", None]
    assert report.quarantine_path == root / "visdoc" / "Doc.quarantine.jsonl" and report.quarantine_written


def test_check_media_off_skips_decoding_but_not_path_checks(tmp_path: Path) -> None:
    root = build_dataset(tmp_path / "data", truncated_image)
    assert validate_path(root, check_media=False).ok
    root2 = build_dataset(tmp_path / "data2", set_field(EVAL_IMAGE, 0, qry_img_path="../x.png"))
    assert validate_path(root2, check_media=False).n_rejected == 1


def test_report_counts_and_describe_limit(tmp_path: Path) -> None:
    def many_bad(rows: Rows, root: Path) -> None:
        rows[EVAL_IMAGE] += [dict(rows[EVAL_IMAGE][0], id=f"x{i}", tgt_text=[]) for i in range(30)]

    report = validate_path(build_dataset(tmp_path / "data", many_bad))
    assert (report.n_records, report.n_valid, report.n_rejected) == (49, 19, 30)
    assert report.files[EVAL_IMAGE].n_rejected == 30
    text = report.describe(max_problems=10)
    assert "... and 50 more problems" in text  # 30 records x 2 problems (no candidates, path count)
    assert text.splitlines()[-1] == "FAILED: 30 of 49 records rejected in 1 of 9 file(s)"
