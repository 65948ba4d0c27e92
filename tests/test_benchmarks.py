"""The GPU check script runs its whole path on CPU at tiny size (the GPU numbers are in docs/gpu.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def test_gpu_check_refuses_the_2b_size_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the 2B check would run for minutes")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stderr


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu_reports_every_number(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--size", "tiny"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["size"] == "tiny" and report["versions"]["trl"]
    embedder, grpo = report["embedder_training"], report["grpo"]
    assert embedder["steps"] == 4 and embedder["tokens_per_second"] > 0 and len(embedder["per_step"]) == 4
    assert grpo["steps"] == 3 and grpo["completions_per_step"] == 64 and 0 < grpo["reward_seconds_per_step"]
    assert grpo["seconds_per_step"] > grpo["reward_seconds_per_step"]


def test_suite_pipeline_overhead_reads_a_real_mlflow_store(tmp_path, monkeypatch):
    import mlflow

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import suite

    db = tmp_path / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("bench")
    parent = client.create_run(experiment, run_name="pipeline-local-test", start_time=1_000_000)
    for name, start, end in (("data_prep", 1_001_000, 1_011_000), ("sft_cold_start", 1_012_000, 1_072_000)):
        child = client.create_run(experiment, run_name=name, start_time=start,
                                  tags={"mlflow.parentRunId": parent.info.run_id})
        client.set_terminated(child.info.run_id, end_time=end)
    client.set_terminated(parent.info.run_id, end_time=1_080_000)
    result = suite.bench_pipeline(db)
    assert result["wall_seconds"] == 80.0 and result["stage_work_seconds"] == 70.0
    assert result["orchestration_share"] == pytest.approx(10 / 80)
    with pytest.raises(FileNotFoundError, match="make run"):
        suite.bench_pipeline(tmp_path / "absent.db")


def test_benchmark_results_carry_machine_versions_and_command(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from common import write_result

    monkeypatch.setattr(sys, "argv", ["suite.py", "--only", "eval"])
    payload = write_result(tmp_path / "r.json", "suite", {"eval": {"speedup": 2.0}}, threads=2)
    stored = json.loads((tmp_path / "r.json").read_text())
    assert stored == json.loads(json.dumps(payload))
    assert stored["command"].endswith("suite.py --only eval")
    assert stored["machine"]["versions"]["torch"] and stored["machine"]["threads"] == 2
