"""Faults inside a training stage: a full disk while writing a checkpoint, a loss that turns NaN.

The full disk is real: a tmpfs mounted just large enough for one checkpoint (needs root, as on the CI
machine; skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import MICRO_PROFILE
from faults_table import record_fault

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of a given size; unmounted at the end of the test."""
    mounted: list[Path] = []

    def mount(size_bytes: int) -> Path:
        point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _embedder_config(**overrides):
    from embedrl.config import EmbedderTrainConfig, build_config

    return build_config(EmbedderTrainConfig, MICRO_PROFILE, "embedder", **overrides)


def _parameter_count(model_dir: Path) -> int:
    from safetensors.numpy import load_file

    return sum(v.size for v in load_file(str(model_dir / "model.safetensors")).values())


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(prepared_small, tiny_models, small_disk, tmp_path):
    from embedrl.train.checkpoint import CheckpointWriteError, latest_checkpoint
    from embedrl.train.embedder import train_embedder

    # One checkpoint holds the weights and AdamW's two moments: about 12 bytes per parameter. The disk
    # takes one and a half of them, so the second checkpoint runs out of space half-way.
    one_checkpoint = 12 * _parameter_count(tiny_models["embedder"])
    disk = small_disk(int(1.5 * one_checkpoint))
    out = disk / "embedder"
    config = _embedder_config(max_steps=8, save_every=2, keep_checkpoints=2)
    with pytest.raises(CheckpointWriteError) as failure:
        train_embedder(prepared_small, tiny_models["embedder"], out, config, progress=False)
    message = str(failure.value)
    assert "step-00000002" in message and "intact" in message, message

    survivor = latest_checkpoint(out / "checkpoints")
    assert survivor is not None and survivor.name == "step-00000002"
    assert not list((out / "checkpoints").glob(".partial-*")), "the half-written checkpoint was left behind"
    from safetensors.numpy import load_file

    weights = load_file(str(survivor / "model.safetensors"))
    assert all(np.isfinite(v).all() for v in weights.values())

    # Space freed (here: the run moves to a disk with room): the rerun resumes from step 2 and finishes.
    moved = tmp_path / "embedder"
    shutil.copytree(out, moved)
    result = train_embedder(prepared_small, tiny_models["embedder"], moved, config, progress=False)
    steps = [json.loads(line)["step"] for line in (moved / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9)) and result.steps == 8
    assert (moved / "model" / "model.safetensors").exists()
    record_fault("full disk while writing a checkpoint", "Embedder on a tmpfs with room for 1.5 checkpoints",
                 "CheckpointWriteError naming the intact step-2 checkpoint; no partial directory; rerun with space "
                 "resumed from step 2 and finished")


def test_nan_loss_stops_the_embedder_and_keeps_the_last_good_checkpoint(prepared_small, tiny_models, tmp_path):
    from embedrl.train.checkpoint import NonFiniteLossError, latest_checkpoint
    from embedrl.train.embedder import train_embedder

    # A learning rate this large drives the weights to inf within a few steps: a real divergence.
    config = _embedder_config(max_steps=40, save_every=1, keep_checkpoints=2, learning_rate=1e12, warmup_steps=0)
    with pytest.raises(NonFiniteLossError) as failure:
        train_embedder(prepared_small, tiny_models["embedder"], tmp_path, config, progress=False)
    message = str(failure.value)
    assert "train_embedder" in message and "at step" in message and "checkpoint" in message, message
    kept = latest_checkpoint(tmp_path / "checkpoints")
    from safetensors.numpy import load_file

    if kept is not None:
        assert all(np.isfinite(v).all() for v in load_file(str(kept / "model.safetensors")).values())
    assert not (tmp_path / "model").exists(), "a diverged Embedder must not be saved as the stage's model"
    shown = message.replace(str(tmp_path), "<tmp>")
    record_fault("NaN / inf loss", "Embedder with learning rate 1e12", f"stopped: {shown[:160]}...")


def test_nan_loss_stops_sft_and_resume_skips_the_bad_checkpoint(prepared_small, tiny_models, tmp_path):
    from embedrl.config import build_config
    from embedrl.train.checkpoint import COMPLETE_MARKER, NonFiniteLossError, last_complete_checkpoint
    from embedrl.train.sft import SFTStageConfig, train_sft

    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), max_steps=40,
                          learning_rate=1e12, warmup_steps=0, logging_steps=1, save_strategy="steps", save_steps=1,
                          max_grad_norm=0.0)
    with pytest.raises(NonFiniteLossError) as failure:
        train_sft(prepared_small, tiny_models["reasoner"], tmp_path, config)
    message = str(failure.value)
    assert "sft_cold_start" in message and "at step" in message, message
    marked = sorted((tmp_path / "checkpoints").glob(f"checkpoint-*/{COMPLETE_MARKER}"))
    last = last_complete_checkpoint(tmp_path / "checkpoints")
    if last is not None:
        from safetensors.numpy import load_file

        assert all(np.isfinite(v).all() for v in load_file(str(last / "model.safetensors")).values())
    assert not (tmp_path / "model").exists()
    record_fault("NaN / inf loss", "SFT with learning rate 1e12, no clipping",
                 f"stopped ({len(marked)} good checkpoints marked): {message.replace(str(tmp_path), '<tmp>')[:160]}...")
