"""Symmetric InfoNCE over cosine similarity with in-batch negatives gathered across ranks.

method.md, training stage 3: temperature tau = 0.02 (logit scale 50), negatives are all other items of
the **global** batch, gathered from every rank **with gradients**, no hard negatives.

Distributed design
------------------
Every rank gathers the query and target embeddings of all ranks (:func:`all_gather_with_grad`) and
computes the loss over **all** ``N = W * B`` rows of the global batch, not only its own ``B`` rows. So:

* the loss value is identical on every rank and equals the single-process loss of the concatenated
  global batch (nothing to all-reduce for logging);
* with the gather's backward convention (all_reduce SUM of the incoming gradient, own slice) and the
  usual gradient **averaging** of DDP / DeepSpeed / accelerate, the parameter gradients equal the
  single-process gradients of the same global-batch loss. No extra ``* world_size`` anywhere.

The extra cost over a local-rows-only loss is an ``N x N`` instead of ``B x N`` similarity matrix, which
is negligible next to the encoder (N = 512 in the paper).

With gradient caching (:mod:`embedrl.train.gradcache`) the loss is this same function over detached
representations: the gather's backward lands in the cached representation gradients, each rank replays
only its own rows, and the gradients are averaged over ranks once per step, so the convention above holds
unchanged.

The similarity and the cross-entropy run in at least float32 (bf16 inputs are upcast), so the loss is
stable at logit scale 50 under bf16 training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from embedrl.train.distributed import all_gather_with_grad, is_distributed

__all__ = ["DEFAULT_TEMPERATURE", "InfoNCEOutput", "info_nce", "info_nce_details"]

DEFAULT_TEMPERATURE = 0.02


@dataclass
class InfoNCEOutput:
    """Result of :func:`info_nce_details`. ``loss`` carries the graph; every other field is detached.

    ``accuracy`` is in-batch top-1 over the global batch: the mean of the two directions when symmetric,
    else the query->target one. ``t2q_*`` are ``None`` when not symmetric.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    q2t_loss: torch.Tensor
    q2t_accuracy: torch.Tensor
    t2q_loss: torch.Tensor | None
    t2q_accuracy: torch.Tensor | None
    positive_similarity: torch.Tensor  # mean cosine of the pairs
    negative_similarity: torch.Tensor  # mean cosine over all off-diagonal pairs
    global_batch_size: int

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Plain floats for a logger (this synchronises with the device)."""
        out = {
            "loss": self.loss.detach(),
            "accuracy": self.accuracy,
            "q2t_loss": self.q2t_loss,
            "q2t_accuracy": self.q2t_accuracy,
            "pos_sim": self.positive_similarity,
            "neg_sim": self.negative_similarity,
        }
        if self.t2q_loss is not None and self.t2q_accuracy is not None:
            out["t2q_loss"] = self.t2q_loss
            out["t2q_accuracy"] = self.t2q_accuracy
        return {f"{prefix}{k}": float(v.item()) for k, v in out.items()}


def _check_inputs(query: torch.Tensor, target: torch.Tensor, temperature: float) -> None:
    if query.dim() != 2 or target.dim() != 2:
        raise ValueError(
            f"info_nce expects [batch, dim] embeddings, got query {tuple(query.shape)}, target {tuple(target.shape)}"
        )
    if query.shape != target.shape:
        raise ValueError(
            f"query and target must have the same shape (row i of each is a pair), got {tuple(query.shape)} "
            f"and {tuple(target.shape)}"
        )
    if query.shape[0] == 0:
        raise ValueError("info_nce needs a non-empty batch")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def info_nce_details(
    query: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    gather: bool = True,
    symmetric: bool = True,
    group=None,
) -> InfoNCEOutput:
    """InfoNCE over the global batch, with logging details. See :func:`info_nce`."""
    _check_inputs(query, target, temperature)
    dtype = torch.promote_types(torch.promote_types(query.dtype, target.dtype), torch.float32)
    q = F.normalize(query.to(dtype), dim=-1)
    t = F.normalize(target.to(dtype), dim=-1)
    if gather and is_distributed():
        q = all_gather_with_grad(q, group=group)
        t = all_gather_with_grad(t, group=group)

    n = q.shape[0]
    sim = q @ t.T  # cosine similarities [N, N]; row i pairs with column i
    logits = sim / temperature
    labels = torch.arange(n, device=logits.device)

    q2t_loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        q2t_acc = (logits.argmax(dim=1) == labels).to(dtype).mean()
        diag = sim.diagonal()
        pos_sim = diag.mean()
        neg_sim = (sim.sum() - diag.sum()) / max(n * n - n, 1)

    t2q_loss = t2q_acc = None
    if symmetric:
        logits_t = logits.T
        t2q_loss = F.cross_entropy(logits_t, labels)
        with torch.no_grad():
            t2q_acc = (logits_t.argmax(dim=1) == labels).to(dtype).mean()
        loss = 0.5 * (q2t_loss + t2q_loss)
        accuracy = 0.5 * (q2t_acc + t2q_acc)
    else:
        loss = q2t_loss
        accuracy = q2t_acc

    return InfoNCEOutput(
        loss=loss,
        accuracy=accuracy,
        q2t_loss=q2t_loss.detach(),
        q2t_accuracy=q2t_acc,
        t2q_loss=None if t2q_loss is None else t2q_loss.detach(),
        t2q_accuracy=t2q_acc,
        positive_similarity=pos_sim,
        negative_similarity=neg_sim,
        global_batch_size=n,
    )


def info_nce(
    query: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    gather: bool = True,
    symmetric: bool = True,
    group=None,
) -> torch.Tensor:
    """Symmetric InfoNCE of paired embeddings ``query[i] <-> target[i]`` (shape ``[B, D]`` each).

    Embeddings are L2-normalised; with ``gather`` and a multi-rank process group both sides are gathered
    with gradients, so the negatives are the other ``N - 1`` items of the global batch (``N = W * B``).
    ``logits = q @ t.T / temperature``; labels are the global pair indices; the q->t cross-entropy is a
    mean over the ``N`` rows; ``symmetric`` averages it with the t->q one.

    Every rank returns the same value, equal to the single-process loss of the concatenated global batch;
    after DDP/DeepSpeed gradient averaging the parameter gradients equal the single-process ones
    (see :mod:`embedrl.train.distributed` for the convention). ``B`` must be equal on every rank.
    """
    return info_nce_details(
        query, target, temperature=temperature, gather=gather, symmetric=symmetric, group=group
    ).loss
