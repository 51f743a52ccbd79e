"""Quick numerical phantoms for tests and notebooks: a Shepp-Logan image and smooth coil maps.

Both are analytic (no files) and cheap, so every test can build a fully sampled multi-coil scan
``y = F S x`` (reference eq. (1)) of any size, odd or even.
"""

from __future__ import annotations

import math

import torch

__all__ = ["shepp_logan", "coil_maps"]

# Modified Shepp-Logan (Toft 1996): intensity, semi-axes (a, b), centre (x0, y0), rotation in degrees.
_ELLIPSES = torch.tensor(
    [
        [1.00, 0.6900, 0.9200, 0.00, 0.0000, 0.0],
        [-0.80, 0.6624, 0.8740, 0.00, -0.0184, 0.0],
        [-0.20, 0.1100, 0.3100, 0.22, 0.0000, -18.0],
        [-0.20, 0.1600, 0.4100, -0.22, 0.0000, 18.0],
        [0.10, 0.2100, 0.2500, 0.00, 0.3500, 0.0],
        [0.10, 0.0460, 0.0460, 0.00, 0.1000, 0.0],
        [0.10, 0.0460, 0.0460, 0.00, -0.1000, 0.0],
        [0.10, 0.0460, 0.0230, -0.08, -0.6050, 0.0],
        [0.10, 0.0230, 0.0230, 0.00, -0.6060, 0.0],
        [0.10, 0.0230, 0.0460, 0.06, -0.6050, 0.0],
    ],
    dtype=torch.float64,
)


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised coordinates in [-1, 1): ``y`` along H (rows), ``x`` along W (columns)."""
    for name, value in (("h", h), ("w", w)):
        if not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    y = (torch.arange(h, dtype=torch.float64) - h // 2) / (h / 2)
    x = (torch.arange(w, dtype=torch.float64) - w // 2) / (w / 2)
    return torch.meshgrid(y, x, indexing="ij")


def shepp_logan(h: int, w: int, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Modified Shepp-Logan phantom ``(h, w)`` with a smooth (low-order) phase, values of magnitude <= 1.

    The phase is a gentle linear-plus-quadratic ramp, as real MR images have, so that methods which
    assume a real image are caught out.
    """
    if not dtype.is_complex:
        raise ValueError(f"dtype must be a complex dtype, got {dtype}")
    yy, xx = _grid(h, w)
    p = _ELLIPSES
    theta = torch.deg2rad(p[:, 5])[:, None, None]
    dx, dy = xx[None] - p[:, 3, None, None], -yy[None] - p[:, 4, None, None]
    u = dx * torch.cos(theta) + dy * torch.sin(theta)
    v = -dx * torch.sin(theta) + dy * torch.cos(theta)
    inside = (u / p[:, 1, None, None]) ** 2 + (v / p[:, 2, None, None]) ** 2 <= 1.0
    magnitude = (inside * p[:, 0, None, None]).sum(0).clamp(min=0.0)
    phase = 0.4 * math.pi * (0.5 * xx + 0.3 * yy + 0.4 * (xx**2 - yy**2))
    return torch.polar(magnitude, phase).to(dtype)


def coil_maps(num_coils: int, h: int, w: int, seed: int = 0, normalize: bool = False) -> torch.Tensor:
    """Smooth complex coil sensitivities ``(num_coils, h, w)`` (complex64).

    Coils sit on an ellipse around the field of view (angles jittered by ``seed``); each map is a
    Gaussian fall-off from its coil with a smooth, coil-specific phase. ``normalize=True`` divides
    by the root sum of squares, as PromptMR+ normalises maps.
    """
    if not isinstance(num_coils, int) or num_coils < 1:
        raise ValueError(f"num_coils must be a positive integer, got {num_coils!r}")
    gen = torch.Generator().manual_seed(int(seed))
    yy, xx = _grid(h, w)
    angles = 2 * math.pi * (torch.arange(num_coils, dtype=torch.float64) / num_coils)
    angles = angles + 0.3 * torch.rand(num_coils, generator=gen, dtype=torch.float64)
    cy, cx = 1.2 * torch.sin(angles), 1.2 * torch.cos(angles)
    width = 0.9 + 0.3 * torch.rand(num_coils, generator=gen, dtype=torch.float64)
    dist2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    magnitude = torch.exp(-dist2 / (2 * width[:, None, None] ** 2))
    offset = 2 * math.pi * torch.rand(num_coils, generator=gen, dtype=torch.float64)
    tilt = torch.randn(num_coils, 2, generator=gen, dtype=torch.float64)
    phase = offset[:, None, None] + 0.5 * (tilt[:, 0, None, None] * yy + tilt[:, 1, None, None] * xx)
    maps = torch.polar(magnitude, phase)
    if normalize:
        maps = maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True) + 1e-12)
    return maps.to(torch.complex64)
