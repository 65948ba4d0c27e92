"""MLflow tracking against a real sqlite store: parent and stage runs, params, metrics, lineage."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from embedrl.registry.tracking import (
    KFP_RUN_ID_TAG,
    STAGE_TAG,
    find_parent_run,
    finish_parent_run,
    flatten_params,
    log_data_lineage,
    log_report_artifacts,
    log_step_metrics,
    pipeline_parent_run,
    stage_run,
)

EXPERIMENT = "embedrl-test"
LINEAGE = {
    "repo": "https://git.example.com/embedrl.git",
    "rev": "0123456789abcdef0123456789abcdef01234567",
    "path": "data",
    "md5": "2f1e1d1c0b0a09080706050403020100.dir",
    "nfiles": 21,
}


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    """One sqlite store for the module (creating its schema takes seconds); tests use their own runs."""
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


@pytest.fixture
def tracking_uri(store_uri, tmp_path, monkeypatch) -> str:
    """The store, with artifacts under tmp_path (the default artifact root is ./mlruns)."""
    monkeypatch.chdir(tmp_path)
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    yield store_uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def parent(tracking_uri, request) -> str:
    return pipeline_parent_run(tracking_uri, EXPERIMENT, request.node.name, tags={"embedrl.profile": "micro"})


def test_parent_run_is_created_once_per_pipeline_run(tracking_uri, parent, request) -> None:
    kfp_run_id = request.node.name
    assert pipeline_parent_run(tracking_uri, EXPERIMENT, kfp_run_id) == parent
    other = pipeline_parent_run(tracking_uri, EXPERIMENT, "another-kfp-run")
    assert other != parent
    run = MlflowClient(tracking_uri).get_run(parent)
    assert run.data.tags[KFP_RUN_ID_TAG] == kfp_run_id
    assert run.data.tags["embedrl.profile"] == "micro"
    assert find_parent_run(tracking_uri, EXPERIMENT, kfp_run_id).info.run_id == parent
    assert find_parent_run(tracking_uri, EXPERIMENT, "never-ran") is None


def test_racing_callers_agree_on_one_parent_run(tracking_uri) -> None:
    pipeline_parent_run(tracking_uri, EXPERIMENT, "warm-up")  # creates the experiment and the schema
    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(lambda _: pipeline_parent_run(tracking_uri, EXPERIMENT, "kfp-race"), range(4)))
    assert len(ids) == 1
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    live = client.search_runs([experiment_id], f"tags.`{KFP_RUN_ID_TAG}` = 'kfp-race'")
    assert [run.info.run_id for run in live] == list(ids)


def test_finish_parent_run_sets_its_status(tracking_uri, parent, request) -> None:
    finish_parent_run(tracking_uri, EXPERIMENT, request.node.name, status="FAILED")
    assert MlflowClient(tracking_uri).get_run(parent).info.status == "FAILED"
    finish_parent_run(tracking_uri, EXPERIMENT, "no-such-run")  # nothing to end, no error


def test_stage_run_is_a_child_with_flat_params(tracking_uri, parent) -> None:
    config = {
        "embedder": {"learning_rate": 1e-3, "lora": {"r": 8, "targets": ["q_proj", "v_proj"]}},
        "seed": 0,
        "note": "x" * (MAX_PARAM_VAL_LENGTH + 50),
        "empty": {},
    }
    with stage_run(tracking_uri, parent, "train_embedder", config=config) as run:
        assert mlflow.active_run().info.run_id == run.info.run_id
    finished = MlflowClient(tracking_uri).get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["mlflow.parentRunId"] == parent
    assert finished.data.tags[STAGE_TAG] == "train_embedder"
    params = finished.data.params
    assert params["embedder.learning_rate"] == "0.001"
    assert params["embedder.lora.r"] == "8"
    assert json.loads(params["embedder.lora.targets"]) == ["q_proj", "v_proj"]
    assert params["empty"] == "{}"
    assert len(params["note"]) == MAX_PARAM_VAL_LENGTH and params["note"].endswith("...")


def test_stage_run_fails_when_its_block_raises(tracking_uri, parent) -> None:
    with pytest.raises(ZeroDivisionError):
        with stage_run(tracking_uri, parent, "eg_rl", config={}, log_system_metrics=False) as run:
            1 / 0  # noqa: B018
    assert MlflowClient(tracking_uri).get_run(run.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_retried_stage_resumes_its_run_and_rejects_another_config(tracking_uri, parent) -> None:
    config = {"sft": {"max_steps": 12}}
    with pytest.raises(RuntimeError):
        with stage_run(tracking_uri, parent, "sft", config=config, log_system_metrics=False) as first:
            raise RuntimeError("pod evicted")
    with stage_run(tracking_uri, parent, "sft", config=config, log_system_metrics=False) as retry:
        pass
    assert retry.info.run_id == first.info.run_id
    run = MlflowClient(tracking_uri).get_run(retry.info.run_id)
    assert (run.info.status, run.data.tags["embedrl.attempt"]) == ("FINISHED", "2")
    with pytest.raises(ValueError, match="sft.max_steps"):
        with stage_run(
            tracking_uri, parent, "sft", config={"sft": {"max_steps": 99}}, log_system_metrics=False
        ):
            pass


def test_stage_run_without_parent_is_a_top_level_run(tracking_uri) -> None:
    with stage_run(
        tracking_uri, None, "evaluate", config={"a": 1}, experiment="solo", log_system_metrics=False
    ) as run:
        pass
    got = MlflowClient(tracking_uri).get_run(run.info.run_id)
    assert "mlflow.parentRunId" not in got.data.tags
    assert MlflowClient(tracking_uri).get_experiment(got.info.experiment_id).name == "solo"


def test_step_metrics_are_batched_and_numeric_only(tracking_uri, parent) -> None:
    records = [
        {
            "step": step,
            "loss": 1.0 / (step + 1),
            "lr": 1e-3,
            "grad_norm": 0.5,
            "phase": "train",
            "nan": float("nan"),
            "done": False,
        }
        for step in range(0, 800, 2)
    ]  # 400 records x 3 numeric fields: two log_batch requests
    with stage_run(tracking_uri, parent, "train_embedder", config={}, log_system_metrics=False) as run:
        assert log_step_metrics(records, prefix="train/") == 1200
    client = MlflowClient(tracking_uri)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(0, 800, 2))
    assert {m.step: m.value for m in history}[4] == pytest.approx(0.2)
    logged = set(client.get_run(run.info.run_id).data.metrics)
    assert logged == {"train/loss", "train/lr", "train/grad_norm"}


def test_data_lineage_is_a_dataset_input_and_tags(tracking_uri, parent) -> None:
    with stage_run(tracking_uri, parent, "data_prep", config={}, log_system_metrics=False) as run:
        log_data_lineage(LINEAGE)
    got = MlflowClient(tracking_uri).get_run(run.info.run_id)
    (dataset_input,) = got.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.source_type) == ("minimmeb", "dvc")
    assert dataset.digest == "2f1e1d1c0b0a09080706050403020100"
    assert json.loads(dataset.source) == {**LINEAGE}
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "training"
    source = mlflow.data.get_source(dataset_input)
    assert (source.repo, source.rev, source.path, source.md5) == (
        LINEAGE["repo"],
        LINEAGE["rev"],
        LINEAGE["path"],
        LINEAGE["md5"],
    )
    assert got.data.tags["embedrl.data.md5"] == LINEAGE["md5"]
    assert got.data.tags["embedrl.data.rev"] == LINEAGE["rev"]


def test_data_lineage_without_md5_names_the_field(tracking_uri, parent) -> None:
    with stage_run(tracking_uri, parent, "data_prep", config={}, log_system_metrics=False):
        with pytest.raises(ValueError, match="md5"):
            log_data_lineage({"path": "data", "repo": "r"})


def test_report_files_and_directories_become_artifacts(tracking_uri, parent, tmp_path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# scores\n")
    (report / "metrics.json").write_text("{}\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text("seed: 0\n")
    with stage_run(tracking_uri, parent, "evaluate", config={}, log_system_metrics=False) as run:
        log_report_artifacts([report, config_file], "reports")
        with pytest.raises(FileNotFoundError):
            log_report_artifacts([tmp_path / "missing.md"], "reports")
    client = MlflowClient(tracking_uri)
    top = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert top == {"reports/report", "reports/config.yaml"}
    inner = {a.path for a in client.list_artifacts(run.info.run_id, "reports/report")}
    assert inner == {"reports/report/report.md", "reports/report/metrics.json"}


def test_logging_outside_a_stage_run_says_so(tracking_uri) -> None:
    with pytest.raises(RuntimeError, match="stage_run"):
        log_step_metrics([{"step": 0, "loss": 1.0}])


def test_flatten_params_keeps_scalars_and_paths_readable(tmp_path) -> None:
    flat = flatten_params({"a": {"b": None, "c": True}, "path": tmp_path, "pair": (1, 2)})
    assert flat == {"a.b": "None", "a.c": "True", "path": tmp_path.as_posix(), "pair": "[1, 2]"}
