"""The multi-coil SENSE forward model (reference eq. (1)) and classical reconstructions.

``A = M F S``: coil maps ``S`` multiply the image, ``F`` is :func:`moero.fft.fft2c` per coil,
``M`` keeps the sampled k-space points. Shapes follow the package convention: images
``(..., H, W)``, coil maps and k-space ``(..., C, H, W)``, masks ``(..., H, W)`` (no coil axis,
broadcast over coils) or already ``(..., C|1, H, W)``.

Speed: the centred FFT's two shifts are circular rolls, i.e. copies of the whole coil stack. A roll
in one domain is a phase ramp in the other, so ``fft2c(x) = v * fft2(u * x)`` with unit-modulus
``u, v`` (``+-1`` checkerboards for even sizes). The SENSE operators fold ``u`` into the image
(``H x W``, before the coil broadcast), ``v`` into the mask multiply, and the adjoint's post-phase
into the coil-combined image, so they cost two multiplies of the coil stack on top of the FFTs.

Coil maps (reference section 1): a low-resolution estimate from the windowed ACS
(:func:`estimate_maps_lowres`) and ESPIRiT (:func:`espirit_maps`, Uecker et al. 2014), both
normalised by :func:`normalize_maps`. :func:`cg_sense` is the classical baseline.
"""

from __future__ import annotations

import functools
import math
import threading

import torch

from moero.physics.fft import ifft2c

__all__ = [
    "apply_mask",
    "sense_forward",
    "sense_adjoint",
    "sense_normal",
    "rss",
    "zero_filled",
    "normalize_maps",
    "calibration_region",
    "estimate_maps_lowres",
    "espirit_maps",
    "cg_sense",
]


def _mask_weight(mask: torch.Tensor, kspace_ndim: int, kspace_shape: torch.Size) -> torch.Tensor:
    """The mask as a real tensor with a coil axis, checked against the k-space shape."""
    if not torch.is_tensor(mask):
        raise ValueError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim == kspace_ndim - 1:
        mask = mask.unsqueeze(-3)
    if mask.ndim != kspace_ndim:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}, which does not broadcast against k-space "
            f"{tuple(kspace_shape)} (expected (..., H, W) or (..., C, H, W))"
        )
    try:
        torch.broadcast_shapes(mask.shape, kspace_shape)
    except RuntimeError as err:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match k-space shape {tuple(kspace_shape)}") from err
    return mask if mask.is_floating_point() else mask.to(torch.float32)


def apply_mask(kspace: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``M y``: zero the unsampled points. ``mask`` lacks the coil axis or has it (size C or 1)."""
    if mask is None:
        return kspace
    weight = _mask_weight(mask, kspace.ndim, kspace.shape)
    return kspace * weight.to(dtype=kspace.real.dtype if kspace.is_complex() else kspace.dtype)


@functools.lru_cache(maxsize=32)
def _shift_phases(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, v)`` ``(H, W)``: ``fft2c(x) == v * fft2(u * x)`` and ``ifft2c(k) == conj(v) * ifft2(conj(u) * k)``.

    Per axis of length ``N`` and ``a = N // 2``: ``u[n] = exp(2 pi i a n / N)`` (the ``ifftshift``
    before the FFT) and ``v[k] = exp(2 pi i (k - a) a / N)`` (the ``fftshift`` after it).
    """

    def axis(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = n // 2
        idx = torch.arange(n, dtype=torch.float64)
        # reduce the phase modulo 2 pi in exact integer arithmetic before scaling, for accuracy
        pre = torch.remainder(idx * a, n) * (2 * math.pi / n)
        post = torch.remainder((idx - a) * a, n) * (2 * math.pi / n)
        one = torch.ones(n, dtype=torch.float64)
        return torch.polar(one, pre), torch.polar(one, post)

    uh, vh = axis(h)
    uw, vw = axis(w)
    u = (uh[:, None] * uw[None, :]).to(dtype=dtype, device=device)
    v = (vh[:, None] * vw[None, :]).to(dtype=dtype, device=device)
    return u, v


def _phases_for(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _shift_phases(int(x.shape[-2]), int(x.shape[-1]), x.dtype, x.device)


def _check_maps(image: torch.Tensor, maps: torch.Tensor) -> None:
    if not (torch.is_tensor(image) and image.is_complex()):
        raise ValueError("image must be a complex tensor (..., H, W)")
    if not (torch.is_tensor(maps) and maps.is_complex()):
        raise ValueError("maps must be a complex tensor (..., C, H, W)")
    if maps.ndim < 3:
        raise ValueError(f"maps must be (..., C, H, W), got shape {tuple(maps.shape)}")
    if image.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"image spatial shape {tuple(image.shape[-2:])} does not match maps {tuple(maps.shape[-2:])}"
        )


def _check_kspace(kspace: torch.Tensor, maps: torch.Tensor) -> None:
    if not (torch.is_tensor(kspace) and kspace.is_complex()):
        raise ValueError("kspace must be a complex tensor (..., C, H, W)")
    if not (torch.is_tensor(maps) and maps.is_complex()) or maps.ndim < 3:
        raise ValueError("maps must be a complex tensor (..., C, H, W)")
    if kspace.shape[-3:] != maps.shape[-3:]:
        raise ValueError(
            f"kspace shape {tuple(kspace.shape)} does not match maps shape {tuple(maps.shape)} in (C, H, W)"
        )


def _post_weight(v: torch.Tensor, mask: torch.Tensor | None, kspace_ndim: int, shape: torch.Size) -> torch.Tensor:
    """``v * M`` as one small complex tensor, so phase and mask cost a single pass over the coil stack."""
    return v if mask is None else v * _mask_weight(mask, kspace_ndim, shape)


def _mul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x * weight``, in place when the result keeps ``x``'s shape (``x`` is a fresh temporary)."""
    if torch.broadcast_shapes(x.shape, weight.shape) == x.shape:
        return x.mul_(weight)
    return x * weight


def _coil_combine(maps: torch.Tensor, coils: torch.Tensor) -> torch.Tensor:
    """``sum_c conj(S_c) z_c`` over axis ``-3``.

    A loop over the (few) coils streams each coil image once; it measured 3x faster on CPU than
    ``vecdot``/``(conj * z).sum(-3)``, whose strided reduction over the coil axis is slow.
    """
    maps, coils = torch.broadcast_tensors(maps, coils)
    out = maps.select(-3, 0).conj() * coils.select(-3, 0)
    for c in range(1, coils.shape[-3]):
        out += maps.select(-3, c).conj() * coils.select(-3, c)
    return out


def sense_forward(image: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``A x = M F S x`` (eq. (1)): image ``(..., H, W)`` and maps ``(..., C, H, W)`` -> k-space ``(..., C, H, W)``."""
    _check_maps(image, maps)
    u, v = _phases_for(maps)
    coils = maps * (image * u).unsqueeze(-3)
    kspace = torch.fft.fft2(coils, dim=(-2, -1), norm="ortho")
    return _mul(kspace, _post_weight(v, mask, kspace.ndim, kspace.shape))


_scratch = threading.local()


def _weighted(kspace: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``kspace * weight`` for the inverse FFT's input, a temporary nobody else sees.

    On CPU a fresh coil-stack-sized tensor costs more in page faults than the multiply itself, so
    without autograd the product goes into a per-thread scratch buffer reused between calls (one
    buffer, replaced when the shape changes). With autograd, or on GPU (whose caching allocator
    already reuses memory), it is an ordinary product.
    """
    shape = torch.broadcast_shapes(kspace.shape, weight.shape)
    needs_grad = torch.is_grad_enabled() and (kspace.requires_grad or weight.requires_grad)
    if needs_grad or kspace.device.type != "cpu":
        return kspace * weight
    buf = getattr(_scratch, "buffer", None)
    if buf is None or buf.shape != shape or buf.dtype != kspace.dtype:
        buf = _scratch.buffer = torch.empty(shape, dtype=kspace.dtype)
    return torch.mul(kspace, weight, out=buf)


def sense_adjoint(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``A^H y = sum_c conj(S_c) F^-1 (M y_c)`` (ref. section 1): k-space ``(..., C, H, W)`` -> ``(..., H, W)``."""
    _check_kspace(kspace, maps)
    u, v = _phases_for(maps)
    weight = _post_weight(u.conj(), mask, kspace.ndim, kspace.shape)
    coils = torch.fft.ifft2(_weighted(kspace, weight), dim=(-2, -1), norm="ortho")
    return _coil_combine(maps, coils).mul_(v.conj())


def sense_normal(image: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``A^H A x`` in one pass: the FFT phases cancel between the FFTs (``|v| = 1``), one mask multiply."""
    _check_maps(image, maps)
    u, _ = _phases_for(maps)
    coils = torch.fft.fft2(maps * (image * u).unsqueeze(-3), dim=(-2, -1), norm="ortho")
    if mask is not None:
        coils = _mul(coils, _mask_weight(mask, coils.ndim, coils.shape))
    coils = torch.fft.ifft2(coils, dim=(-2, -1), norm="ortho")
    return _coil_combine(maps, coils).mul_(u.conj())


def rss(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root sum of squares over the coil axis: ``sqrt(sum_c |x_c|^2)`` (real output)."""
    return torch.sqrt((x.abs() ** 2).sum(dim=dim))


def zero_filled(kspace: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-filled reconstruction: RSS of the inverse FFT of the masked k-space ``(..., C, H, W)``.

    The post-FFT phase of the centred transform has unit modulus, so the RSS needs only the pre-phase.
    """
    if not (torch.is_tensor(kspace) and kspace.is_complex()) or kspace.ndim < 3:
        raise ValueError("kspace must be a complex tensor (..., C, H, W)")
    u, _ = _phases_for(kspace)
    weight = _post_weight(u.conj(), mask, kspace.ndim, kspace.shape)
    coils = torch.fft.ifft2(_weighted(kspace, weight), dim=(-2, -1), norm="ortho")
    return rss(coils, dim=-3)


# ------------------------------------------------------------------------------------------- coil maps
def normalize_maps(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``S_c / sqrt(sum_c |S_c|^2 + eps)`` over the coil axis ``-3`` (reference section 1)."""
    if not (torch.is_tensor(maps) and maps.is_complex()) or maps.ndim < 3:
        raise ValueError("maps must be a complex tensor (..., C, H, W)")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return maps / torch.sqrt((maps.abs() ** 2).sum(dim=-3, keepdim=True) + eps)


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
    return slice(h // 2 - ah // 2, h // 2 - ah // 2 + ah), slice(w // 2 - aw // 2, w // 2 - aw // 2 + aw)


def estimate_maps_lowres(kspace: torch.Tensor, acs: int | torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Low-resolution coil maps: images of the Hann-windowed ACS, divided by their RSS (ref. section 1).

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
    """ESPIRiT coil maps (Uecker et al. 2014) in torch, normalised as in reference section 1.

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


# --------------------------------------------------------------------------------------------- CG-SENSE
def cg_sense(
    kspace: torch.Tensor,
    maps: torch.Tensor,
    mask: torch.Tensor | None = None,
    iters: int = 10,
    lam: float = 0.0,
) -> torch.Tensor:
    """CG-SENSE: conjugate gradients on ``(A^H A + lam I) x = A^H y`` from ``x = 0`` (eq. (1), Tikhonov ``lam``).

    Batched over leading axes (each image has its own step sizes). Returns the complex image ``(..., H, W)``.
    """
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    rhs = sense_adjoint(kspace, maps, mask)
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rs = (residual.abs() ** 2).sum(dim=(-2, -1), keepdim=True)
    for _ in range(iters):
        a_dir = sense_normal(direction, maps, mask)
        if lam:
            a_dir = a_dir + lam * direction
        curvature = torch.real((direction.conj() * a_dir).sum(dim=(-2, -1), keepdim=True))
        # converged images (zero direction) keep a zero step instead of 0/0
        alpha = torch.where(curvature > 0, rs / curvature.clamp_min(torch.finfo(curvature.dtype).tiny), 0.0)
        x = x + alpha * direction
        residual = residual - alpha * a_dir
        rs_new = (residual.abs() ** 2).sum(dim=(-2, -1), keepdim=True)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), 0.0)
        direction = residual + beta * direction
        rs = rs_new
    return x
