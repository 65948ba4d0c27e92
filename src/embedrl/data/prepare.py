"""Data prep: T-CoT synthesis by a teacher, the consistency filter, and the prepared data set.

The prepared data set is the source data set plus T-CoT columns, in the same formats:
- train / rl (MMEB-train parquet): `qry_tcot`, `pos_tcot`, `neg_tcot` (teacher; `neg_tcot` is "" for a pair
  without a hard negative), after the consistency filter on `train` (dropped pairs are counted and
  quarantined in `prep_quarantine.jsonl`);
- eval (MMEB eval JSONL): `qry_tcot`, `tgt_tcot` (teacher) and `qry_tcot_gold`, `tgt_tcot_gold`
  (MiniMMEB's gold traces, used only as the evaluation upper bound);
- visdoc / uvrb tables: `tcot` and `tcot_gold` on queries and on pages / clips.
Media are hard-linked from the source (no copy, and still inside the prepared root).

The source is read through the validating readers (embedrl.data.readers): task paths must stay inside
the source root, and a record that breaks its format is left out, counted (`rejected`) and written to
`input_quarantine.jsonl` (the quarantine format of docs/data-formats.md). A task whose file holds no
valid record stops data prep with an error naming the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedrl.data.readers import (
    DataFormatError,
    ManifestTask,
    ReadResult,
    iter_rows,
    load_manifest,
    read_records,
    read_uvrb,
    read_visdoc,
    write_jsonl,
    write_parquet,
    write_quarantine,
)
from embedrl.data.records import RECORD_TYPES, Rejection
from embedrl.data.sides import SideRef, eval_sides, train_negative, train_sides
from embedrl.tcot import TCoT, render
from embedrl.tcot.chat_teacher import Verdict
from embedrl.tcot.consistency import filter_pairs
from embedrl.tcot.teachers import side_gold_tcot, side_teacher_tcot

log = logging.getLogger(__name__)

_OBJECT_WORDS = re.compile(r"[a-z]+")
INPUT_QUARANTINE = "input_quarantine.jsonl"


@dataclass
class PrepSummary:
    out: Path
    counts: dict[str, int]

    def describe(self) -> str:
        return f"prepared {self.out}: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())


class LabelConsistencyJudge:
    """Local consistency judge for MiniMMEB (stands in for the teacher model judging its own pairs).

    A pair is *conflicting* when the query's and the positive's T-CoTs (answer and keywords) both name
    objects (colour, shape and item words of the closed vocabulary) and share none of them; *irrelevant* when the
    positive's T-CoT is empty. Everything else is kept.
    """

    def __init__(self) -> None:
        from embedrl.data.minimmeb.vocab import COLOUR_NAMES, DOC_ITEMS, SHAPES

        self.vocab = set(COLOUR_NAMES) | set(SHAPES) | set(DOC_ITEMS)

    def _names(self, tcot: TCoT | str) -> set[str]:
        text = f"{tcot.answer} {' '.join(tcot.text_keywords)}" if isinstance(tcot, TCoT) else str(tcot)
        return {w for w in _OBJECT_WORDS.findall(text.lower()) if w in self.vocab}

    def judge(self, query_text: str, query_tcot: TCoT | str, target_tcot: TCoT | str) -> Verdict:
        if isinstance(target_tcot, TCoT) and not target_tcot.answer.strip():
            return Verdict(relevant=False, consistent=True, reason="empty positive trace")
        q, t = self._names(query_tcot), self._names(target_tcot)
        if q and t and not (q & t):
            return Verdict(relevant=True, consistent=False, reason=f"query names {sorted(q)}, positive {sorted(t)}")
        return Verdict(relevant=True, consistent=True, reason="consistent")


@contextlib.contextmanager
def _tracing(source: str, id_name: str | None, row: dict) -> Iterator[None]:
    """Name the record when the teachers cannot trace it: its scene graph is JSON, but not one they know."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DataFormatError(
            f"{source} {id_name}={row.get(id_name or '')} field=scene: the teachers cannot write T-CoTs for "
            f"this record ({type(exc).__name__}: {exc}); fix its scene graph or remove the record"
        ) from exc


def _link_media(source: Path, out: Path) -> None:
    root = source.resolve()
    for path in (source / "media").rglob("*"):
        if not path.resolve().is_relative_to(root):  # a link out of the data set: no record may use it
            log.warning("%s: not linked into the prepared data: it resolves outside %s", path, source)
            continue
        target = out / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system: copy
                shutil.copy2(path, target)


def _prepare_pairs(rows: list[dict], source: str, *, filter_judge,
                   quarantine: Path | None) -> tuple[list[dict], dict]:
    records = []
    for row in rows:
        with _tracing(source, "id", row):
            query, positive = train_sides(row)
            negative = train_negative(row)
            records.append({**row, "qry_tcot": render(side_teacher_tcot(query)),
                            "pos_tcot": render(side_teacher_tcot(positive)),
                            "neg_tcot": render(side_teacher_tcot(negative)) if negative else ""})
    if filter_judge is None:
        return records, {"total": len(records), "kept": len(records)}
    pairs = [{"id": r["id"], "query_text": r["qry"], "query_tcot": r["qry_tcot"], "pos_tcot": r["pos_tcot"],
              "row": r} for r in records]
    result = filter_pairs(pairs, filter_judge, quarantine_path=quarantine)
    return [p["row"] for p in result.kept], dict(result.counts)


def _prepare_eval_row(row: dict) -> dict:
    query, candidates = eval_sides(row)
    return {
        **row,
        "qry_tcot": render(side_teacher_tcot(query)),
        "tgt_tcot": [render(side_teacher_tcot(c)) for c in candidates],
        "qry_tcot_gold": render(side_gold_tcot(query)),
        "tgt_tcot_gold": [render(side_gold_tcot(c)) for c in candidates],
    }


def _valid_rows(path: Path, result: ReadResult) -> list[dict]:
    """The rows of `path` that the reader accepted, as written (not as typed: no defaults added)."""
    valid = dict(zip(result.indices, result.records, strict=True))
    rows = []
    for index, raw in iter_rows(path):
        record = valid.get(index)
        if record is None:
            continue
        id_name = type(record).id_field_name()
        if id_name and raw.get(id_name) is None:  # an MMEB-train row without id: the reader's `<file>:<row>`
            raw = {**raw, id_name: record.record_id()}
        rows.append(raw)
    return rows


def _read_task(source: Path, task: ManifestTask, rejected: list[Rejection]) -> list[ReadResult]:
    """The task's files read and checked; rejected records are added to `rejected`."""
    location = task.location(source)
    if task.kind in ("visdoc", "uvrb"):
        reader = read_visdoc if task.kind == "visdoc" else read_uvrb
        results = list(reader(location, data_root=source).results)
    else:
        results = [read_records(location, task.kind, data_root=source)]
    for result in results:
        rejected.extend(result.rejected)
    return results


def _empty_message(task: ManifestTask, results: list[ReadResult]) -> str | None:
    # Not the qrels / instances of a table: without them every query is rejected ("no relevant ...").
    checked = results if task.kind in ("mmeb_train", "mmeb_eval") else results[:2]
    empty = [r for r in checked if r.n_valid == 0]
    if not empty:
        return None
    return "; ".join(f"{r.source} (task {task.name}, split {task.split}): {r.total} records, "
                     f"{r.n_rejected} rejected" for r in empty)


def _write_rows(path: Path, rows: list[dict]) -> None:
    """Rows in the format the source file had, by suffix."""
    (write_parquet if path.suffix == ".parquet" else write_jsonl)(path, rows)


def _prepare_table(folder: Path, out_folder: Path, kind: str, results: list[ReadResult]) -> None:
    """visdoc / uvrb: add traces to the queries (text) and to the pages / clips (media)."""
    text_key = "query" if kind == "visdoc" else "text"
    tables = dict(zip(("queries.jsonl", "corpus.jsonl", "links"), results, strict=True))
    for name in ("queries.jsonl", "corpus.jsonl"):
        rows = _valid_rows(folder / name, tables[name])
        id_name = RECORD_TYPES[str(tables[name].kind)].id_field_name()
        for row in rows:
            with _tracing(tables[name].source, id_name, row):
                _trace_table_row(row, name, kind, text_key)
        write_jsonl(out_folder / name, rows)
    links = "qrels.jsonl" if kind == "visdoc" else "instances.jsonl"
    write_jsonl(out_folder / links, _valid_rows(folder / links, tables["links"]))


def _trace_table_row(row: dict, name: str, kind: str, text_key: str) -> None:
    scene = json.loads(row["scene"]) if row.get("scene") else {}
    if name == "queries.jsonl":
        ref = SideRef(row[text_key], "", {"type": "text"})
    else:
        media = row.get("image_path") or row.get("video_path") or ""
        ref = SideRef(row.get("caption", "") if kind == "uvrb" else "", media, scene)
    if name == "corpus.jsonl" and kind == "uvrb" and not ref.scene:
        ref = SideRef("", ref.media_path, {})
    row["tcot"] = render(side_teacher_tcot(ref)) if ref.scene or name == "queries.jsonl" else ""
    row["tcot_gold"] = render(side_gold_tcot(ref)) if ref.scene or name == "queries.jsonl" else ""


def prepare(source: str | Path, out: str | Path, *, filter_judge="label", splits=("train", "rl", "eval")) -> PrepSummary:
    """Write the prepared data set of `source` (a MiniMMEB-style data set with scene graphs) to `out`."""
    source, out = Path(source), Path(out)
    manifest, tasks = load_manifest(source)  # task paths checked: none may leave the source root
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _link_media(source, out)
    judge = LabelConsistencyJudge() if filter_judge == "label" else filter_judge
    counts: dict[str, int] = {"pairs_in": 0, "pairs_kept": 0, "eval_rows": 0, "rejected": 0}
    quarantine = out / "prep_quarantine.jsonl"
    rejected: list[Rejection] = []
    empty: list[str] = []
    for task in tasks:
        if task.split not in splits:
            continue
        src, dst = task.location(source), out / task.path
        results = _read_task(source, task, rejected)
        if (message := _empty_message(task, results)) is not None:
            empty.append(message)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if task.kind == "mmeb_train":
            rows = _valid_rows(src, results[0])
            use_judge = judge if task.split == "train" else None
            kept, stats = _prepare_pairs(rows, results[0].source, filter_judge=use_judge,
                                         quarantine=out / f"prep_quarantine_{task.name}.jsonl")
            _write_rows(dst, kept)
            counts["pairs_in"] += len(rows)
            counts["pairs_kept"] += len(kept)
        elif task.kind == "mmeb_eval":
            rows = []
            for row in _valid_rows(src, results[0]):
                with _tracing(results[0].source, "id", row):
                    rows.append(_prepare_eval_row(row))
            _write_rows(dst, rows)
            counts["eval_rows"] += len(rows)
        else:
            dst.mkdir(parents=True, exist_ok=True)
            _prepare_table(src, dst, task.kind, results)
    _merge_quarantines(out, quarantine)
    counts["rejected"] = len(rejected)
    if rejected:
        write_quarantine(out / INPUT_QUARANTINE, rejected)
    if empty:
        kept_note = f"; rejected records are in {out / INPUT_QUARANTINE}" if rejected else ""
        raise DataFormatError(f"{source}: no valid records in {'; '.join(empty)}{kept_note}")
    manifest["prepared"] = {"source": str(source), "teacher": "oracle", "filter": str(filter_judge), **counts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    summary = PrepSummary(out, counts)
    log.info("%s", summary.describe())
    return summary


def _merge_quarantines(out: Path, target: Path) -> None:
    parts = sorted(out.glob("prep_quarantine_*.jsonl"))
    with target.open("w", encoding="utf-8") as handle:
        for part in parts:
            handle.write(part.read_text(encoding="utf-8"))
            part.unlink()
