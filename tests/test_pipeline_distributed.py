"""distributed=True: a training step stages its inputs, runs its stage as a TrainJob, fetches the model.

There is no cluster here, so the Kubernetes API is the one stand-in: on create it does what the Trainer
controller would, running the TrainJob's own command (real torchrun, one node, one process) with the
real worker, and it reports the job Complete or Failed from that command's exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MICRO_PROFILE, REPO_ROOT

from embedrl.pipeline.distributed import STAGES, DistributedSettings, run_stage_distributed, stage_trainjob
from embedrl.pipeline.steps import RUN_KEY_ENV, Tracking, load_profile
from embedrl.pipeline.trainjob import TrainJobError

MPIRUN_ONE_NODE = """#!/usr/bin/env bash
# mpirun on a one-node hostfile: drop the options, run the per-node command as MPI rank 0
while [ "$#" -gt 0 ] && [ "$1" != bash ]; do shift; done
OMPI_COMM_WORLD_RANK=0 exec "$@"
"""


class LocalTrainerController:
    """CustomObjectsApi's create/get for TrainJobs, executing the trainer command on this machine.

    For the DeepSpeed (MPI) runtime it provides what the runtime mounts: a one-node hostfile (in place
    of /etc/mpi/hostfile) and an mpirun that starts the per-node command once."""

    def __init__(self, scratch: Path):
        self.jobs: dict[str, dict] = {}
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "hostfile").write_text("127.0.0.1 slots=1\n")
        (scratch / "mpirun").write_text(MPIRUN_ONE_NODE)
        (scratch / "mpirun").chmod(0o755)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        hostfile = str(self.scratch / "hostfile")
        command = [part.replace("/etc/mpi/hostfile", hostfile) for part in body["spec"]["trainer"]["command"]]
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{self.scratch}:{bin_dir}:{os.environ['PATH']}"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        kind = "Complete" if done.returncode == 0 else "Failed"
        self.jobs[body["metadata"]["name"]] = {
            "body": body, "stderr": done.stderr,
            "status": {"conditions": [{"type": kind, "status": "True", "reason": kind,
                                       "message": done.stderr[-3000:]}]}}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": self.jobs[name]["status"]}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.jobs.pop(name, None)


def _settings(tmp_path: Path, **changes) -> DistributedSettings:
    return DistributedSettings.from_dict({"staging_uri": str(tmp_path / "staging"), "num_nodes": 1,
                                         "gpus_per_node": 1, "image": "registry.example/embedrl:test", **changes})


def test_settings_need_a_staging_area_and_known_keys():
    with pytest.raises(ValueError, match="staging_uri"):
        DistributedSettings.from_dict({})
    with pytest.raises(ValueError, match="unknown key"):
        DistributedSettings.from_dict({"staging_uri": "s3://b/p", "gpus": 8})


def test_trainjob_of_each_stage_uses_its_runtime_secrets_and_the_worker(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_KEY_ENV, "run-a")
    for stage, runtime in STAGES.items():
        manifest = stage_trainjob(stage, "s3://bucket/prefix", _settings(tmp_path, num_nodes=4, gpus_per_node=8),
                                  name=f"embedrl-{stage}")
        assert manifest["spec"]["runtimeRef"]["name"] == runtime
        trainer = manifest["spec"]["trainer"]
        assert trainer["numNodes"] == 4 and trainer["image"] == "registry.example/embedrl:test"
        assert "embedrl.pipeline.worker" in " ".join(trainer["command"])
        env = {e["name"]: e for e in trainer["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "embedrl-s3"


@pytest.mark.timeout(900)
def test_embedder_stage_runs_as_a_trainjob_and_its_model_comes_back(prepared_small, tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_KEY_ENV, "run-b")
    config = load_profile(str(MICRO_PROFILE))
    config["embedder"]["max_steps"] = 3
    controller = LocalTrainerController(tmp_path / "controller")
    out = tmp_path / "model"
    settings = _settings(tmp_path, deepspeed_config=str(REPO_ROOT / "infra" / "deepspeed" / "zero2.json"))
    metrics = run_stage_distributed("embedder", settings, inputs={"data": str(prepared_small)},
                                    out_dir=str(out), profile="micro", config=config, seed=0,
                                    tracking=Tracking(), api=controller)
    assert metrics["steps"] == 3 and metrics["first_loss"] > 0
    assert (out / "model.safetensors").is_file() and (out / "embedrl.json").is_file()
    (job,) = controller.jobs.values()
    staged = yaml.safe_load((tmp_path / "staging" / job["body"]["metadata"]["name"].removeprefix("embedrl-")
                             / "spec" / "stage.yaml").read_text())
    assert staged["config"]["embedder"]["max_steps"] == 3 and staged["inputs"] == ["data"]
    log = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert log and log[-1]["step"] == 3


def test_a_failed_trainjob_fails_the_step_with_the_workers_error(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_KEY_ENV, "run-c")
    controller = LocalTrainerController(tmp_path / "controller")
    with pytest.raises(TrainJobError, match="failed"):
        run_stage_distributed("embedder", _settings(tmp_path), inputs={"data": str(tmp_path)},
                              out_dir=str(tmp_path / "model"), profile="micro",
                              config={"embedder": {"max_steps": 1}}, seed=0, tracking=Tracking(), api=controller)
    (job,) = controller.jobs.values()
    assert "models" in job["stderr"] or "Error" in job["stderr"]
