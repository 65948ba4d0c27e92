"""Readers for the layouts MMEB-V2 and UVRB are published in, mapped onto the formats of docs/data-formats.md.

Each official row is mapped onto the matching record kind, then checked by the validation every other
data set goes through (`embedrl.data.readers.check_rows`): a bad row is rejected naming its file, its
index, its id and the field, counted, logged and quarantined, never dropped silently. The mapping only
renames fields, joins media paths to their root and joins instructions to texts; it never repairs a
value, so that a field of the wrong type still reaches the check and is named there. The quarantine
keeps the row as the official file holds it.

Layouts (paths relative to the data root; see docs/data-formats.md, "Official benchmark layouts"):

- image and video rows (MMEB-V2): one file, or a folder of `.parquet`/`.jsonl` shards, per task; fields
  `qry_inst` (optional), `qry_text`, `qry_img_path`, `tgt_inst` (optional), `tgt_text[]`,
  `tgt_img_path[]`, optional `id`; media paths relative to the task's `media_root`; a video is a
  folder of frames. The first candidate is the positive. Video tasks whose rows are the source data
  sets' own annotation columns are read by `embedrl.data.official_video`.
- visual documents (ViDoRe / BEIR style): a task folder with tables `queries` (`query-id`, `query`),
  `corpus` (`corpus-id`, optional `image_path`) and `qrels` (`query-id`, `corpus-id`, graded `score`),
  each a `.jsonl`/`.parquet` file or a folder of shards; a page without `image_path` is the image
  `<corpus-id>.png` in the task folder. Integer ids are read as text.
- UVRB: a data set folder (or `<name>/UVRB/<name>/`) with `queries.jsonl` (`id`, `text`, optional
  `video` or `image`), `corpus.jsonl` (`id`, `video`) and `instances.jsonl` (`qid`, `pos[]`), directly or
  under `jsonl/`; a video `v.mp4` is the frames folder `videos_frames/v/`, an image lives under `images/`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from embedrl.data.readers import (
    DATA_SUFFIXES,
    DataFormatError,
    ReadResult,
    UVRBData,
    VisDocData,
    check_rows,
    display_source,
    finish_reading,
    iter_rows,
    link_uvrb,
    link_visdoc,
)
from embedrl.data.records import IMAGE_TOKEN

__all__ = [
    "join_text",
    "read_official_eval",
    "read_official_uvrb",
    "read_official_visdoc",
    "table_files",
]

logger = logging.getLogger(__name__)

Row = dict[str, Any]
RowMapper = Callable[[Any, int], list[Any]]

UVRB_TABLE_FOLDER = "jsonl"
UVRB_FRAMES_FOLDER = "videos_frames"
UVRB_IMAGES_FOLDER = "images"
VISDOC_PAGE_SUFFIX = ".png"


# ---------------------------------------------------------------------------------------------- files
def table_files(location: Path) -> list[Path]:
    """The data files of one table: the file itself, or the `.jsonl`/`.parquet` shards of a folder, by name."""
    if location.is_file():
        return [location]
    if location.is_dir():
        shards = sorted(p for p in location.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
        if shards:
            return shards
        raise DataFormatError(f"{location}: folder holds no {' or '.join(DATA_SUFFIXES)} file")
    raise DataFormatError(f"{location}: no such file or folder")


def _named_table(folder: Path, name: str) -> list[Path]:
    """Table `name` of a folder: `name.jsonl`, `name.parquet`, or a folder `name/` of shards."""
    for candidate in (folder / f"{name}.jsonl", folder / f"{name}.parquet", folder / name):
        if candidate.exists():
            return table_files(candidate)
    raise DataFormatError(
        f"{folder}: missing table {name!r} (expected {name}.jsonl, {name}.parquet or a folder {name}/ of shards)"
    )


def _rows_of(files: list[Path]) -> Iterator[tuple[int, Any]]:
    """Rows of one or several shards; a single file keeps its own index (line or row number), shards are
    numbered on from one to the next."""
    if len(files) == 1:
        yield from iter_rows(files[0])
        return
    offset = 0
    for path in files:
        count = 0
        for index, row in iter_rows(path):
            yield offset + index, row
            count = index + 1
        offset += count


def _source_name(files: list[Path], data_root: Path) -> str:
    location = files[0] if len(files) == 1 else files[0].parent
    return display_source(location, data_root)


class _Table:
    """One official table read as records of our kind, with its rows as the official file holds them."""

    def __init__(self, files: list[Path], kind: str, data_root: Path, mapper: RowMapper) -> None:
        self.originals: dict[int, Any] = {}
        self.result = check_rows(self._mapped_rows(files, mapper), kind, source=_source_name(files, data_root),
                                 data_root=data_root)

    def _mapped_rows(self, files: list[Path], mapper: RowMapper) -> Iterator[tuple[int, Any]]:
        for index, raw in _rows_of(files):
            self.originals[index] = _without_bytes(raw)
            for row in mapper(raw, index):
                yield index, row

    def show_official_rows(self) -> ReadResult:
        """Rejections hold the official row (call again after linking, which rejects more)."""
        for rejection in self.result.rejected:
            if isinstance(rejection.record, dict) and isinstance(self.originals.get(rejection.index), dict):
                rejection.record = self.originals[rejection.index]
        return self.result


def _without_bytes(value: Any) -> Any:
    """The row as the quarantine shows it: embedded media bytes (a page image) replaced by their size."""
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {key: _without_bytes(item) for key, item in value.items()}
    return value


# ------------------------------------------------------------------------------------------- mapping
def join_text(*parts: Any) -> Any:
    """Non-empty text parts joined by one space; a part that is not a str is returned as is, so that the
    record check names the bad field instead of the mapping hiding it."""
    for part in parts:
        if not isinstance(part, str):
            return part
    return " ".join(p.strip() for p in parts if p.strip())


def _under(root: str, path: Any) -> Any:
    """`path` joined to a root folder; "" (no media) stays "", a null cell reads as "", other types pass."""
    if path is None or path == "":
        return ""
    if not isinstance(path, str) or not root:
        return path
    return f"{root.rstrip('/')}/{path}"


def _as_id(value: Any) -> Any:
    """Integer ids (BEIR/ViDoRe parquet) as text; anything else unchanged for the check to judge."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _without_image_token(text: Any) -> Any:
    # An instruction's image token only marks where the media goes; our sides put media first anyway.
    return " ".join(text.replace(IMAGE_TOKEN, " ").split()) if isinstance(text, str) else text


# -------------------------------------------------------------------------------- image / video rows
def _eval_row_mapper(media_root: str, instruction: str, id_prefix: str) -> RowMapper:
    def mapper(raw: Any, index: int) -> list[Any]:
        if not isinstance(raw, dict):
            return [raw]
        row = dict(raw)
        # A null cell is how parquet stores an absent id.
        row["id"] = _as_id(row["id"]) if row.get("id") is not None else f"{id_prefix}:{index}"
        query_instruction = _without_image_token(row.get("qry_inst") or instruction)
        row["qry_inst"] = query_instruction
        if "qry_text" in row:
            row["qry_text"] = join_text(query_instruction, row["qry_text"])
        if "qry_img_path" in row:
            row["qry_img_path"] = _under(media_root, row["qry_img_path"])
        if isinstance(row.get("tgt_img_path"), list):
            row["tgt_img_path"] = [_under(media_root, p) for p in row["tgt_img_path"]]
        target_instruction = _without_image_token(row.pop("tgt_inst", "") or "")
        if target_instruction and isinstance(row.get("tgt_text"), list):
            row["tgt_text"] = [join_text(target_instruction, t) for t in row["tgt_text"]]
        return [row]

    return mapper


def read_official_eval(
    location: str | Path,
    *,
    data_root: str | Path,
    media_root: str = "",
    instruction: str = "",
    pooled: bool = False,
    quarantine: str | Path | None = None,
) -> ReadResult:
    """Rows of an MMEB-V2 image or video task (a file or a folder of shards) as `mmeb_eval` records.

    `media_root`: the folder, relative to `data_root`, that `qry_img_path`/`tgt_img_path` are relative to.
    `instruction`: used as `qry_inst` for rows without one. The instruction is joined in front of
    `qry_text` (and `tgt_inst` in front of each `tgt_text`), as the official evaluation builds its inputs.
    `pooled`: the task ranks against the global pool, so a row may carry a single candidate
    (record kind `mmeb_eval_pool`); otherwise each row needs its positive and at least one negative.
    A missing `id` becomes `<file>:<index>`.
    """
    data_root = Path(data_root)
    files = table_files(Path(location))
    kind = "mmeb_eval_pool" if pooled else "mmeb_eval"
    mapper = _eval_row_mapper(media_root, instruction, id_prefix=_source_name(files, data_root))
    result = _Table(files, kind, data_root, mapper).show_official_rows()
    finish_reading([result], quarantine)
    return result


# ------------------------------------------------------------------------------------ visual documents
def _visdoc_query_mapper(instruction: str) -> RowMapper:
    def mapper(raw: Any, index: int) -> list[Any]:
        if not isinstance(raw, dict):
            return [raw]
        row = dict(raw)
        row["query-id"] = _as_id(row.get("query-id"))
        if instruction and "query" in row:
            row["query"] = join_text(instruction, row["query"])
        return [row]

    return mapper


def _visdoc_page_mapper(task_folder: str) -> RowMapper:
    def mapper(raw: Any, index: int) -> list[Any]:
        if not isinstance(raw, dict):
            return [raw]
        row = dict(raw)
        row.pop("image", None)  # embedded page bytes: the page is read from its file
        row["corpus-id"] = _as_id(row.get("corpus-id"))
        page = row.get("image_path") or (
            f"{row['corpus-id']}{VISDOC_PAGE_SUFFIX}" if isinstance(row["corpus-id"], str) else ""
        )
        row["image_path"] = _under(task_folder, page)
        return [row]

    return mapper


def _visdoc_qrel_mapper(raw: Any, index: int) -> list[Any]:
    if not isinstance(raw, dict):
        return [raw]
    row = dict(raw)
    for key in ("query-id", "corpus-id"):
        if key in row:
            row[key] = _as_id(row[key])
    return [row]


def read_official_visdoc(
    folder: str | Path,
    *,
    data_root: str | Path,
    instruction: str = "",
    quarantine: str | Path | None = None,
) -> VisDocData:
    """A ViDoRe/BEIR-style task folder as visdoc tables, checked against each other like `read_visdoc`.

    `instruction` is joined in front of every query text. Page images: `image_path` relative to the task
    folder, else `<corpus-id>.png` there (pages embedded as bytes in the corpus table are not read:
    export them to those files first).
    """
    data_root, folder = Path(data_root), Path(folder)
    task_folder = display_source(folder, data_root)
    tables = [
        _Table(_named_table(folder, "queries"), "visdoc_query", data_root, _visdoc_query_mapper(instruction)),
        _Table(_named_table(folder, "corpus"), "visdoc_page", data_root, _visdoc_page_mapper(task_folder)),
        _Table(_named_table(folder, "qrels"), "visdoc_qrel", data_root, _visdoc_qrel_mapper),
    ]
    data = link_visdoc(*(table.result for table in tables))
    for table in tables:
        table.show_official_rows()
    finish_reading(data.results, quarantine)
    return data


# ---------------------------------------------------------------------------------------------- UVRB
def _frames_folder(task_folder: str, video: Any) -> Any:
    """The frames folder of an official video file name: `videos_frames/<name without extension>`."""
    if not isinstance(video, str) or not video:
        return _under(task_folder, video)
    return f"{task_folder}/{UVRB_FRAMES_FOLDER}/{PurePosixPath(video).with_suffix('').as_posix()}"


def _uvrb_query_mapper(task_folder: str, instruction: str) -> RowMapper:
    def mapper(raw: Any, index: int) -> list[Any]:
        if not isinstance(raw, dict) or "id" not in raw:
            return [raw]
        row = dict(raw)
        row["qid"] = _as_id(row.pop("id"))
        row["text"] = join_text(instruction, row.get("text") or "")
        if row.get("video"):
            row["video_path"] = _frames_folder(task_folder, row.pop("video"))
        if row.get("image"):
            row["image_path"] = _under(f"{task_folder}/{UVRB_IMAGES_FOLDER}", row.pop("image"))
        return [row]

    return mapper


def _uvrb_corpus_mapper(task_folder: str) -> RowMapper:
    def mapper(raw: Any, index: int) -> list[Any]:
        if not isinstance(raw, dict) or "id" not in raw:
            return [raw]
        row = dict(raw)
        row["cid"] = _as_id(row.pop("id"))
        row["video_path"] = _frames_folder(task_folder, row.pop("video", ""))
        return [row]

    return mapper


def _uvrb_instance_mapper(raw: Any, index: int) -> list[Any]:
    """One official instance (a query and the list `pos` of its relevant videos) as one row per video."""
    if not isinstance(raw, dict) or not isinstance(raw.get("pos"), list):
        return [raw]
    qid = _as_id(raw.get("qid"))
    return [{"qid": qid, "cid": _as_id(cid), "relevance": 1} for cid in raw["pos"]]


def _uvrb_data_set_folder(folder: Path) -> Path:
    """The folder holding a data set's tables: `<name>/`, or `<name>/UVRB/<name>/` as its archive unpacks."""
    nested = folder / "UVRB" / folder.name
    return nested if nested.is_dir() else folder


def read_official_uvrb(
    folder: str | Path,
    *,
    data_root: str | Path,
    instruction: str = "",
    quarantine: str | Path | None = None,
) -> UVRBData:
    """A UVRB data set folder as uvrb tables, checked against each other like `read_uvrb`.

    The data set lives in `<folder>/` or, as its archive unpacks, in `<folder>/UVRB/<folder name>/`;
    tables are read from its `jsonl/` subfolder when there is one, else from the data set folder itself.
    `instruction` (the data set's query prompt) is joined in front of every query text.
    """
    data_root, folder = Path(data_root), _uvrb_data_set_folder(Path(folder))
    task_folder = display_source(folder, data_root)
    table_folder = folder / UVRB_TABLE_FOLDER if (folder / UVRB_TABLE_FOLDER).is_dir() else folder
    tables = [
        _Table(_named_table(table_folder, "queries"), "uvrb_query", data_root,
               _uvrb_query_mapper(task_folder, instruction)),
        _Table(_named_table(table_folder, "corpus"), "uvrb_corpus", data_root, _uvrb_corpus_mapper(task_folder)),
        _Table(_named_table(table_folder, "instances"), "uvrb_instance", data_root, _uvrb_instance_mapper),
    ]
    data = link_uvrb(*(table.result for table in tables))
    for table in tables:
        table.show_official_rows()
    finish_reading(data.results, quarantine)
    return data

