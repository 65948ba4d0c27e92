"""Converters from the released formats of the video and page training sets to `mmeb_train` rows.

The registry (`embedrl.data.mmeb_train`) reads every training set as one parquet file of `mmeb_train` rows
at `<data root>/<set>/train.parquet`. MMEB-train ships in that layout; the LLaVA-Hound video sets and the
two page sets do not. `convert_training_set(name, source, out_dir)` reads a set as its publisher releases
it and writes that file under `out_dir` (the data root), so that `write_train_manifest(out_dir, mix)` and
training find it.

Released formats (schemas learnt from the loaders of TIGER-AI-Lab/VLM2Vec, `src/data/dataset/
llavahound_dataset_{caption,qa}.py`, `vidore_dataset.py`, `visrag_dataset.py`, and its
`experiments/public/train/train_v2.yaml`, which names the files; our code is our own):

- **LLaVA-Hound** (ShareGPTVideo/train_video_and_instruction): JSON lines, each with `id`, `video` (a
  video id) and `conversations` (`[{"from": "human", "value": "<video>\\n..."}, {"from": "gpt", ...}]`);
  the frames of video `v` are the image files of `train_300k/v/`. The two caption sets read
  `video_instruction/train/sft/video_caption_300k.jsonl`, the QA set `video_240k_caption_15k.jsonl` there.
  Frames are not copied: the rows name the frames folders, which must therefore lie under `out_dir`.
- **colpali_train_set** (vidore/colpali_train_set) and **visrag-indomain**
  (openbmb/VisRAG-Ret-Train-In-domain-data): parquet with `query` (text) and `image` (the page, as the
  Hugging Face image struct `{bytes, path}`); colpali adds `answer`, `image_filename`, `source`, ...,
  VisRAG `source`. Each page is written once, under `<set>/pages/`, named by a hash of its bytes.

Every converted row goes through the `mmeb_train` checks; a source row that cannot be converted (a
missing column, a page that does not decode, a video without frames) is rejected naming its source file,
its row (from 0 in parquet and JSON arrays, the line from 1 in JSON lines) and its column, and quarantined
as the source holds it (page bytes replaced by their size). Nothing is dropped silently.

Prompts: the video rows use the task prompts of VLM2Vec-V2's LLaVA-Hound loaders, so that a model trained
here sees the inputs the reference mix gives. The page rows use the query instruction our MMEB-V2 registry
gives the visual-document tasks (`eval/tasks/mmeb-v2.yaml`) and an image-only positive, as our pages are
evaluated; VLM2Vec-V2 differs here (see `_page_mapper`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from embedrl.data.mmeb_train import UnknownTrainSetError, train_set
from embedrl.data.official import _without_bytes, join_text  # the quarantine shows page bytes by size
from embedrl.data.official_video import _iter_json
from embedrl.data.paths import MediaPathError, frame_paths, verify_image
from embedrl.data.readers import (
    ReadResult,
    check_rows,
    display_source,
    finish_reading,
    iter_rows,
    write_parquet,
)
from embedrl.data.records import IMAGE_TOKEN, FieldError, Rejection, json_type_name, shorten
from embedrl.data.sides import MEDIA_TOKENS

log = logging.getLogger(__name__)

VIDEO_TOKEN = MEDIA_TOKENS[1]
LLAVA_HOUND_VIDEO_MARK = "<video>"  # where a LLaVA-Hound question puts its video
LLAVA_HOUND_FILES_UNDER = "video_instruction/train/sft"
LLAVA_HOUND_FRAMES = "train_300k"
# VLM2Vec-V2's task prompts for LLaVA-Hound (llavahound_dataset_caption.py / _qa.py): task prompts, as the
# evaluation registry holds VLM2Vec's; the retrieval one is also MSR-VTT's evaluation instruction.
VIDEO_RETRIEVAL_QUERY_PROMPT = "Find a video that contains the following visual content:"
VIDEO_RETRIEVAL_TARGET_PROMPT = "Understand the content of the provided video:"
VIDEO_QA_QUERY_PROMPT = "Answer a question based on the content of a video."
# The query instruction of the ViDoRe / VisRAG tasks in eval/tasks/mmeb-v2.yaml.
PAGE_QUERY_INSTRUCTION = "Find a document image that matches the given query:"
PAGE_FOLDER = "pages"
# PIL format name -> the suffix a page file keeps; pages of any other format are re-encoded as PNG.
_PAGE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}


class ConversionError(ValueError):
    """A source that cannot be converted at all (no annotation file, frames outside the output folder)."""


class SourceRowError(ValueError):
    """One source row that cannot be converted: the column at fault and why."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"{column}: {reason}")
        self.column = column
        self.reason = reason


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote: valid rows, rejected source rows, the parquet file and the quarantine."""

    rows_written: int
    rejected: int
    out_file: Path
    quarantine: Path | None = None

    def describe(self) -> str:
        text = f"{self.out_file}: {self.rows_written} rows written, {self.rejected} source rows rejected"
        return text + (f" (quarantined in {self.quarantine})" if self.rejected and self.quarantine else "")


@dataclass(frozen=True)
class Target:
    """Where a conversion writes: the data root, the set's folder in it, and the frames root (relative)."""

    name: str
    out_dir: Path
    frames: str = ""  # the LLaVA-Hound frames root, relative to out_dir

    @property
    def set_dir(self) -> Path:
        return self.out_dir / self.name


RowMapper = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ReleasedFormat:
    """How one training set is released: which files to read, and how a row of them becomes ours."""

    name: str
    released: str
    tables: Callable[[Path], list[Path]]
    mapper: Callable[[Target], RowMapper]
    needs_frames: bool = False


# --------------------------------------------------------------------------------------- columns
def _text(raw: dict[str, Any], column: str) -> str:
    if column not in raw:
        raise SourceRowError(column, "required column missing")
    value = raw[column]
    if not isinstance(value, str) or not value.strip():
        raise SourceRowError(
            column, f"expected a non-empty text, got {json_type_name(value)} {shorten(value)}"
        )
    return value.strip()


# ------------------------------------------------------------------------------------- LLaVA-Hound
def _llava_hound_tables(file_name: str) -> Callable[[Path], list[Path]]:
    def tables(source: Path) -> list[Path]:
        if source.is_file():
            return [source]
        places = [source / LLAVA_HOUND_FILES_UNDER / file_name, source / file_name]
        for place in places:
            if place.is_file():
                return [place]
        raise ConversionError(
            f"{source}: no {file_name} (looked at {', '.join(str(p) for p in places)}); "
            "pass the ShareGPTVideo/train_video_and_instruction download folder or the file"
        )

    return tables


def _turns(raw: dict[str, Any]) -> tuple[str, str]:
    """The first human turn and the first gpt turn after it (VLM2Vec reads turns 0 and 1 by position)."""
    conversations = raw.get("conversations")
    if not isinstance(conversations, list):
        raise SourceRowError(
            "conversations",
            f"expected a list of {{from, value}} turns, got "
            f"{json_type_name(conversations)} {shorten(conversations)}",
        )
    question = None
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise SourceRowError(
                f"conversations[{i}]", f"expected {{from, value}} with a text value, got {shorten(turn)}"
            )
        if question is None and turn.get("from") == "human" and turn["value"].strip():
            question = turn["value"].strip()
        elif question is not None and turn.get("from") == "gpt" and turn["value"].strip():
            return question, turn["value"].strip()
    if question is None:
        raise SourceRowError("conversations", "no human turn with text")
    raise SourceRowError("conversations", "no gpt turn with text after the first human turn")


def _with_video_token(question: str) -> str:
    if LLAVA_HOUND_VIDEO_MARK in question:
        return question.replace(LLAVA_HOUND_VIDEO_MARK, VIDEO_TOKEN)
    return f"{VIDEO_TOKEN}\n{question}"


def _frames_finder(target: Target) -> Callable[[dict[str, Any]], str]:
    """The frames folder of a row's `video`, relative to the data root; checked once per video."""
    known: dict[str, str | None] = {}

    def frames(raw: dict[str, Any]) -> str:
        video = _text(raw, "video")
        folder = f"{target.frames}/{video}"
        if video not in known:
            try:
                known[video] = None if frame_paths(target.out_dir / folder) else "holds no image frames"
            except MediaPathError:
                known[video] = "no such folder"
        if known[video]:
            raise SourceRowError("video", f"frames folder {folder!r} under {target.out_dir}: {known[video]}")
        return folder

    return frames


def _video_caption_mapper(target: Target) -> RowMapper:  # video -> its caption
    frames = _frames_finder(target)

    def mapper(raw: dict[str, Any]) -> dict[str, Any]:
        question, caption = _turns(raw)
        return _row(_with_video_token(question), frames(raw), caption, "")

    return mapper


def _video_retrieval_mapper(target: Target) -> RowMapper:  # caption -> its video
    frames = _frames_finder(target)

    def mapper(raw: dict[str, Any]) -> dict[str, Any]:
        _, caption = _turns(raw)
        return _row(
            join_text(VIDEO_RETRIEVAL_QUERY_PROMPT, caption),
            "",
            join_text(VIDEO_RETRIEVAL_TARGET_PROMPT, VIDEO_TOKEN),
            frames(raw),
        )

    return mapper


def _video_qa_mapper(target: Target) -> RowMapper:  # video + question -> answer
    frames = _frames_finder(target)

    def mapper(raw: dict[str, Any]) -> dict[str, Any]:
        question, answer = _turns(raw)
        return _row(join_text(VIDEO_QA_QUERY_PROMPT, _with_video_token(question)), frames(raw), answer, "")

    return mapper


def _row(qry: str, qry_media: str, pos_text: str, pos_media: str) -> dict[str, Any]:
    return {
        "qry": qry,
        "qry_image_path": qry_media,
        "pos_text": pos_text,
        "pos_image_path": pos_media,
        "neg_text": "",
        "neg_image_path": "",
    }


# ------------------------------------------------------------------------------------------ pages
def _parquet_tables(source: Path) -> list[Path]:
    """The parquet files of a downloaded Hugging Face data set; those naming a train split when some do."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ConversionError(f"{source}: no such file or folder")
    found = sorted(
        p
        for p in source.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(source).parts)
    )
    if not found:
        raise ConversionError(
            f"{source}: holds no .parquet file; pass the downloaded data set folder or a file"
        )
    train = [p for p in found if "train" in re.split(r"[^a-z0-9]+", p.relative_to(source).as_posix().lower())]
    return train or found


def _page_bytes(raw: dict[str, Any]) -> tuple[str, bytes]:
    """The column holding the page and its encoded bytes."""
    if "image" not in raw:
        raise SourceRowError("image", "required column missing")
    image = raw["image"]
    if isinstance(image, dict):
        column, data = "image.bytes", image.get("bytes")
    elif isinstance(image, bytes | bytearray):
        column, data = "image", image
    else:
        raise SourceRowError(
            "image",
            "expected the page as an image struct {bytes, path} or bytes, got "
            f"{json_type_name(image)} {shorten(_without_bytes(image))}",
        )
    if not isinstance(data, bytes | bytearray) or not data:
        raise SourceRowError(column, "no page bytes: the page must be embedded in the row")
    return column, bytes(data)


def _save_page(target: Target, column: str, data: bytes) -> str:
    """Write a page once (named by its content) and return its path relative to the data root."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            suffix = _PAGE_SUFFIXES.get(image.format or "")
            if suffix is None:  # a format our media checks do not take: keep the pixels, as PNG
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data, suffix = buffer.getvalue(), ".png"
    except Exception as exc:  # PIL raises many types on bad input
        raise SourceRowError(
            column, f"page bytes do not decode as an image ({type(exc).__name__}: {exc})"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()[:32]
    relative = f"{target.name}/{PAGE_FOLDER}/{digest[:2]}/{digest}{suffix}"
    path = target.out_dir / relative
    if path.is_file():
        return relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        verify_image(tmp)  # decodes fully; catches truncated data that Image.open lets through
        os.replace(tmp, path)
    except MediaPathError as exc:
        raise SourceRowError(column, f"page bytes do not decode as an image ({exc.reason})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return relative


def _page_mapper(extras: dict[str, str]) -> Callable[[Target], RowMapper]:
    """Query text -> page image, the registry's layout of both page sets.

    VLM2Vec-V2 reads colpali_train_set otherwise (its `vidore` parser: page + query -> answer text) and
    prefixes VisRAG queries and pages with per-source prompts; we keep the retrieval layout the registry
    and Embed-RL's mix give these sets, with our evaluation's instruction. `extras`: source column -> extra.
    """

    def make(target: Target) -> RowMapper:
        def mapper(raw: dict[str, Any]) -> dict[str, Any]:
            query = _text(raw, "query")
            column, data = _page_bytes(raw)
            row = _row(
                join_text(PAGE_QUERY_INSTRUCTION, query), "", IMAGE_TOKEN, _save_page(target, column, data)
            )
            row.update({extra: raw[name] for name, extra in extras.items() if isinstance(raw.get(name), str)})
            return row

        return mapper

    return make


# --------------------------------------------------------------------------------------- registry
_CAPTIONS, _QA = "video_caption_300k.jsonl", "video_240k_caption_15k.jsonl"
_HOUND = "ShareGPTVideo/train_video_and_instruction"
_FORMATS: tuple[ReleasedFormat, ...] = (
    ReleasedFormat(
        "video_caption_300k",
        f"{_HOUND}: {_CAPTIONS} + {LLAVA_HOUND_FRAMES}/<video>/ frames",
        _llava_hound_tables(_CAPTIONS),
        _video_caption_mapper,
        needs_frames=True,
    ),
    ReleasedFormat(
        "video_caption_300k-video",
        f"{_HOUND}: {_CAPTIONS} + {LLAVA_HOUND_FRAMES}/<video>/ frames",
        _llava_hound_tables(_CAPTIONS),
        _video_retrieval_mapper,
        needs_frames=True,
    ),
    ReleasedFormat(
        "video_qa_240k",
        f"{_HOUND}: {_QA} + {LLAVA_HOUND_FRAMES}/<video>/ frames",
        _llava_hound_tables(_QA),
        _video_qa_mapper,
        needs_frames=True,
    ),
    ReleasedFormat(
        "colpali_train_set",
        "vidore/colpali_train_set: parquet (query, image, answer, ...)",
        _parquet_tables,
        _page_mapper({"answer": "answer", "source": "doc_source"}),
    ),
    ReleasedFormat(
        "visrag-indomain",
        "openbmb/VisRAG-Ret-Train-In-domain-data: parquet (query, image, source)",
        _parquet_tables,
        _page_mapper({"source": "doc_source"}),
    ),
)


def _format_registry(formats: tuple[ReleasedFormat, ...]) -> dict[str, ReleasedFormat]:
    registry: dict[str, ReleasedFormat] = {}
    for released in formats:
        train_set(released.name)  # only registered training sets convert
        if released.name in registry:
            raise ValueError(f"converter for {released.name!r} is registered twice")
        registry[released.name] = released
    return registry


CONVERTERS: dict[str, ReleasedFormat] = _format_registry(_FORMATS)


def converter(name: str) -> ReleasedFormat:
    """The converter of training set `name`; raises listing the sets that have one."""
    try:
        return CONVERTERS[name]
    except KeyError:
        raise UnknownTrainSetError(
            f"no converter for training set {name!r}; convertible sets: "
            f"{', '.join(CONVERTERS)} (MMEB-train subsets need none)"
        ) from None


# -------------------------------------------------------------------------------------- conversion
def convert_training_set(
    name: str,
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    frames_dir: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
) -> ConvertResult:
    """Convert training set `name` from its released files at `source` into `out_dir` (the data root).

    Writes `<out_dir>/<name>/train.parquet` (the registry's file for the set) and, for the page sets, the
    pages under `<out_dir>/<name>/pages/`. `frames_dir`: the LLaVA-Hound frames root (default
    `<source>/train_300k`); it must lie inside `out_dir`, as rows name frames by relative path.
    Rejected source rows go to `quarantine` (default `<out file>.quarantine.jsonl`).
    """
    released = converter(name)
    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = Target(name, out_dir, _frames_root(source, out_dir, frames_dir) if released.needs_frames else "")
    out_file = out_dir / train_set(name).default_pattern
    quarantine = (
        Path(quarantine)
        if quarantine is not None
        else out_file.with_name(f"{out_file.name}.quarantine.jsonl")
    )
    quarantine.unlink(missing_ok=True)  # a quarantine of an earlier run would describe other rows
    mapper = released.mapper(target)
    results = [_convert_table(path, source, out_dir, mapper) for path in released.tables(source)]
    finish_reading(results, quarantine)
    rows = [record.to_dict() for result in results for record in result.records]
    rejected = sum(result.n_rejected for result in results)
    if not rows:
        raise ConversionError(f"{name}: no source row converted ({rejected} rejected; see {quarantine})")
    write_parquet(out_file, rows)
    log.info("%s: %d rows written to %s, %d rejected", name, len(rows), out_file, rejected)
    return ConvertResult(len(rows), rejected, out_file, quarantine if rejected else None)


def _frames_root(source: Path, out_dir: Path, frames_dir: str | os.PathLike[str] | None) -> str:
    if frames_dir is None and source.is_file():
        raise ConversionError(
            f"{source} is a file: give the frames root (the folder of {LLAVA_HOUND_FRAMES}/ "
            "video folders) as frames_dir / --frames"
        )
    frames = Path(frames_dir) if frames_dir is not None else source / LLAVA_HOUND_FRAMES
    if not frames.is_dir():
        raise ConversionError(
            f"frames root {frames} is not a folder; unpack the LLaVA-Hound frames there "
            "(one folder of image frames per video) or give it as frames_dir / --frames"
        )
    try:
        return frames.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        raise ConversionError(
            f"frames root {frames} is outside the output folder {out_dir}: rows name frames by "
            "a path relative to the data root, so put the frames under it (or pass as output "
            "a folder that holds them)"
        ) from None


def _table_rows(path: Path) -> Iterator[tuple[int, Any]]:
    return _iter_json(path) if path.suffix.lower() == ".json" else iter_rows(path)


def _convert_table(path: Path, source: Path, out_dir: Path, mapper: RowMapper) -> ReadResult:
    """The rows of one released file, converted and checked; rejections name this file and its rows."""
    shown = display_source(path, source if source.is_dir() else source.parent)
    originals: dict[int, Any] = {}
    unmapped: list[Rejection] = []

    def converted() -> Iterator[tuple[int, Any]]:
        for index, raw in _table_rows(path):
            if not isinstance(raw, dict):
                yield index, raw  # a line that is not JSON, or not an object: the check rejects it
                continue
            originals[index] = _without_bytes(raw)
            try:
                row = mapper(raw)
            except SourceRowError as exc:
                unmapped.append(
                    Rejection(shown, index, None, [FieldError(exc.column, exc.reason)], originals[index])
                )
                continue
            row["id"] = f"{shown}:{index}"
            yield index, row

    result = check_rows(converted(), "mmeb_train", source=shown, data_root=out_dir)
    result.total += len(unmapped)
    result.rejected = sorted(result.rejected + unmapped, key=lambda rejection: rejection.index)
    for rejection in result.rejected:  # show each row as the released file holds it
        if rejection.index in originals:
            rejection.record = originals[rejection.index]
    return result
