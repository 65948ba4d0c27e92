"""Data prep: T-CoT synthesis by a teacher, the consistency filter, and the prepared data set.

The prepared data set is the source data set plus T-CoT columns, in the same formats:
- train / rl (MMEB-train parquet): `qry_tcot`, `pos_tcot` (teacher), after the consistency filter on
  `train` (dropped pairs are counted and quarantined in `prep_quarantine.jsonl`);
- eval (MMEB eval JSONL): `qry_tcot`, `tgt_tcot` (teacher) and `qry_tcot_gold`, `tgt_tcot_gold`
  (MiniMMEB's gold traces, used only as the evaluation upper bound);
- visdoc / uvrb tables: `tcot` and `tcot_gold` on queries and on pages / clips.
Media are hard-linked from the source (no copy, and still inside the prepared root).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from embedrl.data.readers import write_jsonl, write_parquet
from embedrl.data.sides import SideRef, eval_sides, train_sides
from embedrl.tcot import TCoT, render
from embedrl.tcot.chat_teacher import Verdict
from embedrl.tcot.consistency import filter_pairs
from embedrl.tcot.teachers import gold_tcot, oracle_tcot

log = logging.getLogger(__name__)

_OBJECT_WORDS = re.compile(r"[a-z]+")


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


def _teacher(ref: SideRef) -> TCoT:
    return oracle_tcot(ref.scene or {"type": "text"}, text=ref.clean_text)


def _gold(ref: SideRef) -> TCoT:
    return gold_tcot(ref.scene or {"type": "text"}, text=ref.clean_text)


def _link_media(source: Path, out: Path) -> None:
    for path in (source / "media").rglob("*"):
        target = out / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system: copy
                shutil.copy2(path, target)


def _prepare_pairs(rows: list[dict], *, filter_judge, quarantine: Path | None) -> tuple[list[dict], dict]:
    records = []
    for row in rows:
        query, positive = train_sides(row)
        records.append({**row, "qry_tcot": render(_teacher(query)), "pos_tcot": render(_teacher(positive))})
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
        "qry_tcot": render(_teacher(query)),
        "tgt_tcot": [render(_teacher(c)) for c in candidates],
        "qry_tcot_gold": render(_gold(query)),
        "tgt_tcot_gold": [render(_gold(c)) for c in candidates],
    }


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _prepare_table(folder: Path, out_folder: Path, text_key: str, kind: str) -> None:
    """visdoc / uvrb: add traces to the queries (text) and to the pages / clips (media)."""
    for name in ("queries.jsonl", "corpus.jsonl"):
        rows = _read_jsonl(folder / name)
        for row in rows:
            scene = json.loads(row["scene"]) if row.get("scene") else {}
            if name == "queries.jsonl":
                ref = SideRef(row[text_key], "", {"type": "text"})
            else:
                media = row.get("image_path") or row.get("video_path") or ""
                ref = SideRef(row.get("caption", "") if kind == "uvrb" else "", media, scene)
            if name == "corpus.jsonl" and kind == "uvrb" and not ref.scene:
                ref = SideRef("", ref.media_path, {})
            row["tcot"] = render(_teacher(ref)) if ref.scene or name == "queries.jsonl" else ""
            row["tcot_gold"] = render(_gold(ref)) if ref.scene or name == "queries.jsonl" else ""
        write_jsonl(out_folder / name, rows)
    for name in ("qrels.jsonl", "instances.jsonl"):
        if (folder / name).exists():
            shutil.copy2(folder / name, out_folder / name)


def prepare(source: str | Path, out: str | Path, *, filter_judge="label", splits=("train", "rl", "eval")) -> PrepSummary:
    """Write the prepared data set of `source` (a MiniMMEB-style data set with scene graphs) to `out`."""
    source, out = Path(source), Path(out)
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _link_media(source, out)
    judge = LabelConsistencyJudge() if filter_judge == "label" else filter_judge
    counts: dict[str, int] = {"pairs_in": 0, "pairs_kept": 0, "eval_rows": 0}
    quarantine = out / "prep_quarantine.jsonl"
    for task in manifest["tasks"]:
        if task["split"] not in splits:
            continue
        src, dst = source / task["path"], out / task["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if task["kind"] == "mmeb_train":
            rows = pq.read_table(src).to_pylist()
            use_judge = judge if task["split"] == "train" else None
            kept, stats = _prepare_pairs(rows, filter_judge=use_judge,
                                         quarantine=out / f"prep_quarantine_{task['name']}.jsonl")
            write_parquet(dst, kept)
            counts["pairs_in"] += len(rows)
            counts["pairs_kept"] += len(kept)
        elif task["kind"] == "mmeb_eval":
            rows = [_prepare_eval_row(r) for r in _read_jsonl(src)]
            write_jsonl(dst, rows)
            counts["eval_rows"] += len(rows)
        else:
            dst.mkdir(parents=True, exist_ok=True)
            _prepare_table(src, dst, "query" if task["kind"] == "visdoc" else "text", task["kind"])
    _merge_quarantines(out, quarantine)
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
