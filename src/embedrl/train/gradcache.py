"""Gradient caching (GradCache; Gao et al. 2021, arXiv 2101.06983): a contrastive batch whose memory is
bounded by a chunk of sides, not by the batch.

InfoNCE couples every pair of the global batch through the negatives, so the batch cannot be cut into
independent micro-batches. GradCache cuts the *graph* instead, in three passes over a rank's batch:

1. embed queries and targets chunk by chunk under ``no_grad``: the representations ``r``, no activations kept;
2. compute the loss on the detached representations (a leaf that requires grad) and backward it to them:
   ``g = dL/dr`` for every row, cached;
3. embed each chunk again with a graph and backward ``(r_chunk * g_chunk).sum()``. Its parameter gradient
   is the chunk's term of the chain rule ``dL/dtheta = sum_i g_i dr_i/dtheta``; the terms add up in
   ``.grad``, and only one chunk's activations are alive at a time.

The price is one extra gradient-free forward pass per step. Pass 3 must rebuild pass 1's representations
exactly, so each chunk's RNG state (CPU and the current CUDA device, for dropout) is recorded before pass 1
and restored for pass 3; the global RNG ends where pass 1 left it.

Distributed: pass 2 is the ordinary loss over the gathered representations (:func:`info_nce_details`), so
the gather's backward (all_reduce SUM, own slice) is already inside ``g``; the parameter gradients are then
averaged over ranks once, after pass 3, as in the plain path. The gradients equal the plain path's (see
:mod:`embedrl.train.contrastive`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from embedrl.train.contrastive import InfoNCEOutput

__all__ = ["ContrastiveLoss", "contrastive_loss"]

Encode = Callable[[Sequence[Any]], torch.Tensor]  # items -> representations [len(items), D]
LossFn = Callable[[torch.Tensor, torch.Tensor], InfoNCEOutput]  # (queries, targets) -> loss and metrics
Backward = Callable[[torch.Tensor], Any]  # scalar -> gradients in .grad: Tensor.backward, engine.backward


@dataclass(frozen=True)
class _RngState:
    """The torch CPU generator and the current CUDA device's, as they were before a chunk's first forward.

    Only the current device: reading another device's state would create a CUDA context on it.
    """

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    cuda_device: int | None

    @classmethod
    def capture(cls) -> _RngState:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            device = torch.cuda.current_device()
            return cls(torch.get_rng_state(), torch.cuda.get_rng_state(device), device)
        return cls(torch.get_rng_state(), None, None)

    @contextlib.contextmanager
    def replayed(self) -> Iterator[None]:
        """Run the block from this state; the generators are put back as they were afterwards."""
        devices = [] if self.cuda_device is None else [self.cuda_device]
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_device)
            yield


@dataclass
class _Chunk:
    items: Sequence[Any]
    rng: _RngState
    grad: torch.Tensor | None = None  # dL/d(representations) of these rows, from pass 2


class ContrastiveLoss:
    """A step's contrastive loss, and the backward that turns it into parameter gradients.

    ``details`` holds the loss and metrics (its ``loss`` is detached: log it, check it, do not backward
    it); call :meth:`backward` exactly once. Build it with :func:`contrastive_loss`.
    """

    def __init__(self, details: InfoNCEOutput, *, graph: torch.Tensor | None = None,
                 encode: Encode | None = None, chunks: Sequence[_Chunk] = ()):
        self.details = dataclasses.replace(details, loss=details.loss.detach())
        self._graph = graph  # the plain path's loss with its graph
        self._encode = encode
        self._chunks = list(chunks)
        self._done = False

    @property
    def backward_passes(self) -> int:
        """How many times :meth:`backward` calls its ``backward`` (1 plain, one per chunk cached)."""
        return len(self._chunks) if self._chunks else 1

    def backward(self, backward: Backward = torch.Tensor.backward) -> None:
        """Accumulate the parameter gradients of the loss into ``.grad``, through ``backward``."""
        if self._done:
            raise RuntimeError("ContrastiveLoss.backward was already called: one backward per step")
        self._done = True
        if not self._chunks:
            backward(self._graph)
            self._graph = None
            return
        for chunk in self._chunks:
            with chunk.rng.replayed():
                representations = self._encode(chunk.items)
            surrogate = (representations * chunk.grad.to(representations.dtype)).sum()
            backward(surrogate)
            chunk.grad = None


def contrastive_loss(
    encode: Encode,
    queries: Sequence[Any],
    targets: Sequence[Any],
    loss_fn: LossFn,
    *,
    chunk_size: int = 0,
) -> ContrastiveLoss:
    """The loss of pairs ``queries[i] <-> targets[i]``, embedded by ``encode``; gradients by its ``backward``.

    ``chunk_size`` 0 embeds each side in one call with a graph (the plain path); ``chunk_size > 0`` embeds at
    most that many items per call, with gradient caching (module docstring): memory grows with the chunk,
    not with ``len(queries)``. ``encode`` is called again on the same items in :meth:`ContrastiveLoss.backward`,
    so it should build its inputs from the items lazily (they are then built twice, but only a chunk's
    inputs are alive at a time). Both paths give the same loss, metrics and gradients.
    """
    if len(queries) != len(targets):
        raise ValueError(f"contrastive_loss needs one target per query, got {len(queries)} queries and "
                         f"{len(targets)} targets")
    if chunk_size < 0:
        raise ValueError(f"contrastive_loss: chunk_size={chunk_size} must be >= 0 (0 = no gradient caching)")
    if chunk_size == 0:
        details = loss_fn(encode(queries), encode(targets))
        return ContrastiveLoss(details, graph=details.loss)

    query_chunks = _embed_without_graph(encode, queries, chunk_size)
    target_chunks = _embed_without_graph(encode, targets, chunk_size)
    q = torch.cat([r for _, r in query_chunks]).requires_grad_()
    t = torch.cat([r for _, r in target_chunks]).requires_grad_()
    details = loss_fn(q, t)
    details.loss.backward()
    _split_grad(q.grad, query_chunks)
    _split_grad(t.grad, target_chunks)
    chunks = [chunk for chunk, _ in query_chunks + target_chunks]
    return ContrastiveLoss(details, encode=encode, chunks=chunks)


def _embed_without_graph(encode: Encode, items: Sequence[Any], size: int) -> list[tuple[_Chunk, torch.Tensor]]:
    out = []
    for start in range(0, len(items), size):
        chunk = _Chunk(items[start:start + size], _RngState.capture())
        with torch.no_grad():
            out.append((chunk, encode(chunk.items).detach()))
    return out


def _split_grad(grad: torch.Tensor, chunks: list[tuple[_Chunk, torch.Tensor]]) -> None:
    for part, (chunk, _) in zip(grad.split([len(c.items) for c, _ in chunks]), chunks, strict=True):
        chunk.grad = part
