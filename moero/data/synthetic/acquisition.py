"""Acquisition: receive coil arrays, noise, the k-space crop that avoids the inverse crime, one file's k-space."""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import torch

from moero.data.synthetic.anatomy import paint_abdomen, paint_chest, plane_coords, subject_anatomy
from moero.data.synthetic.contrast import FATTY, TEXTURE, tissue_signal
from moero.data.synthetic.heart import paint_heart
from moero.data.synthetic.motion import file_frames
from moero.data.synthetic.planning import axial_plane, slice_position, view_plane
from moero.data.synthetic.protocol import VENDORS, FileSpec, Vendor, pixel_size_mm
from moero.data.synthetic.render import Canvas, Coords, Plane, background_phase, smooth_field

NUM_VIRTUAL_COILS = 10


def pixel_axis(n: int, pixel_mm: float) -> torch.Tensor:
    """Pixel centres (mm) along one axis with the centred FFT convention (index n//2 at 0)."""
    return (torch.arange(n, dtype=torch.float32) - n // 2) * pixel_mm


def pixel_grid(nx: int, ny: int, pixel_x: float, pixel_y: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres (mm) of an ``(nx, ny)`` grid with centred FFT convention (index n//2 at 0)."""
    return torch.meshgrid(pixel_axis(nx, pixel_x), pixel_axis(ny, pixel_y or pixel_x), indexing="ij")


COIL_ROWS_Z = -20.0  # height (mm) of the array's centre: over the heart


def _coil_positions(vendor: Vendor, rng: np.random.Generator, anat: dict[str, Any]) -> np.ndarray:
    """(num, 3) loop-coil centres (world mm): anterior and posterior rows ("ap") or a ring, two rows in z."""
    num = vendor.array_coils
    if vendor.layout == "ring":
        ang = np.linspace(-math.pi, math.pi, num, endpoint=False) + 0.5 * (np.arange(num) % 2) * 2 * math.pi / num
    else:
        ang = np.concatenate([
            np.linspace(-0.85 * math.pi, -0.15 * math.pi, (num + 1) // 2),  # anterior (y < 0)
            np.linspace(0.2 * math.pi, 0.8 * math.pi, num // 2),  # posterior
        ])
    z = COIL_ROWS_Z + np.where(np.arange(num) % 2 == 0, -35.0, 35.0)
    px = (anat["body_a"] + 12) * np.cos(ang) + rng.normal(0, 5, num)
    py = (anat["body_b"] + 12) * np.sin(ang) + rng.normal(0, 5, num)
    return np.stack([px, py, z + rng.normal(0, 5, num)], axis=1)


def _sensitivities(pos: np.ndarray, phases: np.ndarray, coords: Coords, loop_mm: float = 90.0) -> torch.Tensor:
    """Loop-coil receive fields at world ``coords``: magnitude ``(rho^2 / (rho^2 + d^2))^1.5`` (rho = loop
    radius, d = distance to the loop's centre), smooth phase."""
    rho2 = loop_mm**2
    x, y, z = coords
    px, py, pz, ph = (torch.as_tensor(a, dtype=torch.float32)[:, None, None]
                      for a in (pos[:, 0], pos[:, 1], pos[:, 2], phases))
    dx, dy, dz = x[None] - px, y[None] - py, z[None] - pz
    mag = (rho2 / (rho2 + dx**2 + dy**2 + dz**2)) ** 1.5
    phase = ph + 0.5 * torch.atan2(dy, dx) + 0.002 * (dx + dy)
    return torch.polar(mag, phase)


def array_coil_maps(vendor: str, readout: int, phase: int, seed: int = 0, subject_index: int = 0,
                    pixel_mm: float | None = None, plane: Plane | None = None) -> torch.Tensor:
    """The array's (uncompressed, not RSS-normalised) coil maps ``(C_array, readout, phase)`` of a subject
    on ``plane`` (default: the transverse plane through the heart)."""
    v = VENDORS[vendor]
    anat = subject_anatomy(seed, subject_index, "none")
    rng = np.random.default_rng([seed, subject_index, 2])
    pos = _coil_positions(v, rng, anat)
    phases = rng.uniform(-math.pi, math.pi, v.array_coils)
    pixel = pixel_mm or pixel_size_mm(v, readout)
    plane = plane or axial_plane(COIL_ROWS_Z)
    coords = plane.world(pixel_axis(readout, pixel), pixel_axis(phase, pixel))
    return _sensitivities(pos, phases, coords, v.loop_mm).to(torch.complex64)


def _noise_covariance(pos: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Coil noise covariance: exponential correlation in coil distance, per-coil levels 0.8-1.25."""
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    corr = (1 - strength) * np.eye(len(pos)) + strength * np.exp(-dist / 120.0)
    level = rng.uniform(0.8, 1.25, len(pos))
    return corr * np.outer(level, level)


# ---------------------------------------------------------------------------------------------
# one file


def centre_crop_kspace(images: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """``fft2c(images)`` cropped to its central ``(nx, ny)`` k-space points, without the shifts.

    The centred transform at frequency ``k`` equals the plain FFT at ``k mod N`` times
    ``exp(2 pi i (N//2) k / N)`` (the input's ``ifftshift``); gathering only the kept frequencies
    avoids two full-size shift copies of the high-resolution coil images.
    """
    big_x, big_y = images.shape[-2:]
    spec = torch.fft.fft2(images, norm="ortho")
    kx = torch.arange(nx) - nx // 2
    ky = torch.arange(ny) - ny // 2
    ph_x = torch.polar(torch.ones(nx), 2 * math.pi * (big_x // 2) * kx / big_x)
    ph_y = torch.polar(torch.ones(ny), 2 * math.pi * (big_y // 2) * ky / big_y)
    crop = spec[..., kx % big_x, :][..., ky % big_y]
    return crop * (ph_x[:, None] * ph_y[None, :]).to(crop.dtype)


def centred_ifft(kspace: torch.Tensor) -> torch.Tensor:
    """``ifft2c`` (orthonormal, centred) of the last two axes."""
    k = torch.fft.ifftshift(kspace, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=(-2, -1))


COIL_BAND = 12  # k-space points the coil maps' spectra may spread an image's spectrum by (smooth maps)

def banding(plane: Plane, xs: torch.Tensor, ys: torch.Tensor, rng: np.random.Generator, depth: float) -> torch.Tensor:
    """bSSFP off-resonance banding: dark bands where a smooth field's precession per TR crosses pi."""
    x, y, z = plane.world(xs, ys)
    k = rng.normal(0, 1, 6)
    cycles = k[0] + (0.6 + 0.2 * k[1]) * (x / 150) ** 2 + 0.5 * k[2] * x / 150 + (0.6 + 0.2 * k[3]) * (
        (y + 20) / 120) ** 2 + 0.5 * k[4] * z / 150 + 0.3 * k[5] * x * z / 150**2
    off = torch.remainder(cycles, 1.0) - 0.5
    return 1 - depth * torch.exp(-0.5 * (off / 0.025) ** 2)


def render_series(spec: FileSpec, anat: dict[str, Any], plane: Plane, xs: torch.Tensor, ys: torch.Tensor,
                  signals: list[np.ndarray], motion: list[tuple[float, float]], texture: torch.Tensor
                  ) -> list[torch.Tensor]:
    """Real images of all frames of one slice: the body that does not move rendered once per contrast
    (with the abdomen when breathing stands still), the abdomen otherwise and the heart frame by frame."""
    coords = plane_coords(anat, plane, xs, ys)
    still = len({resp for _, resp in motion}) == 1
    tex_amp = torch.from_numpy(TEXTURE)
    static: dict[bytes, torch.Tensor] = {}
    images = []
    for (c, resp), sig in zip(motion, signals, strict=True):
        values = torch.from_numpy(sig)
        key = sig.tobytes()
        if key not in static:
            cv = Canvas(coords, plane, xs, ys, values, texture, tex_amp, margin=12.0)
            paint_chest(cv, anat)
            if still:
                paint_abdomen(cv, anat, resp)
            static[key] = cv.image
        cv = Canvas(coords, plane, xs, ys, values, texture, tex_amp, image=static[key], margin=12.0)
        if not still:
            paint_abdomen(cv, anat, resp)
        paint_heart(cv, anat, c, resp, spec.pathology)
        images.append(cv.image)
    return images


def simulate_file(spec: FileSpec, seed: int = 0, render_factor: int = 2) -> torch.Tensor:
    """Fully sampled, coil-compressed k-space of one file: complex64 ``(T, Z, 10, readout, phase)``."""
    v = VENDORS[spec.vendor]
    anat = subject_anatomy(seed, spec.subject_index, spec.pathology)
    coil_rng = np.random.default_rng([seed, spec.subject_index, 2])
    rng = np.random.default_rng([seed, spec.subject_index, zlib.crc32(spec.name.encode())])
    nx, ny, f = spec.readout, spec.phase, render_factor
    pixel = pixel_size_mm(v, nx)
    xs, ys = pixel_axis(f * nx, pixel / f), pixel_axis(f * ny, pixel / f)
    # coil grid: the matrix plus a band on each side, same FOV; the band-limited image times the maps
    cx_n, cy_n = nx + 2 * COIL_BAND, ny + 2 * COIL_BAND
    gxs, gys = pixel_axis(cx_n, nx * pixel / cx_n), pixel_axis(cy_n, ny * pixel / cy_n)
    bg_x, bg_y = pixel_grid(cx_n, cy_n, nx * pixel / cx_n, ny * pixel / cy_n)
    pos = _coil_positions(v, coil_rng, anat)
    coil_phases = coil_rng.uniform(-math.pi, math.pi, v.array_coils)
    scale_render = math.sqrt((cx_n * cy_n) / (f * nx * f * ny))  # ortho crop: keep image intensities
    scale_coil = math.sqrt((nx * ny) / (cx_n * cy_n))

    t_count, z_count = spec.frames, spec.slices
    out = torch.empty((t_count, z_count, v.array_coils, nx, ny), dtype=torch.complex64)
    jitter = rng.normal(0, 1, t_count)
    motion = file_frames(spec, anat, v, jitter)
    signals = []
    for t in range(t_count):
        sig = tissue_signal(spec.contrast, t, t_count, v.field_t).astype(np.float32)
        sig[list(FATTY)] *= v.fat
        signals.append(sig)
    for z in range(z_count):
        plane = view_plane(anat, spec.view, slice_position(spec.view, z, spec.slices))
        maps = _sensitivities(pos, coil_phases, plane.world(gxs, gys), v.loop_mm)
        texture = smooth_field(rng, (f * nx, f * ny), corr_px=3.0 * f)
        bg_phase = torch.polar(torch.ones(cx_n, cy_n), background_phase(rng, bg_x, bg_y))
        images = render_series(spec, anat, plane, xs, ys, signals, motion, texture)
        if spec.contrast == "cine" and v.banding > 0:
            band = banding(plane, xs, ys, rng, v.banding)
            images = [image * band for image in images]
        for t, image in enumerate(images):
            low = centred_ifft(centre_crop_kspace(image.to(torch.complex64), cx_n, cy_n)) * scale_render
            coil_images = maps * (low * bg_phase)
            out[t, z] = centre_crop_kspace(coil_images.to(torch.complex64), nx, ny) * scale_coil

    # correlated noise at the vendor's SNR (relative to a bright image level), then SVD compression
    ref = centred_ifft(out[0, z_count // 2]).abs().pow(2).sum(0).sqrt()
    sigma = float(torch.quantile(ref.flatten(), 0.95)) / v.snr
    cov = _noise_covariance(pos, v.noise_corr, rng)
    chol = torch.from_numpy(np.linalg.cholesky(cov).astype(np.complex64))
    white = rng.standard_normal((2, v.array_coils, out[..., 0, :, :].numel())).astype(np.float32)
    white = torch.complex(torch.from_numpy(white[0]), torch.from_numpy(white[1])) * (sigma / math.sqrt(2))
    noise = (chol @ white).reshape(v.array_coils, t_count, z_count, nx, ny).permute(1, 2, 0, 3, 4)
    out = out + noise
    flat = out.permute(2, 0, 1, 3, 4).reshape(v.array_coils, -1)
    gram = (flat @ flat.conj().T).to(torch.complex128)
    _, vecs = torch.linalg.eigh(gram)
    basis = vecs[:, -NUM_VIRTUAL_COILS:].flip(-1)  # strongest virtual coil first
    basis = basis * torch.exp(-1j * torch.angle(basis[:1]))  # fix the eigenvectors' arbitrary phase
    compressed = (basis.conj().T.to(torch.complex64) @ flat).reshape(NUM_VIRTUAL_COILS, t_count, z_count, nx, ny)
    scale = v.scale * float(rng.uniform(0.7, 1.4))
    return (compressed.permute(1, 2, 0, 3, 4) * scale).contiguous()

