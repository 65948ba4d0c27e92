"""The Kubeflow pipeline: compiled spec (fresh, DAG shape, cluster settings) and a real local run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MICRO_PROFILE, REPO_ROOT

COMPILED = REPO_ROOT / "pipelines" / "embedrl_pipeline.yaml"
TRAINING_TASKS = ("train-embedder", "sft-cold-start", "eg-rl", "evaluate")
ALL_TASKS = ("data-prep", *TRAINING_TASKS, "register")


def _compile(tmp_path: Path, image: str | None = None) -> dict:
    out = tmp_path / "pipeline.yaml"
    env = {**os.environ, "EMBEDRL_IMAGE": image} if image else {k: v for k, v in os.environ.items()
                                                                 if k != "EMBEDRL_IMAGE"}
    subprocess.run([sys.executable, "-m", "embedrl.cli", "pipeline", "compile", "--out", str(out)],
                   cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, list[dict]]:
    path = _compile(tmp_path_factory.mktemp("compiled"))
    return path, list(yaml.safe_load_all(path.read_text()))


def test_committed_pipeline_yaml_is_fresh(compiled):
    path, _ = compiled
    assert COMPILED.read_text() == path.read_text(), (
        "pipelines/embedrl_pipeline.yaml is stale: run `embedrl pipeline compile` and commit it")


def test_dag_reads_data_prep_then_parallel_training_then_rl_eval_register(compiled):
    spec, _platform = compiled[1]
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(ALL_TASKS)
    deps = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert deps["data-prep"] == set()
    assert deps["train-embedder"] == {"data-prep"} and deps["sft-cold-start"] == {"data-prep"}
    assert deps["eg-rl"] == {"data-prep", "train-embedder", "sft-cold-start"}
    assert deps["evaluate"] >= {"eg-rl", "train-embedder"}
    assert deps["register"] >= {"evaluate", "eg-rl"}
    for name, task in tasks.items():
        assert task["retryPolicy"]["maxRetryCount"] == 2, name
        assert task.get("cachingOptions", {}).get("enableCache", True) is not False, name


def test_every_step_runs_in_the_project_image_without_installing_kfp(compiled, tmp_path):
    spec, _ = compiled[1]
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor["container"]
        assert container["image"] == "ghcr.io/embedrl/embedrl:0.1.0"
        assert "pip install" not in " ".join(container["command"])
    other = yaml.safe_load_all(_compile(tmp_path, image="registry.example/embedrl:test").read_text())
    images = {e["container"]["image"] for e in next(other)["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/embedrl:test"}


def test_cluster_settings_gpus_secrets_scheduling_from_parameters(compiled):
    spec, platform = compiled[1]
    executors = spec["deploymentSpec"]["executors"]
    for task in TRAINING_TASKS:
        resources = executors[f"exec-{task}"]["container"]["resources"]
        assert resources["accelerator"] == {"resourceType": "{{$.inputs.parameters['pipelinechannel--accelerator']}}",
                                            "resourceCount": "{{$.inputs.parameters['pipelinechannel--gpus']}}"}, task
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task in ALL_TASKS:
        config = k8s[f"exec-{task}"]
        secrets = {json.dumps(s.get("secretNameParameter", s.get("secretName"))) for s in config["secretAsEnv"]}
        assert len(secrets) == 2, (task, secrets)
        assert any(f["name"] == "EMBEDRL_PIPELINE_RUN" for f in config["fieldPathAsEnv"]), task
    for task in TRAINING_TASKS:
        config = k8s[f"exec-{task}"]
        assert "nodeSelector" in config and "tolerations" in config, task
    for task in ("train-embedder", "sft-cold-start", "eg-rl"):  # checkpoints outlive a preempted pod
        mounts = k8s[f"exec-{task}"]["pvcMount"]
        assert [m["mountPath"] for m in mounts] == ["/embedrl-checkpoints"], task
        env = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]["env"]
        assert {"name": "EMBEDRL_CHECKPOINT_ROOT", "value": "/embedrl-checkpoints"} in env, task


def test_stage_workdir_persists_on_the_checkpoint_volume_until_the_stage_succeeds(tmp_path, monkeypatch):
    from embedrl.pipeline.steps import CHECKPOINT_ROOT_ENV, RUN_KEY_ENV, stage_workdir

    monkeypatch.setenv(CHECKPOINT_ROOT_ENV, str(tmp_path))
    monkeypatch.setenv(RUN_KEY_ENV, "run-1")
    with pytest.raises(RuntimeError), stage_workdir("eg_rl") as work:  # the killed / failed attempt
        (work / "checkpoints").mkdir()
        raise RuntimeError("preempted")
    assert (tmp_path / "run-1" / "eg_rl" / "checkpoints").is_dir()
    with stage_workdir("eg_rl") as work:  # the retry finds them, then succeeds
        assert (work / "checkpoints").is_dir()
    assert not (tmp_path / "run-1" / "eg_rl").exists()
    monkeypatch.setenv(CHECKPOINT_ROOT_ENV, str(tmp_path / "not-mounted"))
    with stage_workdir("eg_rl") as work:
        assert not str(work).startswith(str(tmp_path))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_local_run_completes_six_stages_tracks_them_and_registers(tmp_path):
    """The whole DAG under kfp.local on a small MiniMMEB with the micro profile; then a rerun that
    reuses every step from the cache and registers nothing new."""
    from mlflow import MlflowClient

    from embedrl.pipeline.dag import RunParameters, run_local
    from embedrl.pipeline.steps import DataSource

    params = RunParameters(profile=str(MICRO_PROFILE), data=DataSource(size="small"),
                           overrides={"eval": {"max_queries": 8}}, model_name="embedrl-test")
    first = run_local(tmp_path / "work", params)
    assert first.mlflow["status"] == "FINISHED"
    assert set(first.mlflow["stages"]) == {"data_prep", "train_embedder", "sft_cold_start", "eg_rl", "evaluate",
                                           "register"}
    assert all(s["status"] == "FINISHED" for s in first.mlflow["stages"].values())
    assert first.mlflow["aliases"] == {"champion": 1, "challenger": 1}
    client = MlflowClient(first.tracking_uri)
    embedder_run = client.get_run(first.mlflow["stages"]["train_embedder"]["run_id"])
    assert embedder_run.data.params["embedder.max_steps"] == "16"
    history = client.get_metric_history(embedder_run.info.run_id, "embedder/loss")
    assert len(history) >= 2
    assert client.get_run(first.mlflow["stages"]["data_prep"]["run_id"]).inputs.dataset_inputs

    second = run_local(tmp_path / "work", RunParameters(**{**params.__dict__, "tracking_uri": first.tracking_uri}))
    assert second.seconds < first.seconds / 3, (first.seconds, second.seconds)
    assert second.mlflow["stages"] == {}, "cached steps must not run again"
    versions = client.search_model_versions("name = 'embedrl-test'")
    assert len(versions) == 1
