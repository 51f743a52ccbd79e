"""Coil sensitivity maps: the calibration (ACS) region of a mask, low-resolution
maps from the ACS, and ESPIRiT maps (an eigenvector per pixel of the calibration matrix's kernel)."""

from __future__ import annotations

import torch

from moero.physics.fft import centred_slice, ifft2c
from moero.physics.sense import normalize_maps, rss

__all__ = ["calibration_region", "estimate_maps_lowres", "espirit_maps"]


def _centred_run(line: torch.Tensor) -> int:
    """Width of the largest block ``[c - a//2, c - a//2 + a)`` around ``c = N // 2`` where ``line`` is True."""
    n = line.shape[-1]
    c = n // 2
    right = int(line[c:].int().cumprod(0).sum())
    left = int(line[:c].flip(0).int().cumprod(0).sum())
    return min(2 * right, 2 * left + 1)


def calibration_region(mask: torch.Tensor) -> tuple[int, int]:
    """``(h, w)`` of the centred block that ``mask`` ``(..., H, W)`` samples fully in every frame (the ACS).

    First the largest fully sampled centred square, then as many rows as stay fully sampled over its
    columns (ACS lines run along the whole readout), then as many columns over those rows.
    """
    if not torch.is_tensor(mask) or mask.ndim < 2:
        raise ValueError("mask must be a tensor (..., H, W)")
    full = mask.bool().reshape(-1, *mask.shape[-2:]).all(dim=0)
    h, w = full.shape
    # a centred block of size s covers offset d >= 0 iff s >= 2 d + 1, and d < 0 iff s >= -2 d
    dr = torch.arange(h) - h // 2
    dc = torch.arange(w) - w // 2
    need_r = torch.where(dr >= 0, 2 * dr + 1, -2 * dr)
    need_c = torch.where(dc >= 0, 2 * dc + 1, -2 * dc)
    need = torch.maximum(need_r[:, None], need_c[None, :])
    side = min(int(need[~full].min()) - 1, h, w) if bool((~full).any()) else min(h, w)
    if side < 1:
        raise ValueError("mask has no fully sampled centre (ACS): the centre point is not sampled in every frame")
    rows, cols = _centre_slices(h, w, side, side)
    height = _centred_run(full[:, cols].all(dim=1))
    rows, _ = _centre_slices(h, w, height, side)
    width = _centred_run(full[rows, :].all(dim=0))
    return height, width


def _region(kspace: torch.Tensor, acs: int | torch.Tensor) -> tuple[int, int]:
    h, w = kspace.shape[-2:]
    if torch.is_tensor(acs):
        if acs.shape[-2:] != (h, w):
            raise ValueError(f"acs mask spatial shape {tuple(acs.shape[-2:])} does not match k-space {(h, w)}")
        return calibration_region(acs)
    if not isinstance(acs, int) or not 1 <= acs <= w:
        raise ValueError(f"acs must be a mask or an integer width in [1, W={w}], got {acs!r}")
    return h, acs  # ACS lines: fully sampled along the readout


def _centre_slices(h: int, w: int, ah: int, aw: int) -> tuple[slice, slice]:
    return centred_slice(h, ah), centred_slice(w, aw)


def estimate_maps_lowres(kspace: torch.Tensor, acs: int | torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Low-resolution coil maps: images of the Hann-windowed ACS, divided by their RSS.

    ``kspace`` ``(..., C, H, W)``; ``acs``: the sampling mask (its fully sampled centre is found) or
    the number of central ACS lines (then sampled along the whole readout). Images are scaled to a
    unit RSS maximum before :func:`normalize_maps`, so ``eps`` is relative to the signal.
    """
    if not (torch.is_tensor(kspace) and kspace.is_complex()) or kspace.ndim < 3:
        raise ValueError("kspace must be a complex tensor (..., C, H, W)")
    h, w = kspace.shape[-2:]
    ah, aw = _region(kspace, acs)
    rows, cols = _centre_slices(h, w, ah, aw)
    # Hann window over the ACS (length + 2, ends dropped, so no ACS sample is zeroed)
    win_h = torch.hann_window(ah + 2, periodic=False, dtype=torch.float64)[1:-1]
    win_w = torch.hann_window(aw + 2, periodic=False, dtype=torch.float64)[1:-1]
    window = torch.zeros(h, w, dtype=kspace.real.dtype, device=kspace.device)
    window[rows, cols] = (win_h[:, None] * win_w[None, :]).to(window)
    images = ifft2c(kspace * window)
    scale = rss(images).amax(dim=(-2, -1), keepdim=True).unsqueeze(-3).clamp_min(torch.finfo(window.dtype).tiny)
    return normalize_maps(images / scale, eps)


def _espirit_one(calib: torch.Tensor, h: int, w: int, kernel: int, threshold: float, crop: float) -> torch.Tensor:
    """ESPIRiT for one ``(C, ah, aw)`` calibration block -> maps ``(C, h, w)`` (not yet phase-referenced)."""
    c = calib.shape[0]
    # calibration matrix: every kernel x kernel patch of the ACS, all coils, as one row
    patches = calib.unfold(-2, kernel, 1).unfold(-2, kernel, 1)  # (C, nh, nw, k, k)
    matrix = patches.permute(1, 2, 0, 3, 4).reshape(-1, c * kernel * kernel)
    # right singular vectors from the eigen-decomposition of the small (C k^2)^2 Gram matrix in double
    # precision: the same subspace as an SVD of the tall calibration matrix, at a fraction of the cost
    matrix = matrix.to(torch.complex128)
    evals, evecs = torch.linalg.eigh(matrix.mH @ matrix)  # ascending; singular values = sqrt(evals)
    keep = evals >= threshold**2 * evals[-1]
    vh = evecs[:, keep].flip(-1).mH.to(calib.dtype)  # rows = right singular vectors, descending
    kernels = vh.reshape(-1, c, kernel, kernel)  # signal subspace
    # image-space Gram G(r) = sum_n g_n(r) g_n(r)^H, g_n = centred IFFT of kernel n zero-padded to (h, w).
    # G's Fourier coefficients are the kernels' cross-correlations, of support 2k - 1: compute them
    # on a 2k grid, then place them into (h, w) and transform once per coil pair (no n x C x h x w stack).
    size = 2 * kernel
    spectra = torch.fft.fft2(kernels, s=(size, size))
    corr = torch.fft.ifft2(torch.einsum("nchw,ndhw->cdhw", spectra, spectra.conj()))  # (C, C, 2k, 2k)
    lags = torch.arange(-(kernel - 1), kernel)
    padded = torch.zeros(c, c, h, w, dtype=calib.dtype, device=calib.device)
    padded[:, :, (lags % h)[:, None], (lags % w)[None, :]] = corr[:, :, (lags % size)[:, None], (lags % size)[None, :]]
    gram = torch.fft.fftshift(torch.fft.ifft2(padded, norm="forward"), dim=(-2, -1)) / kernel**2
    evals, evecs = torch.linalg.eigh(gram.permute(2, 3, 0, 1))  # (h, w, C), (h, w, C, C), ascending
    maps = evecs[..., -1].permute(2, 0, 1)  # eigenvector of the largest eigenvalue (~1 inside the object)
    return maps * (evals[..., -1] > crop)


def espirit_maps(
    kspace: torch.Tensor,
    acs: int | torch.Tensor,
    kernel: int = 6,
    threshold: float = 0.02,
    crop: float = 0.95,
    ref_coil: int = 0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """ESPIRiT coil maps (Uecker et al. 2014) in torch, normalised as PromptMR+ does.

    Calibration matrix of ``kernel x kernel`` patches of the ACS -> SVD -> signal subspace (singular
    values ``>= threshold * max``) -> image-space kernels -> per-pixel eigenvector of the ``C x C``
    Gram matrix (batched ``torch.linalg.eigh``); pixels whose top eigenvalue is ``<= crop`` (outside
    the object) get zero maps; the phase is taken relative to coil ``ref_coil``.
    ``kspace`` ``(..., C, H, W)``, ``acs`` as in :func:`estimate_maps_lowres`. Leading axes are
    calibrated one by one.
    """
    if not (torch.is_tensor(kspace) and kspace.is_complex()) or kspace.ndim < 3:
        raise ValueError("kspace must be a complex tensor (..., C, H, W)")
    c, h, w = kspace.shape[-3:]
    if not 0 <= ref_coil < c:
        raise ValueError(f"ref_coil must be in [0, {c}), got {ref_coil}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    ah, aw = _region(kspace, acs)
    if not isinstance(kernel, int) or kernel < 1 or kernel > min(ah, aw):
        raise ValueError(f"kernel must be an integer in [1, {min(ah, aw)}] (the ACS size {ah}x{aw}), got {kernel!r}")
    rows, cols = _centre_slices(h, w, ah, aw)
    calib = kspace[..., rows, cols].reshape(-1, c, ah, aw)
    maps = torch.stack([_espirit_one(block, h, w, kernel, threshold, crop) for block in calib])
    ref = maps[:, ref_coil : ref_coil + 1]
    maps = maps * torch.where(ref.abs() > 0, ref.conj() / ref.abs().clamp_min(1e-30), torch.ones_like(ref))
    return normalize_maps(maps.reshape(kspace.shape), eps)
