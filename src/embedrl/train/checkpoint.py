"""Atomic training checkpoints and resume, shared by the three training stages.

A checkpoint is either complete or invisible to resume:
- the Embedder loop writes `step-00000050/` as `.partial-step-00000050/`, fsyncs every file, renames the
  directory into place, then replaces the `LATEST` pointer (write, fsync, `os.replace`). A kill or a
  full disk at any point leaves the previous `LATEST` and its directory as they were;
- the SFT and EG-RL stages use the Hugging Face Trainer's `checkpoint-N/` directories, which it writes in
  place; `CompletionMarker` adds `embedrl-complete.json` after the Trainer has written everything, and
  `last_complete_checkpoint` only returns directories that carry it (others are removed).

State files hold tensors and plain containers only: weights as safetensors, optimizer and scheduler
state through `torch.save`, read back with `torch.load(weights_only=True)` (no unpickling of objects).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LATEST = "LATEST"
PARTIAL_PREFIX = ".partial-"
COMPLETE_MARKER = "embedrl-complete.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_HF_DIR = re.compile(r"^checkpoint-(\d+)$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is intact."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the stage stops and its last good checkpoint is kept."""


def check_finite_loss(stage: str, step: int, loss: float, checkpoint: Path | None) -> None:
    """Raise `NonFiniteLossError` naming the stage, step and the checkpoint a rerun resumes from."""
    if math.isfinite(loss):
        return
    kept = f"the last good checkpoint {checkpoint} is kept; a rerun resumes from it" if checkpoint else \
        "no checkpoint was written yet"
    raise NonFiniteLossError(f"{stage}: the loss is {loss} at step {step}; stopping ({kept}). Lower the "
                             "learning rate or check the data of this step.")


# --------------------------------------------------------------------------------- own checkpoints
def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_pointer(root: Path, name: str) -> None:
    staging = root / f"{PARTIAL_PREFIX}{LATEST}"
    with staging.open("w", encoding="utf-8") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, root / LATEST)
    _fsync_dir(root)


def write_checkpoint(root: str | os.PathLike[str], step: int, write: Callable[[Path], None], *,
                     keep: int = 2) -> Path:
    """Write checkpoint `step` under `root` with `write(directory)`, atomically; keep the newest `keep`.

    Raises `CheckpointWriteError` when writing fails (the partial directory is removed, `LATEST`
    still names the previous checkpoint).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    staging, final = root / f"{PARTIAL_PREFIX}{name}", root / name
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        write(staging)
        _fsync_tree(staging)
        if final.exists():  # the same step written again after a resume: replace it
            shutil.rmtree(final)
        os.rename(staging, final)
        _write_pointer(root, name)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        shutil.rmtree(staging, ignore_errors=True)
        previous = latest_checkpoint(root)
        raise CheckpointWriteError(
            getattr(exc, "errno", None), f"could not write checkpoint {final} ({type(exc).__name__}: {exc}); the "
            f"previous checkpoint {previous or '(none)'} is intact. Free space in {root} and rerun to resume.") from exc
    _prune(root, keep)
    return final


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under `root` (the one `LATEST` names), or None."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    directory = Path(root) / pointer.read_text(encoding="utf-8").strip()
    if not _STEP_DIR.match(directory.name) or not directory.is_dir():
        raise FileNotFoundError(f"{pointer} names {directory.name!r}, which is missing: the checkpoint root "
                                f"{root} was changed by hand; remove {pointer} to start over")
    return directory


def checkpoint_step(directory: Path) -> int:
    match = _STEP_DIR.match(directory.name) or _HF_DIR.match(directory.name)
    if not match:
        raise ValueError(f"{directory} is not a checkpoint directory (step-N or checkpoint-N)")
    return int(match.group(1))


def _prune(root: Path, keep: int) -> None:
    steps = sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name)), key=checkpoint_step)
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(f"{PARTIAL_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def save_torch_state(path: Path, state: Any) -> None:
    import torch

    torch.save(state, path)


def load_torch_state(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


# ------------------------------------------------------------------- Hugging Face Trainer stages
def last_complete_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """Newest `checkpoint-N` under `output_dir` that carries the completion marker; incomplete ones are removed."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return None
    found = sorted((p for p in directory.iterdir() if _HF_DIR.match(p.name) and p.is_dir()), key=checkpoint_step)
    complete = [p for p in found if (p / COMPLETE_MARKER).is_file()]
    newest = complete[-1] if complete else None
    for partial in found:
        if partial not in complete and (newest is None or checkpoint_step(partial) > checkpoint_step(newest)):
            log.warning("removing incomplete checkpoint %s (no %s): it was being written when the stage stopped",
                        partial, COMPLETE_MARKER)
            shutil.rmtree(partial, ignore_errors=True)
    return newest


def resume_point(output_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint a Trainer stage resumes from (logged), or None for a fresh start."""
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        log.info("resuming from %s (step %d)", last, checkpoint_step(last))
    return last


def train_from(trainer, resume: Path | None) -> None:
    """`trainer.train()`, resumed from `resume` (a `resume_point`). A run whose checkpoint already holds all
    of its `max_steps` is loaded, not trained: the Trainer resumed at its last step trains one step more,
    so a rerun of a finished stage (a retried pod, a resubmitted run) would otherwise move its weights."""
    from transformers import TrainerState

    if resume is not None and trainer.args.max_steps > 0:
        state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        if state.global_step >= trainer.args.max_steps:
            log.info("%s already holds all %d steps: loaded, not trained again", resume, trainer.args.max_steps)
            trainer._load_from_checkpoint(str(resume))
            trainer.state = state
            return
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)


def completion_marker(stage: str, extra_state: Callable[[Path], None] | None = None, *,
                      train_log: Path | None = None):
    """A TrainerCallback that marks each checkpoint complete once the Trainer has written it.

    With `train_log`, every record the Trainer logs is appended there as one JSON line (step first),
    and a resumed run drops the lines past its checkpoint.

    `extra_state(directory)` writes the stage's own state into the checkpoint first (e.g. the reward
    log position of EG-RL). It also stops the stage on a NaN or inf loss (set the Trainer's
    `logging_nan_inf_filter=False`, or the Trainer hides them) and never marks a checkpoint whose
    weights are not finite, so resume goes back to the last good one.
    """
    import torch
    from transformers import TrainerCallback

    def last_good(args) -> Path | None:
        return last_complete_checkpoint(args.output_dir)

    class CompletionMarker(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if train_log is not None and state.is_world_process_zero:  # a resumed run rewrites what follows
                kept = [line for line in train_log.read_text().splitlines()
                        if line.strip() and json.loads(line)["step"] <= state.global_step] \
                    if train_log.exists() else []
                train_log.write_text("".join(line + "\n" for line in kept))
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None:
                check_finite_loss(stage, state.global_step, float(loss), last_good(args))
            if train_log is not None and state.is_world_process_zero and logs:
                with train_log.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")
            return control

        def on_save(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero:
                return control
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if model is not None and not all(torch.isfinite(p).all() for p in model.parameters()):
                shutil.rmtree(directory, ignore_errors=True)
                check_finite_loss(stage, state.global_step, float("nan"), last_good(args))
            if directory.is_dir():
                if extra_state is not None:
                    extra_state(directory)
                _fsync_tree(directory)
                staging = directory / f"{PARTIAL_PREFIX}{COMPLETE_MARKER}"
                write_json(staging, {"global_step": state.global_step})
                os.replace(staging, directory / COMPLETE_MARKER)
                _fsync_dir(directory)
            return control

    return CompletionMarker()
