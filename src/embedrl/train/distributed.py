"""Process-group helpers and a gradient-carrying all-gather for contrastive training.

Everything here degrades to a single-process no-op when ``WORLD_SIZE`` is unset or 1, so the same
training code runs under ``python``, ``torchrun``, ``accelerate launch`` and ``deepspeed``.

Gradient scaling convention (see :func:`all_gather_with_grad`)
--------------------------------------------------------------
Let each rank ``r`` compute a loss ``L_r`` from the *gathered* batch, and let the data-parallel wrapper
(DDP, DeepSpeed ZeRO, accelerate) **average** parameter gradients over the ``W`` ranks, as all of them do
by default. The parameters then receive the gradient of ``(1/W) * sum_r L_r``, **provided** the backward
of the gather hands rank ``r`` the **sum over ranks** of the gradients that reach its slice of the
gathered tensor (``all_reduce(SUM)`` then take the own slice).

Why: the gathered tensor ``X = [x_0; ...; x_{W-1}]`` feeds every rank's loss, but ``x_r`` depends on the
parameters only through rank ``r``'s forward pass, so rank ``r`` must back-propagate
``sum_r' dL_r'/dx_r`` through its own graph; averaging over ranks then gives
``(1/W) sum_r (sum_r' dL_r'/dx_r) dx_r/dtheta = d/dtheta [(1/W) sum_r' L_r']``.

:func:`embedrl.train.contrastive.info_nce` makes every rank compute the **same** loss, the one over the
whole global batch (``L_r = L`` for all ``r``), so ``(1/W) sum_r L_r = L``: the averaged gradients equal
the single-process gradients of the global-batch loss exactly (up to float summation order). A loss
that only covers each rank's local rows (``L_r`` = mean over local rows) is also exact under this
convention, because then ``(1/W) sum_r L_r`` is again the global mean. Do **not** multiply the loss by
``W`` or divide the gradient by ``W`` anywhere else.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main",
    "load_deepspeed_config",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``is_main`` is true on global rank 0."""

    rank: int
    world_size: int
    local_rank: int
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def get_world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_main() -> bool:
    """True on global rank 0, and in a single process."""
    return get_rank() == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise torch.distributed from the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    The process group is created only when ``WORLD_SIZE > 1``; the backend is ``backend`` if given, else
    ``nccl`` when CUDA is available and ``gloo`` otherwise. On CUDA the local device is selected. If a
    process group already exists (e.g. created by accelerate or DeepSpeed) it is reused as is.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        return DistInfo(rank=rank, world_size=world, local_rank=local_rank, is_main=rank == 0)

    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, is_main=True)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")

    use_cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda and backend == "nccl":
        torch.cuda.set_device(local_rank)
    # init_method env:// reads MASTER_ADDR / MASTER_PORT set by torchrun.
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, is_main=rank == 0)


def barrier() -> None:
    """Synchronise all ranks (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one is up (safe to call more than once)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: all_gather along dim 0. Backward: all_reduce(SUM) of the incoming gradient, own slice.

    See the module docstring for why SUM (and not a mean, nor the bare slice) is right when the
    data-parallel wrapper averages parameter gradients over ranks.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size(group)
        rank = dist.get_rank(group)
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x, group=group)
        ctx.group = group
        ctx.rank = rank
        ctx.local = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.local
        return grad[start : start + ctx.local], None


def _check_equal_batch(x: torch.Tensor, group) -> None:
    world = dist.get_world_size(group)
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    values = [int(s.item()) for s in sizes]
    if len(set(values)) != 1:
        raise AssertionError(
            "all_gather_with_grad needs the same batch size on every rank (pad or drop the last batch, "
            f"e.g. DatasetBatchSampler(drop_last=True)); got per-rank sizes {values}"
        )


def all_gather_with_grad(x: torch.Tensor, *, group=None, check_sizes: bool = True) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping gradients to each rank's own slice.

    Identity when torch.distributed is not initialised or the group has one rank. Rank ``r``'s rows sit
    at ``[r * B, (r + 1) * B)`` of the result, ``B = x.shape[0]``, which must be equal on all ranks:
    ``check_sizes`` verifies it with one tiny extra all_gather and raises ``AssertionError`` otherwise.

    Gradient convention: the backward all-reduces (SUM) the incoming gradient and returns this rank's
    slice; with DDP/DeepSpeed-style gradient **averaging** over ranks the parameter gradients then equal
    those of ``(1/W) * sum_r loss_r`` (see the module docstring).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return x
    if x.dim() == 0:
        raise ValueError("all_gather_with_grad needs a tensor with a batch dimension (dim 0)")
    if check_sizes:
        _check_equal_batch(x, group)
    return _AllGatherWithGrad.apply(x, group)


def _bf16_default() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def load_deepspeed_config(
    config: str | os.PathLike | dict[str, Any],
    *,
    micro_batch_size: int,
    world_size: int | None = None,
    gradient_accumulation_steps: int = 1,
    gradient_clipping: float = 1.0,
    bf16: bool | None = None,
    fp16: bool = False,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """Read a DeepSpeed JSON (e.g. ``infra/deepspeed/zero2.json``) and resolve its ``"auto"`` values.

    For loops that call ``deepspeed.initialize`` themselves (the HF Trainer and accelerate fill the
    ``"auto"`` values on their own and should be given the file). ``train_batch_size`` becomes
    ``micro_batch_size * gradient_accumulation_steps * world_size`` (``world_size`` defaults to the
    process group's); ``bf16`` defaults to "CUDA with bf16 support", so the same file runs on CPU in fp32.
    Bucket sizes left at ``"auto"`` use the HF formulas when ``hidden_size`` is given, else DeepSpeed's
    defaults. Keys starting with ``_`` (comments) are dropped. Any ``"auto"`` left raises ``ValueError``.
    """
    if isinstance(config, dict):
        cfg = copy.deepcopy(config)
    else:
        cfg = json.loads(Path(config).read_text(encoding="utf-8"))
    if world_size is None:
        world_size = get_world_size()
    if micro_batch_size < 1 or gradient_accumulation_steps < 1 or world_size < 1:
        raise ValueError("micro_batch_size, gradient_accumulation_steps and world_size must be >= 1")
    if bf16 is None:
        bf16 = _bf16_default()
    if bf16 and fp16:
        raise ValueError("bf16 and fp16 are mutually exclusive")

    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    top = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "train_batch_size": micro_batch_size * gradient_accumulation_steps * world_size,
        "gradient_clipping": gradient_clipping,
    }
    for key, value in top.items():
        if cfg.get(key) == "auto":
            cfg[key] = value
    for key, enabled in (("bf16", bf16), ("fp16", fp16)):
        if isinstance(cfg.get(key), dict) and cfg[key].get("enabled") == "auto":
            cfg[key]["enabled"] = enabled

    zero = cfg.get("zero_optimization")
    if isinstance(zero, dict):
        h2 = hidden_size * hidden_size if hidden_size else None
        zero_defaults = {
            "reduce_bucket_size": h2 or 500_000_000,
            "allgather_bucket_size": 500_000_000,
            "stage3_prefetch_bucket_size": int(0.9 * h2) if h2 else 50_000_000,
            "stage3_param_persistence_threshold": 10 * hidden_size if hidden_size else 100_000,
        }
        for key, value in zero_defaults.items():
            if zero.get(key) == "auto":
                zero[key] = value

    left = sorted(_auto_paths(cfg))
    if left:
        raise ValueError(f"DeepSpeed config still has 'auto' values at {left}; resolve them explicitly")
    return cfg


def _auto_paths(node: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_auto_paths(value, f"{prefix}{key}."))
    elif node == "auto":
        out.append(prefix.rstrip("."))
    return out
