"""Ranking metrics over a score matrix: Hit@k, Recall@k, Precision@k and NDCG@k.

Every metric takes `scores` [Q, C] (higher = better), `relevance` [Q, C] (binary or graded; a value
> 0 means relevant) and `k`, and returns the mean over the Q queries as a Python float. Inputs may be
numpy arrays, torch tensors or nested lists.

Ranking rule, shared by all metrics: candidates are sorted by score descending and ties are broken by
candidate index, lower index first (a stable sort on -score), so a tie never flatters a metric at
random. `candidate_mask` [Q, C] (bool, optional) serves ragged candidate lists: a masked-out
candidate is absent; it never ranks, its relevance does not count, and its score may be NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["hit_at_k", "ndcg_at_k", "precision_at_k", "ranks", "recall_at_k"]

UNRANKED = 0  # the rank `ranks` gives a masked-out candidate


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        return value.numpy()
    try:
        return np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(
            f"{name} must be a rectangular [Q, C] array ({exc}); pad ragged lists and pass candidate_mask"
        ) from None


def _as_matrix(value: Any, name: str) -> np.ndarray:
    array = _to_numpy(value, name)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [queries, candidates], got shape {tuple(array.shape)}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    return array.astype(np.float64)


def _as_mask(candidate_mask: Any, shape: tuple[int, int]) -> np.ndarray:
    if candidate_mask is None:
        return np.ones(shape, dtype=bool)
    mask = _to_numpy(candidate_mask, "candidate_mask")
    if tuple(mask.shape) != shape:
        raise ValueError(f"candidate_mask has shape {tuple(mask.shape)} but scores have shape {shape}")
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
            raise ValueError("candidate_mask must be boolean (True = a real candidate) or hold only 0/1")
        mask = mask != 0
    return mask


def _check_scores(scores: np.ndarray, mask: np.ndarray) -> None:
    bad_rows = np.flatnonzero((np.isnan(scores) & mask).any(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        column = int(np.flatnonzero(np.isnan(scores[row]) & mask[row])[0])
        raise ValueError(
            f"scores of query row {row} hold NaN (first at candidate {column}; {bad_rows.size} row(s) in all);"
            " a NaN cannot be ranked: fix the embeddings, or mask the candidate out with candidate_mask"
        )


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an int >= 1, got {k!r} ({type(k).__name__})")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _ranks(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    num_queries, num_candidates = scores.shape
    index = np.broadcast_to(np.arange(num_candidates), scores.shape)
    # Keys, last = primary: real candidates first, then score descending, then index ascending.
    # The explicit index key makes the tie rule independent of the sort's stability; the NaN-free
    # fill keeps masked-out NaNs out of the comparison.
    neg_scores = np.where(mask, -scores, 0.0)
    order = np.lexsort((index, neg_scores, ~mask), axis=1)
    positions = np.empty_like(order)
    np.put_along_axis(
        positions, order, np.broadcast_to(np.arange(1, num_candidates + 1), order.shape), axis=1
    )
    return np.where(mask, positions, UNRANKED)


def ranks(scores: Any, candidate_mask: Any = None) -> np.ndarray:
    """1-based rank of every candidate within its query's row: int array [Q, C], 1 = best.

    Score descending, ties broken by candidate index (lower first). Masked-out candidates get
    rank 0 (`UNRANKED`) and do not take a rank from the real ones. Raises ValueError on a NaN score.
    """
    scores_np = _as_matrix(scores, "scores")
    mask = _as_mask(candidate_mask, scores_np.shape)
    _check_scores(scores_np, mask)
    return _ranks(scores_np, mask)


def _prepare(
    scores: Any, relevance: Any, k: Any, candidate_mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Validated (ranks, gains, mask, k); gains are the relevance of real candidates, clipped at 0."""
    k = _check_k(k)
    scores_np = _as_matrix(scores, "scores")
    relevance_np = _as_matrix(relevance, "relevance")
    if scores_np.shape != relevance_np.shape:
        raise ValueError(
            f"scores and relevance must have the same [Q, C] shape, got {scores_np.shape} and {relevance_np.shape}"
        )
    if scores_np.shape[0] == 0:
        raise ValueError("no queries: scores has 0 rows, and a mean over no queries is undefined")
    mask = _as_mask(candidate_mask, scores_np.shape)
    _check_scores(scores_np, mask)
    bad = np.isnan(relevance_np) & mask
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"relevance of query row {row} holds NaN; use 0 for not relevant")
    gains = np.where(mask & (relevance_np > 0), relevance_np, 0.0)
    return _ranks(scores_np, mask), gains, mask, k


def _in_top_k(rank: np.ndarray, k: int) -> np.ndarray:
    return (rank != UNRANKED) & (rank <= k)


def hit_at_k(scores: Any, relevance: Any, k: int, *, candidate_mask: Any = None) -> float:
    """Share of queries with at least one relevant candidate in their top k."""
    rank, gains, _, k = _prepare(scores, relevance, k, candidate_mask)
    hits = (_in_top_k(rank, k) & (gains > 0)).any(axis=1)
    return float(hits.mean())


def recall_at_k(scores: Any, relevance: Any, k: int, *, candidate_mask: Any = None) -> float:
    """Mean of (#relevant in top k) / (#relevant); a query with nothing relevant scores 0."""
    rank, gains, _, k = _prepare(scores, relevance, k, candidate_mask)
    relevant = gains > 0
    found = (_in_top_k(rank, k) & relevant).sum(axis=1)
    total = relevant.sum(axis=1)
    per_query = np.divide(found, total, out=np.zeros(found.shape, dtype=np.float64), where=total > 0)
    return float(per_query.mean())


def precision_at_k(scores: Any, relevance: Any, k: int, *, candidate_mask: Any = None) -> float:
    """Mean of (#relevant in top k) / min(k, #candidates of the query); a query with no candidate scores 0.

    k is clipped to the query's candidate count, so a k larger than the list does not cap precision.
    """
    rank, gains, mask, k = _prepare(scores, relevance, k, candidate_mask)
    found = (_in_top_k(rank, k) & (gains > 0)).sum(axis=1)
    shown = np.minimum(k, mask.sum(axis=1))
    per_query = np.divide(found, shown, out=np.zeros(found.shape, dtype=np.float64), where=shown > 0)
    return float(per_query.mean())


def ndcg_at_k(scores: Any, relevance: Any, k: int, *, candidate_mask: Any = None) -> float:
    """Mean NDCG@k with linear gain: DCG = sum over the top k of rel / log2(rank + 1).

    The ideal DCG sorts the query's own relevance descending and keeps the top k; a query with
    nothing relevant scores 0. Negative relevance counts as 0.
    """
    rank, gains, _, k = _prepare(scores, relevance, k, candidate_mask)
    num_candidates = gains.shape[1]
    discount = np.where(_in_top_k(rank, k), 1.0 / np.log2(rank.clip(min=1) + 1.0), 0.0)
    dcg = (gains * discount).sum(axis=1)
    depth = min(k, num_candidates)
    ideal_gains = -np.sort(-gains, axis=1)[:, :depth]
    ideal_discount = 1.0 / np.log2(np.arange(2, depth + 2, dtype=np.float64))
    idcg = (ideal_gains * ideal_discount).sum(axis=1)
    per_query = np.divide(dcg, idcg, out=np.zeros(dcg.shape, dtype=np.float64), where=idcg > 0)
    return float(per_query.mean())
