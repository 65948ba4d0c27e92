"""Evaluation: traces for queries and candidates, Embedder vectors, cosine scores, metrics.

A *trace source* gives each side its T-CoT: none (raw input), a stored column of the prepared data
(teacher or gold traces), or a Reasoner that writes them. Every unique side (same role, media and text)
is traced and embedded once per evaluation, however many pools and tasks it appears in; with a cache
directory, Reasoner traces and Embedder vectors are also kept on disk under the models' fingerprints
(`embedrl.eval.cache`), so a rerun or another variant with the same model does not redo them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from embedrl.data.sides import MediaStore, SideRef, eval_sides
from embedrl.eval import metrics as M
from embedrl.eval.cache import EvalCache, entry_key, model_fingerprint, settings_fingerprint
from embedrl.models.embedder import Embedder, EmbedderInputs, load_embedder
from embedrl.tcot import TCoT, TCoTFormatError, parse
from embedrl.train.embedder import build_side

log = logging.getLogger(__name__)

METRICS = {
    "hit@1": lambda s, r: M.hit_at_k(s, r, 1),
    "ndcg@5": lambda s, r: M.ndcg_at_k(s, r, 5),
    "recall@1": lambda s, r: M.recall_at_k(s, r, 1),
    "recall@10": lambda s, r: M.recall_at_k(s, r, 10),
    "precision@1": lambda s, r: M.precision_at_k(s, r, 1),
}


@dataclass
class Item:
    """One side to trace and embed, with the stored traces the prepared data carries for it."""

    key: tuple
    ref: SideRef
    role: str  # "query" | "target"
    stored: dict[str, str] = field(default_factory=dict)  # "teacher" / "gold" -> T-CoT text


@dataclass
class TaskData:
    name: str
    queries: list[Item]
    candidates: list[Item]
    relevance: np.ndarray  # [Q, C]
    mask: np.ndarray | None  # [Q, C] for local pools laid over a shared candidate list
    query_ids: list[str]
    n_rejected: int = 0  # records the validating reader quarantined (`<task>.eval_quarantine.jsonl`)


# ----------------------------------------------------------------------------------- trace sources
class NoTrace:
    name = "no_cot"

    def traces(self, items: Sequence[Item], store: MediaStore) -> list[TCoT | None]:
        return [None] * len(items)


class StoredTrace:
    """Traces written into the prepared data (`teacher` or `gold`)."""

    def __init__(self, column: str, name: str):
        self.column, self.name = column, name

    def traces(self, items: Sequence[Item], store: MediaStore) -> list[TCoT | None]:
        out = []
        for item in items:
            text = item.stored.get(self.column, "")
            out.append(_parse_or_none(text, item, store) if text else None)
        return out


class ReasonerTrace:
    """Traces the Reasoner writes (greedy); a trace that does not parse leaves the side raw, counted.

    With `cache_dir`, texts are read from and added to the trace cache of this Reasoner (its weights,
    prompt and token budget); only sides without an entry are generated, in batches.
    """

    def __init__(self, reasoner, name: str, batch_size: int = 64, *, cache_dir: str | Path | None = None):
        self.reasoner, self.name, self.batch_size = reasoner, name, batch_size
        self.texts: dict[tuple, str] = {}
        self.cache = _trace_cache(reasoner, cache_dir) if cache_dir else None
        self.generated = 0  # sides generated (not served from the cache) over this source's life

    def traces(self, items: Sequence[Item], store: MediaStore) -> list[TCoT | None]:
        cached = self.cache.texts if self.cache is not None else {}
        keys = [entry_key(*i.key) for i in items]
        todo = [n for n, k in enumerate(keys) if k not in cached]
        written = self.reasoner.generate([items[n].ref for n in todo], [items[n].role for n in todo], store,
                                         batch_size=self.batch_size) if todo else []
        self.generated += len(todo)
        fresh = {keys[n]: text for n, text in zip(todo, written, strict=True)}
        if self.cache is not None:
            self.cache.put_texts(fresh)
        texts = [fresh[k] if k in fresh else cached[k] for k in keys]
        for item, text in zip(items, texts, strict=True):
            self.texts[item.key] = text
        return [_parse_or_none(t, i, store) for t, i in zip(texts, items, strict=True)]


def _trace_cache(reasoner, cache_dir: str | Path) -> EvalCache:
    source = getattr(reasoner, "source_dir", None)
    if source is None:
        raise ValueError("a trace cache needs a Reasoner loaded from a directory (Reasoner.load): its weights "
                         "name the cache")
    fingerprint = settings_fingerprint(model_fingerprint(source, memo_dir=cache_dir),
                                       prompt=reasoner.prompt.to_dict(), max_new_tokens=reasoner.max_new_tokens)
    return EvalCache(cache_dir, "traces", fingerprint)


def _parse_or_none(text: str, item: Item, store: MediaStore) -> TCoT | None:
    try:
        return parse(text, modality=item.ref.modality, num_frames=store.num_frames(item.ref))
    except (TCoTFormatError, ValueError):
        return None


# --------------------------------------------------------------------------------------- task data
def _item(cache: dict, ref: SideRef, role: str, stored: dict[str, str]) -> Item:
    # The scene is part of what a side is: one clip appears in several tasks with different segments.
    scene = hashlib.sha1(json.dumps(ref.scene, sort_keys=True, default=str).encode()).hexdigest()[:16] \
        if ref.scene else ""
    key = (role, ref.media_path, ref.clean_text, scene)
    if key not in cache:
        cache[key] = Item(key, ref, role, stored)
    return cache[key]


def load_task(root: Path, task, *, quarantine_dir: str | Path | None = None) -> TaskData:
    """Rows of one eval task as queries x (shared) candidates with relevance.

    The task's `layout` picks the reader: our formats (`embedrl.data.readers`) or the benchmark's
    published layout (`embedrl.data.official`). Bad records are quarantined in
    `<quarantine_dir or root>/<task>.eval_quarantine.jsonl` and counted (`n_rejected`); a task left
    without a valid query or candidate raises DataFormatError: it cannot be scored.
    """
    root = Path(root)
    quarantine = Path(quarantine_dir or root) / f"{task.name}.eval_quarantine.jsonl"
    if task.kind == "mmeb_eval":
        result = _read_eval_rows(root, task, quarantine)
        _require_records(task, quarantine, result)
        return _local_task(task, result)
    data = _read_global_tables(root, task, quarantine)
    _require_records(task, quarantine, data.results[0], data.results[1])
    return _global_task(task, data)


def _is_official(task) -> bool:
    return getattr(task, "layout", "embedrl") == "official"


def _read_eval_rows(root: Path, task, quarantine: Path):
    from embedrl.data.official import read_official_eval
    from embedrl.data.official_video import read_official_video
    from embedrl.data.readers import read_records

    if _is_official(task) and getattr(task, "parser", ""):
        return read_official_video(root / task.path, parser=task.parser, data_root=root, media_root=task.media_root,
                                   instruction=task.instruction, pooled=task.candidates == "global",
                                   quarantine=quarantine)
    if _is_official(task):
        return read_official_eval(root / task.path, data_root=root, media_root=task.media_root,
                                  instruction=task.instruction, pooled=task.candidates == "global",
                                  quarantine=quarantine)
    return read_records(root / task.path, "mmeb_eval", data_root=root, quarantine=quarantine)


def _read_global_tables(root: Path, task, quarantine: Path):
    from embedrl.data.official import read_official_uvrb, read_official_visdoc
    from embedrl.data.readers import read_uvrb, read_visdoc

    if _is_official(task):
        reader = read_official_visdoc if task.kind == "visdoc" else read_official_uvrb
        return reader(root / task.path, data_root=root, instruction=task.instruction, quarantine=quarantine)
    reader = read_visdoc if task.kind == "visdoc" else read_uvrb
    return reader(root / task.path, data_root=root, quarantine=quarantine)


def _require_records(task, quarantine: Path, *results) -> None:
    from embedrl.data.readers import DataFormatError

    empty = [r for r in results if r.n_valid == 0]
    if empty:
        where = "; ".join(f"{r.source}: {r.total} records, {r.n_rejected} rejected" for r in empty)
        kept = f" (rejected records are in {quarantine})" if any(r.n_rejected for r in empty) else ""
        raise DataFormatError(f"eval task {task.name!r} cannot be scored: no valid records in {where}{kept}")


def _local_task(task, result) -> TaskData:
    """Rows that ship their candidates; `candidates: global` ranks each query against all of them."""
    cache: dict = {}
    queries, pools = [], []
    for record in result.records:
        row = record.to_dict()
        query, candidates = eval_sides(row)
        stored = {"teacher": row.get("qry_tcot", ""), "gold": row.get("qry_tcot_gold", "")}
        queries.append(_item(cache, query, "query", stored))
        pool = []
        for j, cand in enumerate(candidates):
            stored = {"teacher": (row.get("tgt_tcot") or [""] * len(candidates))[j],
                      "gold": (row.get("tgt_tcot_gold") or [""] * len(candidates))[j]}
            pool.append(_item(cache, cand, "target", stored))
        relevance = row.get("tgt_relevance") or [1] + [0] * (len(candidates) - 1)
        pools.append((pool, relevance))
    candidates = list({id(i): i for pool, _ in pools for i in pool}.values())
    index = {id(i): n for n, i in enumerate(candidates)}
    rel = np.zeros((len(queries), len(candidates)))
    mask = np.zeros((len(queries), len(candidates)), dtype=bool)
    for q, (pool, relevance) in enumerate(pools):
        for item, r in zip(pool, relevance, strict=True):
            mask[q, index[id(item)]] = True
            rel[q, index[id(item)]] = max(rel[q, index[id(item)]], r)
    pooled = getattr(task, "candidates", "local") == "global"
    return TaskData(task.name, queries, candidates, rel, None if pooled else mask,
                    [r.record_id() for r in result.records], result.n_rejected)


def _global_task(task, data) -> TaskData:
    """visdoc / uvrb: every query against the whole pool."""
    if task.kind == "visdoc":
        queries_raw, corpus_raw, links = data.queries.records, data.corpus.records, data.qrels.records
        qid, cid, text_key, media_key, score_key = "query-id", "corpus-id", "query", "image_path", "score"
    else:
        queries_raw, corpus_raw, links = data.queries.records, data.corpus.records, data.instances.records
        qid, cid, text_key, media_key, score_key = "qid", "cid", "text", "video_path", "relevance"
    queries_raw = [r.to_dict() for r in queries_raw]
    corpus_raw = [r.to_dict() for r in corpus_raw]
    cache: dict = {}
    queries = [_item(cache, _query_side(q, qid, text_key), "query",
                     {"teacher": q.get("tcot", ""), "gold": q.get("tcot_gold", "")}) for q in queries_raw]
    candidates = []
    for c in corpus_raw:
        scene = json.loads(c["scene"]) if c.get("scene") else {}
        ref = SideRef(c.get("caption", "") if task.kind == "uvrb" else "", c[media_key], scene,
                      origin=f"{cid}={c[cid]} field={media_key}")
        candidates.append(_item(cache, ref, "target", {"teacher": c.get("tcot", ""), "gold": c.get("tcot_gold", "")}))
    q_index = {q[qid]: n for n, q in enumerate(queries_raw)}
    c_index = {c[cid]: n for n, c in enumerate(corpus_raw)}
    rel = np.zeros((len(queries), len(candidates)))
    for link in (r.to_dict() for r in links):
        rel[q_index[link[qid]], c_index[link[cid]]] = link[score_key]
    return TaskData(task.name, queries, candidates, rel, None, [q[qid] for q in queries_raw], data.n_rejected)


def _query_side(query: dict, id_field: str, text_field: str) -> SideRef:
    """A global-pool query: its text and at most one medium (a frames folder, or an image for UVRB)."""
    media_field = "image_path" if query.get("image_path") else "video_path"
    return SideRef(query[text_field], query.get(media_field) or "", {"type": "text"},
                   origin=f"{id_field}={query[id_field]} field={media_field}")


# --------------------------------------------------------------------------------------- embedding
@torch.no_grad()
def embed_items(items: Sequence[Item], traces: Sequence[TCoT | None], embedder: Embedder, inputs: EmbedderInputs,
                store: MediaStore, batch_size: int = 64, *, cache: EvalCache | None = None) -> np.ndarray:
    """One vector per (item, trace); with `cache` (of this Embedder), only pairs without an entry are encoded."""
    keys = [entry_key(*item.key, _render(trace)) for item, trace in zip(items, traces, strict=True)]
    known = cache.vectors if cache is not None else {}
    todo = [n for n, k in enumerate(keys) if k not in known]
    fresh = []
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        encoded = [inputs.encode(build_side(items[i].ref, store, traces[i])) for i in chunk]
        fresh.append(embedder(inputs.collate(encoded)).float().cpu().numpy())
    fresh_vectors = np.concatenate(fresh) if fresh else np.zeros((0, 0), dtype=np.float32)
    if cache is not None and todo:
        cache.put_vectors([keys[n] for n in todo], fresh_vectors)
    by_position = dict(zip(todo, fresh_vectors, strict=True))
    rows = [by_position[n] if n in by_position else known[k] for n, k in enumerate(keys)]
    return np.stack(rows) if rows else np.zeros((0, 1), dtype=np.float32)


@dataclass
class TaskResult:
    name: str
    metric: str
    score: float  # 0..100
    n_queries: int
    predictions: list[dict]
    trace_stats: dict[str, float]


def evaluate_task(task, data: TaskData, source, embedder: Embedder, inputs: EmbedderInputs, store: MediaStore,
                  batch_size: int = 64) -> TaskResult:
    """One task on its own (its unique sides traced and embedded here)."""
    items = data.queries + data.candidates
    traces = source.traces(items, store)
    return score_task(task, data, traces, embed_items(items, traces, embedder, inputs, store, batch_size))


def score_task(task, data: TaskData, traces: Sequence[TCoT | None], vectors: np.ndarray) -> TaskResult:
    """Metrics of a task from the traces and vectors of its queries followed by its candidates."""
    items = data.queries + data.candidates
    q, c = vectors[: len(data.queries)], vectors[len(data.queries):]
    scores = q @ c.T
    if data.mask is not None:
        scores = np.where(data.mask, scores, -np.inf)
    rel = data.relevance
    metric_scores = np.where(np.isfinite(scores), scores, -1e9)
    value = METRICS[task.metric](metric_scores, np.where(data.mask, rel, 0) if data.mask is not None else rel)
    predictions = _predictions(data, metric_scores, traces)
    return TaskResult(task.name, task.metric, 100.0 * value, len(data.queries), predictions,
                      trace_statistics(items, traces))


def _predictions(data: TaskData, scores: np.ndarray, traces) -> list[dict]:
    out = []
    n_q = len(data.queries)
    for qi, qid in enumerate(data.query_ids):
        order = np.lexsort((np.arange(scores.shape[1]), -scores[qi]))
        valid = [int(j) for j in order if data.mask is None or data.mask[qi, j]][:5]
        relevant = [int(j) for j in np.flatnonzero(data.relevance[qi] > 0)]
        out.append({"task": data.name, "id": qid, "top5": valid, "relevant": relevant,
                    "hit@1": bool(valid and valid[0] in relevant),
                    "query_trace": _render(traces[qi]), "top1_trace": _render(traces[n_q + valid[0]]) if valid else ""})
    return out


def _render(tcot: TCoT | None) -> str:
    from embedrl.tcot import render

    return render(tcot) if tcot is not None else ""


def trace_statistics(items: Sequence[Item], traces: Sequence[TCoT | None]) -> dict[str, float]:
    """On scenes with fine evidence: how often the trace holds it, how often it names something absent (an
    object the scene lacks, or a flash the clip side does not show), and how often it holds the evidence on the
    sides where MiniMMEB's teacher misses it (its blind spots: what a Reasoner learned beyond its teacher)."""
    from embedrl.tcot.teachers import (
        names_absent_event,
        names_absent_object,
        names_disambiguating_evidence,
        side_teacher_tcot,
    )

    has_trace = [t is not None for t in traces]
    scored = [(i, t) for i, t in zip(items, traces, strict=True)
              if t is not None and i.ref.scene.get("type") in ("image", "video") and _has_fine_evidence(i.ref.scene)]
    stats = {"trace_rate": float(np.mean(has_trace)) if traces else 0.0}
    if scored:
        stats["evidence_rate"] = float(np.mean([names_disambiguating_evidence(t, i.ref.scene) for i, t in scored]))
        stats["absent_rate"] = float(np.mean([names_absent_object(t, i.ref.scene) or names_absent_event(t, i.ref.scene)
                                              for i, t in scored]))
        teacher_misses = [(i, t) for i, t in scored
                          if not names_disambiguating_evidence(side_teacher_tcot(i.ref), i.ref.scene)]
        if teacher_misses:
            stats["evidence_rate_teacher_misses"] = float(np.mean([names_disambiguating_evidence(t, i.ref.scene)
                                                                   for i, t in teacher_misses]))
    return stats


def _has_fine_evidence(scene: dict) -> bool:
    if scene.get("type") == "image":
        return scene.get("marked") is not None
    return scene.get("type") == "video"


# ---------------------------------------------------------------------------------------- evaluate
def evaluate(data_root: str | Path, embedder_dir: str | Path, source, *, tasks=None, registry: str = "minimmeb",
             batch_size: int = 64, max_queries: int | None = None, cache_dir: str | Path | None = None,
             frames_per_video: int | None = None, quarantine_dir: str | Path | None = None) -> dict:
    """Scores of `source`'s traces on every eval task; returns the aggregated result with predictions.

    Sides are pooled across tasks first: each unique side is traced once and each unique (side, trace)
    embedded once; `cache_dir` keeps the Embedder's vectors on disk under its fingerprint.
    `frames_per_video` samples that many frames, evenly spaced, from longer videos (None: all frames);
    `quarantine_dir` receives the rejected records (default: the data root).
    """
    from embedrl.eval.aggregate import aggregate
    from embedrl.eval.registry import tasks_for_data

    started = time.perf_counter()
    root = Path(data_root)
    tasks = tasks or tasks_for_data(root, registry)
    embedder, inputs = load_embedder(embedder_dir)
    store = MediaStore(root, frames_per_video=frames_per_video)
    vector_cache = EvalCache(cache_dir, "vectors", model_fingerprint(embedder_dir, memo_dir=cache_dir)) \
        if cache_dir else None
    loaded, rejected = [], {}
    for task in tasks:
        data = load_task(root, task, quarantine_dir=quarantine_dir)
        rejected[task.name] = data.n_rejected
        loaded.append((task, _truncate(data, max_queries) if max_queries else data))
    unique = {item.key: item for _, data in loaded for item in data.queries + data.candidates}
    items = list(unique.values())
    traces = source.traces(items, store)
    vectors = embed_items(items, traces, embedder, inputs, store, batch_size, cache=vector_cache)
    row = {item.key: n for n, item in enumerate(items)}
    results = []
    for task, data in loaded:
        rows = [row[i.key] for i in data.queries + data.candidates]
        results.append(score_task(task, data, [traces[n] for n in rows], vectors[rows]))
        log.info("%s %s: %s %.1f (%d queries)", source.name, task.name, task.metric, results[-1].score, results[-1].n_queries)
    summary = aggregate({r.name: r.score for r in results}, tasks)
    summary["variant"] = source.name
    summary["trace_stats"] = _merge_stats(results)
    summary["rejected_records"] = rejected  # per task, quarantined beside the data (see load_task)
    summary["n_queries"] = {r.name: r.n_queries for r in results}
    summary["unique_sides"] = len(items)
    summary["seconds"] = time.perf_counter() - started
    summary["predictions"] = [p for r in results for p in r.predictions]
    return summary


def _truncate(data: TaskData, n: int) -> TaskData:
    if data.mask is None:
        return TaskData(data.name, data.queries[:n], data.candidates, data.relevance[:n], None, data.query_ids[:n],
                        data.n_rejected)
    keep = np.flatnonzero(data.mask[:n].any(axis=0))
    return TaskData(data.name, data.queries[:n], [data.candidates[j] for j in keep], data.relevance[:n][:, keep],
                    data.mask[:n][:, keep], data.query_ids[:n], data.n_rejected)


def _merge_stats(results: list[TaskResult]) -> dict[str, float]:
    keys = {k for r in results for k in r.trace_stats}
    return {k: float(np.mean([r.trace_stats[k] for r in results if k in r.trace_stats])) for k in sorted(keys)}
