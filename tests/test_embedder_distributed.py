"""`embedrl train embedder` itself under torchrun: 2 ranks (gloo, DDP-style averaging) and DeepSpeed ZeRO-2
give the loss and gradient norm of the one-process run, step by step, on the same global batches.

Each step's global batch is the same set of pairs in every mode (the sampler shards it over ranks and the
trace variant is drawn once per batch from the same seed), the loss covers the gathered global batch,
so a rank-count-independent implementation must reproduce the one-process numbers. Step 1 compares the
loss and the gradient of identical weights; later steps also compare the optimizer updates.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from launch import train_embedder_cli

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "profiles" / "micro.yaml"
STEPS = 3


def _run(prepared, model, out: Path, *, ranks: int, deepspeed: bool = False) -> list[dict]:
    return train_embedder_cli(prepared, model, out, MICRO, ranks=ranks, steps=STEPS, deepspeed=deepspeed, timeout=400)


@pytest.fixture(scope="module")
def one_process(prepared_small, tiny_models, tmp_path_factory):
    return _run(prepared_small, tiny_models["embedder"], tmp_path_factory.mktemp("emb_1p"), ranks=1)


def _assert_same_steps(reference: list[dict], other: list[dict]) -> None:
    assert len(other) == len(reference) == STEPS
    for ref, got in zip(reference, other, strict=True):
        assert (got["subset"], got["variant"]) == (ref["subset"], ref["variant"])
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-4, abs=1e-5)
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-3, abs=1e-5)


@pytest.mark.timeout(900)
def test_two_rank_torchrun_matches_one_process(prepared_small, tiny_models, one_process, tmp_path):
    two = _run(prepared_small, tiny_models["embedder"], tmp_path / "ddp", ranks=2)
    _assert_same_steps(one_process, two)
    assert (tmp_path / "ddp" / "model" / "model.safetensors").exists()


@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_zero2_two_ranks_match_one_process(prepared_small, tiny_models, one_process, tmp_path):
    two = _run(prepared_small, tiny_models["embedder"], tmp_path / "zero2", ranks=2, deepspeed=True)
    _assert_same_steps(one_process, two)
