"""The performance suite (issue 6): every stage's throughput on the tiny profile, each fast path against
the plain way in the same process, and the local pipeline's orchestration overhead.

    .venv/bin/python benchmarks/suite.py --out docs/results/bench-cpu.json
    .venv/bin/python benchmarks/suite.py --only grpo eval --out /tmp/b.json        # some parts
    .venv/bin/python benchmarks/suite.py --only pipeline --pipeline-db runs/local/mlflow.db

Parts (tiny profile models and settings, small MiniMMEB generated here, random initial weights):
- embedder: Embedder training samples/s, plain vs gradient caching (GradCache chunks of 8);
- sft: SFT tokens/s and samples/s;
- grpo: GRPO step seconds split into generation / reward / update (`step_times.jsonl`), with the reward
  embedding plain vs shared-prefix (`egrl.shared_prefix`);
- eval: queries/s of evaluation with Reasoner traces: the naive per-query loop (each pool's query and
  candidates traced and embedded on their own) vs pooled unique sides vs a warm disk cache; the scores of
  the three must agree;
- pipeline: share of a local pipeline run's wall time not spent in stage work, read from the MLflow
  database that `make run` wrote (parent run vs its stage runs).
Run it alone: two torch jobs on two cores slow each other several-fold.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

PARTS = ("embedder", "sft", "grpo", "eval", "pipeline")


# ------------------------------------------------------------------------------------------ set-up
def setup(work: Path, steps: int, prepared: Path | None) -> dict:
    """MiniMMEB (default size, seed 0) prepared, unless given; tiny initial models; the Embedder and the
    Reasoner trained `steps` steps."""
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.data.minimmeb import generate
    from embedrl.data.prepare import prepare
    from embedrl.models.factory import init_model_dir
    from embedrl.models.spec import load_model_specs
    from embedrl.train.embedder import train_embedder
    from embedrl.train.sft import SFTStageConfig, train_sft

    if prepared is None:
        generate(work / "data", seed=0, progress=False)
        prepare(work / "data", work / "prepared")
        prepared = work / "prepared"
    specs = load_model_specs("tiny")
    init = {role: init_model_dir(specs[role], work / "init" / role, seed=i)
            for i, role in enumerate(("embedder", "reasoner"))}
    emb_cfg = build_config(EmbedderTrainConfig, "tiny", "embedder", max_steps=steps, save_every=0)
    embedder = train_embedder(prepared, init["embedder"], work / "embedder", emb_cfg, progress=False)
    sft_cfg = build_config(SFTStageConfig, "tiny", "sft", output_dir=str(work / "sft"), max_steps=steps,
                           save_strategy="no")
    sft = train_sft(prepared, init["reasoner"], work / "sft", sft_cfg)
    return {"prepared": prepared, "init": init, "embedder": embedder.out_dir / "model",
            "reasoner": sft.out_dir / "model"}


# ------------------------------------------------------------------------------------------- parts
def bench_embedder(ctx: dict, work: Path, steps: int) -> dict:
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.train.embedder import train_embedder

    out = {}
    for name, chunk in (("plain", 0), ("grad_cache_8", 8)):
        cfg = build_config(EmbedderTrainConfig, "tiny", "embedder", max_steps=steps, save_every=0,
                           grad_cache_chunk_size=chunk)
        started = time.perf_counter()
        result = train_embedder(ctx["prepared"], ctx["init"]["embedder"], work / f"emb-{name}", cfg, progress=False)
        seconds = time.perf_counter() - started
        out[name] = {"steps": steps, "global_batch": cfg.global_batch_size, "seconds": seconds,
                     "samples_per_second": steps * cfg.global_batch_size / seconds,
                     "first_loss": result.first_loss, "last_loss": result.last_loss}
    out["grad_cache_vs_plain_time"] = out["grad_cache_8"]["seconds"] / out["plain"]["seconds"]
    return out


def bench_sft(ctx: dict, work: Path, steps: int) -> dict:
    from embedrl.config import build_config
    from embedrl.train.sft import SFTStageConfig, train_sft

    cfg = build_config(SFTStageConfig, "tiny", "sft", output_dir=str(work / "sft-bench"), max_steps=steps,
                       save_strategy="no", logging_steps=steps)
    started = time.perf_counter()
    train_sft(ctx["prepared"], ctx["init"]["reasoner"], work / "sft-bench", cfg)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (work / "sft-bench" / "train_log.jsonl").read_text().splitlines()]
    tokens = max((float(r["num_tokens"]) for r in records if "num_tokens" in r), default=None)
    return {"steps": steps, "batch": cfg.per_device_train_batch_size, "seconds": seconds,
            "samples_per_second": steps * cfg.per_device_train_batch_size / seconds,
            "tokens": tokens, "tokens_per_second": tokens / seconds if tokens else None}


def bench_grpo(ctx: dict, work: Path, steps: int) -> dict:
    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig, train_egrl

    out = {}
    for name, shared in (("plain_reward", False), ("shared_prefix_reward", True)):
        run = work / f"grpo-{name}"
        cfg = build_config(EGRLStageConfig, "tiny", "egrl", output_dir=str(run), max_steps=steps,
                           save_strategy="no", shared_prefix=shared)
        train_egrl(ctx["prepared"], ctx["reasoner"], ctx["embedder"], run, cfg)
        rows = [json.loads(line) for line in (run / "step_times.jsonl").read_text().splitlines()][1:]  # warm-up
        part = {k: statistics.median(r[k] for r in rows)
                for k in ("seconds", "generation_seconds", "reward_seconds", "update_seconds")}
        part["steps_measured"] = len(rows)
        part["completions_per_step"] = 2 * cfg.pairs_per_step * cfg.num_generations
        out[name] = part
    out["reward_speedup"] = out["plain_reward"]["reward_seconds"] / out["shared_prefix_reward"]["reward_seconds"]
    out["step_speedup"] = out["plain_reward"]["seconds"] / out["shared_prefix_reward"]["seconds"]
    return out


def bench_eval(ctx: dict, work: Path, queries: int) -> dict:
    from embedrl.data.sides import MediaStore
    from embedrl.eval.evaluator import ReasonerTrace, _truncate, evaluate, evaluate_task, load_task
    from embedrl.eval.registry import tasks_for_data
    from embedrl.models.embedder import Embedder, EmbedderInputs, ImageSizes
    from embedrl.models.factory import load_model
    from embedrl.models.reasoner import Reasoner

    prepared = ctx["prepared"]
    tasks = [t for t in tasks_for_data(prepared) if t.kind == "mmeb_eval"]  # local pools: a naive loop exists
    reasoner = Reasoner.load(ctx["reasoner"], max_new_tokens=128)
    vlm, processor = load_model(ctx["embedder"])
    inputs = EmbedderInputs(processor, sizes=ImageSizes.of_model(ctx["embedder"]))  # as evaluate() builds them
    embedder = Embedder(vlm, inputs.emb_id).eval()
    store = MediaStore(prepared)

    started = time.perf_counter()
    naive_scores, n_queries, traced = {}, 0, 0
    for task in tasks:  # per query: its pool alone, traced and embedded from scratch
        data = _truncate(load_task(prepared, task), queries)
        hits = []
        for q in range(len(data.queries)):
            pool = _truncate(_query_slice(data, q), 1)
            result = evaluate_task(task, pool, ReasonerTrace(reasoner, "naive", batch_size=128), embedder, inputs, store)
            hits.append(result.score)
            traced += 1 + len(pool.candidates)
        naive_scores[task.name] = statistics.fmean(hits)
        n_queries += len(data.queries)
    naive = time.perf_counter() - started

    timings, scores = {}, {}
    with tempfile.TemporaryDirectory() as cache:
        for name, cache_dir in (("pooled", None), ("pooled_cold_cache", cache), ("pooled_warm_cache", cache)):
            started = time.perf_counter()
            result = evaluate(prepared, ctx["embedder"], ReasonerTrace(reasoner, name, batch_size=128, cache_dir=cache_dir),
                              tasks=tasks, max_queries=queries, cache_dir=cache_dir)
            timings[name] = time.perf_counter() - started
            scores[name] = {t: v["score"] for t, v in result["tasks"].items()}
            unique = result["unique_sides"]
    agree = all(abs(scores["pooled"][t] - naive_scores[t]) < 1e-6 and scores[name][t] == scores["pooled"][t]
                for t in naive_scores for name in scores)
    return {"tasks": len(tasks), "queries": n_queries, "sides_traced_naive": traced, "unique_sides_pooled": unique,
            "seconds": {"naive_per_query": naive, **timings},
            "queries_per_second": {"naive_per_query": n_queries / naive,
                                   **{k: n_queries / v for k, v in timings.items()}},
            "speedup_vs_naive": {k: naive / v for k, v in timings.items()},
            "scores_agree": agree}


def _query_slice(data, q: int):
    """Task data holding only query q and its own pool."""
    from embedrl.eval.evaluator import TaskData

    keep = [j for j in range(len(data.candidates)) if data.mask is None or data.mask[q, j]]
    return TaskData(data.name, [data.queries[q]], [data.candidates[j] for j in keep], data.relevance[q:q + 1, keep],
                    None if data.mask is None else data.mask[q:q + 1, keep], [data.query_ids[q]], 0)


def bench_pipeline(db: Path) -> dict:
    """Wall time of the latest local pipeline run vs the time its stage runs took (MLflow's records)."""
    if not db.exists():
        raise FileNotFoundError(f"{db}: no MLflow database (run `make run` first, or pass --pipeline-db)")
    with sqlite3.connect(db) as con:
        parent = con.execute("SELECT run_uuid, name, start_time, end_time FROM runs WHERE name LIKE 'pipeline-%' "
                             "AND status = 'FINISHED' ORDER BY start_time DESC LIMIT 1").fetchone()
        if parent is None:
            raise ValueError(f"{db}: no finished pipeline run")
        stages = con.execute("SELECT r.name, r.start_time, r.end_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                             "WHERE t.key = 'mlflow.parentRunId' AND t.value = ?", (parent[0],)).fetchall()
    wall = (parent[3] - parent[2]) / 1000
    per_stage = {name: (end - start) / 1000 for name, start, end in stages}
    work = sum(per_stage.values())
    return {"pipeline_run": parent[1], "wall_seconds": wall, "stage_seconds": per_stage,
            "stage_work_seconds": work, "orchestration_seconds": wall - work,
            "orchestration_share": (wall - work) / wall}


# -------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="JSON result file")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--steps", type=int, default=20, help="training steps per measured run")
    parser.add_argument("--eval-queries", type=int, default=10, help="pools per eval task")
    parser.add_argument("--pipeline-db", default="runs/local/mlflow.db", help="MLflow DB of a local pipeline run")
    parser.add_argument("--prepared", default=None, help="a prepared MiniMMEB (default: generate and prepare seed 0)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="embedrl-bench-") as tmp:
        work = Path(tmp)
        needs_models = set(args.only) - {"pipeline"}
        ctx = setup(work, args.steps, Path(args.prepared) if args.prepared else None) if needs_models else {}
        if "embedder" in args.only:
            results["embedder"] = bench_embedder(ctx, work, args.steps)
        if "sft" in args.only:
            results["sft"] = bench_sft(ctx, work, args.steps)
        if "grpo" in args.only:
            results["grpo"] = bench_grpo(ctx, work, max(3, args.steps // 4))
        if "eval" in args.only:
            results["eval"] = bench_eval(ctx, work, args.eval_queries)
    if "pipeline" in args.only:
        results["pipeline"] = bench_pipeline(Path(args.pipeline_db))
    write_result(args.out, "suite", results, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
