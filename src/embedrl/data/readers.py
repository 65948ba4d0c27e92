"""Reading and writing the data formats of docs/data-formats.md.

Readers validate every record, count and quarantine the bad ones, and never drop a record silently:
each row read ends up either in `ReadResult.records` or in `ReadResult.rejected`. Index of a record:
its line number (from 1) in a JSONL file, its row number (from 0) in a parquet file.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from embedrl.data.paths import MediaPathError, resolve_media
from embedrl.data.paths import check_media as check_media_path
from embedrl.data.records import (
    DEFAULT_MAX_TEXT_CHARS,
    RECORD_TYPES,
    FieldError,
    OptStr,
    Record,
    Rejection,
    pydantic_field_error,
    shorten,
)

logger = logging.getLogger(__name__)

DATASET_KINDS: tuple[str, ...] = ("mmeb_train", "mmeb_eval", "visdoc", "uvrb")
RECORD_KINDS: tuple[str, ...] = tuple(RECORD_TYPES)
DATA_SUFFIXES: tuple[str, ...] = (".jsonl", ".parquet")
VISDOC_FILES: dict[str, str] = {
    "queries.jsonl": "visdoc_query",
    "corpus.jsonl": "visdoc_page",
    "qrels.jsonl": "visdoc_qrel",
}
UVRB_FILES: dict[str, str] = {
    "queries.jsonl": "uvrb_query",
    "corpus.jsonl": "uvrb_corpus",
    "instances.jsonl": "uvrb_instance",
}
MANIFEST = "manifest.json"
PARQUET_COMPRESSION = "zstd"

# Kind of a row, from its fields: the first rule whose fields the row has all of wins.
_DETECTION_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("qry", "pos_text"), "mmeb_train"),
    (("tgt_text",), "mmeb_eval"),
    (("query-id", "corpus-id"), "visdoc_qrel"),
    (("corpus-id",), "visdoc_page"),
    (("query-id",), "visdoc_query"),
    (("qid", "cid"), "uvrb_instance"),
    (("cid",), "uvrb_corpus"),
    (("qid",), "uvrb_query"),
)


class DataFormatError(ValueError):
    """A file that cannot be read as records at all (corrupt parquet, unknown kind, bad manifest)."""


def _known_kinds() -> str:
    return f"data set kinds: {', '.join(DATASET_KINDS)}; record kinds: {', '.join(RECORD_KINDS)}"


# ------------------------------------------------------------------------------------------ results
@dataclass
class ReadResult:
    """The records of one file: the valid ones (typed, with their index) and the rejected ones."""

    source: str
    kind: str | None
    records: list[Record] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    total: int = 0

    @property
    def n_valid(self) -> int:
        return len(self.records)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)

    def reject(self, errors_of: Callable[[Record], list[FieldError]]) -> int:
        """Move the valid records for which `errors_of` finds problems to `rejected`; how many moved."""
        kept: list[tuple[int, Record]] = []
        moved = 0
        for index, record in zip(self.indices, self.records, strict=True):
            errors = errors_of(record)
            if errors:
                self.rejected.append(
                    Rejection(self.source, index, record.record_id(), errors, record.to_dict())
                )
                moved += 1
            else:
                kept.append((index, record))
        if moved:
            self.indices = [i for i, _ in kept]
            self.records = [r for _, r in kept]
            self.rejected.sort(key=lambda r: r.index)
        return moved


@dataclass
class TableSet:
    """Several files read together (a visdoc or uvrb directory)."""

    @property
    def results(self) -> tuple[ReadResult, ...]:
        raise NotImplementedError

    @property
    def rejected(self) -> list[Rejection]:
        return [rej for result in self.results for rej in result.rejected]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.results)

    @property
    def n_rejected(self) -> int:
        return sum(r.n_rejected for r in self.results)


@dataclass
class VisDocData(TableSet):
    """A visdoc directory: queries, page corpus (the global pool) and graded qrels."""

    queries: ReadResult
    corpus: ReadResult
    qrels: ReadResult

    @property
    def results(self) -> tuple[ReadResult, ...]:
        return (self.queries, self.corpus, self.qrels)


@dataclass
class UVRBData(TableSet):
    """A uvrb directory: queries, video corpus and relevant instances."""

    queries: ReadResult
    corpus: ReadResult
    instances: ReadResult

    @property
    def results(self) -> tuple[ReadResult, ...]:
        return (self.queries, self.corpus, self.instances)


# ---------------------------------------------------------------------------------------- locations
def find_data_root(path: str | os.PathLike[str]) -> Path:
    """The nearest directory at or above `path` holding manifest.json, else the path's own directory."""
    start = Path(os.path.abspath(path))
    if not start.is_dir():
        start = start.parent
    for directory in (start, *start.parents):
        if (directory / MANIFEST).is_file():
            return directory
    return start


def display_source(path: str | os.PathLike[str], data_root: str | os.PathLike[str]) -> str:
    """How a file is named in messages: relative to the data root when inside it."""
    # abspath, not resolve: a data file linked from a cache elsewhere keeps its name in the data set.
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(os.path.abspath(data_root)).as_posix()
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------- rows
class BadLine(NamedTuple):
    """A JSONL line that is not a JSON value."""

    text: str
    reason: str


def iter_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """(index, row) for every row of a JSONL or parquet file; a JSONL line that does not parse is a BadLine."""
    path = Path(path)
    suffix = _data_suffix(path)
    return _iter_jsonl(path) if suffix == ".jsonl" else _iter_parquet(path)


def _data_suffix(path: Path) -> str:
    if path.is_dir():
        raise DataFormatError(f"{path} is a directory; read it with read_visdoc/read_uvrb or validate_path")
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise DataFormatError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; expected {' or '.join(DATA_SUFFIXES)} "
            f"holding one of the {_known_kinds()}"
        )
    return suffix


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # blank lines are layout, not records
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    line_number,
                    BadLine(
                        raw.decode("utf-8", "replace").rstrip("\r\n"),
                        f"not UTF-8 ({exc.reason} at byte {exc.start})",
                    ),
                )
                continue
            if line_number == 1:
                text = text.removeprefix("\ufeff")
            # Without its line break, a line cut short fails at its own end, not at "column 1" of the next line.
            text = text.rstrip("\r\n")
            try:
                yield line_number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_number, BadLine(text, f"invalid JSON ({exc.msg} at column {exc.colno})")


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    index = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield index, row
                index += 1
    except (pa.ArrowException, OSError) as exc:
        where = f" after row {index - 1}" if index else ""
        raise DataFormatError(
            f"{path}: not a readable parquet file{where} ({type(exc).__name__}: {exc})"
        ) from exc


def detect_kind(row: Any) -> str | None:
    """The record kind a row's fields point to, or None."""
    if not isinstance(row, dict):
        return None
    for fields, kind in _DETECTION_RULES:
        if all(name in row for name in fields):
            return kind
    return None


def _detect_from_rows(
    path: Path, rows: Iterator[tuple[int, Any]]
) -> tuple[str | None, Iterator[tuple[int, Any]]]:
    """The kind of the first row that tells one, and all rows again (those read to find it included)."""
    seen: list[tuple[int, Any]] = []
    for index, row in rows:
        seen.append((index, row))
        kind = detect_kind(row)
        if kind:
            return kind, itertools.chain(seen, rows)
    first = next((row for _, row in seen if isinstance(row, dict)), None)
    if first is not None:
        raise DataFormatError(
            f"{path}: cannot tell the record kind from the fields of its rows (first row: {sorted(first)}); "
            f"pass kind= one of the {_known_kinds()}"
        )
    return None, iter(seen)


# ---------------------------------------------------------------------------------------- checking
class _RowChecker:
    """Checks the rows of one file: types and fields, media, and ids unique within the file."""

    def __init__(
        self,
        record_type: type[Record],
        source: str,
        data_root: Path,
        *,
        decode_media: bool,
        max_text_chars: int,
    ) -> None:
        self.record_type = record_type
        self.source = source
        self.data_root = data_root
        self.decode_media = decode_media
        self.max_text_chars = max_text_chars
        self.key_names = [record_type.field_name(attr) for attr in record_type.KEY_FIELDS]
        self.first_index: dict[tuple[Any, ...], int] = {}
        self.media_reasons: dict[tuple[str, str], str | None] = {}

    def check(self, index: int, raw: Any) -> Record | Rejection:
        if isinstance(raw, BadLine):
            return Rejection(
                self.source, index, None, [FieldError("<line>", raw.reason)], {"_raw_line": raw.text}
            )
        record, errors = self.record_type.parse(raw, max_text_chars=self.max_text_chars)
        if record is not None:
            errors += self._media_errors(record)
        errors += self._duplicate_errors(index, raw)
        if record is None or errors:
            return Rejection(self.source, index, self.record_type.raw_id(raw), errors, raw)
        if self.record_type.ID_FIELD and record.record_id() is None:
            setattr(record, self.record_type.ID_FIELD, f"{self.source}:{index}")
        return record

    def _media_errors(self, record: Record) -> list[FieldError]:
        errors = []
        for ref in record.media_refs():
            key = (ref.path, ref.expect)
            if key not in self.media_reasons:
                try:
                    check_media_path(self.data_root, ref.path, ref.expect, decode=self.decode_media)
                    self.media_reasons[key] = None
                except MediaPathError as exc:
                    self.media_reasons[key] = str(exc)
            reason = self.media_reasons[key]
            if reason:
                errors.append(FieldError(ref.field, reason))
        return errors

    def _duplicate_errors(self, index: int, raw: Any) -> list[FieldError]:
        # The first copy of a key registers it, valid or not; every later copy is rejected and names it.
        if not self.key_names or not isinstance(raw, dict):
            return []
        key = tuple(raw.get(name) for name in self.key_names)
        if not all(isinstance(value, str) and value for value in key):
            return []
        first = self.first_index.setdefault(key, index)
        if first == index:
            return []
        shown = ", ".join(f"{name}={shorten(value)}" for name, value in zip(self.key_names, key, strict=True))
        return [FieldError(",".join(self.key_names), f"duplicate {shown}; first at {self.source}:{first}")]


def _record_type(kind: str) -> type[Record]:
    try:
        return RECORD_TYPES[kind]
    except KeyError:
        hint = " (a directory kind: use read_visdoc/read_uvrb)" if kind in ("visdoc", "uvrb") else ""
        raise DataFormatError(f"unknown record kind {kind!r}{hint}; {_known_kinds()}") from None


def _read_file(
    path: str | os.PathLike[str],
    kind: str | None,
    *,
    data_root: str | os.PathLike[str] | None,
    check_media: bool,
    max_text_chars: int,
    source: str | None = None,
) -> ReadResult:
    """Read and check one file; no logging, no quarantine."""
    path = Path(path)
    if kind is not None:
        _record_type(kind)  # an unknown kind fails before the file is opened
    rows = iter_rows(path)
    root = Path(data_root) if data_root is not None else find_data_root(path)
    if kind is None:
        kind, rows = _detect_from_rows(path, rows)
    return _check_rows(
        rows,
        kind,
        source=source or display_source(path, root),
        data_root=root,
        check_media=check_media,
        max_text_chars=max_text_chars,
    )


def _check_rows(
    rows: Iterable[tuple[int, Any]],
    kind: str | None,
    *,
    source: str,
    data_root: Path,
    check_media: bool,
    max_text_chars: int,
) -> ReadResult:
    result = ReadResult(source=source, kind=kind)
    # kind None: no row is a JSON object, so every row is a bad line.
    checker_type: type[Record] = Record if kind is None else _record_type(kind)
    checker = _RowChecker(
        checker_type, result.source, data_root, decode_media=check_media, max_text_chars=max_text_chars
    )
    for index, raw in rows:
        result.total += 1
        outcome = checker.check(index, raw)
        if isinstance(outcome, Rejection):
            result.rejected.append(outcome)
        else:
            result.records.append(outcome)
            result.indices.append(index)
    return result


def check_rows(
    rows: Iterable[tuple[int, Any]],
    kind: str,
    *,
    source: str,
    data_root: str | os.PathLike[str],
    check_media: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> ReadResult:
    """Check rows already in memory, as `(index, row)` pairs, exactly as a reader checks the rows of a file.

    For adapters that map another layout onto one of ours (`embedrl.data.official`): the rows then go
    through the same validation, and a bad one is rejected naming `source`, its index and its field.
    Nothing is logged or quarantined here: pass the result to `finish_reading`.
    """
    _record_type(kind)
    return _check_rows(
        rows, kind, source=source, data_root=Path(data_root), check_media=check_media,
        max_text_chars=max_text_chars,
    )


def finish_reading(results: Iterable[ReadResult], quarantine: str | os.PathLike[str] | None) -> None:
    """Log what was rejected and write the quarantine file when one is asked for and anything was rejected."""
    results = list(results)
    rejected = [rej for result in results for rej in result.rejected]
    for result in results:
        if result.rejected:
            logger.warning(
                "%s: %d of %d records rejected (%d valid)%s",
                result.source,
                result.n_rejected,
                result.total,
                result.n_valid,
                f"; quarantined in {quarantine}" if quarantine else "",
            )
    if quarantine is not None and rejected:
        write_quarantine(quarantine, rejected)


# ------------------------------------------------------------------------------------------ readers
def read_records(
    path: str | os.PathLike[str],
    kind: str | None = None,
    *,
    data_root: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
    check_media: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> ReadResult:
    """Read one JSONL or parquet file of records of `kind` (detected from the rows when None).

    Media paths are always checked to be safe and present under `data_root` (default: the nearest
    directory with manifest.json, else the file's directory); `check_media` also decodes them.
    Rejected records are logged as a warning and, when `quarantine` is given, written there.
    """
    result = _read_file(
        path, kind, data_root=data_root, check_media=check_media, max_text_chars=max_text_chars
    )
    finish_reading([result], quarantine)
    return result


def read_visdoc(
    directory: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
    check_media: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> VisDocData:
    """Read a visdoc directory; qrels must name known queries and pages, each query needs a qrel with score > 0."""
    tables = _read_tables(directory, VISDOC_FILES, data_root, check_media, max_text_chars)
    data = link_visdoc(*tables)
    finish_reading(data.results, quarantine)
    return data


def link_visdoc(queries: ReadResult, corpus: ReadResult, qrels: ReadResult) -> VisDocData:
    """The three visdoc tables checked against each other: dangling qrels and queries without a relevant
    page are rejected (see `read_visdoc`)."""
    data = VisDocData(queries, corpus, qrels)
    _link_tables(
        data.queries,
        data.corpus,
        data.qrels,
        query_attr="query_id",
        item_attr="corpus_id",
        is_relevant=lambda qrel: qrel.score > 0,  # type: ignore[attr-defined]
        no_relevant="no relevant page: no qrel with score > 0",
    )
    return data


def read_uvrb(
    directory: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
    check_media: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> UVRBData:
    """Read a uvrb directory; instances must name known queries and videos, each query needs an instance."""
    tables = _read_tables(directory, UVRB_FILES, data_root, check_media, max_text_chars)
    data = link_uvrb(*tables)
    finish_reading(data.results, quarantine)
    return data


def link_uvrb(queries: ReadResult, corpus: ReadResult, instances: ReadResult) -> UVRBData:
    """The three uvrb tables checked against each other: dangling instances and queries without one are
    rejected (see `read_uvrb`)."""
    data = UVRBData(queries, corpus, instances)
    _link_tables(
        data.queries,
        data.corpus,
        data.instances,
        query_attr="qid",
        item_attr="cid",
        is_relevant=lambda instance: True,
        no_relevant="no relevant video: no instance",
    )
    return data


def _read_tables(
    directory: str | os.PathLike[str],
    files: dict[str, str],
    data_root: str | os.PathLike[str] | None,
    check_media: bool,
    max_text_chars: int,
) -> list[ReadResult]:
    directory = Path(directory)
    missing = [name for name in files if not (directory / name).is_file()]
    if missing:
        raise DataFormatError(
            f"{directory}: missing {', '.join(missing)} (a directory of {', '.join(files)})"
        )
    root = Path(data_root) if data_root is not None else find_data_root(directory)
    return [
        _read_file(
            directory / name, kind, data_root=root, check_media=check_media, max_text_chars=max_text_chars
        )
        for name, kind in files.items()
    ]


def _link_tables(
    queries: ReadResult,
    items: ReadResult,
    links: ReadResult,
    *,
    query_attr: str,
    item_attr: str,
    is_relevant: Callable[[Record], bool],
    no_relevant: str,
) -> None:
    """Cross-check a links table (qrels, instances) against its queries and items, rejecting what dangles."""
    valid_ids = {table.source: {r.record_id() for r in table.records} for table in (queries, items)}
    rejected_ids = {table.source: {rej.id for rej in table.rejected} for table in (queries, items)}
    link_type = RECORD_TYPES[str(links.kind)]

    def dangling(link: Record) -> list[FieldError]:
        errors = []
        for attr, table in ((query_attr, queries), (item_attr, items)):
            value, name = getattr(link, attr), link_type.field_name(attr)
            if value in valid_ids[table.source]:
                continue
            if value in rejected_ids[table.source]:
                errors.append(FieldError(name, f"{name} {shorten(value)} was rejected in {table.source}"))
            else:
                errors.append(FieldError(name, f"unknown {name} {shorten(value)}: not in {table.source}"))
        return errors

    links.reject(dangling)
    relevant = {getattr(link, query_attr) for link in links.records if is_relevant(link)}
    id_name = RECORD_TYPES[str(queries.kind)].id_field_name() or query_attr
    queries.reject(lambda query: [] if query.record_id() in relevant else [FieldError(id_name, no_relevant)])
    # Links of a query rejected just now go too, so that no valid link names a rejected query.
    dropped = valid_ids[queries.source] - relevant
    link_name = link_type.field_name(query_attr)

    def of_dropped_query(link: Record) -> list[FieldError]:
        value = getattr(link, query_attr)
        if value not in dropped:
            return []
        return [
            FieldError(
                link_name, f"{link_name} {shorten(value)} was rejected in {queries.source} ({no_relevant})"
            )
        ]

    links.reject(of_dropped_query)


# ----------------------------------------------------------------------------------------- manifest
class ManifestTask(BaseModel):
    """One task of manifest.json; `path` is relative to the data set root (a directory for visdoc/uvrb)."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: StrictStr
    kind: Literal["mmeb_train", "mmeb_eval", "visdoc", "uvrb"]
    path: StrictStr
    split: OptStr = ""

    def location(self, root: str | os.PathLike[str]) -> Path:
        """The task's file or directory under `root` (raises MediaPathError if it would leave the root)."""
        return resolve_media(root, self.path)


def load_manifest(root: str | os.PathLike[str]) -> tuple[dict[str, Any], list[ManifestTask]]:
    """manifest.json of a data set root: the whole object and its checked tasks."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read the manifest ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tasks"), list):
        raise DataFormatError(f"{path}: expected a JSON object with a list under 'tasks'")
    tasks, problems = [], []
    for i, raw in enumerate(manifest["tasks"]):
        name = raw.get("name") if isinstance(raw, dict) else None
        try:
            task = ManifestTask.model_validate(raw)
            task.location(root)
            tasks.append(task)
        except ValidationError as exc:
            problems += [
                f"tasks[{i}] ({name!r}) field {e.field}: {e.reason}"
                for e in map(pydantic_field_error, exc.errors(include_url=False))
            ]
        except MediaPathError as exc:
            problems.append(f"tasks[{i}] ({name!r}) field path: {exc}")
    if problems:
        raise DataFormatError(f"{path}: " + "; ".join(problems))
    return manifest, tasks


def iter_manifest_tasks(root: str | os.PathLike[str]) -> Iterator[ManifestTask]:
    """The tasks of the data set at `root`, in manifest order (all checked before the first is given)."""
    _, tasks = load_manifest(root)
    yield from tasks


# ------------------------------------------------------------------------------------------ writers
def _as_dict(row: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(row, BaseModel):
        return row.model_dump(by_alias=True)
    return dict(row)


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    # Write beside the target and rename, so that a reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, Any] | BaseModel],
    *,
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = False,
) -> int:
    """Write rows as JSONL (keys in the given order, UTF-8 unescaped, one `\\n` per row); the count written."""
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(
                    json.dumps(_as_dict(row), ensure_ascii=False, default=default, allow_nan=allow_nan)
                )
                handle.write("\n")
                count += 1

    _replace_atomically(Path(path), write)
    return count


def write_parquet(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, Any] | BaseModel],
    *,
    schema: pa.Schema | None = None,
) -> int:
    """Write rows as parquet, the same bytes for the same rows; the count written.

    Columns are the union of the rows' keys in order of first appearance (a row without a key gets
    null); types are inferred per column unless `schema` is given.
    """
    dicts = [_as_dict(row) for row in rows]
    table = pa.Table.from_pylist(dicts, schema=schema) if schema is not None else _infer_table(dicts)
    _replace_atomically(Path(path), lambda tmp: pq.write_table(table, tmp, compression=PARQUET_COMPRESSION))
    return len(dicts)


def _infer_table(rows: list[dict[str, Any]]) -> pa.Table:
    # pa.Table.from_pylist takes its columns from the first row only: a key first seen later would be lost.
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {}
    for name in names:
        try:
            columns[name] = pa.array([row.get(name) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"column {name!r}: values of mixed or unsupported types ({exc})") from exc
    return pa.table(columns)


def _quarantine_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode("ascii")}
    return repr(value)


def write_quarantine(path: str | os.PathLike[str], rejections: Iterable[Rejection]) -> int:
    """Write rejected records as the quarantine JSONL of docs/data-formats.md; the count written."""
    return write_jsonl(
        path, (rej.to_json() for rej in rejections), default=_quarantine_default, allow_nan=True
    )
