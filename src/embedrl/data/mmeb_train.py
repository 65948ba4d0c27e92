"""The Embedder's training sets and the mix that weights them (method.md, stage 3).

**Sets.** `TRAIN_SETS` registers every set the paper's training mix draws from: the 20 MMEB-train subsets
(TIGER-Lab/MMEB-train, one parquet file per subset), the three LLaVA-Hound video sets and the two visual
document sets that VLM2Vec-V2 adds. Every set is read as `mmeb_train` rows (docs/data-formats.md) by the
validating reader, so a bad row is counted and quarantined with its record and field named. MMEB-train is
already in that layout (`<subset>/original-00000-of-00001.parquet`; `<|image_1|>` in a text marks its
image, which the Embedder replaces with the backbone's own image placeholder). The video and visual
document sets are published in other layouts and are converted to it by `embedrl.data.train_converters`
(`embedrl data convert`): a clip is a directory of frames in `qry_image_path` / `pos_image_path`, a page is
an image file.

**Mix.** A `DataMix` (YAML under `embedrl/data/mixes/`, or any path) names the sets a run trains on, with
a weight and a cap each: each step's batch comes from one set, drawn with probability proportional to
weight x size (`embedrl.train.sampling.DatasetBatchSampler`), where size is the number of valid rows kept,
at most `cap` (the first `cap` valid rows in file order, as VLM2Vec keeps the first rows). Weight 0 leaves a
set out. `EmbedderTrainConfig.data_mix` picks the mix; `embedrl.train.embedder.load_pairs` applies it.
`write_train_manifest` lists a mix's files in a data root's manifest.json, so that data prep and training
find them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from embedrl.data.readers import MANIFEST, ManifestTask

log = logging.getLogger(__name__)

MIX_DIR = "mixes"
FAMILIES: tuple[str, ...] = ("mmeb", "video", "visdoc")
MEDIA: tuple[str, ...] = ("text", "image", "image+text", "video", "video+text", "page")


class UnknownTrainSetError(KeyError):
    """A set name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class MixError(ValueError):
    """A mix file that does not describe a usable mix, or a data root that lacks a set of the mix."""


# ------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class TrainSet:
    """One training set: where it comes from, what its query and target hold, where its file usually is."""

    name: str
    family: str  # mmeb (MMEB-train subset), video, visdoc
    meta_task: str  # classification, vqa, retrieval, grounding
    query: str  # media of the query side (one of MEDIA)
    target: str  # media of the positive side
    origin: str  # the published data set it comes from
    file_pattern: str = ""  # glob under the data root; "" = the family's default

    @property
    def layout(self) -> str:
        return f"{self.query} -> {self.target}"

    @property
    def default_pattern(self) -> str:
        if self.file_pattern:
            return self.file_pattern
        return f"{self.name}/original-*.parquet" if self.family == "mmeb" else f"{self.name}/train.parquet"


MMEB_TRAIN = "TIGER-Lab/MMEB-train"
LLAVA_HOUND = "ShareGPTVideo/train_video_and_instruction (LLaVA-Hound, as VLM2Vec-V2 uses it)"


def _mmeb(name: str, meta_task: str, query: str, target: str) -> TrainSet:
    return TrainSet(name, "mmeb", meta_task, query, target, f"{MMEB_TRAIN}, subset {name}")


_SETS: tuple[TrainSet, ...] = (
    # MMEB-train: 20 subsets (VLM2Vec, arXiv 2410.05160), split `original`
    _mmeb("ImageNet_1K", "classification", "image", "text"),
    _mmeb("N24News", "classification", "image+text", "text"),
    _mmeb("HatefulMemes", "classification", "image", "text"),
    _mmeb("VOC2007", "classification", "image", "text"),
    _mmeb("SUN397", "classification", "image", "text"),
    _mmeb("OK-VQA", "vqa", "image+text", "text"),
    _mmeb("A-OKVQA", "vqa", "image+text", "text"),
    _mmeb("DocVQA", "vqa", "image+text", "text"),
    _mmeb("InfographicsVQA", "vqa", "image+text", "text"),
    _mmeb("ChartQA", "vqa", "image+text", "text"),
    _mmeb("Visual7W", "vqa", "image+text", "text"),
    _mmeb("VisDial", "retrieval", "text", "image"),
    _mmeb("CIRR", "retrieval", "image+text", "image"),
    _mmeb("VisualNews_t2i", "retrieval", "text", "image"),
    _mmeb("VisualNews_i2t", "retrieval", "image", "text"),
    _mmeb("MSCOCO_t2i", "retrieval", "text", "image"),
    _mmeb("MSCOCO_i2t", "retrieval", "image", "text"),
    _mmeb("NIGHTS", "retrieval", "image", "image"),
    _mmeb("WebQA", "retrieval", "text", "image+text"),
    _mmeb("MSCOCO", "grounding", "image+text", "image"),
    # Video (VLM2Vec-V2): LLaVA-Hound captions both ways and its QA, 8 frames per clip
    TrainSet("video_caption_300k", "video", "retrieval", "video", "text", f"{LLAVA_HOUND}: video_caption_300k.jsonl"),
    TrainSet("video_caption_300k-video", "video", "retrieval", "text", "video",
             f"{LLAVA_HOUND}: video_caption_300k.jsonl, captions as queries"),
    TrainSet("video_qa_240k", "video", "vqa", "video+text", "text",
             f"{LLAVA_HOUND}: the first 240k rows of video_240k_caption_15k.jsonl"),
    # Visual documents (VLM2Vec-V2): query text -> page image
    TrainSet("colpali_train_set", "visdoc", "retrieval", "text", "page", "vidore/colpali_train_set"),
    TrainSet("visrag-indomain", "visdoc", "retrieval", "text", "page", "openbmb/VisRAG-Ret-Train-In-domain-data"),
)


def _registry(sets: Iterable[TrainSet]) -> dict[str, TrainSet]:
    registry: dict[str, TrainSet] = {}
    for train_set in sets:
        if train_set.name in registry:
            raise ValueError(f"training set {train_set.name!r} is registered twice")
        if train_set.family not in FAMILIES or {train_set.query, train_set.target} - set(MEDIA):
            raise ValueError(f"training set {train_set.name!r}: family must be one of {FAMILIES}, "
                             f"query and target one of {MEDIA}")
        registry[train_set.name] = train_set
    return registry


TRAIN_SETS: dict[str, TrainSet] = _registry(_SETS)
MMEB_TRAIN_SUBSETS: tuple[str, ...] = tuple(s.name for s in _SETS if s.family == "mmeb")


def train_set(name: str) -> TrainSet:
    """The registered set `name`; raises listing the registered names."""
    try:
        return TRAIN_SETS[name]
    except KeyError:
        raise UnknownTrainSetError(f"unknown training set {name!r}; registered: {', '.join(TRAIN_SETS)}") from None


# ----------------------------------------------------------------------------------------------- mix
@dataclass(frozen=True)
class MixEntry:
    """A set in a mix: its sampling weight (x size), its cap, and its file when not the default one."""

    name: str
    weight: float = field(metadata={"help": "sampling weight; a batch's set is drawn prop. to weight x size"})
    cap: int | None = field(default=None, metadata={"help": "most valid rows kept (the first ones); None = all"})
    path: str = field(default="", metadata={"help": "file under the data root; '' = the registry's pattern"})

    def __post_init__(self) -> None:
        train_set(self.name)
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) \
                or not math.isfinite(self.weight) or self.weight < 0:
            raise MixError(f"sets.{self.name}: weight={self.weight!r} must be a finite number >= 0 (0 = left out)")
        if self.cap is not None and (isinstance(self.cap, bool) or not isinstance(self.cap, int) or self.cap < 1):
            raise MixError(f"sets.{self.name}: cap={self.cap!r} must be a positive integer or null (no cap)")
        if not isinstance(self.path, str):
            raise MixError(f"sets.{self.name}: path={self.path!r} must be a string (relative to the data root)")

    @property
    def pattern(self) -> str:
        return self.path or train_set(self.name).default_pattern

    def keep(self, records: Sequence[Any]) -> list[Any]:
        """The rows this entry keeps of a set's valid rows: all, or the first `cap`."""
        return list(records if self.cap is None else records[: self.cap])


@dataclass(frozen=True)
class DataMix:
    """The sets a run trains on, each with a weight and a cap (see the module docstring)."""

    name: str
    entries: tuple[MixEntry, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.active:
            raise MixError(f"mix {self.name!r}: every set has weight 0; give at least one a weight > 0")

    @property
    def active(self) -> tuple[MixEntry, ...]:
        """The entries with weight > 0, in file order."""
        return tuple(e for e in self.entries if e.weight > 0)

    @property
    def weights(self) -> dict[str, float]:
        return {e.name: float(e.weight) for e in self.active}

    def entry(self, name: str) -> MixEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise MixError(f"mix {self.name!r} has no set {name!r}; its sets: {', '.join(e.name for e in self.entries)}")

    @classmethod
    def from_dict(cls, data: Any, *, where: str) -> DataMix:
        if not isinstance(data, dict) or not isinstance(data.get("sets"), dict) or not data["sets"]:
            raise MixError(f"{where}: expected a mapping with `name` and a non-empty `sets` mapping "
                           "(set name -> {weight, cap, path})")
        unknown = sorted(set(data) - {"name", "description", "sources", "sets"})
        if unknown:
            raise MixError(f"{where}: unknown key(s) {unknown}; allowed: name, description, sources, sets")
        return cls(str(data.get("name") or Path(where).stem), _entries(data["sets"], where),
                   str(data.get("description") or ""))


def _entries(sets: dict[str, Any], where: str) -> tuple[MixEntry, ...]:
    entries = []
    for name, values in sets.items():
        values = {"weight": values} if isinstance(values, int | float) else values
        if not isinstance(values, dict):
            raise MixError(f"{where}: sets.{name}: expected {{weight, cap, path}} or a number, got {values!r}")
        extra = sorted(set(values) - {"weight", "cap", "path"})
        if extra or "weight" not in values:
            raise MixError(f"{where}: sets.{name}: needs `weight`; allowed keys weight, cap, path (got {sorted(values)})")
        try:
            entries.append(MixEntry(str(name), **values))
        except MixError as err:
            raise MixError(f"{where}: {err}") from err
        except UnknownTrainSetError as err:
            raise MixError(f"{where}: sets.{name}: {err}") from err
    return tuple(entries)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise MixError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def mix_names() -> list[str]:
    """The mixes shipped with the package."""
    root = resources.files("embedrl.data") / MIX_DIR
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_mix(name_or_path: str | os.PathLike[str]) -> DataMix:
    """A packaged mix by name (`paper`, `vlm2vec-v2`) or a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"mix file {str(path)!r} does not exist")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        packaged = resources.files("embedrl.data") / MIX_DIR / f"{name_or_path}.yaml"
        if not packaged.is_file():
            raise MixError(f"unknown mix {str(name_or_path)!r}: use one of {', '.join(mix_names())} or a YAML path")
        text, where = packaged.read_text(encoding="utf-8"), f"mix {name_or_path!r}"
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except MixError as err:
        raise MixError(f"{where}: {err}") from None
    return DataMix.from_dict(data, where=where)


# ------------------------------------------------------------------------------------- data root
def locate(root: str | os.PathLike[str], entry: MixEntry) -> str:
    """The file of a mix entry under `root`, relative to it: its `path`, or the one match of its pattern."""
    root = Path(root)
    matches = sorted(p for p in root.glob(entry.pattern) if p.is_file())
    if len(matches) == 1:
        return matches[0].relative_to(root).as_posix()
    if not matches:
        raise MixError(f"set {entry.name}: no file matches {entry.pattern!r} under {root}; download or convert it "
                       f"there ({train_set(entry.name).origin}), or give its file as `path:` in the mix")
    shown = ", ".join(p.relative_to(root).as_posix() for p in matches[:5])
    raise MixError(f"set {entry.name}: {len(matches)} files match {entry.pattern!r} under {root} ({shown}); "
                   "name one as `path:` in the mix (one file per set)")


def write_train_manifest(root: str | os.PathLike[str], mix: DataMix, *, split: str = "train",
                         name: str = "") -> Path:
    """Add the active sets of `mix` to `root/manifest.json` as `mmeb_train` tasks of `split`.

    Tasks of other names or splits already in the manifest are kept; a task of the same name and split is
    replaced. Returns the manifest's path.
    """
    root = Path(root)
    path = root / MANIFEST
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    new = [_manifest_task(e, split, locate(root, e)) for e in mix.active]
    replaced = {(t["name"], split) for t in new}
    kept = [t for t in manifest.get("tasks", []) if (t.get("name"), t.get("split", "")) not in replaced]
    manifest.setdefault("name", name or root.name)
    manifest["tasks"] = kept + new
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("%s: %d %s tasks of mix %s listed", path, len(new), split, mix.name)
    return path


def _manifest_task(entry: MixEntry, split: str, path: str) -> dict[str, str]:
    known = train_set(entry.name)
    modality = {"mmeb": "image", "video": "video", "visdoc": "visdoc"}[known.family]  # as MiniMMEB's manifest
    return {"name": entry.name, "split": split, "kind": "mmeb_train", "path": path, "modality": modality,
            "meta_task": known.meta_task, "layout": known.layout}


def mix_tasks(tasks: Sequence[ManifestTask], mix: DataMix, *, where: str) -> list[ManifestTask]:
    """The manifest tasks of the mix's active sets, in mix order; raises naming a set the manifest lacks."""
    by_name = {task.name: task for task in tasks}
    missing = [e.name for e in mix.active if e.name not in by_name]
    if missing:
        raise MixError(f"{where}: mix {mix.name!r} needs set(s) {missing}, which the manifest does not list "
                       f"(it has {sorted(by_name) or 'none'}); add them with "
                       "embedrl.data.mmeb_train.write_train_manifest or set their weight to 0")
    left_out = sorted(set(by_name) - {e.name for e in mix.active})
    if left_out:
        log.info("%s: mix %s leaves out manifest task(s) %s", where, mix.name, left_out)
    return [by_name[e.name] for e in mix.active]
