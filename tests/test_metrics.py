"""Ranking metrics: hand-computed cases, input handling, and properties against a plain-loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from embedrl.eval.metrics import hit_at_k, ndcg_at_k, precision_at_k, ranks, recall_at_k

METRICS = (hit_at_k, recall_at_k, precision_at_k, ndcg_at_k)


# --------------------------------------------------------------------------- reference (plain loops)
def _ranking(score_row, mask_row):
    """Candidate indices of one query, best first: score descending, then index ascending."""
    real = [c for c in range(len(score_row)) if mask_row[c]]
    return sorted(real, key=lambda c: (-score_row[c], c))


def reference(metric: str, scores, relevance, k, mask=None) -> float:
    per_query = []
    for q in range(len(scores)):
        mask_row = mask[q] if mask is not None else [True] * len(scores[q])
        ranking = _ranking(scores[q], mask_row)
        top = ranking[:k]
        relevant = [c for c in range(len(scores[q])) if mask_row[c] and relevance[q][c] > 0]
        found = sum(1 for c in top if relevance[q][c] > 0)
        if metric == "hit":
            per_query.append(1.0 if found else 0.0)
        elif metric == "recall":
            per_query.append(found / len(relevant) if relevant else 0.0)
        elif metric == "precision":
            per_query.append(found / min(k, len(ranking)) if ranking else 0.0)
        else:
            dcg = 0.0
            for position, c in enumerate(top, start=1):
                if relevance[q][c] > 0:
                    dcg += relevance[q][c] / math.log2(position + 1)
            ideal = sorted((relevance[q][c] for c in relevant), reverse=True)[:k]
            idcg = sum(g / math.log2(position + 1) for position, g in enumerate(ideal, start=1))
            per_query.append(dcg / idcg if idcg > 0 else 0.0)
    return sum(per_query) / len(per_query)


BY_NAME = {"hit": hit_at_k, "recall": recall_at_k, "precision": precision_at_k, "ndcg": ndcg_at_k}


# --------------------------------------------------------------------------------------- hand cases
SCORES = [[0.9, 0.1, 0.5], [0.2, 0.2, 0.2]]
RELEVANCE = [[0, 1, 1], [0, 0, 1]]


def test_ranks_break_ties_by_index_and_skip_masked():
    assert ranks([[0.1, 0.9, 0.5, 0.9]]).tolist() == [[4, 1, 3, 2]]
    assert ranks([[0.0, 0.0, 0.0]]).tolist() == [[1, 2, 3]]
    masked = ranks([[0.1, float("nan"), 0.5, 0.9]], candidate_mask=[[True, False, True, True]])
    assert masked.tolist() == [[3, 0, 2, 1]]


def test_hit_with_ties_takes_the_lower_index_first():
    # Query 1 is an all-way tie: candidate 0 (not relevant) ranks first, the relevant one last.
    assert hit_at_k(SCORES, RELEVANCE, 1) == 0.0
    assert hit_at_k(SCORES, RELEVANCE, 2) == 0.5
    assert hit_at_k(SCORES, RELEVANCE, 3) == 1.0
    assert hit_at_k([[0.2, 0.2, 0.2]], [[1, 0, 0]], 1) == 1.0


def test_recall_and_precision_by_hand():
    assert recall_at_k(SCORES, RELEVANCE, 1) == 0.0
    assert recall_at_k(SCORES, RELEVANCE, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(SCORES, RELEVANCE, 3) == 1.0
    assert precision_at_k(SCORES, RELEVANCE, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert precision_at_k([[0.3, 0.9], [0.9, 0.3]], [[0, 1], [0, 1]], 1) == 0.5


def test_ndcg_graded_by_hand():
    # Ranking: c0 (rel 1), c1 (rel 3), c2 (rel 0); ideal order 3, 1.
    dcg = 1 / math.log2(2) + 3 / math.log2(3)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k([[3.0, 2.0, 1.0]], [[1, 3, 0]], 2) == pytest.approx(dcg / idcg)
    assert ndcg_at_k([[1.0, 2.0, 3.0]], [[0, 1, 3]], 2) == pytest.approx(1.0)
    # Only the top k enter the ideal DCG: one relevant item found at rank 1 of k=1 is perfect.
    assert ndcg_at_k([[2.0, 1.0]], [[1, 1]], 1) == 1.0


def test_query_with_nothing_relevant_scores_zero_but_counts_in_the_mean():
    scores = [[0.9, 0.1], [0.9, 0.1]]
    relevance = [[1, 0], [0, 0]]
    assert hit_at_k(scores, relevance, 1) == 0.5
    assert recall_at_k(scores, relevance, 1) == 0.5
    assert ndcg_at_k(scores, relevance, 2) == 0.5
    assert precision_at_k(scores, relevance, 1) == 0.5


def test_k_larger_than_candidates_is_clipped():
    for metric in METRICS:
        assert metric(SCORES, RELEVANCE, 50) == metric(SCORES, RELEVANCE, 3), metric.__name__
    assert precision_at_k([[0.1, 0.2]], [[1, 1]], 10) == 1.0


def test_candidate_mask_removes_candidates_entirely():
    scores = np.array([[0.99, 0.4, 0.8, 0.1]])
    relevance = np.array([[1, 0, 1, 2]])
    mask = np.array([[False, True, True, True]])
    for metric in METRICS:
        masked = metric(scores, relevance, 2, candidate_mask=mask)
        dropped = metric(scores[:, 1:], relevance[:, 1:], 2)
        assert masked == pytest.approx(dropped), metric.__name__
    # The masked candidate was relevant and top-scored; without the mask the numbers differ.
    assert ndcg_at_k(scores, relevance, 2) != pytest.approx(
        ndcg_at_k(scores, relevance, 2, candidate_mask=mask)
    )


def test_negative_relevance_counts_as_not_relevant():
    assert hit_at_k([[0.9, 0.1]], [[-1, 1]], 1) == 0.0
    assert ndcg_at_k([[0.9, 0.1]], [[-1, 1]], 2) == pytest.approx(1 / math.log2(3))


def test_inputs_of_every_kind_agree():
    expected = ndcg_at_k(SCORES, RELEVANCE, 2)
    assert isinstance(expected, float)
    assert ndcg_at_k(np.array(SCORES), np.array(RELEVANCE, dtype=bool), 2) == expected
    assert ndcg_at_k(torch.tensor(SCORES, dtype=torch.bfloat16), torch.tensor(RELEVANCE), 2) == expected
    assert ndcg_at_k(torch.tensor(SCORES), torch.tensor(RELEVANCE), np.int64(2)) == expected


# ------------------------------------------------------------------------------------------ errors
def test_nan_score_names_the_query_row():
    with pytest.raises(ValueError, match="row 1"):
        hit_at_k([[0.1, 0.2], [0.3, float("nan")]], [[1, 0], [1, 0]], 1)
    with pytest.raises(ValueError, match="row 0"):
        ranks([[float("nan"), 1.0]])
    # a NaN in a masked-out slot is padding, not an error
    assert hit_at_k([[0.1, float("nan")]], [[1, 0]], 1, candidate_mask=[[True, False]]) == 1.0


@pytest.mark.parametrize(
    ("scores", "relevance", "k", "message"),
    [
        ([[0.1, 0.2]], [[1, 0, 0]], 1, "same"),
        ([0.1, 0.2], [1, 0], 1, "2-D"),
        ([[0.1, 0.2]], [[1, 0]], 0, "k must be >= 1"),
        ([[0.1, 0.2]], [[1, 0]], 1.0, "k must be an int"),
        ([[0.1, 0.2]], [[1, 0]], True, "k must be an int"),
        ([[0.1, 0.2], [0.3]], [[1, 0], [1]], 1, "rectangular"),
        (np.zeros((0, 3)), np.zeros((0, 3)), 1, "no queries"),
        ([[0.1, 0.2]], [[float("nan"), 1]], 1, "relevance of query row 0"),
    ],
)
def test_bad_inputs_raise_clear_errors(scores, relevance, k, message):
    for metric in METRICS:
        with pytest.raises(ValueError, match=message):
            metric(scores, relevance, k)


def test_bad_candidate_mask_raises():
    with pytest.raises(ValueError, match="candidate_mask has shape"):
        hit_at_k([[0.1, 0.2]], [[1, 0]], 1, candidate_mask=[[True]])
    with pytest.raises(ValueError, match="boolean"):
        hit_at_k([[0.1, 0.2]], [[1, 0]], 1, candidate_mask=[[2, 0]])


# -------------------------------------------------------------------------------------- properties
@st.composite
def ranking_problems(draw):
    """Small integer scores (many ties), graded relevance, an optional ragged mask, k up to past C."""
    num_queries = draw(st.integers(1, 5))
    num_candidates = draw(st.integers(1, 7))
    cells = num_queries * num_candidates
    scores = draw(st.lists(st.integers(-3, 3), min_size=cells, max_size=cells))
    relevance = draw(st.lists(st.integers(-1, 3), min_size=cells, max_size=cells))
    mask = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=cells, max_size=cells)))
    k = draw(st.integers(1, num_candidates + 2))

    def grid(values):
        return [values[q * num_candidates : (q + 1) * num_candidates] for q in range(num_queries)]

    return grid(scores), grid(relevance), k, None if mask is None else grid(mask)


@settings(max_examples=150, deadline=None)
@given(ranking_problems(), st.sampled_from(sorted(BY_NAME)))
def test_metrics_match_the_plain_loop_reference(problem, name):
    scores, relevance, k, mask = problem
    got = BY_NAME[name](scores, relevance, k, candidate_mask=mask)
    assert got == pytest.approx(reference(name, scores, relevance, k, mask), abs=1e-12)
    assert 0.0 <= got <= 1.0 + 1e-12


@settings(max_examples=60, deadline=None)
@given(ranking_problems())
def test_ranks_match_the_reference_order(problem):
    scores, _, _, mask = problem
    got = ranks(scores, candidate_mask=mask)
    for q, row in enumerate(scores):
        mask_row = mask[q] if mask is not None else [True] * len(row)
        expected = [0] * len(row)
        for position, c in enumerate(_ranking(row, mask_row), start=1):
            expected[c] = position
        assert got[q].tolist() == expected


@pytest.mark.parametrize("seed", range(6))
def test_ndcg_matches_sklearn_without_ties(seed):
    # sklearn averages tied scores; distinct random floats keep the two tie rules out of the comparison.
    rng = np.random.default_rng(seed)
    num_queries, num_candidates = int(rng.integers(2, 9)), int(rng.integers(2, 12))
    scores = rng.random((num_queries, num_candidates))
    relevance = rng.integers(0, 4, size=(num_queries, num_candidates)) * (rng.random((num_queries, 1)) > 0.2)
    relevance[0] = 0  # sklearn scores an all-zero query 0 too
    for k in (1, 3, 5, num_candidates + 3):
        assert ndcg_at_k(scores, relevance, k) == pytest.approx(ndcg_score(relevance, scores, k=k), abs=1e-12)
