"""MLflow tracking for pipeline runs: one parent run per pipeline run, one child run per stage.

- `pipeline_parent_run` finds or creates the parent run of a Kubeflow run (tag `embedrl.kfp_run_id`);
  every stage of that run, and any retry, gets the same run id.
- `stage_run` opens the child run of a stage under the parent (reusing it on a retry), logs the
  resolved config as flat params and ends the run FINISHED, or FAILED on an exception.
- `log_step_metrics`, `log_summary_metrics`, `log_data_lineage` and `log_report_artifacts` log into
  the active run.
- The tracking server may go away for a while (a restart, a network blip): step metrics are queued per
  run and sent in order once it answers again, retried with exponential backoff for at most
  $EMBEDRL_TRACKING_RETRY_SECONDS (default 300) from the first failure; the stage's end waits for the
  queue. Past that bound `TrackingUnavailableError` names the server, the run and the metrics unsent,
  and carries them. Each attempt is one MLflow request with MLflow's own retries
  (MLFLOW_HTTP_REQUEST_MAX_RETRIES, ..._BACKOFF_FACTOR, ..._TIMEOUT) inside it.
- `redact`: what a param or tag value may show. Every param, tag and lineage field goes through it:
  values under secret-like names (`hub_token`, `api_key`, `password`, ...) become `***`, so do URL
  passwords (`https://user:***@host`), secret-like query parameters and the values of secret-like
  environment variables (AWS_SECRET_ACCESS_KEY, MLFLOW_TRACKING_PASSWORD, ...). A report artifact that
  holds such an environment value is refused.

mlflow is imported inside each function so that importing this module stays cheap.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
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
RETRY_SECONDS_ENV = "EMBEDRL_TRACKING_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 300.0
FIRST_RETRY_DELAY = 1.0  # seconds; doubles after each failed attempt
MAX_RETRY_DELAY = 30.0


class TrackingUnavailableError(RuntimeError):
    """The tracking server stayed unreachable past the retry bound.

    `unsent` holds the step metrics of `run_id` not stored yet, oldest first; they also stay queued,
    so a caller that catches this and goes on loses nothing once the server answers again.
    """

    def __init__(self, message: str, *, tracking_uri: str, run_id: str, unsent: list):
        super().__init__(message)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.unsent = unsent


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
    run_tags = {**redact_mapping(tags or {}), KFP_RUN_ID_TAG: kfp_run_id}
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
    tracking URI of this process. The run ends FINISHED once the step metrics queued during an outage
    of the server are sent (TrackingUnavailableError past the retry bound), or FAILED if the block
    raises; a server that cannot be reached to mark it FAILED leaves it RUNNING, to be resumed.
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
    run_id = run.info.run_id
    try:
        _log_params(client, run_id, params)
        yield run
        flush_step_metrics(run_id)
        if _is_active(run_id):
            _outbox(run_id).retry(lambda: client.set_terminated(run_id, "FINISHED"), "end the run")
    except BaseException:
        _end_failed_run(run_id)
        raise
    _forget_outbox(run_id)
    if _is_active(run_id):
        mlflow.end_run()


def _is_active(run_id: str) -> bool:
    import mlflow

    active = mlflow.active_run()
    return active is not None and active.info.run_id == run_id


def _end_failed_run(run_id: str) -> None:
    """End the run FAILED. If the server is unreachable the run stays RUNNING there (a retried stage
    resumes it, and sends the metrics still queued in this process) and the stage's own error, not
    this one, is what the caller sees."""
    import mlflow

    queued = _forget_outbox(run_id, keep_pending=True)
    if queued:
        log.warning("run %s failed with %d step metric(s) unsent, queued for a retry", run_id, queued)
    if not _is_active(run_id):
        return
    try:
        mlflow.end_run("FAILED")
    except Exception as exc:
        if not _is_unreachable(exc):
            raise
        log.warning(
            "could not mark run %s FAILED on %s, which is unreachable (%s); it stays RUNNING there",
            run_id,
            redact_text(mlflow.get_tracking_uri()),
            _root_cause(exc),
        )


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
    """Nested keys joined with "."; lists and tuples as JSON; values redacted (`redact`), then cut to
    MLflow's param length (in that order, so a cut cannot hide a URL's password from the redaction)."""
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        flat[name] = _truncate(redact(name, _param_text(value)), MAX_PARAM_VAL_LENGTH)
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
    """Per-step metrics of training log records into the active run; returns how many were taken.

    Numeric fields only (booleans and non-finite numbers are skipped); a record without `step_key`
    is logged at its position in `records`. They are sent at once, after any still queued from an
    outage of the server; if the server is unreachable they are queued and the call returns (one
    attempt at most, none while backing off), unless the outage is older than the retry bound:
    then `TrackingUnavailableError`.
    """
    from mlflow.entities import Metric

    run_id = _active_run_id()
    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(f"{prefix}{key}", float(value), now_ms, int(record.get(step_key, position)))
        for position, record in enumerate(records)
        for key, value in record.items()
        if key != step_key and _is_metric_value(value)
    ]
    return _queue_and_send(run_id, metrics)


def log_summary_metrics(values: Mapping[str, Any], *, step: int = 0, prefix: str = "") -> int:
    """A stage's summary metrics (numeric values only) at `step`, queued and retried like the step
    metrics (`mlflow.log_metrics` would fail once MLflow's own HTTP retries run out)."""
    from mlflow.entities import Metric

    run_id = _active_run_id()
    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(f"{prefix}{key}", float(value), now_ms, step)
        for key, value in values.items()
        if _is_metric_value(value)
    ]
    return _queue_and_send(run_id, metrics)


def _queue_and_send(run_id: str, metrics: list) -> int:
    outbox = _outbox(run_id)
    outbox.add(metrics)
    outbox.send(wait=False)
    return len(metrics)


def flush_step_metrics(run_id: str | None = None) -> None:
    """Send the step metrics queued for `run_id` (default: the active run), waiting out an outage of
    the tracking server up to the retry bound; `stage_run` calls it before it ends a run."""
    outbox = _OUTBOXES.get(run_id or _active_run_id())
    if outbox is not None:
        outbox.send(wait=True)


def retry_seconds() -> float:
    """How long calls to an unreachable tracking server are retried: $EMBEDRL_TRACKING_RETRY_SECONDS."""
    from embedrl.config import env_seconds

    return env_seconds(RETRY_SECONDS_ENV, DEFAULT_RETRY_SECONDS)


class _Outbox:
    """The step metrics of one run not yet stored (oldest first) and the state of an outage.

    Resending a batch whose answer was lost is harmless: the metrics keep their timestamps, and MLflow's
    SQL store keeps one row per (key, step, timestamp, value).
    """

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.pending: deque = deque()
        self.lock = threading.RLock()
        self._client = MlflowClient(tracking_uri)
        self._down_since: float | None = None  # monotonic time of the first failure of this outage
        self._next_try = 0.0
        self._delay = FIRST_RETRY_DELAY

    def add(self, metrics: list) -> None:
        with self.lock:
            self.pending.extend(metrics)

    def send(self, *, wait: bool) -> None:
        """Send the queue in order. Without `wait`: one attempt at most, none while backing off."""
        with self.lock:
            if self.pending:
                self.retry(self._send_pending, "send step metrics", wait=wait)

    def retry(self, call: Callable[[], object], what: str, *, wait: bool = True) -> bool:
        """Run `call`, retrying while the server is unreachable; False if deferred (not `wait`)."""
        with self.lock:
            while True:
                pause = self._next_try - time.monotonic()
                if pause > 0:
                    if not wait:
                        return False
                    time.sleep(pause)
                try:
                    call()
                except Exception as exc:
                    if not _is_unreachable(exc):
                        raise
                    self._failed(exc, what)
                    if not wait:
                        return False
                else:
                    self._recovered()
                    return True

    def _send_pending(self) -> None:
        while self.pending:
            batch = list(itertools.islice(self.pending, METRICS_PER_BATCH))
            self._client.log_batch(self.run_id, metrics=batch)
            for _ in batch:
                self.pending.popleft()

    def _failed(self, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        limit = retry_seconds()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "tracking server %s unreachable (%s); run %s: %d step metric(s) queued, retrying for up to %.0f s",
                redact_text(self.tracking_uri), _root_cause(exc), self.run_id, len(self.pending), limit,
            )  # fmt: skip
        elapsed = now - self._down_since
        # the last wait ends at the bound, so that the last attempt is made there
        self._next_try = now + (self._delay if elapsed >= limit else min(self._delay, limit - elapsed))
        self._delay = min(self._delay * 2, MAX_RETRY_DELAY)
        if elapsed >= limit:
            raise TrackingUnavailableError(
                self._unavailable_message(exc, what, elapsed, limit),
                tracking_uri=self.tracking_uri,
                run_id=self.run_id,
                unsent=list(self.pending),
            ) from exc

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning(
                "tracking server %s answers again after %.0f s; run %s: queued step metrics sent",
                redact_text(self.tracking_uri), time.monotonic() - self._down_since, self.run_id,
            )  # fmt: skip
        self._down_since, self._next_try, self._delay = None, 0.0, FIRST_RETRY_DELAY

    def _unavailable_message(self, exc: BaseException, what: str, elapsed: float, limit: float) -> str:
        uri = redact_text(self.tracking_uri)
        steps = sorted({metric.step for metric in self.pending})
        span = f" (steps {steps[0]}..{steps[-1]})" if steps else ""
        unsent = f"{len(self.pending)} step metric(s) unsent{span}"
        return (
            f"MLflow tracking server {uri} unreachable for {elapsed:.0f} s (limit {limit:.0f} s, "
            f"${RETRY_SECONDS_ENV}) trying to {what} of run {self.run_id}: {unsent}. They stay queued in "
            "this process and are sent in order by the next log_step_metrics or the end of the stage once "
            "the server answers (the error's `unsent` holds them too). Check that the server is up "
            f"({uri}/health) and reachable, or raise ${RETRY_SECONDS_ENV}. Last error: {_root_cause(exc)}"
        )


_OUTBOXES: dict[str, _Outbox] = {}
_OUTBOXES_LOCK = threading.Lock()


def _outbox(run_id: str) -> _Outbox:
    import mlflow

    with _OUTBOXES_LOCK:
        if run_id not in _OUTBOXES:
            _OUTBOXES[run_id] = _Outbox(mlflow.get_tracking_uri(), run_id)
        return _OUTBOXES[run_id]


def _forget_outbox(run_id: str, *, keep_pending: bool = False) -> int:
    """Drop the run's outbox (kept if it holds metrics and `keep_pending`); returns how many it held."""
    with _OUTBOXES_LOCK:
        outbox = _OUTBOXES.get(run_id)
        queued = len(outbox.pending) if outbox is not None else 0
        if outbox is not None and not (keep_pending and queued):
            del _OUTBOXES[run_id]
        return queued


def _is_unreachable(exc: BaseException) -> bool:
    """Whether an MLflow call failed for want of a server (refused, reset, timed out, 5xx after retries)."""
    import requests

    transient = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        ConnectionError,
        TimeoutError,
    )
    return any(isinstance(cause, transient) for cause in _causes(exc))


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _root_cause(exc: BaseException) -> str:
    root = _causes(exc)[-1]
    return _truncate(f"{type(root).__name__}: {root}", 300)


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
    source = DvcDatasetSource.from_dict(
        {key: redact(key, value) if isinstance(value, str) else value for key, value in lineage.items()}
    )
    dataset = MetaDataset(source, name=name, digest=str(lineage["md5"]).removesuffix(".dir")[:36])
    mlflow.log_input(dataset, context=context)
    mlflow.set_tags({f"{DATA_TAG_PREFIX}{key}": str(value) for key, value in source.to_dict().items()})


# --------------------------------------------------------------------------------------- artifacts
def log_report_artifacts(paths: list[Path], artifact_path: str) -> None:
    """Log files and directories (their contents) under `artifact_path` of the active run.

    Files are uploaded as they are, so a file that holds the value of a secret-like environment
    variable is refused (ValueError naming the file and the variable) before anything is uploaded.
    """
    import mlflow

    _active_run_id()
    for path in map(Path, paths):
        _refuse_secret_files(path)
    for path in map(Path, paths):
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=f"{artifact_path}/{path.name}")
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
        else:
            raise FileNotFoundError(f"report artifact {path} does not exist")


# --------------------------------------------------------------------------------------- redaction
REDACTED = "***"
MIN_SECRET_LENGTH = 8  # shorter environment values are not masked: "abc" would mask half the config
_SECRET_WORDS = frozenset({"secret", "password", "passwd", "credential", "credentials", "apikey", "signature"})
_KEY_KINDS = frozenset({"api", "access", "private"})  # api_key, access_key (AWS_ACCESS_KEY_ID), private_key
_TOKENIZER_TOKENS = frozenset({"bos", "eos", "pad", "unk", "sep", "cls", "mask", "emb"})  # eos_token: no secret
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):(?P<password>[^\s/]+)@")
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[^=&#\s]+)=)(?P<value>[^&#\s\"']*)")


def is_secret_name(name: str) -> bool:
    """Whether a param, tag, query or environment variable name says its value is a credential."""
    words = [word for word in re.split(r"[^a-z0-9]+", name.lower()) if word]
    if _SECRET_WORDS.intersection(words):
        return True
    if any(kind in _KEY_KINDS and word == "key" for kind, word in itertools.pairwise(words)):
        return True
    return bool(words) and words[-1] == "token" and (len(words) == 1 or words[-2] not in _TOKENIZER_TOKENS)


def redact(name: str, value: str) -> str:
    """`value` as it may be logged under `name`: `***` for a set secret, else `redact_text(value)`."""
    if is_secret_name(name) and value not in ("", "None"):
        return REDACTED
    return redact_text(value)


def redact_text(text: str) -> str:
    """`text` with URL passwords, secret-like query values and secret environment values masked."""
    text = _URL_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)
    text = _QUERY_PARAM.sub(
        lambda m: m["head"] + REDACTED if m["value"] and is_secret_name(m["name"]) else m[0], text
    )
    for value in _secret_environment().values():
        text = text.replace(value, REDACTED)
    return text


def redact_mapping(values: Mapping[str, Any]) -> dict[str, str]:
    return {key: redact(key, str(value)) for key, value in values.items()}


def _secret_environment() -> dict[str, str]:
    """Secret-like environment variables (name -> value), longest values first so none is half-masked."""
    found = {
        name: value
        for name, value in os.environ.items()
        if len(value) >= MIN_SECRET_LENGTH and is_secret_name(name)
    }
    return dict(sorted(found.items(), key=lambda item: -len(item[1])))


def _refuse_secret_files(path: Path) -> None:
    secrets = {name: value.encode() for name, value in _secret_environment().items()}
    if not secrets:
        return
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        content = file.read_bytes()
        held = sorted(name for name, value in secrets.items() if value in content)
        if held:
            raise ValueError(
                f"refusing to log artifact {file}: it holds the value of ${', $'.join(held)}; remove the "
                f"secret from the file (artifacts are uploaded as they are)"
            )
