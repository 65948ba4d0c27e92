"""Evaluation tasks by name: what each task is, how it is scored, and where its data lives.

A registry is a flat YAML file, one per benchmark; packaged ones live in
`embedrl/eval/tasks/<name>.yaml` and are loaded by name (`load_registry("minimmeb")`):

    benchmark: minimmeb
    tasks:
      - {name: ImgCLS-Marked, modality: image, meta_task: classification, metric: hit@1,
         candidates: local, kind: mmeb_eval, path: eval/image/ImgCLS-Marked.jsonl}

The registry says how a task is scored; the data set's `manifest.json` says which tasks a given build
holds and where. `tasks_for_data` joins the two and fails loudly on any disagreement, so that a task is
never skipped, or scored with the wrong metric, without anyone noticing.

A registry of `layout: official` (MMEB-V2, UVRB) describes data as the benchmark's authors publish it:
no manifest, each task at its registry `path` under the data root, read by `embedrl.data.official`
(see `embedrl.eval.benchmarks.discover_tasks`). Such a task may also name a `media_root` (the folder
its media paths are relative to), an `instruction` (prefixed to queries that carry none) and a `parser`
(the reader of its data set's own annotation rows, `embedrl.data.official_video`).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml

__all__ = [
    "CANDIDATE_MODES",
    "KINDS",
    "LAYOUTS",
    "METRICS",
    "MODALITIES",
    "EvalTask",
    "TaskRegistry",
    "UnknownTaskError",
    "load_registry",
    "packaged_registries",
    "tasks_for_data",
]

logger = logging.getLogger(__name__)

MODALITIES = ("image", "video", "visdoc")
METRICS = ("hit@1", "ndcg@5", "recall@1", "recall@10", "precision@1")
CANDIDATE_MODES = ("local", "global")
KINDS = ("mmeb_eval", "visdoc", "uvrb")
LAYOUTS = ("embedrl", "official")  # our documented formats (with manifest.json), or the benchmark's own
# Which modalities each data format can carry; a mismatch is a typo, not a new kind of task.
_KIND_MODALITIES = {"mmeb_eval": ("image", "video"), "visdoc": ("visdoc",), "uvrb": ("video",)}

_YAML_TOP_KEYS = ("benchmark", "tasks", "layout")
_YAML_TASK_KEYS = ("name", "modality", "meta_task", "metric", "candidates", "kind", "path", "media_root",
                   "instruction", "parser")
_YAML_REQUIRED_TASK_KEYS = ("name", "modality", "meta_task", "metric", "candidates", "kind")
# Fields a data set's manifest may also state; they must agree with the registry.
_MANIFEST_CHECKED_FIELDS = ("modality", "meta_task", "metric", "candidates", "kind")
_EVAL_SPLIT = "eval"


@dataclass(frozen=True)
class EvalTask:
    """One evaluation task.

    name: unique within a registry, e.g. "ImgCLS-Marked".
    modality: "image", "video" or "visdoc" (visual documents).
    meta_task: the group the task is averaged into, e.g. "classification", "retrieval".
    metric: "hit@1" (MMEB image/video), "ndcg@5" (visual documents), or "recall@1", "recall@10",
        "precision@1" (UVRB).
    candidates: "local" (each query ships its own candidate list) or "global" (the whole pool).
    kind: the data format, which picks the reader: "mmeb_eval", "visdoc" or "uvrb".
    path: the task's data, relative to the data root; may be empty in a registry and is then filled
        from the data set's manifest (see `tasks_for_data`).
    benchmark: the registry the task comes from, e.g. "minimmeb".
    layout: "embedrl" (the formats of docs/data-formats.md, listed in a manifest) or "official" (the
        benchmark's published layout, read by `embedrl.data.official`); set by the registry.
    media_root: folder, relative to the data root, that the task's media paths are relative to
        ("" = the data root for image/video rows, the task folder for visdoc/uvrb).
    instruction: prefixed to every query text of an official-layout task ("" = none).
    parser: for an official-layout video task, the parser of its data set's annotation rows, one of
        `embedrl.data.official_video.video_parser_names()` ("" = rows already in the MMEB eval layout).
    """

    name: str
    modality: str
    meta_task: str
    metric: str
    candidates: str
    kind: str
    path: str = ""
    benchmark: str = ""
    layout: str = "embedrl"
    media_root: str = ""
    instruction: str = ""
    parser: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValueError(
                f"eval task name must be a non-empty string without surrounding whitespace, got {self.name!r}"
            )
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str):
                raise TypeError(
                    f"eval task {self.name!r}: field {field.name!r} must be a string, "
                    f"got {type(value).__name__} {value!r}"
                )
        self._check_choice("modality", MODALITIES)
        self._check_choice("metric", METRICS)
        self._check_choice("candidates", CANDIDATE_MODES)
        self._check_choice("kind", KINDS)
        self._check_choice("layout", LAYOUTS)
        if not self.meta_task.strip():
            raise ValueError(f"eval task {self.name!r}: field 'meta_task' must not be empty")
        if self.modality not in _KIND_MODALITIES[self.kind]:
            raise ValueError(
                f"eval task {self.name!r}: kind {self.kind!r} does not go with modality {self.modality!r}; "
                f"kind {self.kind!r} allows modality {' or '.join(map(repr, _KIND_MODALITIES[self.kind]))}"
            )
        for field_name in ("path", "media_root"):
            value = getattr(self, field_name)
            if value and not _is_relative_inside(value):
                raise ValueError(
                    f"eval task {self.name!r}: field {field_name!r} must be relative to the data root and stay "
                    f"inside it, got {value!r}"
                )
        if self.parser:
            self._check_parser()

    def _check_parser(self) -> None:
        from embedrl.data.official_video import video_parser_names

        if self.layout != "official" or self.kind != "mmeb_eval":
            raise ValueError(
                f"eval task {self.name!r}: field 'parser' is for official-layout mmeb_eval tasks "
                f"(this one has layout {self.layout!r}, kind {self.kind!r}); drop it"
            )
        self._check_choice("parser", video_parser_names())

    def _check_choice(self, field_name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, field_name)
        if value not in allowed:
            hint = difflib.get_close_matches(value, allowed, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(
                f"eval task {self.name!r}: field {field_name!r} has value {value!r}{did_you_mean}; "
                f"allowed: {', '.join(allowed)}"
            )


def _is_relative_inside(path: str) -> bool:
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute():
        return False
    return ".." not in PurePosixPath(path.replace("\\", "/")).parts


class UnknownTaskError(KeyError):
    """An eval task name the registry does not know. A `KeyError` whose message reads plainly."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return self.message


class TaskRegistry:
    """Eval tasks by name, in registration order. Raises on duplicates and on unknown names."""

    def __init__(self, tasks: Iterable[EvalTask] = (), *, name: str = "", source: str | None = None) -> None:
        self.name = name
        self._tasks: dict[str, EvalTask] = {}
        self._sources: dict[str, str] = {}
        source = source or _caller_location()
        for task in tasks:
            self.register(task, source=source)

    def register(self, task: EvalTask, *, source: str | None = None) -> EvalTask:
        """Add `task`. `source` says where it was defined (a file and entry); by default, the caller."""
        if not isinstance(task, EvalTask):
            raise TypeError(f"register() takes an EvalTask, got {type(task).__name__} {task!r}")
        source = source or _caller_location()
        if task.name in self._tasks:
            raise ValueError(
                f"eval task {task.name!r} is defined twice{self._where()}: first in {self._sources[task.name]}, "
                f"again in {source}; rename one of them or drop the duplicate"
            )
        self._tasks[task.name] = task
        self._sources[task.name] = source
        return task

    def get(self, name: str) -> EvalTask:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(name, self._unknown_message(name)) from None

    def names(self) -> list[str]:
        return list(self._tasks)

    def select(self, names: Iterable[str] | None = None, modality: str | None = None) -> list[EvalTask]:
        """The tasks named (in the order given; all, in registry order, if None), of `modality` if given."""
        if isinstance(names, str):
            raise TypeError(f"names must be a list of task names, not the string {names!r}; pass [{names!r}]")
        if modality is not None and modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; allowed: {', '.join(MODALITIES)}")
        if names is None:
            chosen = list(self)
        else:
            names = list(names)
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"task(s) named more than once: {', '.join(repeated)}; name each task once")
            chosen = [self.get(n) for n in names]
        return [t for t in chosen if modality is None or t.modality == modality]

    def source_of(self, name: str) -> str:
        self.get(name)
        return self._sources[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[EvalTask]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"TaskRegistry(name={self.name!r}, tasks={self.names()!r})"

    def _where(self) -> str:
        return f" in registry {self.name!r}" if self.name else ""

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        if not known:
            return f"unknown eval task {name!r}: no tasks are registered{self._where()}"
        target = str(name).lower()
        by_closeness = sorted(known, key=lambda k: -difflib.SequenceMatcher(None, target, k.lower()).ratio())
        return f"unknown eval task {name!r}{self._where()}; known tasks, closest first: {', '.join(by_closeness)}"


def _caller_location() -> str:
    # Two frames up: the code that called register() or TaskRegistry().
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def packaged_registries() -> list[str]:
    """Names of the registries shipped in `embedrl/eval/tasks/`."""
    folder = resources.files("embedrl.eval") / "tasks"
    if not folder.is_dir():
        return []
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_registry(name_or_path: str | os.PathLike[str]) -> TaskRegistry:
    """Load a packaged registry by name ("minimmeb") or a registry YAML file by path."""
    text, source = _read_registry_text(name_or_path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    benchmark, entries, layout = _check_document(document, source)
    registry = TaskRegistry(name=benchmark, source=source)
    for index, entry in enumerate(entries):
        where = f"{source}: tasks[{index}]"
        registry.register(_task_from_entry(entry, benchmark, where, layout), source=where)
    return registry


def _looks_like_path(name_or_path: str | os.PathLike[str]) -> bool:
    if not isinstance(name_or_path, str):
        return True
    return "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def _read_registry_text(name_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"task registry file {path} does not exist; pass a path to a registry YAML file "
                f"or a packaged registry name ({', '.join(packaged_registries()) or 'none packaged'})"
            )
        return path.read_text(encoding="utf-8"), str(path)
    resource = resources.files("embedrl.eval") / "tasks" / f"{name_or_path}.yaml"
    if not resource.is_file():
        known = packaged_registries()
        close = difflib.get_close_matches(name_or_path, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown task registry {name_or_path!r}{hint}; packaged registries: "
            f"{', '.join(known) or 'none'}; or pass a path to a registry YAML file"
        )
    return resource.read_text(encoding="utf-8"), f"embedrl/eval/tasks/{name_or_path}.yaml"


def _check_document(document: Any, source: str) -> tuple[str, list[Any], str]:
    if not isinstance(document, dict):
        raise ValueError(f"{source}: a task registry is a mapping with keys {', '.join(_YAML_TOP_KEYS)}")
    unknown = [k for k in document if k not in _YAML_TOP_KEYS]
    if unknown:
        raise ValueError(
            f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: {', '.join(_YAML_TOP_KEYS)}"
        )
    benchmark = document.get("benchmark")
    if not isinstance(benchmark, str) or not benchmark.strip():
        raise ValueError(f"{source}: 'benchmark' must be a non-empty string, got {benchmark!r}")
    entries = document.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: 'tasks' must be a non-empty list of task mappings, got {entries!r}")
    layout = document.get("layout", "embedrl")
    if layout not in LAYOUTS:
        raise ValueError(f"{source}: 'layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return benchmark, entries, layout


def _task_from_entry(entry: Any, benchmark: str, where: str, layout: str = "embedrl") -> EvalTask:
    if not isinstance(entry, dict):
        raise ValueError(
            f"{where}: each task is a mapping with keys {', '.join(_YAML_TASK_KEYS)}, got {entry!r}"
        )
    label = f"{where} ({entry['name']!r})" if "name" in entry else where
    unknown = [k for k in entry if k not in _YAML_TASK_KEYS]
    if unknown:
        raise ValueError(
            f"{label}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(_YAML_TASK_KEYS)}"
        )
    missing = [k for k in _YAML_REQUIRED_TASK_KEYS if k not in entry]
    if missing:
        raise ValueError(f"{label}: missing key(s) {', '.join(missing)}")
    try:
        return EvalTask(**entry, benchmark=benchmark, layout=layout)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def tasks_for_data(
    data_root: str | os.PathLike[str],
    registry: str | os.PathLike[str] | TaskRegistry = "minimmeb",
    *,
    allow_missing: bool = False,
) -> list[EvalTask]:
    """The registry's tasks that `<data_root>/manifest.json` lists in split "eval", in registry order.

    Each task's `path` comes from the manifest. Raises if the manifest lists an eval task the registry
    lacks (it would otherwise go unscored), if the two disagree on how a task is scored, or, unless
    `allow_missing`, if a registry task is absent from the data. Data files are not opened here.
    """
    registry = registry if isinstance(registry, TaskRegistry) else load_registry(registry)
    manifest_path = Path(data_root) / "manifest.json"
    entries = _manifest_eval_entries(manifest_path)
    unregistered = [name for name in entries if name not in registry]
    if unregistered:
        raise ValueError(
            f"{manifest_path} lists eval task(s) {', '.join(unregistered)} that registry {registry.name!r} "
            f"does not define; add them to the registry YAML (or use a registry that has them), "
            f"so that no task is skipped silently"
        )
    absent = [name for name in registry.names() if name not in entries]
    if absent and not allow_missing:
        raise ValueError(
            f"registry {registry.name!r} task(s) {', '.join(absent)} are not in {manifest_path}; "
            f"regenerate the data, or pass allow_missing=True to evaluate only the tasks present"
        )
    if absent:
        logger.warning("Skipping %d registry task(s) absent from %s: %s", len(absent), manifest_path, absent)
    tasks = []
    for task in registry:
        if task.name in entries:
            _check_agreement(task, entries[task.name], manifest_path, registry.name)
            tasks.append(replace(task, path=entries[task.name]["path"]))
    return tasks


def _manifest_eval_entries(manifest_path: Path) -> dict[str, dict[str, Any]]:
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} does not exist; data_root must be a data set folder holding manifest.json "
            f"(generate or pull the data first)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{manifest_path}: not valid JSON: {exc}") from None
    rows = manifest.get("tasks") if isinstance(manifest, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{manifest_path}: expected an object with a 'tasks' list")
    entries: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("split") != _EVAL_SPLIT:
            continue
        name = row.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{manifest_path}: tasks[{index}] (split eval) has no 'name'")
        if name in entries:
            raise ValueError(
                f"{manifest_path}: eval task {name!r} is listed twice (tasks[{index}] repeats it)"
            )
        if not isinstance(row.get("path"), str) or not row["path"]:
            raise ValueError(f"{manifest_path}: eval task {name!r} (tasks[{index}]) has no 'path'")
        entries[name] = row
    return entries


def _check_agreement(task: EvalTask, entry: dict[str, Any], manifest_path: Path, registry_name: str) -> None:
    conflicts = [
        f"{field}: manifest says {entry[field]!r}, registry says {getattr(task, field)!r}"
        for field in _MANIFEST_CHECKED_FIELDS
        if field in entry and entry[field] != getattr(task, field)
    ]
    if conflicts:
        raise ValueError(
            f"eval task {task.name!r}: {manifest_path} and registry {registry_name!r} disagree "
            f"({'; '.join(conflicts)}); fix whichever is wrong"
        )
