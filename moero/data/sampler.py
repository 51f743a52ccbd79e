"""Adaptive sample balancing, reference eq. (10), as a DDP-aware torch ``Sampler``.

For file ``i`` and rules ``r`` (default group, modality, centre)::

    w_i = round( clip_[1, 8]( prod_r [ m ((N / G_r) / n_{r, g_r(i)} - 1) + 1 ] ) ),   m = 0.7

with ``N`` files, ``G_r`` groups under rule ``r`` and ``n_{r, g}`` the size of group ``g``. File ``i``
is drawn ``w_i`` times per epoch: a file of an under-represented group (a rare view, a small centre)
is repeated, a file of a large group is drawn once. On a slice-level dataset every example of
file ``i`` is repeated ``w_i`` times.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["BalancedSampler", "balance_weights", "RULES"]


def _group(rec: dict[str, Any]) -> str:
    return f"{rec.get('modality', '')}/{rec.get('view', '')}"


# rule name -> the key of a file that defines its group under that rule
RULES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "group": _group,  # modality and view, e.g. Cine/sax, Cine/lax_4ch, Mapping/sax
    "modality": lambda rec: rec.get("modality", ""),
    "centre": lambda rec: rec.get("centre", ""),
}


def balance_weights(
    records: Sequence[dict[str, Any]],
    rules: Sequence[str | Callable[[dict[str, Any]], Any]] = ("group", "modality", "centre"),
    m: float = 0.7,
    clip: tuple[float, float] = (1.0, 8.0),
) -> list[int]:
    """Integer draw counts ``w_i`` of eq. (10) for per-file ``records`` (dicts with the rules' keys)."""
    if not 0 <= m:
        raise ValueError(f"m must be >= 0, got {m}")
    if clip[0] > clip[1]:
        raise ValueError(f"clip must be (low, high) with low <= high, got {clip}")
    n = len(records)
    if n == 0:
        return []
    factor = np.ones(n)
    for rule in rules:
        key = RULES.get(rule) if isinstance(rule, str) else rule
        if key is None:
            raise ValueError(f"unknown rule {rule!r}; known rules: {sorted(RULES)} or a callable")
        groups = [key(r) for r in records]
        sizes = Counter(groups)
        per_group = n / len(sizes)  # N / G_r
        factor *= np.array([m * (per_group / sizes[g] - 1) + 1 for g in groups])
    # round half up (not numpy's half-to-even) so that 1.5 -> 2 as the formula reads
    return [int(math.floor(v + 0.5)) for v in np.clip(factor, clip[0], clip[1])]


class BalancedSampler(Sampler[int]):
    """Indices of a dataset with file ``i`` drawn ``w_i`` times (eq. (10)), shuffled per epoch, split over ranks.

    ``data``: a :class:`moero.data.dataset.SliceDataset` (its ``file_records()`` and ``example_file``) or a
    sequence of per-item dicts (one item per file). Each epoch's order is a permutation seeded by
    ``(seed, epoch)`` (call :meth:`set_epoch`), padded by wrapping to a multiple of ``num_replicas``;
    rank ``r`` takes every ``num_replicas``-th index from ``r``, as ``DistributedSampler`` does.
    """

    def __init__(
        self,
        data: Any,
        rules: Sequence[str | Callable[[dict[str, Any]], Any]] = ("group", "modality", "centre"),
        m: float = 0.7,
        clip: tuple[float, float] = (1.0, 8.0),
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas - 1}], got {rank!r}")
        if hasattr(data, "file_records"):
            records = data.file_records()
            example_file = np.asarray(data.example_file, dtype=np.int64)
        else:
            records = [dict(r) for r in data]
            example_file = np.arange(len(records), dtype=np.int64)
        self.weights = balance_weights(records, rules, m, clip)
        self.records = records
        per_example = np.asarray(self.weights, dtype=np.int64)[example_file] if len(example_file) else example_file
        self._base = np.repeat(np.arange(len(example_file), dtype=np.int64), per_example)
        self.num_replicas, self.rank, self.seed, self.shuffle = num_replicas, rank, int(seed), shuffle
        self.epoch = 0
        self.num_samples = math.ceil(len(self._base) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self) -> list[int]:
        """All ranks' indices of this epoch, before the split (padded to ``total_size``)."""
        idx = self._base
        if self.shuffle and len(idx):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = idx[torch.randperm(len(idx), generator=gen).numpy()]
        if len(idx) and self.total_size > len(idx):
            idx = np.concatenate([idx, np.resize(idx, self.total_size - len(idx))])
        return idx.tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state.get("epoch", self.epoch))
        self.seed = int(state.get("seed", self.seed))
