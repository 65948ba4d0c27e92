"""Builds the data sets of the bad-input corpus (tests/test_bad_inputs.py) in a temporary directory.

The good base data set is text under `base/` (its train split is written as parquet here) and its media
are drawn here. A case then either replaces one file of it with a hand-made one from `cases/`, or
applies one of the FAULTS below: binary or large damage (corrupt and truncated media, truncated
parquet, huge texts) written at test time so that nothing binary or large is committed.
`catalogue.yaml` lists every case with what is wrong and what each stage must do with it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from embedrl.data.readers import write_jsonl, write_parquet

HERE = Path(__file__).resolve().parent
BASE = HERE / "base"
CATALOGUE = HERE / "catalogue.yaml"

TRAIN = "train/ImgCLS-Marked.parquet"
EVAL = "eval/image/ImgCLS-Marked.jsonl"
VISDOC = "eval/visdoc/VisDoc-Price"
UVRB = "uvrb/MiniUVRB-Flash"

STAGES = ("validate", "train_reader", "prepare", "eval_reader")
OUTCOMES = ("quarantined", "error", "carried")

_COLOURS = {"red": (210, 40, 40), "blue": (40, 90, 200), "grey": (235, 235, 235)}
_IMAGES = {
    "media/train/red.png": "red",
    "media/train/blue.png": "blue",
    "media/eval/red.png": "red",
    "media/eval/blue.png": "blue",
    "media/pages/p1.png": "grey",
    "media/pages/p2.png": "grey",
}
_JPEGS = ("media/eval/green.jpg",)
_CLIPS = ("media/train/clip", "media/videos/v1", "media/videos/v2")
FRAMES_PER_CLIP = 3
_IMAGE_SIZE = 32


# ----------------------------------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class StageExpectation:
    """What one stage must do with a case: quarantine `rejected`, raise naming `message`, or carry it."""

    outcome: str
    message: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A record a quarantining stage must reject: file, line or row, id, field, part of the reason."""

    source: str
    index: int
    id: str | None
    field: str
    reason: str


@dataclass(frozen=True)
class DataCase:
    id: str
    wrong: str
    stages: dict[str, StageExpectation]
    file: str | None = None  # a hand-made file under cases/ ...
    replaces: str | None = None  # ... written over this path of the base data set
    fault: str | None = None  # or one of FAULTS
    rejected: tuple[Rejected, ...] = ()
    carried: tuple[str, ...] = ()  # ids a stage that does not look at the fault passes on

    @property
    def input(self) -> str:
        return f"`{self.file}` as `{self.replaces}`" if self.file else f"fault `{self.fault}`"


@dataclass(frozen=True)
class ReasonerCase:
    """A malformed Reasoner completion for a side of `modality` (a grounded side lists 2 regions)."""

    id: str
    wrong: str
    modality: str
    completion: Any = None
    grounded: bool = False
    repeat: tuple[str, int] | None = None  # `completion` with {repeat} replaced by text * times

    @property
    def text(self) -> Any:
        if self.repeat is None:
            return self.completion
        piece, times = self.repeat
        return self.completion.replace("{repeat}", piece * times)


def _stage(name: str, spec: Any, case: dict[str, Any]) -> StageExpectation:
    if name not in STAGES:
        raise ValueError(f"case {case['id']!r}: unknown stage {name!r}; stages: {', '.join(STAGES)}")
    if isinstance(spec, str):  # the case's `message` is for its error stages
        outcome, message = spec, case.get("message", ()) if spec == "error" else ()
    else:
        outcome, message = spec["outcome"], spec["message"]
    if outcome not in OUTCOMES:
        raise ValueError(
            f"case {case['id']!r} stage {name}: unknown outcome {outcome!r}; outcomes: {OUTCOMES}"
        )
    return StageExpectation(outcome, tuple(message))


def _data_case(raw: dict[str, Any]) -> DataCase:
    if (raw.get("file") is None) == (raw.get("fault") is None):
        raise ValueError(f"case {raw.get('id')!r}: give exactly one of file (with replaces) or fault")
    if raw.get("fault") is not None and raw["fault"] not in FAULTS:
        raise ValueError(f"case {raw['id']!r}: unknown fault {raw['fault']!r}; faults: {', '.join(FAULTS)}")
    return DataCase(
        id=raw["id"],
        wrong=raw["wrong"],
        stages={name: _stage(name, spec, raw) for name, spec in raw["stages"].items()},
        file=raw.get("file"),
        replaces=raw.get("replaces"),
        fault=raw.get("fault"),
        rejected=tuple(Rejected(*row) for row in raw.get("rejected", ())),
        carried=tuple(raw.get("carried", ())),
    )


def load_catalogue(path: Path = CATALOGUE) -> tuple[list[DataCase], list[ReasonerCase]]:
    """The data cases and the Reasoner-output cases of the catalogue; ids must be unique."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    data = [_data_case(raw) for raw in document["data_cases"]]
    reasoner = [ReasonerCase(**raw) for raw in document["reasoner_outputs"]]
    ids = [case.id for case in [*data, *reasoner]]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{path}: case id(s) used more than once: {', '.join(repeated)}")
    return data, reasoner


# -------------------------------------------------------------------------------------------- base
def _draw(path: Path, colour: tuple[int, int, int], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour))
    noise = rng.integers(0, 40, size=(_IMAGE_SIZE, _IMAGE_SIZE, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_base(root: Path) -> Path:
    """The good data set: manifest, media, one train parquet, one eval file, a visdoc and a uvrb directory."""
    for rel, colour in _IMAGES.items():
        _draw(root / rel, _COLOURS[colour], "PNG")
    for rel in _JPEGS:
        _draw(root / rel, (40, 170, 60), "JPEG")
    for clip in _CLIPS:
        for i in range(1, FRAMES_PER_CLIP + 1):
            _draw(root / clip / f"frame_{i:02d}.png", (60 * i, 80, 120), "PNG")
    for source in sorted(BASE.rglob("*.jsonl")):
        rel = source.relative_to(BASE).as_posix()
        if rel == TRAIN.replace(".parquet", ".jsonl"):
            write_parquet(root / TRAIN, _read_jsonl(source))
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / rel)
    shutil.copyfile(BASE / "manifest.json", root / "manifest.json")
    return root


def build_case(root: Path, case: DataCase, base: Path | None = None) -> Path:
    """The base data set at `root` (a copy of `base` when given, built otherwise) with the case applied."""
    if base is None:
        build_base(root)
    else:
        shutil.copytree(base, root)
    if case.fault is not None:
        FAULTS[case.fault](root)
    else:
        _replace(root, HERE / str(case.file), str(case.replaces))
    return root


def _replace(root: Path, source: Path, target: str) -> None:
    """Write a hand-made file over `target`; a train split given as JSONL replaces the parquet one."""
    if target == TRAIN:
        write_parquet(root / TRAIN, _read_jsonl(source))
        return
    if target == TRAIN.replace(".parquet", ".jsonl"):
        (root / TRAIN).unlink()
        _repoint_task(root, TRAIN, target)
    shutil.copyfile(source, root / target)


def _repoint_task(root: Path, old: str, new: str) -> None:
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    for task in manifest["tasks"]:
        if task["path"] == old:
            task["path"] = new
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ faults
def _cut(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def _corrupt_png(root: Path) -> None:
    junk = np.random.default_rng(0).integers(0, 256, size=300, dtype=np.uint8).tobytes()
    (root / "media/train/blue.png").write_bytes(b"\x89PNG\r\n\x1a\n" + junk)


def _png_without_iend(root: Path) -> None:
    path = root / "media/pages/p1.png"
    _cut(path, path.stat().st_size - 12)


def _text_as_image(root: Path) -> None:
    (root / "media/eval/red.png").write_text("this is not an image\n", encoding="utf-8")


def _broken_frame(root: Path) -> None:
    _cut(root / "media/videos/v1/frame_02.png")


def _empty_frames_directory(root: Path) -> None:
    for frame in (root / "media/train/clip").iterdir():
        frame.unlink()


def _symlink_out_of_root(root: Path) -> None:
    outside = root.parent / f"{root.name}-outside.png"
    shutil.copyfile(root / "media/eval/blue.png", outside)
    (root / "media/eval/blue.png").unlink()
    os.symlink(outside, root / "media/eval/blue.png")


def _train_table(root: Path, mutate: Callable[[dict[str, list[Any]]], None]) -> None:
    columns = pq.read_table(root / TRAIN).to_pydict()
    mutate(columns)
    pq.write_table(pa.table(columns), root / TRAIN)


def _parquet_missing_column(root: Path) -> None:
    _train_table(root, lambda columns: columns.pop("pos_text"))


def _parquet_int_column(root: Path) -> None:
    def to_ints(columns: dict[str, list[Any]]) -> None:
        columns["pos_text"] = pa.array(range(len(columns["pos_text"])), type=pa.int64())

    _train_table(root, to_ints)


def _parquet_null_cell(root: Path) -> None:
    def null_query(columns: dict[str, list[Any]]) -> None:
        columns["qry"][1] = None

    _train_table(root, null_query)


def _not_parquet(root: Path) -> None:
    (root / TRAIN).write_text("id,qry,pos_text\nt1,a red star,a red star\n", encoding="utf-8")


def _empty_train_parquet(root: Path) -> None:
    pq.write_table(pq.read_table(root / TRAIN).slice(0, 0), root / TRAIN)


def _invalid_utf8_line(root: Path) -> None:
    lines = (root / EVAL).read_bytes().splitlines(keepends=True)
    lines[1] = b'{"id": "e2", "qry_text": "caf\xe9 \xff"}\n'
    (root / EVAL).write_bytes(b"".join(lines))


HUGE_CHARS = 1_000_000


def _huge_train_text(root: Path) -> None:
    rows = pq.read_table(root / TRAIN).to_pylist()
    rows[1]["qry"] = "a blue ring " * (HUGE_CHARS // 12)
    write_parquet(root / TRAIN, rows)


def _huge_eval_candidate(root: Path) -> None:
    rows = _read_jsonl(root / EVAL)
    rows[1]["tgt_text"][1] = "x" * HUGE_CHARS
    write_jsonl(root / EVAL, rows)


FAULTS: dict[str, Callable[[Path], None]] = {
    "corrupt_png": _corrupt_png,
    "truncated_png": lambda root: _cut(root / "media/eval/blue.png"),
    "png_without_iend": _png_without_iend,
    "truncated_jpeg": lambda root: _cut(root / "media/eval/green.jpg"),
    "empty_image": lambda root: (root / "media/train/red.png").write_bytes(b""),
    "text_as_image": _text_as_image,
    "broken_frame": _broken_frame,
    "empty_frames_directory": _empty_frames_directory,
    "symlink_out_of_root": _symlink_out_of_root,
    "truncated_parquet": lambda root: _cut(root / TRAIN),
    "not_parquet": _not_parquet,
    "parquet_missing_column": _parquet_missing_column,
    "parquet_int_column": _parquet_int_column,
    "parquet_null_cell": _parquet_null_cell,
    "empty_train_parquet": _empty_train_parquet,
    "invalid_utf8_line": _invalid_utf8_line,
    "huge_train_text": _huge_train_text,
    "huge_eval_candidate": _huge_eval_candidate,
}
