"""The pipeline's stages as library calls: what each Kubeflow component runs (components/ stay thin).

Every step takes plain paths and values, writes its outputs into the directories it is given, tracks
itself in MLflow as a child run of the pipeline run (when a tracking URI is set) and returns the
scalars the Kubeflow UI shows. The same functions run under `kfp.local` and on a cluster.

Config: a step gets the profile name and, optionally, the whole resolved profile as a dict. The CLI
always passes the dict, so KFP's cache key covers the config itself and not just a profile name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

RUN_KEY_ENV = "EMBEDRL_PIPELINE_RUN"  # one value per pipeline run; set by the local runner / the pod's labels
CHECKPOINT_ROOT_ENV = "EMBEDRL_CHECKPOINT_ROOT"  # persistent storage (a PVC) for stage work dirs and checkpoints


@contextlib.contextmanager
def stage_workdir(stage: str) -> Iterator[Path]:
    """A training stage's work directory (its checkpoints live there).

    With $EMBEDRL_CHECKPOINT_ROOT (a volume that outlives the pod) it is ROOT/RUN_KEY/STAGE: a retried
    step of the same pipeline run finds the checkpoints of the killed attempt and resumes; it is removed
    once the stage succeeds. Without it, a temporary directory: a retry starts the stage over.
    """
    root, run_key = _checkpoint_volume(), os.environ.get(RUN_KEY_ENV, "")
    if os.environ.get(CHECKPOINT_ROOT_ENV) and root is None:
        log.warning("$%s=%s is not a mounted directory: %s works in a temporary directory (no resume after "
                    "a retry)", CHECKPOINT_ROOT_ENV, os.environ[CHECKPOINT_ROOT_ENV], stage)
    if not (root and run_key):
        with tempfile.TemporaryDirectory(prefix=f"embedrl-{stage}-") as tmp:
            yield Path(tmp)
        return
    work = root / run_key / stage
    work.mkdir(parents=True, exist_ok=True)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def _checkpoint_volume() -> Path | None:
    """$EMBEDRL_CHECKPOINT_ROOT when it is set and mounted (a volume that outlives runs), else None."""
    root = os.environ.get(CHECKPOINT_ROOT_ENV, "")
    return Path(root) if root and Path(root).is_dir() else None


ROLE_SEED_OFFSET = {"embedder": 0, "reasoner": 1}


# ------------------------------------------------------------------------------------------ config
def load_profile(profile: str) -> dict[str, Any]:
    """The whole profile (a packaged name or a YAML path) as a dict."""
    from embedrl.config import profile_path

    return yaml.safe_load(profile_path(profile).read_text(encoding="utf-8")) or {}


def profile_file(profile: str, config: dict | None, workdir: Path) -> Path:
    """A YAML file holding the resolved profile: `config` if given, else the named profile."""
    from embedrl.config import profile_path

    if not config:
        return profile_path(profile)
    path = Path(workdir) / "profile.yaml"
    path.write_text(yaml.safe_dump(_restore_ints(config), sort_keys=True), encoding="utf-8")
    return path


def _restore_ints(value: Any) -> Any:
    """KFP passes a dict parameter as a protobuf Struct, which turns every int into a float (1024 ->
    1024.0); integral floats become ints again (float fields accept ints: the configs coerce them)."""
    if isinstance(value, dict):
        return {k: _restore_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------------------- tracking
@dataclass(frozen=True)
class Tracking:
    """Where a step reports: an MLflow tracking URI (empty = no tracking) and experiment."""

    tracking_uri: str = ""
    experiment: str = "embedrl"

    @contextlib.contextmanager
    def stage(self, stage: str, config: dict) -> Iterator[Any]:
        """A child run of this pipeline run's parent run (found or created by the run key)."""
        if not self.tracking_uri:
            yield None
            return
        from embedrl.registry.tracking import pipeline_parent_run, stage_run

        run_key = os.environ.get(RUN_KEY_ENV, "")
        parent = pipeline_parent_run(self.tracking_uri, self.experiment, run_key) if run_key else None
        with stage_run(self.tracking_uri, parent, stage, config=config, experiment=self.experiment) as run:
            yield run


def _log_metrics(run: Any, metrics: dict[str, float]) -> None:
    if run is None:
        return
    from embedrl.registry.tracking import log_summary_metrics

    log_summary_metrics(metrics)  # queued and retried through an MLflow outage, like the step metrics


def _log_steps(run: Any, records: list[dict], prefix: str = "") -> None:
    if run is None or not records:
        return
    from embedrl.registry.tracking import log_step_metrics

    log_step_metrics(records, prefix=prefix)


def _log_artifacts(run: Any, paths: list[Path], artifact_path: str) -> None:
    if run is None:
        return
    from embedrl.registry.tracking import log_report_artifacts

    log_report_artifacts([p for p in paths if Path(p).exists()], artifact_path)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------- data prep
@dataclass(frozen=True)
class DataSource:
    """Which data a run trains on. `repo` empty: the embedded MiniMMEB, generated from `seed`.

    `repo` set: the DVC-tracked directory `path` of that repo (a git URL or a local checkout) at `rev`
    (empty rev: the checkout's working tree). `md5`, when set, must match what that version pins.
    """

    repo: str = ""
    rev: str = ""
    path: str = "data"
    md5: str = ""
    seed: int = 0
    size: str = "default"


def fetch_source_data(source: DataSource, out: Path) -> dict:
    """Materialise the source data into `out`; returns its lineage (repo, rev, path, md5, ...)."""
    from embedrl.data.versioning import DataVersionMismatch, directory_hash

    if not source.repo:
        from embedrl.data.minimmeb import generate

        generate(out, seed=source.seed, size=source.size, progress=False)
        found = directory_hash(out)
        lineage = {"repo": f"minimmeb://seed={source.seed}/size={source.size}", "rev": None, "path": "data",
                   "md5": found.md5, "nfiles": found.nfiles, "size": found.size}
    elif source.rev:
        from embedrl.data.dvc_source import fetch_pinned

        lineage = fetch_pinned(source.repo, source.path, out, rev=source.rev).to_dict()
    else:
        from embedrl.data.dvc_source import workspace_lineage

        lineage = workspace_lineage(source.repo, source.path).to_dict()
        shutil.copytree(Path(source.repo) / source.path, out)
    if source.md5 and lineage["md5"] != source.md5:
        raise DataVersionMismatch(f"data from {lineage['repo']} (rev {lineage['rev']}, path {lineage['path']!r}) "
                                  f"hashes to {lineage['md5']} but the run pins data_md5={source.md5}")
    return lineage


def prepare_data_step(out_dir: str | Path, source: DataSource, *, tracking: Tracking = Tracking()) -> dict:
    """Data prep: pinned source data -> teacher T-CoTs, consistency filter, splits (a prepared data set)."""
    from embedrl.data.prepare import prepare

    out = Path(out_dir)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embedrl-source-") as tmp, \
            tracking.stage("data_prep", {"data": source.__dict__}) as run:
        lineage = fetch_source_data(source, Path(tmp) / "data")
        summary = prepare(Path(tmp) / "data", out)
        (out / "lineage.json").write_text(json.dumps(lineage, indent=1) + "\n", encoding="utf-8")
        quarantined = _count_lines(out / "prep_quarantine.jsonl")
        metrics = {**{k: float(v) for k, v in summary.counts.items()}, "quarantined": float(quarantined),
                   "seconds": time.perf_counter() - started}
        if run is not None:
            from embedrl.registry.tracking import log_data_lineage

            log_data_lineage(lineage)
            _log_metrics(run, metrics)
            _log_artifacts(run, [out / "manifest.json", out / "prep_quarantine.jsonl"], "data_prep")
    return metrics


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


# ---------------------------------------------------------------------------------------- training
def init_model(profile_yaml: Path, role: str, out: Path, seed: int) -> Path:
    """The stage's starting model: built (tiny) or loaded (hub id / path) from the profile's spec."""
    from embedrl.models.factory import init_model_dir
    from embedrl.models.spec import load_model_specs

    if (out / "embedrl.json").exists():  # a retried step in a persistent work dir: the same init again
        return out
    return init_model_dir(load_model_specs(profile_yaml)[role], out, seed=seed + ROLE_SEED_OFFSET[role])


def _finish_model_dir(work: Path, out_dir: Path) -> None:
    """Move the stage's `model/` directory into the artifact directory and keep its logs beside it."""
    if not (work / "model").is_dir() and int(os.environ.get("RANK", "0")) > 0:
        return  # under torchrun only rank 0 saves the model
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in (work / "model").iterdir():
        shutil.move(str(item), out_dir / item.name)
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    for name in ("train_log.jsonl", "reward_log.jsonl", "trainer_log.json", "sft_log.json", "pre_rl_check.json"):
        if (work / name).exists():
            shutil.copy2(work / name, logs / name)


def train_embedder_step(prepared: str | Path, out_dir: str | Path, *, profile: str, config: dict | None = None,
                        seed: int = 0, tracking: Tracking = Tracking()) -> dict:
    """Embedder contrastive training from the profile's initial Embedder; the model goes to `out_dir`."""
    from embedrl.config import EmbedderTrainConfig, build_config, config_dict
    from embedrl.models.spec import load_model_specs
    from embedrl.train.embedder import train_embedder

    with stage_workdir("train_embedder") as work:
        profile_yaml = profile_file(profile, config, work)
        stage_config = build_config(EmbedderTrainConfig, profile_yaml, "embedder", seed=seed)
        spec = load_model_specs(profile_yaml)["embedder"]
        with tracking.stage("train_embedder", {"embedder": config_dict(stage_config),
                                               "model": spec.to_dict()}) as run:
            init = init_model(profile_yaml, "embedder", work / "init", seed)
            result = train_embedder(prepared, init, work / "run", stage_config,
                                    lora=spec.to_dict() if spec.lora_r > 0 else None, progress=False)
            _finish_model_dir(work / "run", Path(out_dir))
            metrics = {"first_loss": result.first_loss, "last_loss": result.last_loss, "steps": result.steps,
                       "seconds": result.seconds}
            _log_steps(run, _read_jsonl(work / "run" / "train_log.jsonl"), prefix="embedder/")
            _log_metrics(run, metrics)
    return metrics


def train_sft_step(prepared: str | Path, out_dir: str | Path, *, profile: str, config: dict | None = None,
                   seed: int = 0, tracking: Tracking = Tracking()) -> dict:
    """SFT cold start of the Reasoner on the teacher T-CoTs; the Reasoner goes to `out_dir`."""
    from embedrl.config import build_config
    from embedrl.train.sft import SFTStageConfig, train_sft

    with stage_workdir("sft_cold_start") as work:
        profile_yaml = profile_file(profile, config, work)
        stage_config = build_config(SFTStageConfig, profile_yaml, "sft", seed=seed, output_dir=str(work / "run"))
        with tracking.stage("sft_cold_start", {"sft": _trainer_args(stage_config)}) as run:
            init = init_model(profile_yaml, "reasoner", work / "init", seed)
            result = train_sft(prepared, init, work / "run", stage_config)
            _finish_model_dir(work / "run", Path(out_dir))
            metrics = {"first_loss": result.losses[0], "last_loss": result.losses[-1], "seconds": result.seconds}
            _log_steps(run, [{"step": i, "loss": loss} for i, loss in enumerate(result.losses)], prefix="sft/")
            _log_metrics(run, metrics)
    return metrics


def train_egrl_step(prepared: str | Path, reasoner: str | Path, embedder: str | Path, out_dir: str | Path, *,
                    profile: str, config: dict | None = None, seed: int = 0,
                    tracking: Tracking = Tracking()) -> dict:
    """Pre-RL check, then EG-RL (GRPO rewarded by the frozen Embedder); the Reasoner goes to `out_dir`."""
    from embedrl.config import build_config
    from embedrl.experiment import pre_rl_check
    from embedrl.train.egrl import EGRLStageConfig, train_egrl

    with stage_workdir("eg_rl") as work:
        profile_yaml = profile_file(profile, config, work)
        stage_config = build_config(EGRLStageConfig, profile_yaml, "egrl", seed=seed, output_dir=str(work / "run"))
        with tracking.stage("eg_rl", {"egrl": _trainer_args(stage_config)}) as run:
            check = pre_rl_check(prepared, reasoner, embedder, stage_config)
            result = train_egrl(prepared, reasoner, embedder, work / "run", stage_config)
            (work / "run" / "pre_rl_check.json").write_text(json.dumps(check, indent=1) + "\n")
            _finish_model_dir(work / "run", Path(out_dir))
            first, last = result.history[0], result.history[-1]
            metrics = {"first_outcome": first["outcome"], "last_outcome": last["outcome"],
                       "first_process": first["process"], "last_process": last["process"],
                       "last_format_rate": last["format_rate"], "steps": len(result.history),
                       "pre_rl_gap": check["gap"], "pre_rl_within_group_std": check["within_group_std"],
                       "pre_rl_passed": float(check["passed"]), "seconds": result.seconds}
            _log_steps(run, [{"step": i, **h} for i, h in enumerate(result.history)], prefix="egrl/")
            _log_metrics(run, metrics)
    return metrics


def _trainer_args(config: Any) -> dict:
    """A trl config's fields that differ from trl's own defaults would hide the paper's: log them all."""
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if isinstance(getattr(config, f.name), str | int | float | bool | list | dict | type(None))}


# -------------------------------------------------------------------------------------- evaluation
def evaluate_step(prepared: str | Path, embedder: str | Path, reasoner: str | Path, out_dir: str | Path, *,
                  profile: str, config: dict | None = None, variant: str = "egrl_cot",
                  tracking: Tracking = Tracking()) -> dict:
    """The Embedder with the Reasoner's T-CoTs on every eval task: metrics.json, predictions, reports."""
    from embedrl.config import EvalConfig, build_config, config_dict
    from embedrl.eval.aggregate import flatten_metrics
    from embedrl.eval.evaluator import ReasonerTrace, evaluate
    from embedrl.eval.report import write_report
    from embedrl.models.reasoner import Reasoner

    with tempfile.TemporaryDirectory(prefix="embedrl-eval-") as tmp:
        profile_yaml = profile_file(profile, config, Path(tmp))
        eval_config = build_config(EvalConfig, profile_yaml, "eval")
    with tracking.stage("evaluate", {"eval": config_dict(eval_config)}) as run:
        volume = _checkpoint_volume()
        cache_dir = eval_config.cache_dir or (str(volume / "eval-cache") if volume else None)
        source = ReasonerTrace(Reasoner.load(reasoner, max_new_tokens=eval_config.max_new_tokens), variant,
                               batch_size=eval_config.reasoner_batch_size, cache_dir=cache_dir)
        result = evaluate(prepared, embedder, source, registry=eval_config.registry,
                          batch_size=eval_config.batch_size, max_queries=eval_config.max_queries or None,
                          cache_dir=cache_dir)
        predictions = result.pop("predictions")
        paths = write_report(out_dir, result, title=f"embedrl evaluation ({variant})", predictions=predictions)
        metrics = flatten_metrics(result)
        metrics["seconds"] = result["seconds"]
        _log_metrics(run, {k.replace("/", "."): v for k, v in metrics.items()})
        _log_artifacts(run, list(paths.values()), "evaluation")
    return metrics


# ------------------------------------------------------------------------------------ registration
def register_step(embedder: str | Path, reasoner: str | Path, metrics_file: str | Path, *, model_name: str,
                  promotion_metric: str = "overall", promotion_margin: float = 0.0,
                  tracking: Tracking = Tracking()) -> dict:
    """Log the Embedder (its Reasoner linked) as an MLflow pyfunc, register it as `challenger` and
    promote it to `champion` when it beats the current champion by the margin."""
    from embedrl.eval.aggregate import flatten_metrics
    from embedrl.registry.promotion import register_and_gate
    from embedrl.registry.pyfunc import log_embedder_model

    if not tracking.tracking_uri:
        raise ValueError("registration needs an MLflow tracking URI (pipeline parameter tracking_uri)")
    result = json.loads(Path(metrics_file).read_text(encoding="utf-8"))
    scores = flatten_metrics(result)
    if promotion_metric not in scores:
        raise KeyError(f"promotion metric {promotion_metric!r} is not in {metrics_file}; "
                       f"available: {sorted(scores)[:20]}")
    config = {"model_name": model_name, "promotion_metric": promotion_metric, "promotion_margin": promotion_margin}
    with tracking.stage("register", config) as run:
        _log_metrics(run, {k.replace("/", "."): v for k, v in scores.items()})
        version = log_embedder_model(embedder, reasoner, registered_model_name=model_name,
                                     metrics={k.replace("/", "."): v for k, v in scores.items()})
        decision = register_and_gate(model_name, version.version, score=scores[promotion_metric],
                                     metric=promotion_metric, margin=promotion_margin)
    return {"version": int(version.version), "promoted": float(decision.promoted),
            "score": float(scores[promotion_metric]), "champion_version": int(decision.champion_version)}


# ------------------------------------------------------------------------------------- KFP outputs
def publish_metrics(artifact: Any, values: dict[str, float], *, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Scalars on a KFP Metrics artifact (the UI's metrics tab), also written to its file: kfp.local's
    cache treats an artifact without a file as missing and would rerun the step."""
    shown = {k.replace("/", "."): float(v) for k, v in values.items() if not k.startswith(skip_prefixes)}
    for name, value in shown.items():
        artifact.log_metric(name, value)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(shown, indent=1, sort_keys=True) + "\n", encoding="utf-8")
