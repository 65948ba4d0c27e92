"""MLflow tracking for pipeline runs: one parent run per pipeline run, one child run per stage.

- `pipeline_parent_run` finds or creates the parent run of a Kubeflow run (tag `embedrl.kfp_run_id`);
  every stage of that run, and any retry, gets the same run id.
- `stage_run` opens the child run of a stage under the parent (reusing it on a retry), logs the
  resolved config as flat params and ends the run FINISHED, or FAILED on an exception.
- `log_step_metrics`, `log_data_lineage` and `log_report_artifacts` log into the active run.

mlflow is imported inside each function so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mlflow

log = logging.getLogger(__name__)

KFP_RUN_ID_TAG = "embedrl.kfp_run_id"
STAGE_TAG = "embedrl.stage"
ATTEMPT_TAG = "embedrl.attempt"
DATA_TAG_PREFIX = "embedrl.data."
PARENT_RUN_ID_TAG = "mlflow.parentRunId"
METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch request
PARAMS_PER_BATCH = 100  # likewise for params
TRUNCATED_MARK = "..."
CREATE_SETTLE_SECONDS = 0.5


# ------------------------------------------------------------------------------------- parent run
def pipeline_parent_run(
    tracking_uri: str, experiment: str, kfp_run_id: str, *, tags: dict[str, str] | None = None
) -> str:
    """The id of the parent run of the pipeline run `kfp_run_id`, created on the first call.

    Two callers racing to create it may both create one. A creator waits a moment (a run's start
    time is taken before it is stored, so a slow insert could otherwise come after our search), then
    keeps the oldest run and deletes its own if that is not it: every caller returns the same id.
    """
    from mlflow import MlflowClient

    if not kfp_run_id:
        raise ValueError("kfp_run_id is empty; pass the Kubeflow run id (dsl.PIPELINE_JOB_ID_PLACEHOLDER)")
    client = MlflowClient(tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    existing = _parent_runs(client, experiment_id, kfp_run_id)
    if existing:
        return existing[0].info.run_id
    run_tags = {**(tags or {}), KFP_RUN_ID_TAG: kfp_run_id}
    created = client.create_run(experiment_id, run_name=f"pipeline-{kfp_run_id}", tags=run_tags)
    time.sleep(CREATE_SETTLE_SECONDS)
    winner = _parent_runs(client, experiment_id, kfp_run_id)[0]
    if winner.info.run_id != created.info.run_id:
        log.info(
            "another caller created the parent run of %s first; using %s", kfp_run_id, winner.info.run_id
        )
        client.delete_run(created.info.run_id)
    return winner.info.run_id


def find_parent_run(tracking_uri: str, experiment: str, kfp_run_id: str):
    """The parent run (an mlflow Run) of the pipeline run `kfp_run_id`, or None."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = _parent_runs(client, found.experiment_id, kfp_run_id) if found is not None else []
    return runs[0] if runs else None


def finish_parent_run(
    tracking_uri: str, experiment: str, kfp_run_id: str, *, status: str = "FINISHED"
) -> None:
    """End the parent run of `kfp_run_id` (from the pipeline's exit handler); no parent, nothing to do."""
    from mlflow import MlflowClient

    parent = find_parent_run(tracking_uri, experiment, kfp_run_id)
    if parent is not None:
        MlflowClient(tracking_uri).set_terminated(parent.info.run_id, status=status)


def _experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created meanwhile by another caller
        return client.get_experiment_by_name(name).experiment_id


def _parent_runs(client, experiment_id: str, kfp_run_id: str) -> list:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KFP_RUN_ID_TAG}` = '{_quoted(kfp_run_id)}'",
        max_results=50,
    )
    return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# -------------------------------------------------------------------------------------- stage run
@contextmanager
def stage_run(
    tracking_uri: str,
    parent_run_id: str | None,
    stage: str,
    *,
    config: Mapping[str, Any],
    log_system_metrics: bool = True,
    experiment: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """The active child run of `stage` under the parent run; a retried stage resumes its child run.

    Without a parent (a stage run on its own) the run is a top-level run in `experiment`. Sets the
    tracking URI of this process. The run ends FINISHED, or FAILED if the block raises.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    params = flatten_params(config)
    if parent_run_id is None:
        run = _start_stage(stage, _experiment_id(client, experiment or "Default"), None, log_system_metrics)
    else:
        parent = client.get_run(parent_run_id)
        previous = _stage_child(client, parent, stage)
        if previous is None:
            run = _start_stage(stage, parent.info.experiment_id, parent_run_id, log_system_metrics)
        else:
            params = _params_to_add(params, previous.data.params, stage)
            run = _resume_stage(stage, previous, log_system_metrics)
    with run:  # ends the run FAILED if the block raises
        _log_params(client, run.info.run_id, params)
        yield run


def _start_stage(stage: str, experiment_id: str, parent_run_id: str | None, log_system_metrics: bool):
    import mlflow

    return mlflow.start_run(
        experiment_id=experiment_id,
        run_name=stage,
        parent_run_id=parent_run_id,
        tags={STAGE_TAG: stage, ATTEMPT_TAG: "1"},
        log_system_metrics=log_system_metrics,
    )


def _resume_stage(stage: str, previous, log_system_metrics: bool):
    import mlflow

    attempt = int(previous.data.tags.get(ATTEMPT_TAG, "1")) + 1
    log.info("stage %s: resuming run %s (attempt %d)", stage, previous.info.run_id, attempt)
    return mlflow.start_run(
        run_id=previous.info.run_id, tags={ATTEMPT_TAG: str(attempt)}, log_system_metrics=log_system_metrics
    )


def _stage_child(client, parent, stage: str):
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=(
            f"tags.`{PARENT_RUN_ID_TAG}` = '{parent.info.run_id}' and tags.`{STAGE_TAG}` = '{_quoted(stage)}'"
        ),
        max_results=10,
    )
    return min(runs, key=lambda run: run.info.start_time) if runs else None


def _params_to_add(params: dict[str, str], logged: Mapping[str, str], stage: str) -> dict[str, str]:
    """The params a resumed run lacks; a retry with another config is a caller error."""
    changed = {
        key: (logged[key], value) for key, value in params.items() if key in logged and logged[key] != value
    }
    if changed:
        key, (old, new) = next(iter(changed.items()))
        raise ValueError(
            f"stage {stage!r} is retried with another config: param {key!r} was {old!r}, now {new!r} "
            f"({len(changed)} param(s) differ); MLflow params are immutable, so start a new pipeline run"
        )
    return {key: value for key, value in params.items() if key not in logged}


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested keys joined with "."; lists and tuples as JSON; values cut to MLflow's param length."""
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        flat[name] = _truncate(_param_text(value), MAX_PARAM_VAL_LENGTH)
    return flat


def _param_text(value: Any) -> str:
    if isinstance(value, list | tuple | Mapping):
        return json.dumps(value, default=str, sort_keys=isinstance(value, Mapping))
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED_MARK)] + TRUNCATED_MARK


# ----------------------------------------------------------------------------------------- metrics
def log_step_metrics(records: list[dict[str, Any]], *, step_key: str = "step", prefix: str = "") -> int:
    """Per-step metrics of training log records into the active run; returns how many were logged.

    Numeric fields only (booleans and non-finite numbers are skipped); a record without `step_key`
    is logged at its position in `records`.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    run_id = _active_run_id()
    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(f"{prefix}{key}", float(value), now_ms, int(record.get(step_key, position)))
        for position, record in enumerate(records)
        for key, value in record.items()
        if key != step_key and _is_metric_value(value)
    ]
    client = MlflowClient()
    for start in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])
    return len(metrics)


def _is_metric_value(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _active_run_id() -> str:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call this inside `with stage_run(...)`")
    return run.info.run_id


# ------------------------------------------------------------------------------------ data lineage
def log_data_lineage(
    lineage: Mapping[str, Any], *, name: str = "minimmeb", context: str = "training"
) -> None:
    """Log the DVC-pinned data set of this run as a dataset input, and as `embedrl.data.*` tags.

    `lineage` holds `path` and `md5` (the `.dvc` out's), usually `repo` and `rev` (the git repo and
    commit that pin it), and optionally more (`remote`, `nfiles`, `size`), all recorded in the source.
    """
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    from embedrl.registry.datasets import DvcDatasetSource

    missing = [key for key in ("path", "md5") if not lineage.get(key)]
    if missing:
        raise ValueError(
            f"lineage needs {' and '.join(missing)} (from the .dvc file); got keys {sorted(lineage)}"
        )
    _active_run_id()
    source = DvcDatasetSource.from_dict(dict(lineage))
    dataset = MetaDataset(source, name=name, digest=str(lineage["md5"]).removesuffix(".dir")[:36])
    mlflow.log_input(dataset, context=context)
    mlflow.set_tags({f"{DATA_TAG_PREFIX}{key}": str(value) for key, value in source.to_dict().items()})


# --------------------------------------------------------------------------------------- artifacts
def log_report_artifacts(paths: list[Path], artifact_path: str) -> None:
    """Log files and directories (their contents) under `artifact_path` of the active run."""
    import mlflow

    _active_run_id()
    for path in map(Path, paths):
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=f"{artifact_path}/{path.name}")
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
        else:
            raise FileNotFoundError(f"report artifact {path} does not exist")
