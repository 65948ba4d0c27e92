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
