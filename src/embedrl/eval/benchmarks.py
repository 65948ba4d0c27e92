"""Evaluation on the real benchmarks (MMEB-V2, UVRB): tasks found in a data root, coverage, leaderboard files.

A real data root rarely holds all of a benchmark: the evaluation scores the registry tasks it finds,
names the ones it does not, and then never reports a benchmark mean as if it were complete. With any
task missing, `overall` (and the UVRB `mean`) is None and the mean over the tasks present is kept apart,
as `overall_partial` (`mean_partial`), next to a `coverage` block saying what is missing.

Beside the usual report (`embedrl.eval.report`), `write_benchmark_files` writes the per-task scores in
the layout of the MMEB-V2 leaderboard's submission JSON (`leaderboard.json`) and a Markdown table against
the published headline numbers kept in `reference_scores.yaml` (`comparison.md`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from embedrl.eval.registry import MODALITIES, EvalTask, TaskRegistry, load_registry, tasks_for_data

__all__ = [
    "BENCHMARKS",
    "FRAMES_PER_VIDEO",
    "TaskSelection",
    "apply_coverage",
    "comparison_markdown",
    "comparison_rows",
    "discover_tasks",
    "evaluate_benchmark",
    "leaderboard_json",
    "reference_scores",
    "select_tasks",
    "write_benchmark_files",
]

logger = logging.getLogger(__name__)

BENCHMARKS = ("minimmeb", "mmeb-v2", "uvrb")
FRAMES_PER_VIDEO = 8  # MMEB-V2 and UVRB both sample 8 frames per video, evenly spaced
LEADERBOARD_METRIC_NAMES = {"ndcg@5": "ndcg_linear@5"}  # ours -> the leaderboard's key, where they differ
_TABLE_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class TaskSelection:
    """The registry tasks a data root holds (`present`, each with its resolved `path`) and the others."""

    present: list[EvalTask]
    missing: list[EvalTask]


# --------------------------------------------------------------------------------------- discovery
def discover_tasks(data_root: str | os.PathLike[str], registry: TaskRegistry) -> TaskSelection:
    """Which tasks of an official-layout registry are under `data_root`, in registry order.

    A task is present when its registry `path` exists, as a file or folder, or as `<path>.jsonl` /
    `<path>.parquet`; its data are not opened here.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder; pass the folder the benchmark was downloaded to")
    present, missing = [], []
    for task in registry:
        location = _task_location(root, task)
        if location is None:
            missing.append(task)
        else:
            present.append(replace(task, path=location))
    return TaskSelection(present, missing)


def _task_location(root: Path, task: EvalTask) -> str | None:
    for candidate in (task.path, *(f"{task.path}{suffix}" for suffix in _TABLE_SUFFIXES)):
        if (root / candidate).exists():
            return candidate
    return None


def select_tasks(selection: TaskSelection, names: Sequence[str] | None, registry: TaskRegistry) -> TaskSelection:
    """Only the tasks `names` (all when None); a name the registry lacks raises, listing the known ones."""
    if names is None:
        return selection
    wanted = {registry.get(name).name for name in names}
    absent = [name for name in names if name not in {t.name for t in selection.present}]
    if absent:
        raise FileNotFoundError(
            f"task(s) {', '.join(absent)} of {registry.name!r} are not under the data root; present: "
            f"{', '.join(t.name for t in selection.present) or 'none'}"
        )
    present = [t for t in selection.present if t.name in wanted]
    missing = [t for t in registry if t.name not in wanted]
    return TaskSelection(present, missing)


# ---------------------------------------------------------------------------------------- coverage
def apply_coverage(result: dict[str, Any], registry: TaskRegistry, evaluated: Iterable[str]) -> dict[str, Any]:
    """Add `coverage` to an `aggregate` result; with tasks missing, move the benchmark means aside.

    `overall` becomes None and its value moves to `overall_partial`; likewise the UVRB block's `mean`
    moves to `mean_partial`. Per-modality and per-meta-task means stay, and `coverage.by_modality` says
    how many of each modality's tasks they cover.
    """
    evaluated = set(evaluated)
    unknown = sorted(evaluated - set(registry.names()))
    if unknown:
        raise ValueError(f"evaluated task(s) {', '.join(unknown)} are not in registry {registry.name!r}")
    missing = [t.name for t in registry if t.name not in evaluated]
    result["coverage"] = {
        "benchmark": registry.name,
        "complete": not missing,
        "n_expected": len(registry),
        "n_evaluated": len(evaluated),
        "missing": missing,
        "by_modality": _modality_coverage(registry, evaluated),
    }
    if missing:
        result["overall_partial"], result["overall"] = result.get("overall"), None
        uvrb = result.get("uvrb")
        if uvrb:
            uvrb["mean_partial"], uvrb["mean"] = uvrb.get("mean"), None
        logger.warning(
            "Partial %s: %d of %d tasks evaluated; the benchmark mean is not reported (missing: %s)",
            registry.name, len(evaluated), len(registry), ", ".join(missing),
        )
    return result


def _modality_coverage(registry: TaskRegistry, evaluated: set[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for task in sorted(registry, key=lambda t: MODALITIES.index(t.modality)):
        entry = counts.setdefault(task.modality, {"expected": 0, "evaluated": 0})
        entry["expected"] += 1
        entry["evaluated"] += task.name in evaluated
    return counts


# --------------------------------------------------------------------------------------- evaluation
def evaluate_benchmark(
    data_root: str | os.PathLike[str],
    embedder_dir: str | os.PathLike[str],
    source: Any,
    *,
    benchmark: str = "minimmeb",
    task_names: Sequence[str] | None = None,
    quarantine_dir: str | os.PathLike[str] | None = None,
    **evaluate_options: Any,
) -> dict[str, Any]:
    """`embedrl.eval.evaluator.evaluate` on the tasks of `benchmark` that `data_root` holds, with coverage.

    A registry of layout "embedrl" (MiniMMEB) reads the data set's manifest and requires every task; an
    official one (MMEB-V2, UVRB) scores the tasks present, samples 8 frames per video, and reports the
    missing ones (see `apply_coverage`). `evaluate_options` go to `evaluate` (batch_size, max_queries,
    cache_dir).
    """
    from embedrl.eval.evaluator import evaluate

    registry = load_registry(benchmark)
    root = Path(data_root)
    official = {t.layout for t in registry} == {"official"}
    if official:
        selection = select_tasks(discover_tasks(root, registry), task_names, registry)
        _require_some(selection, registry, root)
        frames = FRAMES_PER_VIDEO
    else:
        selection = select_tasks(TaskSelection(tasks_for_data(root, registry), []), task_names, registry)
        frames = None
    if selection.missing:
        logger.warning("%d of %d %s task(s) are not evaluated: %s", len(selection.missing), len(registry),
                       registry.name, ", ".join(t.name for t in selection.missing))
    result = evaluate(root, embedder_dir, source, tasks=selection.present, registry=benchmark,
                      frames_per_video=frames, quarantine_dir=quarantine_dir, **evaluate_options)
    result["benchmark"] = registry.name
    return apply_coverage(result, registry, [t.name for t in selection.present])


def _require_some(selection: TaskSelection, registry: TaskRegistry, root: Path) -> None:
    if selection.present:
        return
    examples = ", ".join(f"{t.path}/" for t in list(registry)[:3])
    raise FileNotFoundError(
        f"no task of {registry.name!r} found under {root}: expected folders such as {examples} "
        f"(see docs/data-formats.md, 'Official benchmark layouts')"
    )


# ---------------------------------------------------------------------------------------- leaderboard
def leaderboard_json(result: Mapping[str, Any], *, model_name: str) -> dict[str, Any]:
    """Per-task scores in the layout of the MMEB-V2 leaderboard's submission JSON.

    `{"metadata": {...}, "metrics": {modality: {task: {<metric>: fraction, "num_data": n}}}}`, scores as
    fractions in 0..1 under the leaderboard's metric names (`hit@1`, `ndcg_linear@5`; UVRB data sets
    under their own metric, in modality "video").
    """
    coverage = result.get("coverage") or {}
    n_queries = result.get("n_queries") or {}
    metrics: dict[str, dict[str, Any]] = {}
    rows = {**result.get("tasks", {}), **((result.get("uvrb") or {}).get("tasks") or {})}
    for name, row in rows.items():
        metric = LEADERBOARD_METRIC_NAMES.get(row["metric"], row["metric"])
        entry = {metric: row["score"] / 100.0}
        if name in n_queries:
            entry["num_data"] = n_queries[name]
        metrics.setdefault(row["modality"], {})[name] = entry
    metadata = {
        "model_name": model_name,
        "benchmark": result.get("benchmark", coverage.get("benchmark", "")),
        "variant": result.get("variant", ""),
        "data_source": "Self-Reported",
        "n_tasks_evaluated": coverage.get("n_evaluated", len(rows)),
        "n_tasks_expected": coverage.get("n_expected", len(rows)),
        "partial": not coverage.get("complete", True),
    }
    return {"metadata": metadata, "metrics": metrics}


# ----------------------------------------------------------------------------------------- comparison
def reference_scores(benchmark: str) -> dict[str, Any]:
    """The published headline numbers of `benchmark` from `embedrl/eval/reference_scores.yaml`:
    `{"source": str, "columns": [...], "models": {name: {column: score}}}`."""
    text = (resources.files("embedrl.eval") / "reference_scores.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(text) or {}
    if benchmark not in document:
        raise ValueError(
            f"no reference scores for benchmark {benchmark!r}; reference_scores.yaml has: {', '.join(document)}"
        )
    return document[benchmark]


def comparison_rows(result: Mapping[str, Any], references: Mapping[str, Any], *, label: str) -> list[dict[str, Any]]:
    """This run (labelled `label`) and each reference model, one row each, over the references' columns.

    A column this run covers only in part shows its mean over the tasks present as text, e.g.
    "41.2 (partial: 3 of 78 tasks)"; a column it does not cover at all shows as missing.
    """
    columns = list(references["columns"])
    ours: dict[str, Any] = {"model": label}
    for column in columns:
        ours[column] = _our_cell(result, column)
    rows = [ours]
    for model, scores in references["models"].items():
        rows.append({"model": model, **{c: scores.get(c) for c in columns}})
    return rows


def _our_cell(result: Mapping[str, Any], column: str) -> Any:
    coverage = result.get("coverage") or {}
    if column in ("overall", "mean"):
        block = result if column == "overall" else (result.get("uvrb") or {})
        value, partial = block.get(column), block.get(f"{column}_partial")
        if value is None and partial is not None:
            return f"{partial:.1f} (partial: {coverage.get('n_evaluated')} of {coverage.get('n_expected')} tasks)"
        return value
    value = (result.get("by_modality") or {}).get(column)
    counts = (coverage.get("by_modality") or {}).get(column)
    if value is not None and counts and counts["evaluated"] < counts["expected"]:
        return f"{value:.1f} (partial: {counts['evaluated']} of {counts['expected']} tasks)"
    return value


def comparison_markdown(result: Mapping[str, Any], benchmark: str, *, label: str) -> str:
    """A Markdown table of this run against the published headline numbers of `benchmark`."""
    from embedrl.eval.report import markdown_table

    references = reference_scores(benchmark)
    table = markdown_table(comparison_rows(result, references, label=label), ["model", *references["columns"]])
    coverage = result.get("coverage") or {}
    note = ""
    if not coverage.get("complete", True):
        note = (f"\n\nPartial run: {coverage['n_evaluated']} of {coverage['n_expected']} tasks; a partial mean "
                f"is not comparable with the published numbers. Missing: {', '.join(coverage['missing'])}.")
    return f"# {benchmark}: this run against published numbers\n\nSource: {references['source']}\n\n{table}{note}\n"


def write_benchmark_files(out_dir: str | os.PathLike[str], result: Mapping[str, Any], *, model_name: str,
                          label: str) -> dict[str, Path]:
    """Write `leaderboard.json` and `comparison.md` into `out_dir`, next to metrics.json; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    benchmark = result.get("benchmark") or (result.get("coverage") or {}).get("benchmark")
    paths = {"leaderboard": out / "leaderboard.json"}
    paths["leaderboard"].write_text(json.dumps(leaderboard_json(result, model_name=model_name), indent=1) + "\n",
                                    encoding="utf-8")
    if benchmark in _benchmarks_with_references():
        paths["comparison"] = out / "comparison.md"
        paths["comparison"].write_text(comparison_markdown(result, benchmark, label=label), encoding="utf-8")
    return paths


def _benchmarks_with_references() -> list[str]:
    text = (resources.files("embedrl.eval") / "reference_scores.yaml").read_text(encoding="utf-8")
    return list(yaml.safe_load(text) or {})
