"""Write MiniMMEB to disk: media, the three splits in the MMEB / UVRB formats, and a manifest.

Byte-for-byte reproducible for a seed: every task family draws from its own generator seeded with
(seed, split, family), files are written in a fixed order, and PNG / parquet encodings are fixed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embedrl.data.minimmeb.scenes import dumps
from embedrl.data.minimmeb.tasks import (
    DOCUMENT_FAMILIES,
    IMAGE_FAMILIES,
    IMAGE_TOKEN,
    VIDEO_FAMILIES,
    VIDEO_TOKEN,
    DocumentFamily,
    Side,
)

log = logging.getLogger(__name__)

NAME = "MiniMMEB"
FORMAT_VERSION = "1"
N_CANDIDATES = 8
SPLITS = ("train", "rl", "eval")


@dataclass(frozen=True)
class SizePreset:
    eval_pools_image: int  # per image task
    eval_pools_video: int  # per video task
    eval_queries_doc: int  # per document task
    pages_doc: int  # pages per document corpus
    train_pairs: int  # per image / video family
    train_pairs_doc: int
    rl_groups: int  # per family; a group is up to 4 pairs whose targets are near misses of each other


SIZE_PRESETS = {
    # eval: 6 x 100 image, 3 x 170 video, 2 x 250 document pools: at least 500 per modality group.
    "default": SizePreset(100, 170, 250, 120, 300, 400, 24),
    "small": SizePreset(10, 10, 12, 24, 12, 12, 3),
}


@dataclass
class GenerationSummary:
    out: Path
    seed: int
    size: str
    counts: dict[str, int]
    blind_hit_at_1: dict[str, float]
    n_files: int
    n_bytes: int
    seconds: float

    def describe(self) -> str:
        lines = [f"MiniMMEB seed={self.seed} size={self.size} -> {self.out}",
                 f"  {self.n_files} files, {self.n_bytes / 1e6:.1f} MB, {self.seconds:.1f} s"]
        for split in SPLITS:
            lines.append(f"  {split}: {self.counts.get(split, 0)} records")
        lines.append("  detail-blind Hit@1 (ceiling of a viewer that cannot resolve the fine evidence):")
        lines += [f"    {task:<18} {value:.3f}" for task, value in self.blind_hit_at_1.items()]
        return "\n".join(lines)


class MediaWriter:
    """Saves media under root/media/... and returns the path relative to root."""

    def __init__(self, root: Path):
        self.root = root

    def save(self, side: Side, stem: str) -> str:
        if side.media is None:
            return ""
        if isinstance(side.media, list):
            folder = self.root / "media" / stem
            folder.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(side.media, start=1):
                frame.save(folder / f"frame_{i:02d}.png", format="PNG", compress_level=6)
            return f"media/{stem}"
        path = self.root / "media" / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        side.media.save(path, format="PNG", compress_level=6)
        return f"media/{stem}.png"


def _rng(seed: int, split: str, family_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), family_index])


def _instruction(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").replace(VIDEO_TOKEN, "").strip()


# ------------------------------------------------------------------------------------------- eval
def _eval_rows(family, rng, n_pools: int, media: MediaWriter) -> list[dict]:
    rows = []
    for i in range(n_pools):
        k = int(rng.integers(1, 4))
        pool = family.pool(rng, k, N_CANDIDATES)
        rid = f"{family.name}-{i:05d}"
        candidates = [pool.positive] + pool.distractors
        rows.append({
            "id": rid,
            "qry_inst": _instruction(pool.query.text),
            "qry_text": pool.query.text,
            "qry_img_path": media.save(pool.query, f"eval/{family.name}/{rid}_q"),
            "tgt_text": [c.text for c in candidates],
            "tgt_img_path": [media.save(c, f"eval/{family.name}/{rid}_c{j}") for j, c in enumerate(candidates)],
            "modality": family.modality,
            "n_confusable": pool.n_confusable,
            "scene": dumps({"query": pool.query.scene, "candidates": [c.scene for c in candidates]}),
        })
    return rows


def _doc_eval(family: DocumentFamily, rng, preset: SizePreset, media: MediaWriter):
    pages = family.corpus(rng, preset.pages_doc)
    corpus = []
    for page in pages:
        cid = f"{family.name}-p{len(corpus):04d}"
        side = family.page_side(page)
        corpus.append({"corpus-id": cid, "image_path": media.save(side, f"eval/{family.name}/{cid}"),
                       "scene": dumps(side.scene)})
    queries, qrels = [], []
    for i in range(preset.eval_queries_doc):
        asked_index = int(rng.integers(len(pages)))
        asked, row = pages[asked_index], int(rng.integers(len(pages[asked_index].rows)))
        qid = f"{family.name}-q{i:05d}"
        grades = [(c["corpus-id"], family.relevance(p, asked, row)) for c, p in zip(corpus, pages, strict=True)]
        relevant = [(cid, g) for cid, g in grades if g > 0]
        queries.append({"query-id": qid, "query": family.query_text(asked, row),
                        "qry_inst": "Find the document page that answers the query.",
                        "n_confusable": len(relevant),
                        "scene": dumps({"asked": corpus[asked_index]["corpus-id"], "row": row})})
        qrels += [{"query-id": qid, "corpus-id": cid, "score": g} for cid, g in relevant]
    return queries, corpus, qrels


# --------------------------------------------------------------------------------------- train / rl
def _pair_row(rid: str, subset: str, modality: str, query: Side, pos: Side, neg: Side | None,
              media: MediaWriter, split: str, group: str | None = None) -> dict:
    row = {
        "id": rid,
        "qry": query.text,
        "qry_image_path": media.save(query, f"{split}/{subset}/{rid}_q"),
        "pos_text": pos.text,
        "pos_image_path": media.save(pos, f"{split}/{subset}/{rid}_p"),
        "neg_text": neg.text if neg else "",
        "neg_image_path": media.save(neg, f"{split}/{subset}/{rid}_n") if neg else "",
        "subset": subset,
        "modality": modality,
    }
    if group is not None:
        row["group"] = group
    row["scene"] = dumps({"query": query.scene, "positive": pos.scene, "negative": neg.scene if neg else None})
    return row


def _train_rows(family, rng, n: int, media: MediaWriter) -> list[dict]:
    rows = []
    for i in range(n):
        pool = family.pool(rng, 2, 2)  # one hard negative: a confusable
        rows.append(_pair_row(f"{family.name}-{i:05d}", family.name, family.modality, pool.query,
                              pool.positive, pool.distractors[0], media, "train"))
    return rows


def _rl_rows(family, rng, n_groups: int, media: MediaWriter, split: str = "rl") -> list[dict]:
    """Groups of pairs whose targets are near misses of each other (one base scene, several targets)."""
    rows = []
    for g in range(n_groups):
        base = family.base(rng)
        targets = list(rng.permutation(family.targets(base)))[:4]
        for t in targets:
            query, pos = family.pair(family.retarget(base, int(t)))
            rid = f"{family.name}-{len(rows):05d}"
            rows.append(_pair_row(rid, family.name, family.modality, query, pos, None, media, split,
                                  group=f"{family.name}-g{g:04d}"))
    return rows


def _doc_pairs(family: DocumentFamily, rng, n: int, media: MediaWriter, split: str, grouped: bool) -> list[dict]:
    pages = family.corpus(rng, max(12, n // 3))
    saved: dict[int, Side] = {}
    rows = []
    for i in range(n):
        # Grouped (rl): consecutive pairs ask about pages of one topic, near misses of each other.
        topic_pages = [j for j, p in enumerate(pages) if p.topic == pages[(i // 4 * 4) % len(pages)].topic]
        index = int(rng.choice(topic_pages)) if grouped else int(rng.integers(len(pages)))
        page, row = pages[index], int(rng.integers(len(pages[index].rows)))
        query = Side(family.query_text(page, row), "text", None, {"type": "text", "row": row})
        pos = saved.setdefault(index, family.page_side(page))
        near = [j for j, p in enumerate(pages) if family.relevance(p, page, row) == 1]
        neg = None if grouped or not near else saved.setdefault(near[0], family.page_side(pages[near[0]]))
        rid = f"{family.name}-{i:05d}"
        rows.append(_pair_row(rid, family.name, "visdoc", query, pos, neg, media, split,
                              group=f"{family.name}-g{i // 4:04d}" if grouped else None))
    return rows


# --------------------------------------------------------------------------------------------- main
def generate(out: str | Path, *, seed: int = 0, size: str = "default", progress: bool = True) -> GenerationSummary:
    """Generate MiniMMEB into `out` (replaced atomically if it holds an earlier MiniMMEB)."""
    from embedrl.data.readers import write_jsonl, write_parquet

    if size not in SIZE_PRESETS:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZE_PRESETS)}")
    preset = SIZE_PRESETS[size]
    out = Path(out)
    _check_replaceable(out)
    started = time.perf_counter()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    media = MediaWriter(tmp)
    tasks: list[dict] = []
    counts = {split: 0 for split in SPLITS}
    blind: dict[str, float] = {}

    families = list(IMAGE_FAMILIES) + list(VIDEO_FAMILIES)
    bar = tqdm(total=2 * len(families) + 3 * len(DOCUMENT_FAMILIES), desc="MiniMMEB", disable=not progress)
    for index, family in enumerate(families):
        n_eval = preset.eval_pools_image if family.modality == "image" else preset.eval_pools_video
        rows = _eval_rows(family, _rng(seed, "eval", index), n_eval, media)
        path = f"eval/{family.modality}/{family.name}.jsonl"
        write_jsonl(tmp / path, rows)
        blind[family.name] = float(np.mean([1 / r["n_confusable"] for r in rows]))
        tasks.append(_task(family.name, "eval", "mmeb_eval", path, family.modality, family.meta_task, "hit@1", "local"))
        counts["eval"] += len(rows)
        if family.name == "T2V-Flash":
            tasks.append(_write_uvrb(tmp, rows))
        bar.update()
        for split, make in (("train", lambda f, r: _train_rows(f, r, preset.train_pairs, media)),
                            ("rl", lambda f, r: _rl_rows(f, r, preset.rl_groups, media))):
            rows = make(family, _rng(seed, split, index))
            path = f"{split}/{family.name}.parquet"
            write_parquet(tmp / path, rows)
            tasks.append(_task(family.name, split, "mmeb_train", path, family.modality, family.meta_task))
            counts[split] += len(rows)
        bar.update()

    for index, family in enumerate(DOCUMENT_FAMILIES, start=len(families)):
        queries, corpus, qrels = _doc_eval(family, _rng(seed, "eval", index), preset, media)
        folder = f"eval/visdoc/{family.name}"
        write_jsonl(tmp / folder / "queries.jsonl", queries)
        write_jsonl(tmp / folder / "corpus.jsonl", corpus)
        write_jsonl(tmp / folder / "qrels.jsonl", qrels)
        blind[family.name] = _blind_ndcg_hint(queries)
        tasks.append(_task(family.name, "eval", "visdoc", folder, "visdoc", family.meta_task, "ndcg@5", "global"))
        counts["eval"] += len(queries)
        bar.update()
        for split, n, grouped in (("train", preset.train_pairs_doc, False), ("rl", preset.rl_groups * 4, True)):
            rows = _doc_pairs(family, _rng(seed, split, index), n, media, split, grouped)
            path = f"{split}/{family.name}.parquet"
            write_parquet(tmp / path, rows)
            tasks.append(_task(family.name, split, "mmeb_train", path, "visdoc", family.meta_task))
            counts[split] += len(rows)
            bar.update()
    bar.close()

    manifest = {"name": NAME, "version": FORMAT_VERSION, "seed": seed, "size": size,
                "n_candidates": N_CANDIDATES, "counts": counts, "detail_blind_hit_at_1": blind, "tasks": tasks}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    files = [p for p in out.rglob("*") if p.is_file()]
    summary = GenerationSummary(out, seed, size, counts, blind, len(files), sum(p.stat().st_size for p in files),
                                time.perf_counter() - started)
    log.info("generated %s", summary.describe())
    return summary


def _task(name, split, kind, path, modality, meta_task, metric=None, candidates=None) -> dict:
    task = {"name": name, "split": split, "kind": kind, "path": path, "modality": modality, "meta_task": meta_task}
    if metric:
        task |= {"metric": metric, "candidates": candidates}
    return task


def _write_uvrb(root: Path, t2v_rows: list[dict]) -> dict:
    """The text-to-video task again in the UVRB layout, as a global pool over all its clips."""
    from embedrl.data.readers import write_jsonl

    folder = "uvrb/MiniUVRB-Flash"
    corpus_ids: dict[str, str] = {}
    corpus, queries, instances = [], [], []
    for row in t2v_rows:
        for path, text in zip(row["tgt_img_path"], row["tgt_text"], strict=True):
            if path not in corpus_ids:
                corpus_ids[path] = f"v{len(corpus_ids):05d}"
                corpus.append({"cid": corpus_ids[path], "video_path": path, "caption": text})
        queries.append({"qid": row["id"], "text": row["qry_text"]})
        instances.append({"qid": row["id"], "cid": corpus_ids[row["tgt_img_path"][0]], "relevance": 1})
    write_jsonl(root / folder / "queries.jsonl", queries)
    write_jsonl(root / folder / "corpus.jsonl", corpus)
    write_jsonl(root / folder / "instances.jsonl", instances)
    return _task("MiniUVRB-Flash", "eval", "uvrb", folder, "video", "fine_grained", "recall@1", "global")


def _blind_ndcg_hint(queries: list[dict]) -> float:
    """Hit@1 of a digit-blind reader: a random pick among the pages that list the asked item."""
    return float(np.mean([1 / q["n_confusable"] for q in queries]))


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    manifest = out / "manifest.json"
    is_minimmeb = manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("name") == NAME
    if not is_minimmeb and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and does not hold a MiniMMEB data set; choose an empty or new directory")
