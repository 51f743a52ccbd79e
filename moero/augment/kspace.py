"""k-space artefacts of DualSpace-CMR: thermal noise (eq. (5)) and rigid motion
(the per-shot phase error of eq. (6) and the motion-corrupted k-space of eq. (7)).

* **Thermal noise** (:func:`add_kspace_noise`): complex circular white Gaussian noise ``n`` with
  ``E|n|^2 = (sigma * L(y))^2`` per sample, where ``L(y)`` is the RMS of the scan's k-space over its
  last ``scan_dims`` axes, so every scan loses the same relative SNR; the k-space is then
  renormalised to the input's level, and ``aug(c y) == c aug(y)`` for any complex ``c``.
* **Rigid motion** (:func:`simulate_rigid_motion`): phase-encode lines grouped into shots; shot ``j``
  moved by ``(dx_j, dy_j)`` has the phase error ``phi_j(kx, ky) = 2 pi (kx dx_j / H + ky dy_j / W)``
  (eq. (6)), and the motion-corrupted k-space is ``y'(kx, ky) = y(kx, ky) exp(-i phi_{j(ky)}(kx, ky))``
  (eq. (7)): magnitudes unchanged, a zero range is the identity.

Each ``Random*`` class draws parameters from a :class:`torch.Generator` and returns the recorded,
deterministic transform (torchio's pattern).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from moero.augment.base import bernoulli, check_probability, draw_seed, uniform

__all__ = [
    "DEFAULT_NOISE_SIGMAS",
    "ORDERINGS",
    "check_complex",
    "check_sigma",
    "check_motion_range",
    "signal_level",
    "add_kspace_noise",
    "KspaceNoise",
    "RandomKspaceNoise",
    "shot_of_line",
    "simulate_rigid_motion",
    "RigidMotion",
    "RandomRigidMotion",
    "kspace_snr_db",
]

# *Assumption*: the paper's radiologist-calibrated noise levels are not public. The added noise
# alone has a k-space SNR of 26, 20 and 14 dB (-20 log10 sigma); on the real gre.dat scan (native
# k-space SNR about 16 dB) they lower the SNR by about 0.4, 1.4 and 4 dB: mild to clearly visible
# (see notebooks/02_kspace_augmentation).
DEFAULT_NOISE_SIGMAS: tuple[float, ...] = (0.05, 0.1, 0.2)


ORDERINGS = ("interleaved", "segmented")


# ------------------------------------------------------------------------------------------- noise
def check_complex(kspace: torch.Tensor, name: str = "kspace", min_dims: int = 3) -> None:
    if not torch.is_tensor(kspace) or not kspace.is_complex():
        raise ValueError(f"{name} must be a complex tensor, got {getattr(kspace, 'dtype', type(kspace))}")
    if kspace.ndim < min_dims:
        raise ValueError(f"{name} must have at least {min_dims} dimensions, got shape {tuple(kspace.shape)}")


def _scan_axes(kspace: torch.Tensor, scan_dims: int) -> tuple[int, ...]:
    if isinstance(scan_dims, bool) or not isinstance(scan_dims, int) or not 1 <= scan_dims <= kspace.ndim:
        raise ValueError(f"scan_dims must be an integer in [1, {kspace.ndim}], got {scan_dims!r}")
    return tuple(range(-scan_dims, 0))


def signal_level(kspace: torch.Tensor, scan_dims: int = 3) -> torch.Tensor:
    """``L(y)``: RMS of ``|y|`` over the last ``scan_dims`` axes (one scan), kept as size-1 axes."""
    axes = _scan_axes(kspace, scan_dims)
    count = math.prod(kspace.shape[a] for a in axes)
    # the real view is much faster than a complex norm; its extra axis holds (re, im)
    norm = torch.linalg.vector_norm(torch.view_as_real(kspace), dim=(*(a - 1 for a in axes), -1))
    return (norm / math.sqrt(count)).reshape(*kspace.shape[: kspace.ndim - scan_dims], *([1] * scan_dims))


def _phase_reference(kspace: torch.Tensor, scan_dims: int) -> torch.Tensor:
    """Unit phase of each scan's largest sample: ``u(c y) = (c / |c|) u(y)``, 1 for an all-zero scan."""
    lead = kspace.shape[: kspace.ndim - scan_dims]
    flat = kspace.reshape(*lead, -1)
    idx = torch.view_as_real(flat).square().sum(-1).argmax(dim=-1, keepdim=True)
    peak = torch.gather(flat, -1, idx)
    mag = peak.abs()
    unit = torch.where(mag > 0, peak / mag.clamp_min(torch.finfo(mag.dtype).tiny), torch.ones_like(peak))
    return unit.reshape(*lead, *([1] * scan_dims))


def check_sigma(sigma: float, name: str = "sigma") -> float:
    """``sigma`` as a float; a ``ValueError`` naming ``name`` unless it is a finite number >= 0 (NaN included)."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {sigma!r}")
    return float(sigma)


@torch.no_grad()
def add_kspace_noise(
    kspace: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
    scan_dims: int = 3,
    renormalize: bool = True,
) -> torch.Tensor:
    """Add complex circular Gaussian noise of std ``sigma * signal_level`` and renormalise (see module doc).

    ``kspace``: complex ``(..., C, H, W)``; the last ``scan_dims`` axes form one scan (3: coils and
    space; 4 for a multi-frame slice ``(F, C, H, W)`` so that its frames share one level).
    ``generator`` draws the standard noise (on its own device, moved to the data's device).
    """
    check_complex(kspace)
    sigma = check_sigma(sigma)
    level = signal_level(kspace, scan_dims)
    noisy = torch.randn(kspace.shape, generator=generator, dtype=kspace.dtype, device=generator.device)
    noisy = noisy.to(kspace.device).mul_((sigma * level) * _phase_reference(kspace, scan_dims)).add_(kspace)
    if not renormalize:
        return noisy
    new_level = signal_level(noisy, scan_dims)
    return noisy.mul_(level / new_level.clamp_min(torch.finfo(new_level.dtype).tiny))


@dataclass(frozen=True)
class KspaceNoise:
    """Noise of relative std ``sigma`` whose standard draw comes from ``seed`` (on the data's device)."""

    sigma: float
    seed: int
    renormalize: bool = True

    def __post_init__(self) -> None:
        check_sigma(self.sigma)

    def apply(self, kspace: torch.Tensor, scan_dims: int = 3) -> torch.Tensor:
        gen = torch.Generator(device=kspace.device).manual_seed(int(self.seed))
        return add_kspace_noise(kspace, self.sigma, gen, scan_dims=scan_dims, renormalize=self.renormalize)

    def params(self) -> dict[str, Any]:
        return {"sigma": float(self.sigma), "seed": int(self.seed)}


class RandomKspaceNoise:
    """With probability ``p``, :class:`KspaceNoise` with ``sigma`` uniform over the discrete ``sigmas``.

    Default ``sigmas`` = :data:`DEFAULT_NOISE_SIGMAS`, an *assumption* (the paper's values are not public).
    """

    def __init__(self, sigmas: Sequence[float] = DEFAULT_NOISE_SIGMAS, p: float = 0.3, renormalize: bool = True):
        if isinstance(sigmas, (int, float)):
            sigmas = (sigmas,)
        self.sigmas = tuple(check_sigma(s, "sigmas") for s in sigmas)
        if not self.sigmas:
            raise ValueError("sigmas must hold at least one noise level")
        self.p, self.renormalize = check_probability(p, "p"), bool(renormalize)

    def sample(self, generator: torch.Generator) -> KspaceNoise | None:
        if not bernoulli(generator, self.p):
            return None
        i = int(torch.randint(len(self.sigmas), (), generator=generator).item())
        return KspaceNoise(self.sigmas[i], draw_seed(generator), self.renormalize)

    def neutral_params(self) -> dict[str, Any]:
        return {"sigma": 0.0, "seed": 0}


# ------------------------------------------------------------------------------------------ motion
def check_motion_range(max_shift: float, name: str = "max_shift") -> float:
    """A motion range in pixels as a float; a ``ValueError`` naming ``name`` unless finite and >= 0."""
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, float)) or not math.isfinite(max_shift) \
            or max_shift < 0:
        raise ValueError(f"{name} must be a finite number of pixels >= 0, got {max_shift!r}")
    return float(max_shift)


def _check_shots(shots: int) -> int:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be an integer >= 1, got {shots!r}")
    return shots


def shot_of_line(num_lines: int, shots: int, ordering: str = "interleaved", device: Any = None) -> torch.Tensor:
    """Shot index ``(num_lines,)`` of each phase-encode line: ``w mod shots`` or contiguous segments."""
    _check_shots(shots)
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    if shots > num_lines:
        raise ValueError(f"shots ({shots}) cannot exceed the number of phase-encode lines ({num_lines})")
    lines = torch.arange(num_lines, device=device)
    return lines % shots if ordering == "interleaved" else (lines * shots) // num_lines


@torch.no_grad()
def simulate_rigid_motion(
    kspace: torch.Tensor, shifts: torch.Tensor, shots: int, ordering: str = "interleaved"
) -> torch.Tensor:
    """The motion-corrupted k-space of eq. (7): ``y[..., kx, ky] * exp(-i 2 pi (kx dx_j / H + ky dy_j / W))``,
    ``j`` = shot of ``ky`` (the phase error of eq. (6)).

    ``kspace``: complex ``(..., C, H, W)``; ``shifts``: ``(shots, 2)`` or ``(..., shots, 2)`` pixels
    ``(dx along H, dy along W)``, leading axes broadcasting against ``kspace.shape[:-3]``.
    """
    check_complex(kspace)
    _check_shots(shots)
    shifts = torch.as_tensor(shifts)
    if shifts.ndim < 2 or shifts.shape[-2:] != (shots, 2):
        raise ValueError(f"shifts must have shape (..., shots={shots}, 2), got {tuple(shifts.shape)}")
    if not bool(torch.isfinite(shifts).all()):
        raise ValueError("shifts must be finite numbers of pixels (got NaN or inf)")
    h, w = kspace.shape[-2:]
    line_shot = shot_of_line(w, shots, ordering, device=kspace.device)
    per_line = shifts.to(device=kspace.device, dtype=torch.float64)[..., line_shot, :]  # (..., W, 2)
    kx = (torch.arange(h, device=kspace.device, dtype=torch.float64) - h // 2) / h
    ky = (torch.arange(w, device=kspace.device, dtype=torch.float64) - w // 2) / w
    phase = kx[:, None] * per_line[..., None, :, 0] + ky * per_line[..., None, :, 1]  # (..., H, W)
    ramp = torch.polar(torch.ones_like(phase), -2 * math.pi * phase).to(kspace.dtype)
    return kspace * ramp.unsqueeze(-3)


@dataclass(frozen=True)
class RigidMotion:
    """Per-shot translations ``shifts[j] = (dx_j, dy_j)`` pixels with the line ``ordering``."""

    shifts: tuple[tuple[float, float], ...]
    ordering: str = "interleaved"

    def __post_init__(self) -> None:
        if self.ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {ORDERINGS}, got {self.ordering!r}")
        if not self.shifts or any(len(s) != 2 for s in self.shifts):
            raise ValueError(f"shifts must be a non-empty sequence of (dx, dy) pairs, got {self.shifts!r}")
        if not all(math.isfinite(v) for s in self.shifts for v in s):
            raise ValueError(f"shifts must be finite numbers of pixels, got {self.shifts!r}")

    @property
    def shots(self) -> int:
        return len(self.shifts)

    def apply(self, kspace: torch.Tensor) -> torch.Tensor:
        return simulate_rigid_motion(kspace, torch.tensor(self.shifts, dtype=torch.float64), self.shots, self.ordering)

    def params(self) -> dict[str, Any]:
        return {"shifts": torch.tensor(self.shifts, dtype=torch.float32)}


class RandomRigidMotion:
    """With probability ``p``, per shot a displacement ``dy`` along the phase encode (``W``) uniform in
    ``[-max_shift, max_shift]`` pixels, as the paper describes; with ``readout_shifts=True`` also ``dx``
    along the readout (``H``).

    ``max_shift`` may be a pair (along H, along W; the H entry counts only with ``readout_shifts``).
    ``keep_center_still`` holds the shot that acquires the k-space centre line (``W // 2``) at rest,
    so the motion is relative to the reference position. Defaults (2 pixels, 8 shots, interleaved)
    are an *assumption*.
    """

    def __init__(
        self,
        max_shift: float | tuple[float, float] = 2.0,
        shots: int = 8,
        ordering: str = "interleaved",
        p: float = 0.3,
        keep_center_still: bool = True,
        readout_shifts: bool = False,
    ):
        pair = (max_shift, max_shift) if isinstance(max_shift, (int, float)) else tuple(max_shift)
        if len(pair) != 2 or any(
            isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0 for m in pair
        ):
            raise ValueError(f"max_shift must be a finite number >= 0 or a pair of them, got {max_shift!r}")
        if ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
        self.max_shift = (float(pair[0]), float(pair[1]))
        self.shots, self.ordering = _check_shots(shots), ordering
        self.p, self.keep_center_still = check_probability(p, "p"), bool(keep_center_still)
        self.readout_shifts = bool(readout_shifts)

    def sample(self, generator: torch.Generator, num_lines: int) -> RigidMotion | None:
        if not bernoulli(generator, self.p):
            return None
        shifts = [
            (uniform(generator, -self.max_shift[0], self.max_shift[0]) if self.readout_shifts else 0.0,
             uniform(generator, -self.max_shift[1], self.max_shift[1]))
            for _ in range(self.shots)
        ]
        if self.keep_center_still:
            centre = int(shot_of_line(num_lines, self.shots, self.ordering)[num_lines // 2])
            shifts[centre] = (0.0, 0.0)
        return RigidMotion(tuple(shifts), self.ordering)

    def neutral_params(self) -> dict[str, Any]:
        return {"shifts": torch.zeros(self.shots, 2)}


# ------------------------------------------------------------------------------------------ inspection
def kspace_snr_db(kspace: torch.Tensor, border: float = 0.1) -> float:
    """k-space SNR ``20 log10(L(y) / sigma_0)`` of one scan ``(..., C, H, W)``, in dB.

    ``sigma_0``: RMS of the four k-space corners (the outer ``border`` fraction of both axes), where
    an image of finite resolution leaves little but thermal noise.
    """
    check_complex(kspace)
    if not 0 < border < 0.5:
        raise ValueError(f"border must be in (0, 0.5), got {border!r}")
    h, w = kspace.shape[-2:]
    bh, bw = max(1, int(border * h)), max(1, int(border * w))
    rows = torch.cat((torch.arange(bh), torch.arange(h - bh, h)))
    cols = torch.cat((torch.arange(bw), torch.arange(w - bw, w)))
    corners = kspace[..., rows, :][..., cols]
    noise = float(torch.sqrt((corners.abs() ** 2).mean()))
    level = float(torch.sqrt((kspace.abs() ** 2).mean()))
    return 20 * math.log10(level / max(noise, 1e-30))
