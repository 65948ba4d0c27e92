"""Evaluation reports: metrics.json, predictions.jsonl, report.md and a self-contained report.html.

`write_report` takes the dict that `embedrl.eval.aggregate.aggregate` returns. Both report.md and
report.html are rendered from one list of tables, so they always show the same numbers; the HTML adds
a bar chart of the task scores (matplotlib, Agg, embedded as a base64 PNG) and escapes all text.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrl.eval.registry import MODALITIES

__all__ = ["comparison_table", "markdown_table", "write_report"]

logger = logging.getLogger(__name__)

_REQUIRED_RESULT_KEYS = ("overall", "by_modality", "by_meta_task", "tasks")
_MODALITY_TITLES = {"image": "Image", "video": "Video", "visdoc": "Visual documents"}
_TASK_COLUMNS = ["task", "meta_task", "metric", "score"]
_MISSING = "—"
_CHART_COLORS = {"image": "#4C72B0", "video": "#DD8452", "visdoc": "#55A868", "uvrb": "#8172B3"}
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".note{color:#555}img{max-width:100%}"
)


@dataclass(frozen=True)
class _Table:
    heading: str
    rows: list[dict[str, Any]]
    columns: list[str] | None = None
    note: str = ""


def write_report(
    out_dir: str | os.PathLike[str],
    result: Mapping[str, Any],
    *,
    title: str,
    predictions: Sequence[Mapping[str, Any]] | None = None,
    extra_tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Path]:
    """Write the report files into `out_dir` (created if needed).

    Returns the paths written, under keys "metrics" (metrics.json: `result` as is), "predictions"
    (predictions.jsonl, one JSON object per line; only if `predictions` is given), "markdown"
    (report.md) and "html" (report.html). `extra_tables` maps a heading to rows, e.g. an ablation
    table from `comparison_table`.
    """
    _check_result(result)
    tables = _report_tables(result) + _extra_tables(extra_tables or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json"}
    _write_atomic(paths["metrics"], json.dumps(result, indent=1, default=_to_json) + "\n")
    if predictions is not None:
        paths["predictions"] = out / "predictions.jsonl"
        _write_atomic(paths["predictions"], _jsonl(predictions))
    paths["markdown"] = out / "report.md"
    _write_atomic(paths["markdown"], _render_markdown(title, result, tables))
    paths["html"] = out / "report.html"
    _write_atomic(paths["html"], _render_html(title, result, tables, _score_chart_png(result)))
    logger.info("Wrote evaluation report to %s (%s)", out, ", ".join(p.name for p in paths.values()))
    return paths


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".1f"
) -> str:
    """A GitHub-flavoured Markdown table. Columns default to every key, in order of first appearance;
    floats use `floatfmt`, missing values show as a dash, numeric columns are right-aligned."""
    columns = _columns(rows, columns)
    if not columns:
        return ""
    numeric = {c: _is_numeric_column(rows, c) for c in columns}
    lines = [
        "| " + " | ".join(_md_text(c) for c in columns) + " |",
        "| " + " | ".join("---:" if numeric[c] else "---" for c in columns) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_md_text(_format_cell(row.get(c), floatfmt)) for c in columns) + " |")
    return "\n".join(lines)


def comparison_table(
    variants: Mapping[str, Mapping[str, Any]], *, baseline: str | None = None
) -> list[dict[str, Any]]:
    """One row per variant (an ablation, a model) with its overall and per-modality scores, plus the
    UVRB mean when any variant has one. `variants` maps a variant name to its `aggregate` result. With
    `baseline` (a variant name), a "delta_overall" column gives each overall minus the baseline's."""
    for name, result in variants.items():
        if not isinstance(result, Mapping) or "overall" not in result:
            raise ValueError(f"variant {name!r}: expected an aggregate() result with an 'overall' key")
    if baseline is not None and baseline not in variants:
        raise ValueError(f"baseline {baseline!r} is not one of the variants: {', '.join(variants)}")
    seen = {m for result in variants.values() for m in result.get("by_modality", {})}
    modalities = [m for m in MODALITIES if m in seen] + sorted(seen - set(MODALITIES))
    has_uvrb = any(result.get("uvrb") for result in variants.values())
    rows = []
    for name, result in variants.items():
        row: dict[str, Any] = {"variant": name, "overall": result["overall"]}
        if baseline is not None:
            base = variants[baseline]["overall"]
            row["delta_overall"] = (
                None if base is None or result["overall"] is None else result["overall"] - base
            )
        row.update({m: result.get("by_modality", {}).get(m) for m in modalities})
        if has_uvrb:
            row["uvrb"] = (result.get("uvrb") or {}).get("mean")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- tables


def _check_result(result: Mapping[str, Any]) -> None:
    if not isinstance(result, Mapping):
        raise TypeError(f"result must be the dict aggregate() returns, got {type(result).__name__}")
    missing = [k for k in _REQUIRED_RESULT_KEYS if k not in result]
    if missing:
        raise ValueError(
            f"result lacks key(s) {', '.join(missing)}; pass the dict that embedrl.eval.aggregate.aggregate() returns"
        )


def _report_tables(result: Mapping[str, Any]) -> list[_Table]:
    tables = [_Table("Summary", _summary_rows(result), ["scope", "tasks", "score"])]
    by_modality: dict[str, list[dict[str, Any]]] = {}
    for name, row in result["tasks"].items():
        by_modality.setdefault(row["modality"], []).append(_task_row(name, row))
    for modality in sorted(by_modality, key=_modality_order):
        mean = result["by_modality"].get(modality)
        note = f"Mean over {_count(len(by_modality[modality]))}: {_format_cell(mean, '.1f')}"
        tables.append(
            _Table(_MODALITY_TITLES.get(modality, modality), by_modality[modality], _TASK_COLUMNS, note)
        )
    meta_rows = [
        dict(zip(("modality", "meta_task"), key.split("/", 1), strict=False), score=score)
        for key, score in result["by_meta_task"].items()
    ]
    tables.append(_Table("By meta-task", meta_rows, ["modality", "meta_task", "score"]))
    uvrb = result.get("uvrb")
    if uvrb:
        rows = [_task_row(name, row) for name, row in uvrb["tasks"].items()]
        mean = _format_cell(uvrb["mean"], ".1f")
        if uvrb["mean"] is None and uvrb.get("mean_partial") is not None:
            mean = f"{_format_cell(uvrb['mean_partial'], '.1f')} (partial run)"
        note = (
            f"UVRB-style tasks, reported apart: not part of the overall score. "
            f"Mean over {_count(uvrb.get('n_tasks', len(rows)))}: {mean}"
        )
        tables.append(_Table("UVRB", rows, _TASK_COLUMNS, note))
    return tables


def _summary_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for row in result["tasks"].values():
        counts[row["modality"]] = counts.get(row["modality"], 0) + 1
    rows = [
        {"scope": "overall", "tasks": result.get("n_tasks", len(result["tasks"])), "score": result["overall"]}
    ]
    rows += [
        {"scope": _MODALITY_TITLES.get(m, m), "tasks": counts.get(m, 0), "score": score}
        for m, score in sorted(result["by_modality"].items(), key=lambda item: _modality_order(item[0]))
    ]
    uvrb = result.get("uvrb")
    if uvrb:
        rows.append(
            {"scope": "UVRB (apart)", "tasks": uvrb.get("n_tasks", len(uvrb["tasks"])), "score": uvrb["mean"]}
        )
    return rows


def _task_row(name: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "task": name,
        "meta_task": row.get("meta_task"),
        "metric": row.get("metric"),
        "score": row.get("score"),
    }


def _extra_tables(extra_tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[_Table]:
    tables = []
    for heading, rows in extra_tables.items():
        if isinstance(rows, Mapping | str) or not all(isinstance(r, Mapping) for r in rows):
            raise TypeError(f"extra table {heading!r} must be a list of row dicts")
        tables.append(_Table(str(heading), [dict(r) for r in rows]))
    return tables


def _count(n_tasks: int) -> str:
    return f"{n_tasks} task" if n_tasks == 1 else f"{n_tasks} tasks"


def _modality_order(modality: str) -> tuple[int, str]:
    return (MODALITIES.index(modality) if modality in MODALITIES else len(MODALITIES), modality)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"table row {index} must be a dict, got {type(row).__name__} {row!r}")
    if columns is not None:
        return [str(c) for c in columns]
    return list(dict.fromkeys(str(key) for row in rows for key in row))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    values = [row.get(column) for row in rows if row.get(column) is not None]
    return bool(values) and all(_is_number(v) for v in values)


def _format_cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return _MISSING
    if _is_number(value) and not isinstance(value, numbers.Integral):
        return format(float(value), floatfmt)
    return str(value)


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _overall_sentence(result: Mapping[str, Any]) -> tuple[str, str]:
    coverage = result.get("coverage") or {}
    if not coverage.get("complete", True):
        return (
            f"Overall: not reported, partial run ({coverage.get('n_evaluated')} of {coverage.get('n_expected')} "
            f"{coverage.get('benchmark', '')} tasks; see the coverage in metrics.json). Mean over the tasks present: ",
            _format_cell(_first_not_none(result.get("overall_partial"), (result.get("uvrb") or {}).get("mean_partial")),
                         ".1f"),
        )
    if result["overall"] is None:
        return "Overall: no MMEB-style tasks were scored", ""
    n_tasks = result.get("n_tasks", len(result["tasks"]))
    return f"Overall (unweighted mean over {n_tasks} tasks): ", _format_cell(result["overall"], ".1f")


# -------------------------------------------------------------------------------------------- markdown


def _md_text(text: str) -> str:
    # Backslash escapes keep a cell one cell and stop raw HTML in names from rendering as HTML.
    for char in ("\\", "|", "<", ">"):
        text = text.replace(char, "\\" + char)
    return " ".join(text.splitlines())


def _render_markdown(title: str, result: Mapping[str, Any], tables: list[_Table]) -> str:
    label, value = _overall_sentence(result)
    parts = [f"# {_md_text(title)}", f"{_md_text(label)}**{value}**" if value else _md_text(label)]
    for table in tables:
        parts.append(f"## {_md_text(table.heading)}")
        if table.note:
            parts.append(_md_text(table.note))
        parts.append(markdown_table(table.rows, table.columns) or "_(no rows)_")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ html


def _html_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None, floatfmt: str = ".1f"
) -> str:
    columns = _columns(rows, columns)
    if not columns:
        return "<p><em>(no rows)</em></p>"
    numeric = {c: _is_numeric_column(rows, c) for c in columns}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    opening = {c: '<td class="num">' if numeric[c] else "<td>" for c in columns}
    body = "".join(
        "<tr>"
        + "".join(f"{opening[c]}{html.escape(_format_cell(row.get(c), floatfmt))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_html(title: str, result: Mapping[str, Any], tables: list[_Table], chart_png: bytes | None) -> str:
    label, value = _overall_sentence(result)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(label)}<strong>{html.escape(value)}</strong></p>",
    ]
    for index, table in enumerate(tables):
        parts.append(f"<h2>{html.escape(table.heading)}</h2>")
        if table.note:
            parts.append(f'<p class="note">{html.escape(table.note)}</p>')
        parts.append(_html_table(table.rows, table.columns))
        if index == 0 and chart_png is not None:
            encoded = base64.b64encode(chart_png).decode("ascii")
            parts.append("<h2>Task scores</h2>")
            parts.append(f'<img alt="Bar chart of task scores" src="data:image/png;base64,{encoded}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _score_chart_png(result: Mapping[str, Any]) -> bytes | None:
    """A horizontal bar chart of every task score (MMEB-style, then UVRB), coloured by modality."""
    bars = [(name, row["score"], row["modality"]) for name, row in result["tasks"].items()]
    bars += [
        (name, row["score"], "uvrb") for name, row in ((result.get("uvrb") or {}).get("tasks") or {}).items()
    ]
    if not bars:
        return None
    # Imported here: only the HTML report needs matplotlib, and pyplot's global state is avoided.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names, scores, groups = zip(*bars, strict=True)
    positions = list(range(len(bars)))
    colors = [_CHART_COLORS.get(g, "#999999") for g in groups]
    # Task names are data, not math: a "$" in a name must not switch on mathtext.
    with matplotlib.rc_context({"text.parse_math": False}):
        figure = Figure(figsize=(8, 0.3 * len(bars) + 1.4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.barh(positions, scores, color=colors)
        axes.set_yticks(positions, labels=names)
        axes.invert_yaxis()
        axes.set_xlim(0, 110)
        axes.set_xticks(range(0, 101, 20))
        axes.set_xlabel("score (%)")
        for position, score in zip(positions, scores, strict=True):
            axes.text(score + 1, position, f"{score:.1f}", va="center", fontsize=8)
        legend = [Patch(color=_CHART_COLORS.get(g, "#999999"), label=g) for g in dict.fromkeys(groups)]
        axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- files


def _to_json(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON serialisable")


def _jsonl(records: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"prediction {index} must be a dict, got {type(record).__name__} {record!r}")
        try:
            lines.append(json.dumps(record, ensure_ascii=False, default=_to_json) + "\n")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"prediction {index} cannot be written as JSON: {exc}") from None
    return "".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    # A reader (a tracker upload, a resumed run) never sees a half-written report.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
