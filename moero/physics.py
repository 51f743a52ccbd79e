"""The multi-coil SENSE forward model (reference eq. (1)) and classical reconstructions.

``A = M F S``: coil maps ``S`` multiply the image, ``F`` is :func:`moero.fft.fft2c` per coil,
``M`` keeps the sampled k-space points. Shapes follow the package convention: images
``(..., H, W)``, coil maps and k-space ``(..., C, H, W)``, masks ``(..., H, W)`` (no coil axis,
broadcast over coils) or already ``(..., C|1, H, W)``.
"""

from __future__ import annotations

import torch

from moero.fft import fft2c, ifft2c

__all__ = ["apply_mask", "sense_forward", "sense_adjoint", "rss", "zero_filled"]


def apply_mask(kspace: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``M y``: zero the unsampled points. ``mask`` lacks the coil axis or has it (size C or 1)."""
    if mask is None:
        return kspace
    if mask.ndim == kspace.ndim - 1:
        mask = mask.unsqueeze(-3)
    if mask.ndim != kspace.ndim:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}, which does not broadcast against k-space "
            f"{tuple(kspace.shape)} (expected (..., H, W) or (..., C, H, W))"
        )
    try:
        torch.broadcast_shapes(mask.shape, kspace.shape)
    except RuntimeError as err:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match k-space shape {tuple(kspace.shape)}"
        ) from err
    return kspace * mask.to(dtype=kspace.real.dtype if kspace.is_complex() else kspace.dtype)


def _check_maps(image: torch.Tensor, maps: torch.Tensor) -> None:
    if maps.ndim < 3:
        raise ValueError(f"maps must be (..., C, H, W), got shape {tuple(maps.shape)}")
    if image.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"image spatial shape {tuple(image.shape[-2:])} does not match maps {tuple(maps.shape[-2:])}"
        )


def sense_forward(image: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``A x = M F S x``: image ``(..., H, W)`` and maps ``(..., C, H, W)`` -> k-space ``(..., C, H, W)``."""
    _check_maps(image, maps)
    return apply_mask(fft2c(maps * image.unsqueeze(-3)), mask)


def sense_adjoint(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``A^H y = sum_c conj(S_c) F^-1 (M y_c)``: k-space ``(..., C, H, W)`` -> image ``(..., H, W)``."""
    if kspace.shape[-3:] != maps.shape[-3:]:
        raise ValueError(
            f"kspace shape {tuple(kspace.shape)} does not match maps shape {tuple(maps.shape)} in (C, H, W)"
        )
    return (maps.conj() * ifft2c(apply_mask(kspace, mask))).sum(dim=-3)


def rss(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root sum of squares over the coil axis: ``sqrt(sum_c |x_c|^2)`` (real output)."""
    return torch.sqrt((x.abs() ** 2).sum(dim=dim))


def zero_filled(kspace: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-filled reconstruction: RSS of the inverse FFT of the masked k-space ``(..., C, H, W)``."""
    return rss(ifft2c(apply_mask(kspace, mask)), dim=-3)
