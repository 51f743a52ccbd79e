"""fastMRI's sampling masks: random and equispaced Cartesian lines with a fully sampled centre.

As the fastMRI challenge draws them (``fastmri.data.subsample``): a fraction ``center_fraction`` of
the ``W`` phase-encode columns, ``round(W * center_fraction)`` of them, is sampled in the centre
(from column ``(W - n_low + 1) // 2``), and outside it

* ``fastmri_random`` (``RandomMaskFunc``): each column with probability
  ``(W / R - n_low) / (W - n_low)``, so that about ``W / R`` columns are sampled in all;
* ``fastmri_equispaced`` (``EquispacedMaskFractionFunc``, the equispaced masks of the challenge's
  brain data): every ``R'``-th column from a random offset below ``R'``, with
  ``R' = R (n_low - W) / (n_low R - W)`` so that again about ``W / R`` columns are sampled.

The challenge's pairs are R = 4 with centre fraction 0.08 and R = 8 with 0.04
(:data:`FASTMRI_CENTER_FRACTIONS`); other R take ``0.32 / R``. Draws use NumPy's ``RandomState`` of
the seed, as fastMRI does, so a seed gives fastMRI's own mask. The mask is the same for every row and
frame: a boolean ``(T, H, W)`` like :func:`moero.physics.masks.make_mask`'s.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["FASTMRI_KINDS", "FASTMRI_CENTER_FRACTIONS", "FASTMRI_ACCELERATIONS", "center_fraction",
           "low_frequencies", "fastmri_columns", "fastmri_mask"]

FASTMRI_KINDS = ("fastmri_random", "fastmri_equispaced")
FASTMRI_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
FASTMRI_ACCELERATIONS = (4, 8)


def center_fraction(acceleration: float) -> float:
    """The fastMRI challenge's centre fraction for ``R`` (0.08 at 4, 0.04 at 8), else ``0.32 / R``."""
    return FASTMRI_CENTER_FRACTIONS.get(int(acceleration), 0.32 / float(acceleration)) \
        if float(acceleration).is_integer() else 0.32 / float(acceleration)


def low_frequencies(num_cols: int, acceleration: float, fraction: float | None = None) -> int:
    """Columns of the fully sampled centre: ``round(W * center_fraction)``."""
    return int(round(num_cols * (center_fraction(acceleration) if fraction is None else fraction)))


def _seed(seed: int | tuple[int, ...] | torch.Generator | None) -> int | tuple[int, ...] | None:
    if isinstance(seed, torch.Generator):
        return int(torch.randint(2**31 - 1, (1,), generator=seed))
    return seed


def fastmri_columns(kind: str, num_cols: int, acceleration: float, seed: int | tuple[int, ...] | torch.Generator |
                    None = None, fraction: float | None = None) -> np.ndarray:
    """The sampled columns (boolean ``(W,)``) of a fastMRI mask (module docstring)."""
    if kind not in FASTMRI_KINDS:
        raise ValueError(f"kind must be one of {FASTMRI_KINDS}, got {kind!r}")
    if not isinstance(num_cols, int) or num_cols < 2:
        raise ValueError(f"num_cols must be an integer >= 2, got {num_cols!r}")
    if not isinstance(acceleration, int | float) or not acceleration > 1:
        raise ValueError(f"acceleration must be a number > 1, got {acceleration!r}")
    n_low = low_frequencies(num_cols, acceleration, fraction)
    if not 0 < n_low < num_cols / acceleration:
        raise ValueError(f"centre of {n_low} columns does not fit {num_cols} columns at R = {acceleration}")
    rng = np.random.RandomState(_seed(seed))
    if kind == "fastmri_random":
        prob = (num_cols / acceleration - n_low) / (num_cols - n_low)
        mask = rng.uniform(size=num_cols) < prob
    else:
        adjusted = (acceleration * (n_low - num_cols)) / (n_low * acceleration - num_cols)
        offset = rng.randint(0, high=max(round(adjusted), 1))
        mask = np.zeros(num_cols, dtype=bool)
        mask[np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.int64)] = True
    pad = (num_cols - n_low + 1) // 2
    mask[pad:pad + n_low] = True
    return mask


def fastmri_mask(kind: str, shape: tuple[int, int, int], acceleration: float,
                 seed: int | tuple[int, ...] | torch.Generator | None = None,
                 fraction: float | None = None) -> torch.Tensor:
    """A boolean ``(T, H, W)`` mask: :func:`fastmri_columns` along ``W``, the same in every row and frame."""
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape must be three positive integers (T, H, W), got {shape!r}")
    cols = torch.from_numpy(fastmri_columns(kind, int(shape[2]), acceleration, seed, fraction))
    return cols[None, None, :].expand(shape[0], shape[1], shape[2]).contiguous()
