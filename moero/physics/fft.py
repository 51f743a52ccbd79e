"""Centred, orthonormal 2-D Fourier transforms over the last two axes (reference eq. (1))."""

from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c"]

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


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse FFT ``F^-1 = F^H``: ``fftshift(ifft2(ifftshift(k)))``.

    ``k``: complex ``(..., H, W)`` k-space; returns image(s) of the same shape and dtype.
    """
    _check_complex(k, "k")
    k = torch.fft.ifftshift(k, dim=_DIMS)
    k = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_DIMS)
