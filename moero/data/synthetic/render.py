"""Sampling the 3-D anatomy on an image plane: implicit shapes painted with their partial-volume coverage.

Every shape is an implicit function ``f`` of world coordinates (mm; ``f < 0`` inside, roughly a signed
distance). On a plane's pixel grid its coverage is ``clamp(0.5 - f / |grad f|, 0, 1)`` with the in-plane
gradient in pixel units (finite differences), the first-order area fraction of each pixel inside the
shape (exact for straight edges), so any oblique cut of a 3-D shape gets the right edge width. Shapes
combine by ``max`` (intersection) and ``min`` (union) of their functions before the coverage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Coords = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Implicit = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

Z_AXIS = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Plane:
    """An image plane in world mm (x: patient left, y: posterior, z: superior): FOV centre and the unit
    readout (``e_r``, array axis 0) and phase-encode (``e_p``, array axis 1) directions."""

    centre: np.ndarray
    e_r: np.ndarray
    e_p: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.e_r, self.e_p)

    def world(self, xs: torch.Tensor, ys: torch.Tensor) -> Coords:
        """World coordinates ``(X, Y, Z)`` (each ``(len(xs), len(ys))``) of the grid ``xs`` x ``ys`` (mm)."""
        c, r, p = (torch.as_tensor(v, dtype=torch.float32) for v in (self.centre, self.e_r, self.e_p))
        return tuple(c[i] + xs[:, None] * r[i] + ys[None, :] * p[i] for i in range(3))  # type: ignore[return-value]


def unit(v: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
    """``v`` scaled to length one."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def ellipsoid(centre: np.ndarray, axes: np.ndarray, semi: tuple[float, float, float]) -> Implicit:
    """Ellipsoid with orthonormal ``axes`` (rows) and semi-axes ``semi``: ``g / |grad g|``, ``g = rho^2 - 1``."""
    c = [float(v) for v in centre]
    ax = [[float(v) for v in row] for row in axes]
    inv2 = [1.0 / (s * s) for s in semi]

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        u = [dx * a[0] + dy * a[1] + dz * a[2] for a in ax]
        g = u[0] * u[0] * inv2[0] + u[1] * u[1] * inv2[1] + u[2] * u[2] * inv2[2] - 1
        grad = torch.sqrt((u[0] * inv2[0]) ** 2 + (u[1] * inv2[1]) ** 2 + (u[2] * inv2[2]) ** 2)
        return g / (2 * grad + 1e-4)

    return f


def cylinder_z(cx: float, cy: float, a: float, b: float, power: float = 2.0) -> Implicit:
    """Infinite (super)elliptic cylinder along z: the radial distance to the cross-section's boundary."""

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        u, v = (x - cx) / a, (y - cy) / b
        if power == 2.0:
            rho = torch.sqrt(u * u + v * v + 1e-12)
        else:
            rho = (u.abs() ** power + v.abs() ** power + 1e-12) ** (1 / power)
        return (rho - 1) * torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) / rho

    return f


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float | None = None) -> Implicit:
    """Tube around the segment ``p0 -> p1`` with radius ``r0`` tapering to ``r1``: exact signed distance."""
    a = [float(v) for v in p0]
    d = [float(q - p) for p, q in zip(p0, p1, strict=True)]
    dd = max(d[0] ** 2 + d[1] ** 2 + d[2] ** 2, 1e-9)
    r1 = r0 if r1 is None else r1

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        px, py, pz = x - a[0], y - a[1], z - a[2]
        t = ((px * d[0] + py * d[1] + pz * d[2]) / dd).clamp(0, 1)
        dist = torch.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
        return dist - (r0 + t * (r1 - r0))

    return f


def halfspace(normal: np.ndarray, point: np.ndarray) -> Implicit:
    """``(p - point) . normal``: negative on the side opposite to ``normal``."""
    n = [float(v) for v in unit(normal)]
    off = float(np.dot(unit(normal), point))

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x * n[0] + y * n[1] + z * n[2] - off

    return f


def intersect(*fs: Implicit) -> Implicit:
    """Inside all of ``fs``."""

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = fs[0](x, y, z)
        for g in fs[1:]:
            out = torch.maximum(out, g(x, y, z))
        return out

    return f


def shell(outer: Implicit, inner: Implicit) -> Implicit:
    """Inside ``outer`` and outside ``inner``."""
    return lambda x, y, z: torch.maximum(outer(x, y, z), -inner(x, y, z))


class Canvas:
    """A real image on a plane's grid, painted shape by shape with partial-volume coverage.

    Each paint replaces ``alpha`` (the coverage) of the current value by the tissue's value (times a
    smooth texture). Work is limited to the pixels near the shape's bounding sphere.
    """

    def __init__(self, coords: Coords, plane: Plane, xs: torch.Tensor, ys: torch.Tensor, values: torch.Tensor,
                 texture: torch.Tensor, tex_amp: torch.Tensor, image: torch.Tensor | None = None,
                 margin: float = 0.0):
        self.X, self.Y, self.Z = coords
        self.plane, self.xs, self.ys = plane, xs, ys
        self.h = float(xs[1] - xs[0])
        self.values, self.texture, self.tex_amp = values, texture, tex_amp
        self.image = torch.zeros(self.X.shape, dtype=torch.float32) if image is None else image.clone()
        self.margin = margin + 2 * self.h
        self._axes = np.stack([plane.normal, plane.e_r, plane.e_p])
        self._x0, self._y0 = float(xs[0]), float(ys[0])

    def _box(self, centre: np.ndarray | None, radius: float) -> tuple[slice, slice] | None:
        if centre is None:
            return slice(None), slice(None)
        dn, cu, cv = (self._axes @ (centre - self.plane.centre)).tolist()
        r = radius + self.margin
        if abs(dn) >= r:
            return None
        half = math.sqrt(r * r - dn * dn)
        x0, y0 = self._x0, self._y0
        i0, i1 = max(int((cu - half - x0) / self.h), 0), min(int((cu + half - x0) / self.h) + 2, len(self.xs))
        j0, j1 = max(int((cv - half - y0) / self.h), 0), min(int((cv + half - y0) / self.h) + 2, len(self.ys))
        if i1 - i0 < 2 or j1 - j0 < 2:
            return None
        return slice(i0, i1), slice(j0, j1)

    def coverage(self, f: torch.Tensor) -> torch.Tensor:
        """Area fraction of each pixel inside ``f < 0``: ``clamp(0.5 - f / |grad f|)`` in pixel units."""
        gx, gy = torch.gradient(f)
        grad = torch.sqrt(gx * gx + gy * gy).clamp_min(1e-6)
        return (0.5 - f / grad).clamp(0, 1)

    def paint(self, label: int, shape: Implicit, centre: np.ndarray | None = None, radius: float = 0.0,
              weight: torch.Tensor | float | None = None) -> None:
        """Paint ``shape`` (bounded by the sphere ``centre``, ``radius``; None: anywhere) with ``label``."""
        box = self._box(centre, radius)
        if box is None:
            return
        alpha = self.coverage(shape(self.X[box], self.Y[box], self.Z[box]))
        if weight is not None:
            alpha = alpha * weight
        value = self.values[label] * (1 + self.tex_amp[label] * self.texture[box])
        region = self.image[box]
        self.image[box] = region + alpha * (value - region)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], corr_px: float) -> torch.Tensor:
    """A real Gaussian random field of unit std with correlation length ``corr_px`` pixels."""
    noise = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    ky = torch.fft.fftfreq(shape[0]).view(-1, 1)
    kx = torch.fft.fftfreq(shape[1]).view(1, -1)
    filt = torch.exp(-((ky**2 + kx**2) * (math.pi * corr_px) ** 2) / 2)
    out = torch.fft.ifft2(torch.fft.fft2(noise) * filt).real
    return out / out.std().clamp_min(1e-6)


def background_phase(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smooth second-order polynomial phase (radians) over the field of view."""
    xn, yn = x / 200.0, y / 200.0
    p = rng.normal(0, [0.6, 0.8, 0.8, 0.4, 0.4, 0.4])
    return p[0] + p[1] * xn + p[2] * yn + p[3] * xn**2 + p[4] * xn * yn + p[5] * yn**2


def warp(coeffs: np.ndarray, coords: Coords) -> Coords:
    """A subject's smooth deformation of world coordinates (a few mm, wavelengths of 15-40 cm)."""
    x, y, z = coords
    out = []
    for axis, base in enumerate((x, y, z)):
        amp, kx, ky, ph = coeffs[axis]
        disp = 0.0
        for j in range(3):
            arg = x * (0.4 + 0.3 * abs(kx[j])) / 400 + y * (0.4 + 0.3 * abs(ky[j])) / 400 + z * (0.3 * kx[j]) / 400
            disp = disp + 3.0 * amp[j] * torch.sin(2 * math.pi * arg + ph[j])
        out.append(base + disp)
    return out[0], out[1], out[2]
