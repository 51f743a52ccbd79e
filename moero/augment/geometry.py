"""Image-domain geometry for DualSpace-CMR: joint transforms of image and coil maps.

Every transform acts identically on each ``(H, W)`` plane of any number of complex tensors, so one
call moves an image ``(..., H, W)`` and its coil maps ``(..., C, H, W)`` together. The pattern
follows torchio: a ``Random*`` object draws its parameters from a :class:`torch.Generator` and
returns a frozen dataclass (``Flip``, ``Shift``, ``Rot90``, ``Affine``, ``Elastic``) that records
them and re-applies them deterministically; ``None`` means "not drawn this time".

Conventions (*assumptions* where the paper gives none):

* Flips, integer shifts and 90-degree rotations are exact (no interpolation). Integer shifts are
  circular (``torch.roll``): a shift of the object inside the field of view is a pure linear phase
  in k-space, which is exactly what a roll is.
* A 90-degree rotation swaps ``H`` (readout) and ``W`` (phase encode). On a non-square image that
  would change the matrix, the readout oversampling axis and the mask shape, so odd multiples of 90
  degrees are refused there (``ValueError``) and :class:`RandomRot90` draws only 180 degrees.
* Rotations, scalings and elastic deformations resample with ``grid_sample`` (bilinear,
  ``align_corners=True``, reflection padding), real and imaginary parts as separate channels.
  Coordinates are in pixels about the image centre ``((H-1)/2, (W-1)/2)``, so a rotation is a true
  rotation on a non-square matrix (square pixels assumed). The angle is counter-clockwise as shown
  by ``imshow`` (row 0 at the top); a scale above 1 magnifies the object.
* After the geometric transforms the maps are renormalised (:func:`transform_image_and_maps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as nnf

from moero.augment.base import RandomTransform, Transform, bernoulli, check_probability, draw_seed, uniform
from moero.physics.sense import normalize_maps

__all__ = [
    "Flip",
    "Shift",
    "Rot90",
    "Affine",
    "Elastic",
    "RandomFlip",
    "RandomShift",
    "RandomRot90",
    "RandomRotation",
    "RandomScaling",
    "RandomElastic",
    "transform_image_and_maps",
]

_AXIS_DIM = {"H": -2, "W": -1}




def _range(
    value: float | Sequence[float], name: str, symmetric: bool, minimum: float | None = None
) -> tuple[float, float]:
    """A scalar ``v`` means ``(-v, v)`` if ``symmetric`` else ``(v, v)``; a pair is taken as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if symmetric and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
        lo, hi = (-float(value), float(value)) if symmetric else (float(value), float(value))
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite range with low <= high, got {value!r}")
    if minimum is not None and lo < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return lo, hi








def _check_planes(tensors: Sequence[torch.Tensor]) -> tuple[int, int]:
    if not tensors:
        raise ValueError("tensors must hold at least one (..., H, W) tensor")
    shape = tensors[0].shape[-2:]
    for i, t in enumerate(tensors):
        if t.ndim < 2 or t.shape[-2:] != shape:
            raise ValueError(f"tensors[{i}] has shape {tuple(t.shape)}; all need the same (H, W) = {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _warp(tensors: Sequence[torch.Tensor], src_h: torch.Tensor, src_w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Resample every complex plane at source pixel coordinates ``(src_h, src_w)`` (each ``(H, W)``).

    All planes of all tensors go through one ``grid_sample`` call as real channels of a batch of one.
    """
    h, w = _check_planes(tensors)
    real_dtype = tensors[0].real.dtype if tensors[0].is_complex() else tensors[0].dtype
    grid = torch.stack((src_w * (2.0 / max(w - 1, 1)) - 1.0, src_h * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    grid = grid.to(device=tensors[0].device, dtype=real_dtype).unsqueeze(0)
    channels, shapes = [], []
    for t in tensors:
        parts = torch.view_as_real(t) if t.is_complex() else t.unsqueeze(-1)
        shapes.append((t.shape, t.is_complex()))
        channels.append(parts.movedim(-1, -3).reshape(-1, h, w).to(real_dtype))
    stacked = torch.cat(channels, dim=0).unsqueeze(0)
    out = nnf.grid_sample(stacked, grid, mode="bilinear", padding_mode="reflection", align_corners=True)[0]
    results, start = [], 0
    for shape, is_complex in shapes:
        parts = 2 if is_complex else 1
        n = math.prod(shape[:-2]) * parts
        chunk = out[start : start + n].reshape(*shape[:-2], parts, h, w).movedim(-3, -1)
        results.append(torch.view_as_complex(chunk.contiguous()) if is_complex else chunk[..., 0])
        start += n
    return tuple(results)


def _centred_pixels(h: int, w: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    ph = torch.arange(h, dtype=dtype) - (h - 1) / 2
    pw = torch.arange(w, dtype=dtype) - (w - 1) / 2
    return torch.meshgrid(ph, pw, indexing="ij")




@dataclass(frozen=True)
class Flip(Transform):
    """Reverse the listed axes (``"H"`` and/or ``"W"``). Its own inverse."""

    axes: tuple[str, ...] = ()
    name: ClassVar[str] = "flip"

    def __post_init__(self) -> None:
        if not set(self.axes) <= set(_AXIS_DIM) or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"axes must be distinct names among ('H', 'W'), got {self.axes!r}")

    @torch.no_grad()
    def apply(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _check_planes(tensors)
        dims = [_AXIS_DIM[a] for a in self.axes]
        return tuple(torch.flip(t, dims) if dims else t for t in tensors)

    def params(self) -> dict[str, Any]:
        return {"h": "H" in self.axes, "w": "W" in self.axes}


@dataclass(frozen=True)
class Shift(Transform):
    """Circular shift by integer pixels ``(dh, dw)``: a pure linear phase in k-space."""

    dh: int = 0
    dw: int = 0
    name: ClassVar[str] = "shift"

    def __post_init__(self) -> None:
        for key in ("dh", "dw"):
            if isinstance(getattr(self, key), bool) or not isinstance(getattr(self, key), int):
                raise ValueError(f"{key} must be an integer number of pixels, got {getattr(self, key)!r}")

    @torch.no_grad()
    def apply(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _check_planes(tensors)
        return tuple(torch.roll(t, shifts=(self.dh, self.dw), dims=(-2, -1)) for t in tensors)


@dataclass(frozen=True)
class Rot90(Transform):
    """Rotate by ``k`` quarter turns (counter-clockwise as displayed); odd ``k`` needs a square image."""

    k: int = 0
    name: ClassVar[str] = "rot90"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise ValueError(f"k must be an integer number of quarter turns, got {self.k!r}")

    @torch.no_grad()
    def apply(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = _check_planes(tensors)
        if self.k % 2 and h != w:
            raise ValueError(
                f"k={self.k} (an odd number of quarter turns) would swap readout and phase encode of a "
                f"non-square {h}x{w} image; use k=2 or a square image"
            )
        return tuple(torch.rot90(t, self.k % 4, dims=(-2, -1)) for t in tensors)


@dataclass(frozen=True)
class Affine(Transform):
    """Scale by ``(scale_h, scale_w)`` then rotate by ``angle`` degrees, about the image centre."""

    angle: float = 0.0
    scale_h: float = 1.0
    scale_w: float = 1.0
    name: ClassVar[str] = "affine"

    def __post_init__(self) -> None:
        if not math.isfinite(self.angle):
            raise ValueError(f"angle must be finite, got {self.angle!r}")
        for key in ("scale_h", "scale_w"):
            if not getattr(self, key) > 0 or not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be a finite number > 0, got {getattr(self, key)!r}")

    def source_coordinates(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates ``(src_h, src_w)`` each output pixel reads: ``q = S^-1 R^T p``."""
        ph, pw = _centred_pixels(h, w)
        a = math.radians(self.angle)
        qh = (math.cos(a) * ph + math.sin(a) * pw) / self.scale_h
        qw = (-math.sin(a) * ph + math.cos(a) * pw) / self.scale_w
        return qh + (h - 1) / 2, qw + (w - 1) / 2

    @torch.no_grad()
    def apply(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = _check_planes(tensors)
        return _warp(tensors, *self.source_coordinates(h, w))


def _gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter (std ``sigma`` pixels) of ``field`` ``(N, H, W)`` by its Fourier transfer function.

    Circular boundaries: harmless for a random field, and O(HW log HW) whatever ``sigma``.
    """
    h, w = field.shape[-2:]
    fh = torch.fft.fftfreq(h, dtype=field.dtype)[:, None]
    fw = torch.fft.rfftfreq(w, dtype=field.dtype)
    transfer = torch.exp(-2 * (math.pi * sigma) ** 2 * (fh**2 + fw**2))
    return torch.fft.irfft2(torch.fft.rfft2(field) * transfer, s=(h, w))


@dataclass(frozen=True)
class Elastic(Transform):
    """Smooth random displacement: white noise (from ``seed``) smoothed by a Gaussian of std ``sigma``
    pixels, each component scaled so its largest displacement is ``alpha`` pixels."""

    alpha: float = 0.0
    sigma: float = 16.0
    seed: int = 0
    name: ClassVar[str] = "elastic"

    def __post_init__(self) -> None:
        if not self.alpha >= 0 or not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite displacement >= 0 pixels, got {self.alpha!r}")
        if not self.sigma > 0 or not math.isfinite(self.sigma):
            raise ValueError(f"sigma must be a finite smoothness > 0 pixels, got {self.sigma!r}")

    def displacement(self, h: int, w: int) -> torch.Tensor:
        """The displacement field ``(2, H, W)`` in pixels (``[0]`` along H, ``[1]`` along W), float64.

        Drawn on the CPU from ``seed`` so that every device sees the same field.
        """
        gen = torch.Generator().manual_seed(int(self.seed))
        noise = torch.rand(2, h, w, generator=gen, dtype=torch.float64) * 2 - 1
        smooth = _gaussian_smooth(noise, float(self.sigma))
        peak = smooth.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        return smooth / peak * self.alpha

    @torch.no_grad()
    def apply(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = _check_planes(tensors)
        disp = self.displacement(h, w)
        ph, pw = _centred_pixels(h, w)
        return _warp(tensors, ph + (h - 1) / 2 + disp[0], pw + (w - 1) / 2 + disp[1])




class RandomFlip(RandomTransform):
    """Flip each listed axis independently with probability ``p``."""

    def __init__(self, axes: Sequence[str] = ("H", "W"), p: float = 0.5):
        Flip(tuple(axes))  # validates the axis names
        self.axes, self.p = tuple(axes), check_probability(p, "p")

    def sample(self, generator: torch.Generator, shape: tuple[int, int]) -> Flip | None:
        chosen = tuple(a for a in self.axes if bernoulli(generator, self.p))
        return Flip(chosen) if chosen else None

    def _identity(self) -> Flip:
        return Flip(())


class RandomShift(RandomTransform):
    """With probability ``p``, a circular shift by integers uniform in ``[-max_shift, max_shift]`` per axis."""

    def __init__(self, max_shift: int | tuple[int, int] = (8, 8), p: float = 0.3):
        pair = (max_shift, max_shift) if isinstance(max_shift, int) else tuple(max_shift)
        if len(pair) != 2 or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in pair):
            raise ValueError(f"max_shift must be a non-negative integer or a pair of them, got {max_shift!r}")
        self.max_shift, self.p = pair, check_probability(p, "p")

    def sample(self, generator: torch.Generator, shape: tuple[int, int]) -> Shift | None:
        if not bernoulli(generator, self.p):
            return None
        dh, dw = (int(torch.randint(-m, m + 1, (), generator=generator).item()) for m in self.max_shift)
        return Shift(dh, dw)

    def _identity(self) -> Shift:
        return Shift(0, 0)


class RandomRot90(RandomTransform):
    """With probability ``p``, ``k`` quarter turns, ``k`` uniform in {1, 2, 3} (only 2 on non-square images)."""

    def __init__(self, p: float = 0.3):
        self.p = check_probability(p, "p")

    def sample(self, generator: torch.Generator, shape: tuple[int, int]) -> Rot90 | None:
        if not bernoulli(generator, self.p):
            return None
        k = int(torch.randint(1, 4, (), generator=generator).item())
        return Rot90(k if shape[0] == shape[1] else 2)

    def _identity(self) -> Rot90:
        return Rot90(0)


class RandomRotation(RandomTransform):
    """With probability ``p``, a rotation by an angle uniform in ``degrees`` (scalar ``d``: ``[-d, d]``)."""

    def __init__(self, degrees: float | tuple[float, float] = 15.0, p: float = 0.3):
        self.degrees, self.p = _range(degrees, "degrees", symmetric=True), check_probability(p, "p")

    def sample(self, generator: torch.Generator, shape: tuple[int, int]) -> Affine | None:
        if not bernoulli(generator, self.p):
            return None
        return Affine(angle=uniform(generator, *self.degrees))

    def _identity(self) -> Affine:
        return Affine()


class RandomScaling(RandomTransform):
    """With probability ``p``, scale factors uniform in ``scales``: one for both axes if ``isotropic``,
    else one per axis (anisotropic)."""

    def __init__(self, scales: float | tuple[float, float] = (0.9, 1.1), isotropic: bool = False, p: float = 0.3):
        self.scales = _range(scales, "scales", symmetric=False)
        if self.scales[0] <= 0:
            raise ValueError(f"scales must be > 0, got {scales!r}")
        self.isotropic, self.p = bool(isotropic), check_probability(p, "p")

    def sample(self, generator: torch.Generator, shape: tuple[int, int]) -> Affine | None:
        if not bernoulli(generator, self.p):
            return None
        sh = uniform(generator, *self.scales)
        sw = sh if self.isotropic else uniform(generator, *self.scales)
        return Affine(scale_h=sh, scale_w=sw)

    def _identity(self) -> Affine:
        return Affine()


class RandomElastic(RandomTransform):
    """With probability ``p``, an :class:`Elastic` deformation with amplitude uniform in ``alpha``
    (pixels) and smoothness ``sigma`` (pixels, the Gaussian's std)."""

    def __init__(self, alpha: float | tuple[float, float] = (1.0, 4.0), sigma: float = 16.0, p: float = 0.2):
        self.alpha = _range(alpha, "alpha", symmetric=False, minimum=0.0)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"sigma must be a smoothness > 0 pixels, got {sigma!r}")
        self.sigma, self.p = float(sigma), check_probability(p, "p")

    def sample(self, generator: torch.Generator, shape: tuple[int, int]) -> Elastic | None:
        if not bernoulli(generator, self.p):
            return None
        return Elastic(alpha=uniform(generator, *self.alpha), sigma=self.sigma, seed=draw_seed(generator))

    def _identity(self) -> Elastic:
        return Elastic(alpha=0.0, sigma=self.sigma, seed=0)


# ------------------------------------------------------------------------------------------ joint
@torch.no_grad()
def transform_image_and_maps(
    image: torch.Tensor, maps: torch.Tensor, transforms: Sequence[Transform], eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``transforms`` in order to the image ``(..., H, W)`` and maps ``(..., C, H, W)`` jointly,
    then renormalise the maps (interpolation lowers their root sum of squares)."""
    if maps.ndim < 3 or image.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)} and maps {tuple(maps.shape)} need the same (H, W)")
    for t in transforms:
        image, maps = t.apply(image, maps)
    return image, normalize_maps(maps, eps)
