"""DatasetBatchSampler: one dataset per batch, weight x size, no repeats, determinism, resume, rank shards."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from embedrl.train.sampling import DatasetBatchSampler

SIZES = {"a": 400, "b": 1200, "c": 800}
WEIGHTS = {"a": 2.0, "b": 1.0, "c": 0.5}  # weight x size = 800 : 1200 : 400


def _epoch(sampler: DatasetBatchSampler, epoch: int) -> list[tuple[str, list[int]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def _global_epoch(world_size: int, epoch: int = 0, **kwargs) -> list[tuple[str, list[int]]]:
    """The global batches, rebuilt from the rank slices of ``world_size`` samplers."""
    per_rank = [
        _epoch(DatasetBatchSampler(rank=r, world_size=world_size, **kwargs), epoch) for r in range(world_size)
    ]
    out = []
    for parts in zip(*per_rank, strict=True):
        names = {name for name, _ in parts}
        assert len(names) == 1, f"ranks disagree on the dataset of a batch: {names}"
        out.append((parts[0][0], [i for _, idx in parts for i in idx]))
    return out


def test_batches_follow_weight_times_size():
    s = DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=3)
    expected = {n: WEIGHTS[n] * SIZES[n] / 2400 for n in SIZES}
    assert s.probabilities == pytest.approx(expected)
    # Per epoch the batch counts are exactly proportional here (sizes chosen to divide evenly).
    assert s.batches_per_dataset == {"a": 50, "b": 75, "c": 25}
    assert len(s) == 150
    assert Counter(name for name, _ in _epoch(s, 0)) == {"a": 50, "b": 75, "c": 25}

    # The dataset of the first batches of many epochs is a draw proportional to weight x size.
    draws = Counter()
    for epoch in range(100):
        for name, _ in _epoch(s, epoch)[:10]:
            draws[name] += 1
    total = sum(draws.values())
    chi2 = sum((draws[n] - total * p) ** 2 / (total * p) for n, p in expected.items())
    assert chi2 < 13.8, (draws, chi2)  # chi-square, 2 degrees of freedom, p = 0.001


def test_default_weights_use_every_full_batch():
    s = DatasetBatchSampler({"x": 37, "y": 16, "z": 3}, 8, seed=0)
    assert s.batches_per_dataset == {"x": 4, "y": 2, "z": 0}
    seen = Counter(name for name, _ in s)
    assert seen == {"x": 4, "y": 2}


def test_one_dataset_per_batch_and_no_repeats_within_an_epoch():
    s = DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=1)
    for epoch in range(3):
        used: dict[str, list[int]] = {n: [] for n in SIZES}
        for name, idx in _epoch(s, epoch):
            assert len(idx) == 8
            assert all(0 <= i < SIZES[name] for i in idx)
            used[name].extend(idx)
        for name, idx in used.items():
            assert len(idx) == len(set(idx)), f"repeated index in {name}"
        assert set(used["a"]) == set(range(400))  # the heaviest dataset is used in full
        assert len(used["c"]) == 200  # c: a quarter of the weight of a -> a random quarter per epoch


def test_downweighted_dataset_sees_a_different_subset_each_epoch():
    s = DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=1)
    subsets = [frozenset(i for n, idx in _epoch(s, e) if n == "c" for i in idx) for e in range(2)]
    assert subsets[0] != subsets[1]


def test_deterministic_given_seed_and_epoch():
    a = DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=5)
    b = DatasetBatchSampler(dict(reversed(list(SIZES.items()))), 8, weights=WEIGHTS, seed=5)
    assert _epoch(a, 2) == _epoch(b, 2)  # same plan, whatever the dict order
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=6), 0)
    # Iterating again without set_epoch replays the same epoch.
    a.set_epoch(4)
    assert list(a) == list(a)


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_from_state_dict_gives_the_remaining_sequence(world_size):
    kwargs = dict(sizes=SIZES, batch_size=8, weights=WEIGHTS, seed=11, world_size=world_size)
    for rank in range(world_size):
        full = _epoch(DatasetBatchSampler(rank=rank, **kwargs), 3)
        s = DatasetBatchSampler(rank=rank, **kwargs)
        s.set_epoch(3)
        it = iter(s)
        head = [next(it) for _ in range(17)]
        state = json.loads(json.dumps(s.state_dict()))  # survives a JSON checkpoint
        assert state["epoch"] == 3 and state["position"] == 17

        resumed = DatasetBatchSampler(rank=rank, **kwargs)
        resumed.load_state_dict(state)
        resumed.set_epoch(3)  # a training loop calls this at the top of the epoch: keeps the position
        assert head + list(resumed) == full
        resumed.set_epoch(4)  # next epoch starts at its beginning
        assert list(resumed) == _epoch(DatasetBatchSampler(rank=rank, **kwargs), 4)


def test_state_dict_with_consumed_count_and_validation():
    s = DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=0)
    full = list(s)
    it = iter(s)
    for _ in range(12):  # e.g. a DataLoader prefetching ahead of the trainer
        next(it)
    state = s.state_dict(consumed=9)
    r = DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=0)
    r.load_state_dict(state)
    assert list(r) == full[9:]
    with pytest.raises(ValueError, match="seed"):
        DatasetBatchSampler(SIZES, 8, weights=WEIGHTS, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="weights"):
        DatasetBatchSampler(SIZES, 8, seed=0).load_state_dict(state)


def test_resume_on_a_different_world_size_sees_the_same_global_batches():
    kwargs = dict(sizes=SIZES, batch_size=8, weights=WEIGHTS, seed=2)
    assert _global_epoch(1, **kwargs) == _global_epoch(4, **kwargs)
    s = DatasetBatchSampler(rank=0, world_size=1, **kwargs)
    it = iter(s)
    for _ in range(5):
        next(it)
    state = s.state_dict()
    rest = []
    per_rank = []
    for r in range(2):
        t = DatasetBatchSampler(rank=r, world_size=2, **kwargs)
        t.load_state_dict(state)
        per_rank.append(list(t))
    for (n0, i0), (n1, i1) in zip(*per_rank, strict=True):
        assert n0 == n1
        rest.append((n0, i0 + i1))
    assert rest == _global_epoch(1, **kwargs)[5:]


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_slices_are_disjoint_and_cover_the_global_batch(drop_last):
    sizes = {"a": 43, "b": 29}
    world = 4
    kwargs = dict(sizes=sizes, batch_size=8, seed=7, drop_last=drop_last)
    per_rank = [_epoch(DatasetBatchSampler(rank=r, world_size=world, **kwargs), 0) for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1
    used: dict[str, set[int]] = {n: set() for n in sizes}
    for parts in zip(*per_rank, strict=True):
        names = {n for n, _ in parts}
        assert len(names) == 1
        name = names.pop()
        sets = [set(i) for _, i in parts]
        assert len({len(i) for _, i in parts}) == 1  # equal share on every rank
        union = set().union(*sets)
        assert sum(len(x) for x in sets) == len(union)  # disjoint within the batch
        assert not union & used[name]  # and across the epoch
        used[name] |= union
    global_batches = _global_epoch(world, **kwargs)
    counts = Counter(n for n, _ in global_batches)
    if drop_last:
        # Same global batches as a single process: the plan does not depend on the world size.
        assert global_batches == _epoch(DatasetBatchSampler(**kwargs), 0)
        assert counts == {"a": 5, "b": 3}
        assert all(len(i) == 8 for _, i in global_batches)
    else:
        # Partial batches kept, trimmed to a multiple of the world size: a 43 = 5 * 8 + 3 -> the 3 are
        # left out; b 29 = 3 * 8 + 5 -> a batch of 4 (1 item left out).
        assert counts == {"a": 5, "b": 4}
        assert sorted(len(i) for _, i in global_batches) == [4] + [8] * 8
        assert {n: len(u) for n, u in used.items()} == {"a": 40, "b": 28}
        single = Counter(n for n, _ in _epoch(DatasetBatchSampler(**kwargs), 0))
        assert single == {"a": 6, "b": 4}  # one process keeps the partial batches whole


def test_argument_validation():
    with pytest.raises(ValueError, match="divisible"):
        DatasetBatchSampler(SIZES, 10, world_size=4)
    with pytest.raises(ValueError, match="unknown"):
        DatasetBatchSampler(SIZES, 8, weights={"zzz": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        DatasetBatchSampler(SIZES, 8, weights={"a": -1.0})
    with pytest.raises(ValueError, match="rank"):
        DatasetBatchSampler(SIZES, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no batch"):
        DatasetBatchSampler({"a": 3}, 8)
    with pytest.raises(ValueError, match="weight 0"):
        DatasetBatchSampler({"a": 30}, 8, weights={"a": 0.0})
    s = DatasetBatchSampler({"a": 16, "b": 16}, 8, weights={"b": 0.0})
    assert {n for n, _ in s} == {"a"}
    assert s.offsets == {"a": 0, "b": 16}


def test_trace_variants_are_drawn_per_batch_or_per_pair():
    from embedrl.train.embedder import _pick_variants

    mix = {"raw": 0.3, "teacher": 0.3, "blind": 0.2, "gold": 0.2}
    rng = np.random.default_rng(0)
    per_batch = [_pick_variants(rng, mix, 16, per_batch=True) for _ in range(200)]
    assert all(len(set(b)) == 1 and len(b) == 16 for b in per_batch)
    shares = {v: sum(b[0] == v for b in per_batch) / 200 for v in mix}
    assert all(abs(shares[v] - mix[v]) < 0.1 for v in mix)
    per_pair = _pick_variants(rng, mix, 64, per_batch=False)
    assert len(set(per_pair)) > 1
