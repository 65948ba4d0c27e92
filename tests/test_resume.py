"""Checkpoint and resume: each training stage is killed with SIGKILL at a random step, run again, and must
resume from its last checkpoint and end exactly where an uninterrupted run ends.

Tolerance: the same process layout and thread count on CPU are deterministic, so losses and rewards
must match to 1e-6 (relative) and final weights to 1e-6 (absolute). The kill step is drawn from
EMBEDRL_FAULT_SEED (random when unset) and printed in every failure message.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MICRO_PROFILE, REPO_ROOT
from faults_table import record_fault

pytestmark = pytest.mark.slow

WORKER = REPO_ROOT / "tests" / "resume_worker.py"
FAULT_SEED = int(os.environ.get("EMBEDRL_FAULT_SEED", random.SystemRandom().randrange(2**31)))

STAGES = {
    # stage: (overrides, checkpoints every, steps)
    "embedder": ({"max_steps": 12, "save_every": 3, "log_every": 1}, 3, 12),
    "sft": ({"max_steps": 12, "save_strategy": "steps", "save_steps": 3, "logging_steps": 1}, 3, 12),
    "egrl": ({"max_steps": 6, "save_strategy": "steps", "save_steps": 2, "logging_steps": 1}, 2, 6),
}


def _command(stage: str, spec: dict) -> list[str]:
    return [sys.executable, str(WORKER), stage, json.dumps(spec)]


def _steps_done(stage: str, out: Path) -> int:
    """The last step the running stage has finished, read from its own per-step log."""
    if stage == "embedder":
        path = out / "train_log.jsonl"
    elif stage == "egrl":
        path = out / "reward_log.jsonl"
    else:
        path = out / "train_log.jsonl"
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return max((r["step"] for r in lines), default=0)


def _run_and_kill(stage: str, spec: dict, out: Path, kill_after: int) -> int:
    """Start the stage, SIGKILL it once `kill_after` steps are done; returns the step it was killed at."""
    process = subprocess.Popen(_command(stage, spec), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        done = _steps_done(stage, out)
        if done >= kill_after:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return done
        time.sleep(0.05)
    stderr = process.stderr.read().decode()[-3000:] if process.stderr else ""
    raise AssertionError(f"{stage} ended (rc {process.returncode}) before step {kill_after}: {stderr}")


def _run(stage: str, spec: dict) -> str:
    result = subprocess.run(_command(stage, spec), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{stage} failed:\n{result.stderr[-4000:]}"
    return result.stderr


def _final_metrics(stage: str, out: Path) -> list[float]:
    if stage == "embedder":
        return [r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]
    if stage == "egrl":
        records = map(json.loads, (out / "reward_log.jsonl").read_text().splitlines())
        return [v for r in records for v in (r["format_rate"], r["process"], r["outcome"], r["acc"])]
    records = map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if "loss" in r]


def _weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(out / "model" / "model.safetensors"))


def _stage_spec(stage: str, out: Path, request) -> dict:
    """Only the fixtures the stage needs (the SFT Reasoner and the trained Embedder cost minutes)."""
    spec = {"profile": str(MICRO_PROFILE), "data": str(request.getfixturevalue("prepared_small")), "out": str(out),
            "overrides": STAGES[stage][0]}
    if stage == "egrl":
        spec.update(reasoner=str(request.getfixturevalue("sft_reasoner").out_dir / "model"),
                    embedder=str(request.getfixturevalue("trained_embedder")))
    else:
        spec["model"] = str(request.getfixturevalue("tiny_models")["embedder" if stage == "embedder" else "reasoner"])
    return spec


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_killed_at_a_random_step_resumes_and_ends_like_an_uninterrupted_run(stage, request, tmp_path):
    _, every, steps = STAGES[stage]
    kill_after = random.Random(f"{FAULT_SEED}-{stage}").randrange(every + 1, steps)
    where = f"(EMBEDRL_FAULT_SEED={FAULT_SEED}, kill after step {kill_after})"

    reference = tmp_path / "uninterrupted"
    _run(stage, _stage_spec(stage, reference, request))

    resumed = tmp_path / "killed"
    spec = _stage_spec(stage, resumed, request)
    killed_at = _run_and_kill(stage, spec, resumed, kill_after)
    assert not (resumed / "model").exists(), f"{stage} finished before the kill {where}"
    log = _run(stage, spec)
    resumed_from = [int(m) for m in re.findall(r"resuming from \S+ \(step (\d+)\)", log)]
    assert resumed_from, f"{stage} did not resume {where}:\n{log[-3000:]}"
    # The last complete checkpoint: at killed_at itself only if the kill came after it was marked complete.
    assert resumed_from[0] % every == 0 and max(every, killed_at - every) <= resumed_from[0] <= killed_at + 1, \
        f"{stage} resumed from step {resumed_from[0]}, not the last checkpoint before step {killed_at} {where}"

    want, got = _final_metrics(stage, reference), _final_metrics(stage, resumed)
    assert len(got) == len(want), f"{stage}: {len(got)} logged values after resume, {len(want)} without {where}"
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=f"{stage} metrics differ {where}")
    ref_weights, res_weights = _weights(reference), _weights(resumed)
    assert ref_weights.keys() == res_weights.keys()
    worst = max(float(np.abs(ref_weights[k] - res_weights[k]).max()) for k in ref_weights)
    assert worst <= 1e-6, f"{stage}: final weights differ by {worst} {where}"
    record_fault("SIGKILL during training", f"{stage}: killed after step {killed_at} of {steps}",
                 f"resumed from step {resumed_from[0]}; final metrics equal (rtol 1e-6), weights max |diff| {worst:.1e}")

    # A rerun of the finished stage (a retried pod, a resubmitted run) leaves it as it was: no step more,
    # not even the steps after the last periodic checkpoint trained again.
    log = _run(stage, _stage_spec(stage, reference, request))
    resumed_from = [int(m) for m in re.findall(r"resuming from \S+ \(step (\d+)\)", log)]
    assert resumed_from == [steps], f"{stage}: a rerun of the finished stage resumed from {resumed_from}, not {steps}"
    again = _final_metrics(stage, reference)
    assert len(again) == len(want), f"{stage}: a rerun of the finished stage logged {len(again)} values, not {len(want)}"
    np.testing.assert_allclose(again, want, rtol=1e-6, atol=1e-9, err_msg=f"{stage}: a rerun changed its metrics")
    rerun_weights = _weights(reference)
    moved = max(float(np.abs(ref_weights[k] - rerun_weights[k]).max()) for k in ref_weights)
    assert moved <= 1e-6, f"{stage}: a rerun of the finished stage moved its weights by {moved}"
