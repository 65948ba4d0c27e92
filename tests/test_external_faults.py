"""External faults with real servers: the MLflow tracking server and the S3 endpoint go away and come back.

- MLflow: `mlflow server` (sqlite store, artifacts in a moto S3) is stopped in the middle of a stage
  while per-step metrics keep being logged through `log_step_metrics` (what the stages use), then
  started again on the same port and store. Every step must arrive, or, past the retry bound, the stage
  fails with `TrackingUnavailableError` and a retried stage resumes the run and sends what was queued.
- S3: the moto endpoint holding a pushed DVC remote is stopped while `fetch_pinned` reads a pinned
  revision. The moto server runs in a thread of this process, so its objects survive the restart the
  way a real bucket survives an outage of its endpoint: stop() closes the listening socket (clients
  get "connection refused"), start() opens it again on the same port with the same objects.

MLflow's and botocore's own HTTP retries are cut to one quick retry so that the retries measured here
are embedrl's (EMBEDRL_TRACKING_RETRY_SECONDS, EMBEDRL_DATA_RETRY_SECONDS).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from faults_table import record_fault
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow_servers import MotoS3, mlflow_tracking_server
from test_dvc_remote import DVC, clone, commit_all, git_repo, run

from embedrl.data.dvc_source import DataFetchError, fetch_pinned
from embedrl.data.versioning import directory_hash
from embedrl.registry.tracking import (
    RETRY_SECONDS_ENV,
    TrackingUnavailableError,
    log_report_artifacts,
    log_step_metrics,
    log_summary_metrics,
    pipeline_parent_run,
    stage_run,
)

pytestmark = pytest.mark.slow

EXPERIMENT = "embedrl-external-faults"
ARTIFACT_BUCKET = "mlflow-artifacts"
DATA_BUCKET = "embedrl-faults-data"
REMOTE_URL = f"s3://{DATA_BUCKET}/dvcstore"
TRACKING_OUTAGE_SECONDS = 3.0  # metrics are logged this long while the server is down
TRACKING_BOUND_SECONDS = 2.0  # the retry bound of the test where the outage outlasts it
S3_OUTAGE_SECONDS = 3.0
STEP_PAUSE = 0.2  # between two training steps


def quiet_werkzeug() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs one line per request


# --------------------------------------------------------------------------------- MLflow outage
@pytest.fixture(scope="module")
def artifact_s3():
    quiet_werkzeug()
    with MotoS3() as s3:
        s3.create_bucket(ARTIFACT_BUCKET)
        yield s3


@pytest.fixture(scope="module")
def tracking_server(artifact_s3, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mlflow-server")
    server = mlflow_tracking_server(
        workdir, artifacts_destination=f"s3://{ARTIFACT_BUCKET}/mlflow", s3=artifact_s3
    )
    with server:
        yield server


@pytest.fixture
def tracking_uri(tracking_server, monkeypatch):
    """The server, running; this process as a client with MLflow's own HTTP retries cut short."""
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv(RETRY_SECONDS_ENV, "90")  # longer than a restart of the server (10-20 s)
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    tracking_server.start()  # a no-op when it runs; a test that failed mid-outage may have left it down
    yield tracking_server.url
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def train_steps(steps: range, prefix: str) -> list[int]:
    """A training loop's logging: one record per step, as a stage's logger would send it."""
    for step in steps:
        log_step_metrics([{"step": step, "loss": 1.0 / (step + 1), "lr": 1e-3}], prefix=prefix)
        time.sleep(STEP_PAUSE)
    return list(steps)


def stored_steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(metric.step for metric in MlflowClient(uri).get_metric_history(run_id, key))


def test_metrics_logged_while_the_tracking_server_restarts_all_arrive(
    tracking_uri, tracking_server, artifact_s3, tmp_path
):
    report = tmp_path / "report.md"
    report.write_text("# after the restart\n")
    config = {"embedder": {"max_steps": 40}}
    with stage_run(tracking_uri, None, "train_embedder", config=config, experiment=EXPERIMENT) as run:
        logged = train_steps(range(0, 5), "embedder/")
        tracking_server.stop()
        down_at = time.monotonic()
        step = len(logged)
        while time.monotonic() - down_at < TRACKING_OUTAGE_SECONDS:
            logged += train_steps(range(step, step + 1), "embedder/")
            step += 1
        before_restart = len(logged)
        log_summary_metrics({"steps_before_restart": before_restart}, prefix="embedder/")
        tracking_server.start()
        downtime = time.monotonic() - down_at
        logged += train_steps(range(step, step + 5), "embedder/")
        log_report_artifacts([report], "report")

    run_id = run.info.run_id
    assert stored_steps(tracking_uri, run_id, "embedder/loss") == logged  # none lost, none twice
    assert stored_steps(tracking_uri, run_id, "embedder/lr") == logged
    finished = MlflowClient(tracking_uri).get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics["embedder/steps_before_restart"] == before_restart
    assert finished.data.params["embedder.max_steps"] == "40"
    artifacts = [item.path for item in MlflowClient(tracking_uri).list_artifacts(run_id, "report")]
    assert artifacts == ["report/report.md"]
    assert any(
        key.endswith(f"{run_id}/artifacts/report/report.md") for key in artifact_s3.keys(ARTIFACT_BUCKET)
    )
    record_fault(
        "MLflow tracking server stopped in a stage, restarted on the same port and store",
        f"`log_step_metrics` per step; {before_restart - 5} of {len(logged)} steps logged while the server was "
        f"down ({downtime:.0f} s, restart included)",
        f"all {len(logged)} steps stored once each, in order; run FINISHED; an artifact logged after the "
        "restart reached S3",
    )


def test_tracking_outage_past_the_bound_fails_the_stage_clearly_and_its_retry_resumes(
    tracking_uri, tracking_server, monkeypatch
):
    monkeypatch.setenv(RETRY_SECONDS_ENV, str(TRACKING_BOUND_SECONDS))
    parent = pipeline_parent_run(tracking_uri, EXPERIMENT, "kfp-tracking-outage")
    config = {"sft": {"max_steps": 200}}
    logged: list[int] = []
    with pytest.raises(TrackingUnavailableError) as caught:
        with stage_run(tracking_uri, parent, "sft", config=config, log_system_metrics=False) as first:
            logged += train_steps(range(0, 3), "sft/")
            tracking_server.stop()
            for step in range(3, 200):
                logged.append(step)
                train_steps(range(step, step + 1), "sft/")
    error = caught.value
    unsent_steps = sorted({metric.step for metric in error.unsent})
    message = str(error)

    assert not isinstance(error, MlflowException)
    assert unsent_steps == logged[3:]  # what the server missed is held, nothing dropped
    assert tracking_uri in message and first.info.run_id in message and RETRY_SECONDS_ENV in message
    assert f"{len(error.unsent)} step metric(s) unsent" in message and "/health" in message
    assert "Connection refused" in message
    assert (error.tracking_uri, error.run_id) == (tracking_uri, first.info.run_id)

    monkeypatch.setenv(RETRY_SECONDS_ENV, "90")
    tracking_server.start()
    with stage_run(tracking_uri, parent, "sft", config=config, log_system_metrics=False) as retry:
        logged += train_steps(range(logged[-1] + 1, logged[-1] + 4), "sft/")

    assert retry.info.run_id == first.info.run_id
    assert stored_steps(tracking_uri, retry.info.run_id, "sft/loss") == logged
    resumed = MlflowClient(tracking_uri).get_run(retry.info.run_id)
    assert (resumed.info.status, resumed.data.tags["embedrl.attempt"]) == ("FINISHED", "2")
    record_fault(
        f"MLflow tracking server down longer than the retry bound ({TRACKING_BOUND_SECONDS:.0f} s)",
        f"`log_step_metrics` per step while the server was down; {len(unsent_steps)} steps queued",
        "the stage failed with TrackingUnavailableError naming the server, the run and the unsent metrics "
        "(which it carries); after a restart the retried stage resumed the run (attempt 2), sent them "
        f"and ended FINISHED with all {len(logged)} steps",
    )


# ------------------------------------------------------------------------------------- S3 outage
@pytest.fixture(scope="module")
def dvc_env(tmp_path_factory):
    """HOME, XDG and DVC dirs in tmp, fake AWS keys, botocore's own retries cut to one attempt."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        for name, value in {
            "HOME": home,
            "XDG_CONFIG_HOME": home / "config",
            "XDG_CACHE_HOME": home / "cache",
            "DVC_GLOBAL_CONFIG_DIR": home / "dvc-global",
            "DVC_SYSTEM_CONFIG_DIR": home / "dvc-system",
            "DVC_SITE_CACHE_DIR": home / "dvc-site",
            "DVC_NO_ANALYTICS": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
        }.items():
            patch.setenv(name, str(value))
        yield


@pytest.fixture(scope="module")
def data_s3(dvc_env):
    quiet_werkzeug()
    with MotoS3() as s3:
        s3.create_bucket(DATA_BUCKET)
        yield s3


@dataclass(frozen=True)
class PushedRepo:
    root: Path  # what `clone` of test_dvc_remote needs
    v1: str  # the commit sha of tag v1
    md5: str  # the pinned directory hash


@pytest.fixture(scope="module")
def origin(data_s3, tmp_path_factory) -> PushedRepo:
    """A git + DVC repo whose `data` (tag v1) is pushed to the moto remote."""
    root = tmp_path_factory.mktemp("origin")
    git_repo(root)
    run(DVC, "init", "-q", cwd=root)
    run(DVC, "remote", "add", "-d", "store", REMOTE_URL, cwd=root)
    run(DVC, "remote", "modify", "--local", "store", "endpointurl", data_s3.endpoint_url, cwd=root)
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "records.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(50)))
    for i in range(4):
        (data / "images" / f"{i}.bin").write_bytes(bytes([i]) * 4096)
    run(DVC, "add", "-q", "data", cwd=root)
    v1 = commit_all(root, "data v1", "v1")
    run(DVC, "push", "-q", cwd=root)
    return PushedRepo(root, v1, directory_hash(data).md5)


@pytest.fixture
def fresh_clone(origin, tmp_path) -> Path:
    """A clone with an empty DVC cache: every object has to come from S3."""
    return clone(origin, tmp_path / "clone")


def test_s3_back_within_the_retry_window_the_pinned_read_succeeds(
    origin, data_s3, fresh_clone, tmp_path, caplog
):
    data_s3.stop()
    restart = threading.Timer(S3_OUTAGE_SECONDS, data_s3.start)
    started = time.monotonic()
    restart.start()
    try:
        with caplog.at_level(logging.WARNING, logger="embedrl.data.dvc_source"):
            lineage = fetch_pinned(
                str(fresh_clone), "data", tmp_path / "out", rev="v1",
                remote_config={"endpointurl": data_s3.endpoint_url}, retry_seconds=60,
            )  # fmt: skip
    finally:
        restart.join()
    took = time.monotonic() - started

    assert (lineage.rev, lineage.md5) == (origin.v1, origin.md5)
    assert directory_hash(tmp_path / "out").md5 == origin.md5
    assert took >= S3_OUTAGE_SECONDS
    retries = [r for r in caplog.records if "unreachable" in r.getMessage() and "retrying" in r.getMessage()]
    assert retries, "the read succeeded without ever retrying: the outage was not seen"
    record_fault(
        "S3 endpoint of the DVC remote down while data prep reads a pinned revision, back within the "
        "retry window",
        f"`fetch_pinned` from a fresh clone (empty cache); endpoint restarted after {S3_OUTAGE_SECONDS:.0f} s, "
        "same port, same objects",
        f"{len(retries)} retries with backoff, then the read succeeded ({took:.0f} s) and the copy hashes to "
        "the pinned md5",
    )


def test_s3_down_past_the_retry_window_gives_a_clear_error(origin, data_s3, fresh_clone, tmp_path):
    window = 2.0
    data_s3.stop()
    started = time.monotonic()
    try:
        with pytest.raises(DataFetchError) as caught:
            fetch_pinned(
                str(fresh_clone), "data", tmp_path / "out", rev="v1",
                remote_config={"endpointurl": data_s3.endpoint_url}, retry_seconds=window,
            )  # fmt: skip
    finally:
        data_s3.start()
    took = time.monotonic() - started

    message = str(caught.value)
    assert message.startswith(f"cannot fetch repo {fresh_clone}")
    assert REMOTE_URL in message and data_s3.endpoint_url in message
    assert origin.v1 in message and "path data" in message
    assert "unreachable" in message and "check that the S3 endpoint is up" in message
    assert "EMBEDRL_DATA_RETRY_SECONDS" in message and "times over" in message
    assert window <= took < window + 15
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    record_fault(
        f"S3 endpoint of the DVC remote down longer than the retry window ({window:.0f} s)",
        "`fetch_pinned` from a fresh clone (empty cache)",
        f"DataFetchError after {took:.0f} s naming the remote URL, the endpoint, the rev and path, the "
        "retries and what to check; no partial output left",
    )
