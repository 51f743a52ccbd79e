"""Centred, orthonormal 2-D Fourier transforms over the last two axes (reference eq. (1))."""

from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c", "centred_slice", "centre_crop"]

_DIMS = (-2, -1)


def _check_complex(x: torch.Tensor, name: str) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise ValueError(f"{name} must be a complex tensor (complex64/complex128), got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., H, W), got shape {tuple(x.shape)}")


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal FFT ``F``: ``fftshift(fft2(ifftshift(x)))`` over ``(H, W)``.

    ``x``: complex ``(..., H, W)`` image(s); returns k-space of the same shape and dtype.
    """
    _check_complex(x, "x")
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def centred_slice(n: int, size: int) -> slice:
    """The ``size`` indices around the FFT centre ``n // 2`` of an axis of length ``n`` (start ``n // 2 - size // 2``).

    The one centring rule of the package, that of the centred FFT and of the official ``crop.m``
    (1-based ``floor(n/2) + 1 + ceil(-size/2) : floor(n/2) + ceil(size/2)``): the centre sample stays the
    centre after a crop, for odd and even sizes alike.
    """
    if not 0 <= size <= n:
        raise ValueError(f"window of {size} does not fit an axis of {n}")
    start = n // 2 - size // 2
    return slice(start, start + size)


def centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` cropped over its last two axes to ``size`` by :func:`centred_slice` (a view)."""
    h, w = x.shape[-2:]
    if not (0 < size[0] <= h and 0 < size[1] <= w):
        raise ValueError(f"crop size {tuple(size)} does not fit images {h}x{w}")
    return x[..., centred_slice(h, size[0]), centred_slice(w, size[1])]


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse FFT ``F^-1 = F^H``: ``fftshift(ifft2(ifftshift(k)))``.

    ``k``: complex ``(..., H, W)`` k-space; returns image(s) of the same shape and dtype.
    """
    _check_complex(k, "k")
    k = torch.fft.ifftshift(k, dim=_DIMS)
    k = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_DIMS)
