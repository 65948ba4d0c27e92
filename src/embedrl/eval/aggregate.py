"""Per-task scores -> the MMEB-V2 summary: overall, per modality, per meta-task.

Conventions:
- Scores are percentages in 0..100.
- Every mean is the unweighted mean over tasks, as in MMEB-V2: `overall` is the mean of all task
  scores (not the mean of the modality means), and each modality or meta-task mean is the mean of its
  tasks. The number of queries per task plays no part.
- Tasks of kind "uvrb" (UVRB-style video retrieval, e.g. MiniUVRB-Flash) belong to another benchmark,
  with its own headline number (the mean over its data sets). They are kept out of `overall`,
  `by_modality`, `by_meta_task`, `tasks` and `n_tasks`, which cover kinds "mmeb_eval" and "visdoc" only,
  and are reported in the `uvrb` block instead; mixed in, they would make `overall` incomparable with
  published MMEB-V2 numbers.

Result layout:
    {"overall": float | None, "by_modality": {modality: mean}, "by_meta_task": {"<modality>/<meta_task>": mean},
     "tasks": {name: {"score", "modality", "meta_task", "metric"}}, "n_tasks": int,
     "uvrb": None | {"mean", "n_tasks", "by_meta_task": {meta_task: mean}, "tasks": {name: {...}}}}
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from embedrl.eval.registry import MODALITIES, EvalTask

__all__ = ["SEPARATE_KINDS", "aggregate", "flatten_metrics"]

SEPARATE_KINDS = frozenset({"uvrb"})  # reported in their own block, never in `overall`


def aggregate(task_scores: Mapping[str, float], tasks: Iterable[EvalTask]) -> dict[str, Any]:
    """Summarise `task_scores` (task name -> score in 0..100) over `tasks`; see the module docstring."""
    tasks = list(tasks)
    _check_tasks(tasks)
    scores = _checked_scores(task_scores, tasks)
    mmeb = [t for t in tasks if t.kind not in SEPARATE_KINDS]
    uvrb = [t for t in tasks if t.kind in SEPARATE_KINDS]
    return {
        "overall": _mean([scores[t.name] for t in mmeb]),
        "by_modality": _group_means(mmeb, scores, key=lambda t: t.modality),
        "by_meta_task": _group_means(mmeb, scores, key=lambda t: f"{t.modality}/{t.meta_task}"),
        "tasks": _task_rows(mmeb, scores),
        "n_tasks": len(mmeb),
        "uvrb": _uvrb_block(uvrb, scores),
    }


def flatten_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """`aggregate`'s result as flat metric names (for experiment trackers): "overall",
    "modality/image", "meta_task/image/vqa", "task/<name>", "uvrb/mean", "uvrb/task/<name>"."""
    flat: dict[str, float] = {}
    if result.get("overall") is not None:
        flat["overall"] = result["overall"]
    flat.update({f"modality/{k}": v for k, v in result.get("by_modality", {}).items()})
    flat.update({f"meta_task/{k}": v for k, v in result.get("by_meta_task", {}).items()})
    flat.update({f"task/{k}": row["score"] for k, row in result.get("tasks", {}).items()})
    uvrb = result.get("uvrb")
    if uvrb:
        flat["uvrb/mean"] = uvrb["mean"]
        flat.update({f"uvrb/task/{k}": row["score"] for k, row in uvrb["tasks"].items()})
    return flat


def _check_tasks(tasks: list[EvalTask]) -> None:
    if not tasks:
        raise ValueError("aggregate() needs at least one task")
    for task in tasks:
        if not isinstance(task, EvalTask):
            raise TypeError(f"tasks must be EvalTask objects, got {type(task).__name__} {task!r}")
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"task(s) listed more than once: {', '.join(repeated)}; each task counts once")


def _checked_scores(task_scores: Mapping[str, float], tasks: list[EvalTask]) -> dict[str, float]:
    names = {t.name for t in tasks}
    missing = [t.name for t in tasks if t.name not in task_scores]
    if missing:
        raise ValueError(f"no score for task(s) {', '.join(missing)}; every task must be scored")
    extra = sorted(set(task_scores) - names)
    if extra:
        raise ValueError(
            f"scores given for task(s) {', '.join(extra)} that are not in `tasks`; "
            f"pass their EvalTask or drop the scores"
        )
    return {t.name: _checked_score(t.name, task_scores[t.name]) for t in tasks}


def _checked_score(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"score of task {name!r} must be a number, got {type(value).__name__} {value!r}")
    score = float(value)
    if not math.isfinite(score) or not 0.0 <= score <= 100.0:
        raise ValueError(f"score of task {name!r} is {value!r}; scores are percentages in 0..100")
    return score


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _group_means(
    tasks: list[EvalTask], scores: dict[str, float], key: Callable[[EvalTask], str]
) -> dict[str, float]:
    # Canonical modality order first (image, video, visdoc), then the order tasks came in.
    ordered = sorted(tasks, key=lambda t: MODALITIES.index(t.modality))
    groups: dict[str, list[float]] = {}
    for task in ordered:
        groups.setdefault(key(task), []).append(scores[task.name])
    return {group: _mean(values) for group, values in groups.items()}


def _task_rows(tasks: list[EvalTask], scores: dict[str, float]) -> dict[str, dict[str, Any]]:
    return {
        t.name: {
            "score": scores[t.name],
            "modality": t.modality,
            "meta_task": t.meta_task,
            "metric": t.metric,
        }
        for t in tasks
    }


def _uvrb_block(tasks: list[EvalTask], scores: dict[str, float]) -> dict[str, Any] | None:
    if not tasks:
        return None
    return {
        "mean": _mean([scores[t.name] for t in tasks]),
        "n_tasks": len(tasks),
        "by_meta_task": _group_means(tasks, scores, key=lambda t: t.meta_task),
        "tasks": _task_rows(tasks, scores),
    }
