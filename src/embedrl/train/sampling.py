"""Batches drawn from one dataset at a time (method.md, stage 3: "each sub-batch drawn from one dataset,
probability proportional to weight x size").

:class:`DatasetBatchSampler` plans each epoch up front, deterministically from ``(seed, epoch)``:

1. **How many samples of each dataset.** Only the ratios of the weights matter, so they are scaled by
   the largest one: dataset ``d`` contributes ``m_d = floor(size_d * w_d / w_max)`` samples, drawn
   without replacement from a fresh permutation of ``range(size_d)`` each epoch. With equal weights
   (the default) an epoch is one full pass over every dataset; a dataset with half the weight of the
   heaviest one sees a different random half of its items each epoch. No index repeats within an epoch.
2. **Batches.** Each dataset's sample is cut into global batches of ``batch_size``; with
   ``drop_last=True`` a final partial batch is dropped; with ``drop_last=False`` it is kept, trimmed to
   a multiple of ``world_size`` so every rank gets the same number of rows (at most ``world_size - 1``
   items of a dataset are then left out of the epoch).
3. **Order.** The batches of all datasets are shuffled together, so the dataset of every batch is a
   draw with probability ``n_d / sum n`` where ``n_d`` (batches of ``d``) is proportional to
   ``w_d * size_d`` up to rounding, i.e. proportional to weight x size.

``batch_size`` is the **global** batch (512 for the paper's 2B model): it must be divisible by
``world_size`` and every rank yields its contiguous slice of ``batch_size // world_size`` indices of the
same global batch (same dataset on every rank). With ``drop_last=True`` the plan does not depend on the
world size, so a run can resume on a different number of ranks and see the same global batches.

Yields ``(dataset_name, [indices])`` with indices local to that dataset. It is not a torch ``Sampler``
of flat indices: a training loop maps the pair to its dataset itself (or uses :attr:`offsets` for a
concatenated dataset). Do not let accelerate shard these batches again (the sampler already shards).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["DatasetBatchSampler"]

_EPS = 1e-9


def _name_key(name: str) -> int:
    """A stable (process- and order-independent) integer per dataset name for seeding its RNG."""
    return zlib.crc32(name.encode("utf-8"))


class DatasetBatchSampler:
    """Deterministic, resumable, rank-sharded sampler of one-dataset batches. See the module docstring.

    Args:
        sizes: number of items per dataset name.
        batch_size: the **global** batch size (all ranks together); divisible by ``world_size``.
        weights: relative weight per dataset (missing names: 1.0; 0 excludes a dataset).
        seed: base seed; the plan of epoch ``e`` depends only on ``(seed, e)`` and the arguments.
        drop_last: drop the final partial batch of each dataset (else keep it, see the module docstring).
        rank, world_size: this process's data-parallel rank and the number of ranks.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        batch_size: int,
        *,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not sizes:
            raise ValueError("sizes is empty: no dataset to sample from")
        self.sizes: dict[str, int] = {}
        for name, size in sizes.items():
            if int(size) != size or size < 0:
                raise ValueError(f"size of dataset {name!r} must be a non-negative integer, got {size!r}")
            self.sizes[str(name)] = int(size)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.sizes))
        if unknown:
            raise ValueError(f"weights given for unknown datasets {unknown}; known: {sorted(self.sizes)}")
        self.weights: dict[str, float] = {}
        for name in self.sizes:
            w = float(weights.get(name, 1.0))
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"weight of dataset {name!r} must be finite and >= 0, got {w!r}")
            self.weights[name] = w

        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(world_size) != world_size or world_size < 1:
            raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size is the global batch and must be divisible by world_size: {batch_size} % "
                f"{world_size} != 0"
            )
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.local_batch_size = self.batch_size // self.world_size
        self.seed = int(seed)
        self.drop_last = bool(drop_last)

        self._samples = self._samples_per_dataset()
        self._counts = {name: self._num_batches(m) for name, m in self._samples.items()}
        self._len = sum(self._counts.values())
        if self._len == 0:
            raise ValueError(
                f"no batch of {self.batch_size} can be formed from sizes {self.sizes} with weights "
                f"{self.weights} (drop_last={self.drop_last})"
            )
        self.epoch = 0
        self._position = 0
        self._plan_cache: tuple[int, list[tuple[str, np.ndarray]]] | None = None

    # ---------------------------------------------------------------- epoch plan

    def _samples_per_dataset(self) -> dict[str, int]:
        active = [self.weights[n] for n, s in self.sizes.items() if s > 0 and self.weights[n] > 0]
        if not active:
            raise ValueError("every dataset is empty or has weight 0")
        w_max = max(active)
        out = {}
        for name, size in self.sizes.items():
            frac = self.weights[name] / w_max
            out[name] = size if frac >= 1.0 else min(size, int(math.floor(size * frac + _EPS)))
        return out

    def _num_batches(self, m: int) -> int:
        full, rest = divmod(m, self.batch_size)
        if not self.drop_last and rest - rest % self.world_size > 0:
            return full + 1
        return full

    def _rng(self, epoch: int, name: str | None) -> np.random.Generator:
        """Independent streams: one per (seed, epoch, dataset) for permutations, one for the order."""
        key = [0, 0] if name is None else [1, _name_key(name)]
        return np.random.default_rng([self.seed % (1 << 63), int(epoch), *key])

    def _plan(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        """The epoch's global batches, in order: (dataset name, global-batch indices)."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        batches: list[tuple[str, np.ndarray]] = []
        for name in sorted(self._samples):  # sorted: the plan does not depend on the dict order
            m = self._samples[name]
            if self._counts[name] == 0:
                continue
            perm = self._rng(epoch, name).permutation(self.sizes[name])[:m]
            for start in range(0, m, self.batch_size):
                chunk = perm[start : start + self.batch_size]
                if len(chunk) < self.batch_size:
                    if self.drop_last:
                        break
                    chunk = chunk[: len(chunk) - len(chunk) % self.world_size]
                    if len(chunk) == 0:
                        break
                batches.append((name, chunk))
        order = self._rng(epoch, None).permutation(len(batches))
        plan = [batches[i] for i in order]
        self._plan_cache = (epoch, plan)
        return plan

    def _local(self, chunk: np.ndarray) -> list[int]:
        b = len(chunk) // self.world_size
        return [int(i) for i in chunk[self.rank * b : (self.rank + 1) * b]]

    # ---------------------------------------------------------------- iteration

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank and in every epoch)."""
        return self._len

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        """Yield this rank's ``(dataset_name, indices)`` from the current position of the current epoch.

        After a completed epoch, iterating again without :meth:`set_epoch` replays the same epoch.
        """
        plan = self._plan(self.epoch)
        start = self._position if self._position < len(plan) else 0
        for i in range(start, len(plan)):
            self._position = i + 1
            name, chunk = plan[i]
            yield name, self._local(chunk)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate. A different epoch restarts at its first batch; the same epoch
        keeps the position (so ``set_epoch`` after :meth:`load_state_dict` resumes mid-epoch)."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._position = 0

    # ---------------------------------------------------------------- resume

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where the sampler is: epoch and number of batches already yielded in it.

        Pass ``consumed`` (batches the trainer actually used in this epoch) when a DataLoader with
        workers iterates the sampler ahead of the training step.
        """
        position = self._position if consumed is None else int(consumed)
        if not 0 <= position <= self._len:
            raise ValueError(f"position {position} is outside [0, {self._len}]")
        return {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "sizes": dict(self.sizes),
            "weights": dict(self.weights),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
        """Restore epoch and position. With ``strict``, the seed, global batch size, ``drop_last``, sizes
        and weights must match (they define the plan); ``rank`` and ``world_size`` may differ."""
        if strict:
            for key in ("seed", "batch_size", "drop_last", "sizes", "weights"):
                if key in state and state[key] != getattr(self, key):
                    raise ValueError(
                        f"sampler state was saved with {key}={state[key]!r}, this sampler has "
                        f"{getattr(self, key)!r}; the remaining batches would differ (strict=False to force)"
                    )
        position = int(state.get("position", 0))
        if not 0 <= position <= self._len:
            raise ValueError(f"position {position} is outside [0, {self._len}]")
        self.epoch = int(state.get("epoch", 0))
        self._position = position

    # ---------------------------------------------------------------- introspection

    @property
    def position(self) -> int:
        """Batches already yielded in the current epoch."""
        return self._position

    @property
    def probabilities(self) -> dict[str, float]:
        """Target probability of each dataset per batch: weight x size, normalised."""
        mass = {n: self.weights[n] * self.sizes[n] for n in self.sizes}
        total = sum(mass.values())
        return {n: v / total for n, v in mass.items()}

    @property
    def batches_per_dataset(self) -> dict[str, int]:
        """Global batches of each dataset in one epoch."""
        return dict(self._counts)

    @property
    def offsets(self) -> dict[str, int]:
        """Start of each dataset in the concatenation of all datasets in ``sizes`` order."""
        out, total = {}, 0
        for name, size in self.sizes.items():
            out[name] = total
            total += size
        return out
