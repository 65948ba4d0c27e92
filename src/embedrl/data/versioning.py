"""Data versions: the DVC 3 hash of a data directory, and checks against a `.dvc` file.

DVC 3 names a directory by the md5 of its sorted listing (`[{"md5": ..., "relpath": ...}, ...]`,
JSON with sorted keys) followed by `.dir`; each file by the md5 of its bytes. Computing the same
hash here lets the project check a regenerated `data/` against `data.dvc` without a DVC cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

_CHUNK = 1 << 20


class DataVersionMismatch(RuntimeError):
    """A data directory does not hold the version a `.dvc` file pins."""


@dataclass(frozen=True)
class DirectoryHash:
    md5: str  # with the ".dir" suffix, as in a .dvc file
    nfiles: int
    size: int


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def directory_hash(root: str | Path) -> DirectoryHash:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    entries, size = [], 0
    for path in root.rglob("*"):
        if path.is_file():
            entries.append({"md5": file_md5(path), "relpath": path.relative_to(root).as_posix()})
            size += path.stat().st_size
    entries.sort(key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return DirectoryHash(hashlib.md5(listing).hexdigest() + ".dir", len(entries), size)


def read_dvc_out(dvc_file: str | Path) -> dict:
    """The single `outs` entry of a `.dvc` file (md5, size, nfiles, path)."""
    dvc_file = Path(dvc_file)
    data = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    outs = data.get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise ValueError(f"{dvc_file}: expected one `outs` entry with an md5, found {outs!r}")
    return outs[0]


def check_matches_dvc(data_dir: str | Path, dvc_file: str | Path) -> DirectoryHash:
    """Raise DataVersionMismatch unless `data_dir` hashes to what `dvc_file` pins."""
    expected = read_dvc_out(dvc_file)
    actual = directory_hash(data_dir)
    if actual.md5 != expected["md5"]:
        raise DataVersionMismatch(
            f"{data_dir} hashes to {actual.md5} ({actual.nfiles} files, {actual.size} bytes) but {dvc_file} pins "
            f"{expected['md5']} ({expected.get('nfiles')} files, {expected.get('size')} bytes). "
            "Regenerate with the same seed and pinned packages, or `dvc pull` the pinned version."
        )
    return actual
