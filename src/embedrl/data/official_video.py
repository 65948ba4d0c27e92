"""Readers for the annotation rows of the 18 MMEB-V2 video tasks, as the VLM2Vec evaluation reads them.

MMEB-V2 ships the video frames (`video-tasks/frames/<group>/<data set>/`); each task's test rows are a
separate Hugging Face data set (`VLM2Vec/<name>`, listed in VLM2Vec's `src/constant/dataset_hf_path.py`)
whose columns are those of the source data set. One parser per schema family maps such a row onto an
`mmeb_eval` row (first candidate = the positive; `tgt_relevance` where a query has several positives);
the row then goes through the validation every record goes through (`embedrl.data.readers.check_rows`).
A row a parser cannot map (a missing column, an answer that is not among the options, a frames folder
that is not there) is rejected naming the column, never dropped and never repaired. A row that already
holds `tgt_text` is in our layout and is read as `embedrl.data.official.read_official_eval` reads it.

Families and what they were learnt from (VLM2Vec `src/data/eval_dataset/*.py`, read for their columns):

- classification, a label per video (`video_classification`: K700, HMDB51, UCF101, Breakfast):
  `video_id`, `pos_text`; the candidates are label texts. VLM2Vec ranks against its own hard-coded label
  list; here the pool is the labels of the rows, plus every line of an optional `labels.txt` in the
  task folder (give the full label list there to rank against labels no test video has).
- classification with per-row choices (`ssv2`: SmthSmthV2): `video_id`, `pos_text`, `neg_text` (the
  row's whole candidate list, the positive among them).
- multiple-choice QA (`mvbench`, `videomme`, `nextqa`, `egoschema`, `activitynetqa`): a question and its
  options; the query is the question followed by the lettered options, each candidate one lettered
  option, the answer first.
- caption-to-video retrieval (`msrvtt`, `msvd`, `didemo`, `vatex`, `youcook2`): a caption (the first,
  where a row has several) against the frames folder of its video.
- moment retrieval (`moment_retrieval`: QVHighlight, Charades-STA; `momentseeker`: MomentSeeker): a
  query (text, with a video or an image) against clips of one video, positive clips first.

Not verified from reachable sources: how each Hub repository lays out its files (the reader takes every
`.jsonl`/`.parquet`/`.json` file under the task folder, preferring those whose path names a test or
val split), and the exact value formats of some columns (noted at their parser).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from embedrl.data.official import _eval_row_mapper, _under, join_text
from embedrl.data.readers import (
    BadLine,
    DataFormatError,
    ReadResult,
    check_rows,
    display_source,
    finish_reading,
    iter_rows,
)
from embedrl.data.records import FieldError, Rejection

__all__ = ["VIDEO_PARSERS", "VideoRowError", "read_official_video", "video_parser_names", "video_table_files"]

Row = dict[str, Any]

VIDEO_TABLE_SUFFIXES = (".jsonl", ".parquet", ".json")
LABELS_FILE = "labels.txt"
_EVAL_SPLIT_WORDS = frozenset({"test", "val", "validation"})
# The target side of every video candidate in VLM2Vec's retrieval and moment tasks.
VIDEO_TARGET_INSTRUCTION = "Understand the content of the provided video."
CLIP_TARGET_INSTRUCTION = "Understand the content of the provided video clip."
# MomentSeeker words its query by what the query carries (text only, text and image, text and video).
MOMENTSEEKER_INSTRUCTIONS = {
    "text": "Find the clip that corresponds to the given text:",
    "image": "Select the video clip that aligns with the given text and image:",
    "video": "Find the clip that corresponds to the given sentence and video segment:",
}
MOMENT_QUERY_FOLDER = "query"
MOMENT_POSITIVE_PREFIX = "positive"
MOMENTSEEKER_FRAMES_FOLDER = "video_frames"


class VideoRowError(ValueError):
    """A row a parser cannot map: the column at fault and why."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"{column}: {reason}")
        self.column = column
        self.reason = reason


@dataclass(frozen=True)
class VideoContext:
    """What a parser needs beside the row: where the frames are and the task's wording."""

    data_root: Path
    media_root: str  # the task's frames root, relative to the data root
    instruction: str
    table: str = ""  # stem of the file the row comes from (MVBench: the subset)
    labels: tuple[str, ...] = field(default_factory=tuple)

    def frames(self, *parts: str) -> str:
        return _under(self.media_root, "/".join(parts))


VideoParser = Callable[[Row, VideoContext], Row]
VIDEO_PARSERS: dict[str, VideoParser] = {}


def register_video_parser(name: str) -> Callable[[VideoParser], VideoParser]:
    def register(parser: VideoParser) -> VideoParser:
        if name in VIDEO_PARSERS:
            raise ValueError(f"video parser {name!r} is registered twice ({VIDEO_PARSERS[name].__name__}, "
                             f"{parser.__name__}); rename one")
        VIDEO_PARSERS[name] = parser
        return parser

    return register


def video_parser_names() -> tuple[str, ...]:
    return tuple(VIDEO_PARSERS)


def get_video_parser(name: str) -> VideoParser:
    try:
        return VIDEO_PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown video parser {name!r}; known: {', '.join(VIDEO_PARSERS)}") from None


# --------------------------------------------------------------------------------------- columns
def _column(raw: Row, name: str) -> Any:
    if raw.get(name) is None:
        raise VideoRowError(name, f"missing column {name!r}")
    return raw[name]


def _text(raw: Row, name: str) -> str:
    value = _column(raw, name)
    if not isinstance(value, str) or not value.strip():
        raise VideoRowError(name, f"expected non-empty text, got {type(value).__name__} {value!r}")
    return value.strip()


def _name(raw: Row, name: str) -> str:
    """A video or question id: text, or an integer (NExTQA's video ids are numbers) read as text."""
    value = _column(raw, name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise VideoRowError(name, f"expected an id (text or integer), got {type(value).__name__} {value!r}")
    return value.strip()


def _texts(raw: Row, name: str) -> list[str]:
    value = _column(raw, name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise VideoRowError(name, f"expected a non-empty list of non-empty texts, got {value!r}")
    return [v.strip() for v in value]


def _first_text(raw: Row, name: str) -> str:
    """A caption column holding one text or a list of them (MSVD, VATEX): the first, as VLM2Vec queries it."""
    value = _column(raw, name)
    return _texts(raw, name)[0] if isinstance(value, list) else _text(raw, name)


def _index(raw: Row, name: str, n_options: int) -> int:
    value = _column(raw, name)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n_options:
        raise VideoRowError(name, f"expected an option index in 0..{n_options - 1}, got {value!r}")
    return value


def _stem(path: str) -> str:
    return PurePosixPath(path).stem


def _pool_row(instruction: str, query: str, query_media: str, targets: list[tuple[str, str]],
              relevance: list[int] | None = None, row_id: str | None = None) -> Row:
    row: Row = {
        "qry_inst": instruction,
        "qry_text": join_text(instruction, query),
        "qry_img_path": query_media,
        "tgt_text": [text for text, _ in targets],
        "tgt_img_path": [media for _, media in targets],
    }
    if relevance is not None:
        row["tgt_relevance"] = relevance
    if row_id is not None:
        row["id"] = row_id
    return row


# -------------------------------------------------------------------------------- classification
@register_video_parser("video_classification")
def parse_label_classification(raw: Row, ctx: VideoContext) -> Row:
    """`video_id`, `pos_text`: the video's frames against label texts (labels.txt adds the full list)."""
    video, label = _name(raw, "video_id"), _text(raw, "pos_text")
    if ctx.labels and label not in ctx.labels:
        raise VideoRowError("pos_text", f"label {label!r} is not in the task's {LABELS_FILE}")
    labels = [label, *(other for other in ctx.labels if other != label)]
    return _pool_row(ctx.instruction, "", ctx.frames(video), [(text, "") for text in labels])


@register_video_parser("ssv2")
def parse_choice_classification(raw: Row, ctx: VideoContext) -> Row:
    """`video_id`, `pos_text`, `neg_text`: the row's candidate labels (all of them, the positive included)."""
    video, label, choices = _name(raw, "video_id"), _text(raw, "pos_text"), _texts(raw, "neg_text")
    if label not in choices:
        raise VideoRowError("pos_text", f"label {label!r} is not among the row's choices in neg_text")
    labels = [label, *(other for other in choices if other != label)]
    return _pool_row(ctx.instruction, "", ctx.frames(video), [(text, "") for text in labels])


# ------------------------------------------------------------------------------ multiple-choice QA
@dataclass(frozen=True)
class _Question:
    video_folder: str  # relative to the task's frames root
    question: str
    options: list[str]
    answer: int
    row_id: str | None = None


_OPTION_PREFIX = re.compile(r"^\(?[A-Ea-e]\)?[.:)]\s+|^option\s*\d+\s*[.:]\s*", re.IGNORECASE)


def _bare_option(option: str) -> str:
    """An option without its own label ("A. red" or "option 0: red" -> "red"); we letter options ourselves."""
    return _OPTION_PREFIX.sub("", option, count=1).strip() or option


def _qa_row(item: _Question, ctx: VideoContext) -> Row:
    lettered = [f"({chr(ord('A') + i)}) {option}" for i, option in enumerate(item.options)]
    query = "\n".join([item.question, "Options:", *lettered])
    order = [item.answer, *(i for i in range(len(lettered)) if i != item.answer)]
    return _pool_row(ctx.instruction, query, ctx.frames(item.video_folder), [(lettered[i], "") for i in order],
                     row_id=item.row_id)


def _answer_among(raw: Row, column: str, answer: str, options: list[str]) -> int:
    if answer not in options:
        raise VideoRowError(column, f"answer {answer!r} is not among the options {options!r}")
    return options.index(answer)


@register_video_parser("mvbench")
def parse_mvbench(raw: Row, ctx: VideoContext) -> Row:
    """`question`, `candidates`, `answer` (an option's text), `video`; frames at `<subset>/<video>`, the
    subset from the `subset` column or, in the Hub's per-subset JSON files, the file name."""
    subset = raw.get("subset") or ctx.table
    options = _texts(raw, "candidates")
    answer = _answer_among(raw, "answer", _text(raw, "answer"), options)
    return _qa_row(_Question(f"{subset}/{_name(raw, 'video')}", _text(raw, "question"), options, answer), ctx)


@register_video_parser("videomme")
def parse_videomme(raw: Row, ctx: VideoContext) -> Row:
    """`videoID`, `question`, `options` ("A. ..."), `answer` (a letter), `question_id`."""
    options = _texts(raw, "options")
    letter = _text(raw, "answer").upper()
    letters = [chr(ord("A") + i) for i in range(len(options))]
    answer = _answer_among(raw, "answer", letter, letters)
    item = _Question(_name(raw, "videoID"), _text(raw, "question"), [_bare_option(o) for o in options], answer,
                     row_id=_optional_id(raw, "question_id"))
    return _qa_row(item, ctx)


@register_video_parser("nextqa")
def parse_nextqa(raw: Row, ctx: VideoContext) -> Row:
    """`video`, `question`, `a0`..`a4`, `answer` (an index), `qid` (numbered within its video, so the id
    is `<video>:<qid>`)."""
    video = _name(raw, "video")
    options = [_text(raw, f"a{i}") for i in range(5)]
    qid = _optional_id(raw, "qid")
    item = _Question(video, _text(raw, "question"), options, _index(raw, "answer", len(options)),
                     row_id=f"{video}:{qid}" if qid is not None else None)
    return _qa_row(item, ctx)


@register_video_parser("egoschema")
def parse_egoschema(raw: Row, ctx: VideoContext) -> Row:
    """`video_idx`, `question`, `option` (a list; a leading "A. "-style label is dropped), `answer` (an
    index, as text or integer), `question_idx`. The option labels' exact form is not verified."""
    options = [_bare_option(o) for o in _texts(raw, "option")]
    item = _Question(_name(raw, "video_idx"), _text(raw, "question"), options,
                     _index(raw, "answer", len(options)), row_id=_optional_id(raw, "question_idx"))
    return _qa_row(item, ctx)


@register_video_parser("activitynetqa")
def parse_activitynetqa(raw: Row, ctx: VideoContext) -> Row:
    """`video_name`, `question`, `answer` ("yes"/"no"), `question_id`; frames at `v_<video_name>`."""
    options = ["yes", "no"]
    answer = _answer_among(raw, "answer", _text(raw, "answer").lower(), options)
    item = _Question(f"v_{_name(raw, 'video_name')}", _text(raw, "question"), options, answer,
                     row_id=_optional_id(raw, "question_id"))
    return _qa_row(item, ctx)


def _optional_id(raw: Row, name: str) -> str | None:
    return _name(raw, name) if raw.get(name) is not None else None


# ---------------------------------------------------------------------------------- retrieval
def _caption_row(video_folder: str, caption: str, ctx: VideoContext) -> Row:
    return _pool_row(ctx.instruction, caption, "", [(VIDEO_TARGET_INSTRUCTION, ctx.frames(video_folder))])


@register_video_parser("msrvtt")
def parse_msrvtt(raw: Row, ctx: VideoContext) -> Row:
    """`video_id` (the frames folder), `caption`."""
    return _caption_row(_name(raw, "video_id"), _first_text(raw, "caption"), ctx)


@register_video_parser("msvd")
def parse_msvd(raw: Row, ctx: VideoContext) -> Row:
    """`video_id` (the frames folder), `caption` (a list: the first is the query)."""
    return _caption_row(_name(raw, "video_id"), _first_text(raw, "caption"), ctx)


@register_video_parser("didemo")
def parse_didemo(raw: Row, ctx: VideoContext) -> Row:
    """`video` (a video file path: its name without extension is the frames folder), `caption`."""
    return _caption_row(_stem(_text(raw, "video")), _first_text(raw, "caption"), ctx)


@register_video_parser("vatex")
def parse_vatex(raw: Row, ctx: VideoContext) -> Row:
    """`videoID` (the frames folder), `enCap` (English captions: the first is the query)."""
    return _caption_row(_name(raw, "videoID"), _first_text(raw, "enCap"), ctx)


@register_video_parser("youcook2")
def parse_youcook2(raw: Row, ctx: VideoContext) -> Row:
    """`id` (the frames folder of the segment), `sentence`."""
    return _caption_row(_name(raw, "id"), _text(raw, "sentence"), ctx)


# ----------------------------------------------------------------------------- moment retrieval
@register_video_parser("moment_retrieval")
def parse_moment_folders(raw: Row, ctx: VideoContext) -> Row:
    """`query`, `video_path`: frames at `<video name>/query/` (the query video) and one folder per clip
    beside it, `positive*` for the positives; positives first, each with relevance 1."""
    video = _stem(_text(raw, "video_path"))
    folder = ctx.data_root / ctx.frames(video)
    if not (folder / MOMENT_QUERY_FOLDER).is_dir():
        raise VideoRowError("video_path", f"no query frames folder {ctx.frames(video, MOMENT_QUERY_FOLDER)}")
    clips = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != MOMENT_QUERY_FOLDER)
    positives = [c for c in clips if c.startswith(MOMENT_POSITIVE_PREFIX)]
    if not positives:
        raise VideoRowError("video_path", f"no {MOMENT_POSITIVE_PREFIX}* clip folder in {ctx.frames(video)}")
    ordered = positives + [c for c in clips if c not in positives]
    return _pool_row(ctx.instruction, _text(raw, "query"), ctx.frames(video, MOMENT_QUERY_FOLDER),
                     [(VIDEO_TARGET_INSTRUCTION, ctx.frames(video, clip)) for clip in ordered],
                     relevance=[1] * len(positives) + [0] * (len(ordered) - len(positives)))


def _clip_folder(path: str) -> str:
    """MomentSeeker's frames folder of a clip path: `.mp4` dropped, `/` turned into `_`."""
    return path.removesuffix(".mp4").replace("/", "_")


def _clip_paths(raw: Row, name: str) -> list[str]:
    value = _column(raw, name)
    if not isinstance(value, list) or not all(isinstance(v, dict) and isinstance(v.get("output_path"), str)
                                              and v["output_path"] for v in value):
        raise VideoRowError(name, f"expected a list of {{'output_path': ...}} entries, got {value!r}")
    return [v["output_path"] for v in value]


@register_video_parser("momentseeker")
def parse_momentseeker(raw: Row, ctx: VideoContext) -> Row:
    """`query`, `input_frames` ("" = text only, `*.mp4` = a query video, `*.jpg` = a query image),
    `positive_frames` / `negative_frames` (lists of `{output_path}` clips); clip frames in
    `video_frames/<path, .mp4 dropped, / as _>`, a query image at `query_<input_frames>`."""
    given = raw.get("input_frames") or ""
    if not isinstance(given, str):
        raise VideoRowError("input_frames", f"expected text, got {type(given).__name__} {given!r}")
    if given.endswith(".mp4"):
        kind, media = "video", ctx.frames(MOMENTSEEKER_FRAMES_FOLDER, _clip_folder(given))
    elif given.endswith(".jpg"):
        kind, media = "image", ctx.frames(f"query_{given}")
    else:
        kind, media = "text", ""
    positives, negatives = _clip_paths(raw, "positive_frames"), _clip_paths(raw, "negative_frames")
    if not positives:
        raise VideoRowError("positive_frames", "no positive clip")
    clips = [ctx.frames(MOMENTSEEKER_FRAMES_FOLDER, _clip_folder(p)) for p in positives + negatives]
    return _pool_row(MOMENTSEEKER_INSTRUCTIONS[kind], _text(raw, "query"), media,
                     [(CLIP_TARGET_INSTRUCTION, clip) for clip in clips],
                     relevance=[1] * len(positives) + [0] * len(negatives))


# ------------------------------------------------------------------------------------------ files
def video_table_files(location: Path) -> list[Path]:
    """A task's annotation files: the file itself, or the `.jsonl`/`.parquet`/`.json` files anywhere under
    the folder (as a Hub download nests them: `data/`, `test_1k/`, `json/`), by path; where some of them
    name a test or val split in their path, only those (the repositories also ship training splits)."""
    if location.is_file():
        return [location]
    if not location.is_dir():
        raise DataFormatError(f"{location}: no such file or folder")
    found = sorted(
        p for p in location.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_TABLE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(location).parts)
    )
    if not found:
        raise DataFormatError(f"{location}: holds no {', '.join(VIDEO_TABLE_SUFFIXES)} file")
    evaluated = [p for p in found if _names_eval_split(p.relative_to(location))]
    return evaluated or found


def _names_eval_split(relative: Path) -> bool:
    return bool(_EVAL_SPLIT_WORDS & set(re.split(r"[^a-z0-9]+", relative.as_posix().lower())))


def _iter_json(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of a `.json` file: a JSON array (rows numbered from 0), else JSON lines (numbered from 1)."""
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, list):
        yield from enumerate(document)
        return
    if isinstance(document, dict):
        yield 0, document
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, BadLine(line, f"not JSON: {exc.msg}")


def _rows_with_table(files: list[Path]) -> Iterator[tuple[int, str, Any]]:
    """(index, file stem, row) over all files; indices run on from one file to the next."""
    offset = 0
    for path in files:
        rows = _iter_json(path) if path.suffix.lower() == ".json" else iter_rows(path)
        last = -1
        for index, row in rows:
            yield (offset + index if len(files) > 1 else index), path.stem, row
            last = index
        offset += last + 1


def _labels(location: Path) -> tuple[str, ...]:
    labels_file = location / LABELS_FILE if location.is_dir() else location.with_name(LABELS_FILE)
    if not labels_file.is_file():
        return ()
    return tuple(line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip())


# ----------------------------------------------------------------------------------------- reader
def read_official_video(
    location: str | Path,
    *,
    parser: str,
    data_root: str | Path,
    media_root: str = "",
    instruction: str = "",
    pooled: bool = False,
    quarantine: str | Path | None = None,
) -> ReadResult:
    """The annotation rows of one MMEB-V2 video task, mapped by `parser`, as checked `mmeb_eval` records.

    `location`: the task's file, or its folder (see `video_table_files`). `media_root`: the task's frames
    root, relative to `data_root`. `instruction`: the task's query instruction, joined in front of each
    query. `pooled`: the task ranks against the global pool (record kind `mmeb_eval_pool`). Rejected rows
    are quarantined as the official file holds them, with the column or field at fault.
    """
    data_root, location = Path(data_root), Path(location)
    parse = get_video_parser(parser)
    files = video_table_files(location)
    source = display_source(location, data_root)
    kind = "mmeb_eval_pool" if pooled else "mmeb_eval"
    passthrough = _eval_row_mapper(media_root, instruction, id_prefix=source)
    labels = _labels(location)
    originals: dict[int, Any] = {}
    unmapped: list[Rejection] = []

    def mapped_rows() -> Iterator[tuple[int, Any]]:
        for index, table, raw in _rows_with_table(files):
            originals[index] = raw
            if not isinstance(raw, dict):
                yield index, raw  # a bad line: the check rejects it
            elif "tgt_text" in raw:  # already in the MMEB eval row layout
                yield index, passthrough(raw, index)[0]
            else:
                try:
                    row = parse(raw, VideoContext(data_root, media_root, instruction, table, labels))
                except VideoRowError as exc:
                    unmapped.append(Rejection(source, index, None, [FieldError(exc.column, exc.reason)], raw))
                    continue
                row.setdefault("id", f"{source}:{index}")
                yield index, row

    result = check_rows(mapped_rows(), kind, source=source, data_root=data_root)
    result.total += len(unmapped)
    result.rejected = sorted(result.rejected + unmapped, key=lambda rejection: rejection.index)
    for rejection in result.rejected:
        if isinstance(originals.get(rejection.index), dict):
            rejection.record = originals[rejection.index]
    finish_reading([result], quarantine)
    return result
