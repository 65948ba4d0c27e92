"""Worker for the distributed-equivalence test of info_nce (run by tests/test_contrastive.py).

    torchrun --nproc_per_node 2 tests/dist_contrastive_worker.py --out DIR [--modes ddp,deepspeed]

Each rank builds the same seeded tiny encoder and takes its contiguous half of a fixed global batch.

* ``ddp`` (float64): info_nce with gather, backward; writes the loss and (a) the gradients of a DDP-wrapped
  model (DDP averages over ranks), (b) those of a plain model all-reduced by hand and divided by the
  world size, (c) those of a gather whose backward only slices (a negative control). Also checks that
  unequal per-rank batch sizes raise a clear error.
* ``deepspeed`` (float32, the precision ZeRO's optimizer wrapper is meant for): ``deepspeed.initialize`` with
  infra/deepspeed/zero2.json ('auto' values resolved), gloo, an SGD client optimizer; one step. Writes the
  loss, the full (reduced) gradients from ``safe_get_full_grad`` and the updated parameters.

The test rebuilds the model in one process (the helpers below), computes the loss on the whole global
batch and compares.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 8
IN_DIM = 12
EMB_DIM = 6
TEMPERATURE = 0.02  # the paper's: logits up to 50, a demanding check of the scaling
SGD_LR = 0.05


def build_model(dtype: torch.dtype = torch.float64) -> nn.Module:
    """A 2-layer MLP shared by queries and targets (like the Embedder), identical on every rank."""
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Linear(IN_DIM, 16), nn.Tanh(), nn.Linear(16, EMB_DIM))
    return model.to(dtype)


def global_batch(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (queries, targets) inputs of the global batch; targets are noisy copies of the queries."""
    g = torch.Generator().manual_seed(7)
    xq = torch.randn(GLOBAL_BATCH, IN_DIM, generator=g, dtype=torch.float64)
    xt = xq + 0.7 * torch.randn(GLOBAL_BATCH, IN_DIM, generator=g, dtype=torch.float64)
    return xq.to(dtype), xt.to(dtype)


def forward_loss(model: nn.Module, xq: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """One forward pass over queries and targets together, then the gathered symmetric InfoNCE."""
    from embedrl.train.contrastive import info_nce

    emb = model(torch.cat([xq, xt], dim=0))
    q, t = emb.split(xq.shape[0], dim=0)
    return info_nce(q, t, temperature=TEMPERATURE, gather=True, symmetric=True)


def local_slice(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    b = x.shape[0] // world
    return x[rank * b : (rank + 1) * b]


def run_ddp(out: Path, rank: int, world: int) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from embedrl.train.distributed import all_gather_with_grad

    xq, xt = global_batch(torch.float64)
    xq, xt = local_slice(xq, rank, world), local_slice(xt, rank, world)

    # (a) DDP: .grad holds the rank-average after backward.
    ddp = DDP(build_model(torch.float64))
    loss = forward_loss(ddp, xq, xt)
    loss.backward()
    ddp_grads = {n: p.grad.detach().clone() for n, p in ddp.module.named_parameters()}

    # (b) plain model, average by hand (what DDP does).
    model = build_model(torch.float64)
    loss_b = forward_loss(model, xq, xt)
    loss_b.backward()
    manual = {}
    for n, p in model.named_parameters():
        g = p.grad.detach().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        manual[n] = g / world

    # (c) negative control: a gather whose backward only slices (no all_reduce) gives 1/W of the
    # gradient after averaging; the test checks this, so it would notice a wrong convention.
    import embedrl.train.contrastive as contrastive

    class _SliceOnlyGather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            parts = [torch.empty_like(x) for _ in range(world)]
            dist.all_gather(parts, x.contiguous())
            ctx.b = x.shape[0]
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, grad):
            return grad[rank * ctx.b : (rank + 1) * ctx.b]

    original = contrastive.all_gather_with_grad
    contrastive.all_gather_with_grad = lambda x, group=None: _SliceOnlyGather.apply(x)
    try:
        naive_model = build_model(torch.float64)
        forward_loss(naive_model, xq, xt).backward()
    finally:
        contrastive.all_gather_with_grad = original
    naive = {}
    for n, p in naive_model.named_parameters():
        g = p.grad.detach().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        naive[n] = g / world

    # Unequal per-rank batch sizes must fail loudly on every rank.
    unequal_error = ""
    try:
        all_gather_with_grad(torch.zeros(2 + rank, 3))
    except AssertionError as exc:
        unequal_error = str(exc)

    torch.save(
        {
            "loss": loss.detach(),
            "loss_manual": loss_b.detach(),
            "ddp_grads": ddp_grads,
            "manual_grads": manual,
            "slice_only_grads": naive,
            "unequal_error": unequal_error,
        },
        out / f"ddp_rank{rank}.pt",
    )


def run_deepspeed(out: Path, rank: int, world: int) -> None:
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    from embedrl.train.distributed import load_deepspeed_config

    xq, xt = global_batch(torch.float32)
    xq, xt = local_slice(xq, rank, world), local_slice(xt, rank, world)
    config = load_deepspeed_config(
        REPO / "infra" / "deepspeed" / "zero2.json",
        micro_batch_size=xq.shape[0],
        world_size=world,
        gradient_clipping=0.0,  # no clipping: the step must be a plain SGD step
        bf16=False,
    )
    # ZeRO only vouches for Adam-type optimizers; SGD is used here because its step is linear in the
    # gradient, so a wrong gradient scale shows up in the updated parameters (Adam's first step would
    # hide it: it is about lr * sign(grad)).
    config["zero_allow_untested_optimizer"] = True
    model = build_model(torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=config, dist_init_required=False
    )
    loss = forward_loss(engine, xq, xt)
    engine.backward(loss)
    grads = {}
    for n, p in engine.module.named_parameters():
        g = safe_get_full_grad(p)
        grads[n] = None if g is None else g.detach().float().clone()
    engine.step()
    params = {n: p.detach().float().clone() for n, p in engine.module.named_parameters()}
    torch.save(
        {
            "loss": loss.detach(),
            "grads": grads,
            "params": params,
            "zero_stage": engine.zero_optimization_stage(),
        },
        out / f"deepspeed_rank{rank}.pt",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--modes", default="ddp,deepspeed")
    args = parser.parse_args(argv)

    os.environ.setdefault("DS_BUILD_OPS", "0")
    torch.set_num_threads(1)
    from embedrl.train.distributed import cleanup, init_distributed

    info = init_distributed(backend="gloo")
    if info.world_size < 2:
        print("run me under torchrun with --nproc_per_node >= 2", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        try:
            {"ddp": run_ddp, "deepspeed": run_deepspeed}[mode](args.out, info.rank, info.world_size)
        except Exception:  # record the failure per mode, keep going with the next one
            status = 1
            (args.out / f"{mode}_rank{info.rank}.error").write_text(traceback.format_exc())
            traceback.print_exc()
            break  # a failed collective can leave the group unusable
    cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main())
