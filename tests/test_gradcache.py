"""Gradient caching (embedrl.train.gradcache): the same loss and gradients as the plain step, with memory
bounded by the chunk.

* the tiny Embedder (float32): loss, metrics and every parameter gradient of the cached step equal the plain
  step's, for chunk sizes that divide the batch, do not, and exceed it;
* dropout: the backward pass replays each chunk's RNG state (a model with dropout, against the same chunks
  embedded with a graph);
* two ranks (torchrun, gloo): the gathered loss with caching and DDP-style averaging equals the one-process
  plain loss and gradients of the global batch (this file is also the torchrun worker);
* train_embedder with `grad_cache_chunk_size` logs the plain run's losses, gradient norms and tokens; under
  DeepSpeed ZeRO-2 on two ranks too (slow);
* memory: the peak memory of a cached step at global batch 512 is at most 1.5x that at 32 (fresh processes,
  benchmarks/gradcache_memory.py).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from launch import torchrun, train_embedder_cli
from torch import nn

from embedrl.train.contrastive import info_nce_details
from embedrl.train.gradcache import contrastive_loss

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "profiles" / "micro.yaml"
BENCHMARK = REPO / "benchmarks" / "gradcache_memory.py"
TOLERANCE = 1e-5


# ---------------------------------------------------------------------------- the tiny Embedder
@pytest.fixture(scope="module")
def tiny_embedder(tiny_models):
    """The tiny Embedder in train mode and a lazy encoder of synthetic sides: `encode(sides) -> [n, D]`."""
    import numpy as np
    from PIL import Image

    from embedrl.models.embedder import Embedder, EmbedderInputs, ImageSizes, Side
    from embedrl.models.factory import load_model

    torch.set_num_threads(1)
    vlm, processor = load_model(tiny_models["embedder"], dtype="float32")
    vlm.train()
    inputs = EmbedderInputs(processor, sizes=ImageSizes(image=56))
    embedder = Embedder(vlm, inputs.emb_id)

    def side(seed: int, text: str) -> Side:
        if seed % 3 == 0:  # every third side is text only: chunks with and without pixels
            return Side(text)
        pixels = np.random.default_rng(seed).integers(0, 256, (56, 56, 3), dtype=np.uint8)
        return Side(text, [Image.fromarray(pixels)], "image")

    def encode(items):
        return embedder(inputs.collate([inputs.encode(side(*item)) for item in items]))

    return embedder, encode


def _pairs(n: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    words = "red blue green circle square left of right above the small large star".split()
    queries = [(2 * i, " ".join(words[(i + k) % len(words)] for k in range(2 + i % 5))) for i in range(n)]
    targets = [(2 * i + 1, " ".join(words[(3 * i + k) % len(words)] for k in range(3))) for i in range(n)]
    return queries, targets


def _step(embedder, encode, queries, targets, chunk_size: int):
    embedder.zero_grad(set_to_none=True)
    loss = contrastive_loss(encode, queries, targets, functools.partial(info_nce_details, temperature=0.05),
                            chunk_size=chunk_size)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in embedder.named_parameters() if p.grad is not None}
    return loss, grads


@pytest.mark.parametrize("chunk_size", [3, 5, 16])  # 10 pairs: a non-divisor, a divisor, more than the batch
def test_cached_loss_and_gradients_equal_the_plain_step(tiny_embedder, chunk_size):
    embedder, encode = tiny_embedder
    queries, targets = _pairs(10)
    plain, plain_grads = _step(embedder, encode, queries, targets, 0)
    cached, cached_grads = _step(embedder, encode, queries, targets, chunk_size)

    assert cached.backward_passes == 2 * -(-10 // chunk_size) and plain.backward_passes == 1
    assert abs(float(cached.details.loss) - float(plain.details.loss)) <= TOLERANCE
    assert cached.details.metrics() == pytest.approx(plain.details.metrics(), abs=TOLERANCE)
    assert cached_grads.keys() == plain_grads.keys()
    assert len(plain_grads) == sum(1 for p in embedder.parameters() if p.requires_grad)
    worst = max(float((cached_grads[k] - plain_grads[k]).abs().max()) for k in plain_grads)
    assert worst <= TOLERANCE, f"largest gradient difference {worst:.2e}"
    assert max(float(g.abs().max()) for g in plain_grads.values()) > 1e-3  # the comparison is not vacuous


# ---------------------------------------------------------------------------------- dropout and API
def _dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.5), nn.Tanh(), nn.Linear(32, 5)).double()


def test_dropout_masks_are_replayed_in_the_backward_pass():
    model = _dropout_model()
    rows = torch.randn(14, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    queries, targets = list(rows[:7]), list(rows[7:])

    def encode(items):
        return model(torch.stack(list(items)))

    loss_fn = functools.partial(info_nce_details, temperature=0.1)
    torch.manual_seed(5)  # reference: the same chunks, in the same order, embedded with a graph
    q = torch.cat([encode(queries[i:i + 3]) for i in range(0, 7, 3)])
    t = torch.cat([encode(targets[i:i + 3]) for i in range(0, 7, 3)])
    reference = loss_fn(q, t).loss
    reference.backward()
    want = [p.grad.clone() for p in model.parameters()]
    rng_after_reference = torch.get_rng_state()

    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    loss = contrastive_loss(encode, queries, targets, loss_fn, chunk_size=3)
    loss.backward()
    assert float(loss.details.loss) == pytest.approx(float(reference.detach()), abs=1e-12)
    for got, expected in zip((p.grad for p in model.parameters()), want, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    assert torch.equal(torch.get_rng_state(), rng_after_reference)  # the RNG ends where pass 1 left it


def test_contrastive_loss_rejects_misuse():
    model = nn.Linear(3, 2)
    items = list(torch.randn(4, 3))

    def encode(rows):
        return model(torch.stack(list(rows)))

    loss_fn = functools.partial(info_nce_details, temperature=0.1)
    with pytest.raises(ValueError, match="one target per query"):
        contrastive_loss(encode, items, items[:3], loss_fn, chunk_size=2)
    with pytest.raises(ValueError, match="chunk_size=-1"):
        contrastive_loss(encode, items, items, loss_fn, chunk_size=-1)
    loss = contrastive_loss(encode, items, items, loss_fn, chunk_size=2)
    assert not loss.details.loss.requires_grad  # for logging and checks, not for backward
    loss.backward()
    with pytest.raises(RuntimeError, match="already called"):
        loss.backward()


def test_config_rejects_a_negative_chunk_size():
    from embedrl.config import EmbedderTrainConfig

    assert EmbedderTrainConfig().grad_cache_chunk_size == 0  # off unless a profile asks for it
    with pytest.raises(ValueError, match="grad_cache_chunk_size=-4"):
        EmbedderTrainConfig(grad_cache_chunk_size=-4)


# --------------------------------------------------------------------------------- two ranks (gloo)
GLOBAL_BATCH = 8


def _mlp() -> nn.Module:
    torch.manual_seed(1234)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 6)).double()


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    xq = torch.randn(GLOBAL_BATCH, 12, generator=g, dtype=torch.float64)
    return xq, xq + 0.7 * torch.randn(GLOBAL_BATCH, 12, generator=g, dtype=torch.float64)


def _mlp_loss(model, xq, xt, chunk_size: int):
    def encode(rows):
        return model(torch.stack(list(rows)))

    loss_fn = functools.partial(info_nce_details, temperature=0.02)
    return contrastive_loss(encode, list(xq), list(xt), loss_fn, chunk_size=chunk_size)


def _worker(out: Path) -> None:
    """torchrun: each rank embeds its half of the global batch in chunks of 3; DDP-style averaging."""
    import torch.distributed as dist

    from embedrl.train.distributed import init_distributed

    info = init_distributed(backend="gloo")
    model = _mlp()
    xq, xt = _global_batch()
    rows = slice(info.rank * GLOBAL_BATCH // 2, (info.rank + 1) * GLOBAL_BATCH // 2)
    loss = _mlp_loss(model, xq[rows], xt[rows], chunk_size=3)
    loss.backward()
    grads = []
    for p in model.parameters():
        dist.all_reduce(p.grad)
        grads.append((p.grad / info.world_size).tolist())
    result = {"loss": float(loss.details.loss), "batch": loss.details.global_batch_size, "grads": grads}
    (out / f"rank{info.rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def test_two_ranks_with_caching_match_the_one_process_plain_step(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for _ in range(3):  # retry if the free port was taken in between
        command = torchrun(2) + [__file__, "--worker", str(tmp_path)]
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0 or "address already in use" not in (proc.stdout + proc.stderr).lower():
            break
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    model = _mlp()
    plain = _mlp_loss(model, *_global_batch(), chunk_size=0)
    plain.backward()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["batch"] == GLOBAL_BATCH
        assert got["loss"] == pytest.approx(float(plain.details.loss), abs=1e-10)
        for grad, p in zip(got["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(torch.tensor(grad, dtype=torch.float64), p.grad, atol=1e-10, rtol=1e-8)


# ------------------------------------------------------------------------------------ the stage
def test_train_embedder_with_caching_logs_the_plain_runs_numbers(prepared_small, tiny_models, tmp_path):
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.train.embedder import train_embedder

    logs = {}
    for chunk_size in (0, 3):  # micro batch 8: chunks of 3, 3, 2 queries and targets
        config = build_config(EmbedderTrainConfig, MICRO, "embedder", max_steps=2, save_every=0, num_threads=1,
                              grad_cache_chunk_size=chunk_size)
        out = tmp_path / f"chunk{chunk_size}"
        train_embedder(prepared_small, tiny_models["embedder"], out, config, progress=False)
        logs[chunk_size] = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    for plain, cached in zip(logs[0], logs[3], strict=True):
        assert (cached["subset"], cached["variant"], cached["tokens"]) == (plain["subset"], plain["variant"],
                                                                           plain["tokens"])
        assert cached["loss"] == pytest.approx(plain["loss"], abs=TOLERANCE)
        assert cached["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_zero2_with_caching_matches_the_one_process_plain_run(prepared_small, tiny_models, tmp_path):
    """paper-2b's combination: ZeRO-2 reduces the gradients of the chunk passes once (coalesce_grad_reduction)."""
    import yaml

    profile = yaml.safe_load(MICRO.read_text())
    profile["embedder"]["grad_cache_chunk_size"] = 3  # 4 pairs per rank: chunks of 3 and 1
    cached_profile = tmp_path / "micro-gradcache.yaml"
    cached_profile.write_text(yaml.safe_dump(profile))
    plain = train_embedder_cli(prepared_small, tiny_models["embedder"], tmp_path / "plain", MICRO, ranks=1, steps=3)
    zero2 = train_embedder_cli(prepared_small, tiny_models["embedder"], tmp_path / "zero2", cached_profile, ranks=2,
                               steps=3, deepspeed=True)
    assert len(zero2) == len(plain) == 3
    for ref, got in zip(plain, zero2, strict=True):  # steps 2 and 3 also compare the updates
        assert (got["subset"], got["variant"]) == (ref["subset"], ref["variant"])
        assert got["loss"] == pytest.approx(ref["loss"], abs=TOLERANCE)
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4)


# ------------------------------------------------------------------------------------------ memory
def _benchmark():
    spec = importlib.util.spec_from_file_location("gradcache_memory", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cached_step_memory_at_batch_512_is_within_1_5x_of_batch_32(tiny_models):
    """A cached step's own peak resident memory (benchmarks/gradcache_memory.py): tiny Embedder, 56 px images,
    chunk 32, glibc's mmap threshold pinned so that the resident peak follows torch's live allocations rather
    than the heap's slack (the benchmark's docstring).

    One process takes the 512 step, then the 32 step: the 512 one meets a fresh heap, and whatever the 32 one
    reuses from it can only lower the 32 peak, which makes the ratio larger, never smaller.
    """
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the peak resident memory from /proc (Linux)")
    bench = _benchmark()
    proc = bench.start_single(tiny_models["embedder"], [512, 32], 32, 56, "pinned")
    large, small = bench.results_of(proc, "pinned", timeout=600)
    assert (small["mode"], large["mode"], small["peak_method"]) == ("cached", "cached", "VmHWM")
    ratio = large["step_peak_mib"] / small["step_peak_mib"]
    assert ratio <= 1.5, f"step peak {small['step_peak_mib']:.0f} MiB at 32, {large['step_peak_mib']:.0f} at 512"


if __name__ == "__main__":  # the torchrun worker of test_two_ranks_with_caching_match_the_one_process_plain_step
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=Path, required=True)
    _worker(parser.parse_args().worker)
