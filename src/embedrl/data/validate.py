"""`embedrl data validate`: check a data set directory or one data file; quarantine the bad records.

What is read: a directory with manifest.json reads the manifest's tasks; a visdoc or uvrb directory
reads its three files; another directory is walked for `.jsonl`/`.parquet` files and visdoc/uvrb
directories; a single file's kind comes from its rows (or `kind=`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from embedrl.data.readers import (
    DATA_SUFFIXES,
    MANIFEST,
    UVRB_FILES,
    VISDOC_FILES,
    DataFormatError,
    ReadResult,
    display_source,
    find_data_root,
    iter_manifest_tasks,
    read_records,
    read_uvrb,
    read_visdoc,
    write_quarantine,
)
from embedrl.data.records import DEFAULT_MAX_TEXT_CHARS, Rejection

QUARANTINE_SUFFIX = ".quarantine.jsonl"
NO_RECORDS = "no records"


@dataclass
class FileReport:
    """Counts of one file, or the error that kept it from being read."""

    source: str
    kind: str | None
    total: int = 0
    n_valid: int = 0
    n_rejected: int = 0
    error: str | None = None


@dataclass
class ValidationReport:
    """What `validate_path` found: per-file counts, rejected records, file errors, the quarantine file."""

    path: Path
    files: dict[str, FileReport] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    quarantine_path: Path | None = None
    quarantine_written: bool = False

    @property
    def n_records(self) -> int:
        """Records read, valid and rejected."""
        return sum(f.total for f in self.files.values())

    @property
    def n_valid(self) -> int:
        return sum(f.n_valid for f in self.files.values())

    @property
    def n_rejected(self) -> int:
        return len(self.rejections)

    @property
    def errors(self) -> list[FileReport]:
        """Files that could not be read, were empty, or were missing."""
        return [f for f in self.files.values() if f.error]

    @property
    def ok(self) -> bool:
        return self.n_records > 0 and not self.rejections and not self.errors

    def add_result(self, result: ReadResult) -> None:
        error = NO_RECORDS if result.total == 0 else None
        self.files[result.source] = FileReport(
            result.source, result.kind, result.total, result.n_valid, result.n_rejected, error
        )
        self.rejections.extend(result.rejected)

    def add_error(self, source: str, kind: str | None, message: str) -> None:
        self.files[source] = FileReport(source, kind, error=message)

    def describe(self, max_problems: int = 200) -> str:
        """Every bad record as `<source>:<index> id=<id> field=<field>: <reason>`, file errors, a summary."""
        problems = [str(err) for rej in self.rejections for err in rej.record_errors()]
        lines = problems[:max_problems]
        if len(problems) > max_problems:
            lines.append(f"... and {len(problems) - max_problems} more problems (all in the quarantine file)")
        lines += [f"{f.source}: ERROR: {f.error}" for f in self.errors]
        lines += [
            f"  {f.source} [{f.kind or '?'}]: {f.total} records, {f.n_rejected} rejected"
            for f in self.files.values()
            if not f.error or f.total
        ]
        lines.append(self._quarantine_line())
        lines.append(self._summary_line())
        return "\n".join(lines)

    def _quarantine_line(self) -> str:
        if self.quarantine_written:
            return f"quarantine: {self.n_rejected} rejected records written to {self.quarantine_path}"
        if self.quarantine_path is not None and self.quarantine_path.exists():
            return f"quarantine: nothing rejected; the existing {self.quarantine_path} was left untouched"
        return "quarantine: nothing rejected; no quarantine file written"

    def _summary_line(self) -> str:
        n_files = len(self.files)
        if self.ok:
            return f"OK: {self.n_records} records in {n_files} file(s), none rejected"
        parts = []
        if self.n_records == 0:
            parts.append(NO_RECORDS)
        if self.rejections:
            n_bad_files = sum(1 for f in self.files.values() if f.n_rejected)
            parts.append(
                f"{self.n_rejected} of {self.n_records} records rejected in {n_bad_files} of {n_files} file(s)"
            )
        if self.errors:
            parts.append(f"{len(self.errors)} file error(s)")
        return f"FAILED: {'; '.join(parts)}"


class _Unit(NamedTuple):
    """One thing to read: a file (record kind or None to detect) or a visdoc/uvrb directory."""

    kind: str | None
    path: Path


@dataclass(frozen=True)
class _Options:
    data_root: Path
    check_media: bool
    max_text_chars: int


def default_quarantine_path(path: str | os.PathLike[str]) -> Path:
    """`<PATH>.quarantine.jsonl` beside the file, or beside the directory (a sibling, not inside it)."""
    absolute = Path(os.path.abspath(path))
    return absolute.with_name(absolute.name + QUARANTINE_SUFFIX)


def validate_path(
    path: str | os.PathLike[str],
    *,
    quarantine: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    check_media: bool = True,
    kind: str | None = None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> ValidationReport:
    """Validate a data set directory or one JSONL/parquet file; write rejected records to the quarantine file.

    The quarantine file (default `<PATH>.quarantine.jsonl`) is overwritten when anything is rejected and
    left untouched otherwise. A path that holds no records is a failure.
    """
    path = Path(path)
    report = ValidationReport(path=path)
    options = _Options(
        Path(data_root) if data_root is not None else find_data_root(path), check_media, max_text_chars
    )
    try:
        units = _plan(path, kind)
    except DataFormatError as exc:
        report.add_error(str(path), kind, str(exc))
        units = []
    for unit in units:
        _validate_unit(report, unit, options)
    if not report.files:
        report.add_error(str(path), kind, f"{NO_RECORDS}: no {' or '.join(DATA_SUFFIXES)} data files found")
    _quarantine(report, Path(quarantine) if quarantine is not None else default_quarantine_path(path))
    return report


def _plan(path: Path, kind: str | None) -> list[_Unit]:
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or directory")
    if path.is_file() or kind in ("visdoc", "uvrb"):
        return [_Unit(kind, path)]
    if (path / MANIFEST).is_file():
        return [_Unit(task.kind, path / task.path) for task in iter_manifest_tasks(path)]
    return _discover(path, kind)


def _table_kind(directory: Path) -> str | None:
    for kind, files in (("visdoc", VISDOC_FILES), ("uvrb", UVRB_FILES)):
        if all((directory / name).is_file() for name in files):
            return kind
    return None


def _discover(root: Path, kind: str | None) -> list[_Unit]:
    """visdoc/uvrb directories and data files under a directory without a manifest, in name order."""
    units = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        here = Path(directory)
        table = _table_kind(here)
        taken = set(VISDOC_FILES if table == "visdoc" else UVRB_FILES if table == "uvrb" else ())
        if table:
            units.append(_Unit(table, here))
        for name in sorted(names):
            if (
                name in taken
                or name.startswith(".")
                or name.endswith(QUARANTINE_SUFFIX)
                or Path(name).suffix.lower() not in DATA_SUFFIXES
            ):
                continue
            units.append(_Unit(kind, here / name))
    return units


def _validate_unit(report: ValidationReport, unit: _Unit, options: _Options) -> None:
    source = display_source(unit.path, options.data_root)
    if not unit.path.exists():
        report.add_error(source, unit.kind, "no such file or directory")
        return
    root, media, limit = options.data_root, options.check_media, options.max_text_chars
    try:
        if unit.kind in ("visdoc", "uvrb"):
            reader = read_visdoc if unit.kind == "visdoc" else read_uvrb
            results = reader(unit.path, data_root=root, check_media=media, max_text_chars=limit).results
        else:
            results = (
                read_records(unit.path, unit.kind, data_root=root, check_media=media, max_text_chars=limit),
            )
    except DataFormatError as exc:
        report.add_error(source, unit.kind, str(exc))
        return
    for result in results:
        report.add_result(result)


def _quarantine(report: ValidationReport, path: Path) -> None:
    report.quarantine_path = path
    if not report.rejections:
        return
    if path.exists() and report.path.exists() and path.resolve() == report.path.resolve():
        report.add_error(
            str(path),
            None,
            "the quarantine file would overwrite the validated file; pass another --quarantine",
        )
        return
    write_quarantine(path, report.rejections)
    report.quarantine_written = True
