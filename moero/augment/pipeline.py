"""DualSpace-CMR augmentation: k-space artefacts and the joint image/map pipeline.

Pattern (torchio): each ``Random*`` object draws its parameters from a :class:`torch.Generator` and
returns a frozen dataclass that records them and re-applies them deterministically (same
parameters, same bytes). Everything runs batched on the device of its input, without autograd.

k-space artefacts
-----------------
* **Thermal noise** (:func:`add_kspace_noise`): complex circular white Gaussian noise ``n`` with
  ``E|n|^2 = (sigma * L(y))^2`` per sample, where the signal level ``L(y)`` is the RMS of the scan's
  k-space over its last ``scan_dims`` axes (by Parseval, the RMS of the coil images). The k-space
  SNR therefore drops to ``-20 log10(sigma)`` dB for every scan whatever its intensity scale. The
  noise is drawn in the phase frame of the scan's largest k-space sample, which leaves its law
  unchanged (circular) but makes the operation commute with a global complex scale. Then the
  k-space is **renormalised** to the input's level: ``y_aug = (y + n) L(y) / L(y + n)``, so the
  network's input normalisation sees the scan at its usual scale. Together:
  ``aug(c y) == c aug(y)`` for any complex ``c`` and the same draw.
* **Rigid motion** (:func:`simulate_rigid_motion`): phase-encode lines (the ``W`` axis) grouped into
  shots (``interleaved``: line ``w`` in shot ``w mod shots``; ``segmented``: contiguous blocks);
  shot ``j`` moved by ``(dx_j, dy_j)`` pixels along ``(H, W)`` multiplies its lines by
  ``exp(-i 2 pi (kx dx_j / H + ky dy_j / W))`` with centred integer ``kx, ky`` (index minus
  ``N // 2``, the centre of :func:`moero.physics.fft.fft2c`). Shots are shared by all frames of a slice,
  as in segmented cine, where each heartbeat acquires the same lines for every frame.

Pipeline (:class:`DualSpaceAugment`)
------------------------------------
image-domain transforms of the raw coil images ``F^-1 y`` (fully sampled; the coil maps, when the
example carries them, move along and are renormalised; :mod:`moero.augment.geometry`) -> re-expand
``y' = F x'_c`` -> motion -> noise -> undersample with the example's mask. Motion and noise act on
the whole k-space before masking, since they corrupt the acquisition itself; on the sampled points
this equals corrupting the masked k-space. Motion comes before noise: the object moves, the receiver
adds noise. The target is recomputed from the clean transformed coil images (their RSS, the
dataset's convention for un-augmented examples too), so it carries the geometry but never the
artefacts, and the target definition does not depend on whether an example was augmented (no SENSE
projection onto estimated maps). The noise renormalisation ``L(y) / L(y + n)`` scales the target as
well, so input and target keep one intensity scale.

The augmentation ratio ``p`` is the probability that an example gets *at least one* transform or
artefact: an example drawn for augmentation redraws its transforms (each with its own probability)
until at least one fires. :meth:`DualSpaceAugment.artefact_fraction` measures the realised share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from moero.augment.base import RandomTransform, Transform, bernoulli, check_probability, draw_seed
from moero.augment.geometry import (
    RandomElastic,
    RandomFlip,
    RandomRot90,
    RandomRotation,
    RandomScaling,
    RandomShift,
)
from moero.augment.kspace import (
    KspaceNoise,
    RandomKspaceNoise,
    RandomRigidMotion,
    RigidMotion,
    check_complex,
    check_motion_range,
    check_sigma,
    kspace_snr_db,
    shot_of_line,
    signal_level,
)
from moero.physics.coils import estimate_maps_lowres
from moero.physics.fft import centre_crop, centred_slice, fft2c, ifft2c
from moero.physics.sense import apply_mask, normalize_maps, rss

__all__ = [
    "RatioSchedule",
    "AugmentPlan",
    "DualSpaceAugment",
    "estimate_maps_from_full",
    "default_geometric",
    "preview_artefacts",
]


# ------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class RatioSchedule:
    """Augmentation ratio over training time ``t`` (epoch or step, the caller's unit).

    ``constant``: ``ratio`` always. ``linear``: 0 until ``start``, rising linearly to ``ratio`` at
    ``end``, then ``ratio``. ``delayed``: 0 before ``start``, ``ratio`` from ``start`` on.
    """

    kind: str = "constant"
    ratio: float = 0.5
    start: float = 0.0
    end: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "linear", "delayed"):
            raise ValueError(f"kind must be 'constant', 'linear' or 'delayed', got {self.kind!r}")
        check_probability(self.ratio, "ratio")
        if self.kind == "linear" and not self.end > self.start:
            raise ValueError(f"end must be > start for a linear ramp, got start={self.start}, end={self.end}")

    def __call__(self, t: float) -> float:
        if self.kind == "constant":
            return self.ratio
        if self.kind == "delayed":
            return self.ratio if t >= self.start else 0.0
        return self.ratio * min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)


# ------------------------------------------------------------------------------------------ maps
@torch.no_grad()
def estimate_maps_from_full(kspace: torch.Tensor, width: int = 24, eps: float = 1e-6) -> torch.Tensor:
    """Smooth coil maps ``(C, H, W)`` from fully sampled k-space ``(..., C, H, W)``.

    The frames (leading axes) are averaged, then :func:`moero.physics.coils.estimate_maps_lowres` runs on
    a centred ``width x width`` calibration square (fully sampled data calibrate in both directions,
    so the maps are smooth along the readout too). ``eps`` is relative to the peak coil RSS squared:
    it keeps the maps small where there is no signal.
    """
    check_complex(kspace)
    if isinstance(width, bool) or not isinstance(width, int) or not 2 <= width <= min(kspace.shape[-2:]):
        raise ValueError(f"width must be an integer in [2, min(H, W)], got {width!r}")
    k = kspace.reshape(-1, *kspace.shape[-3:]).mean(dim=0)
    h, w = k.shape[-2:]
    square = torch.zeros(h, w, dtype=torch.bool)
    square[centred_slice(h, width), centred_slice(w, width)] = True
    return estimate_maps_lowres(k, square, eps=eps)


# ------------------------------------------------------------------------------------------ pipeline
def default_geometric() -> dict[str, RandomTransform]:
    """The default image-domain transforms, in order. Probabilities and ranges are *assumptions*."""
    return {
        "flip": RandomFlip(("H", "W"), p=0.5),
        "shift": RandomShift((8, 8), p=0.3),
        "rot90": RandomRot90(p=0.2),
        "rotation": RandomRotation(15.0, p=0.3),
        "scaling": RandomScaling((0.9, 1.1), isotropic=False, p=0.3),
        "elastic": RandomElastic((1.0, 4.0), sigma=16.0, p=0.2),
    }


@dataclass(frozen=True)
class AugmentPlan:
    """What one example gets: a deterministic record, re-applicable with :meth:`DualSpaceAugment.apply`."""

    applied: bool
    ratio: float
    geometric: tuple[tuple[str, Transform], ...] = ()
    motion: RigidMotion | None = None
    noise: KspaceNoise | None = None
    neutral: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Flat record with the same keys for every example (so a DataLoader can collate it):
        ``applied``, ``ratio`` and ``<transform>.<param>`` (neutral values when not drawn)."""
        out: dict[str, Any] = {"applied": self.applied, "ratio": float(self.ratio), **self.neutral}
        for name, t in self.geometric:
            out.update({f"{name}.{k}": v for k, v in t.params().items()})
        for name, t in (("motion", self.motion), ("noise", self.noise)):
            if t is not None:
                out.update({f"{name}.{k}": v for k, v in t.params().items()})
        return out


class DualSpaceAugment:
    """The DualSpace-CMR pipeline as a dataset callable ``augment(example, generator) -> example``.

    ``example`` holds ``kspace`` (fully sampled, complex ``(F, C, H, W)``), ``mask`` (broadcasting
    as ``(F, H, W)`` or ``(F, 1, W)``) and ``target`` (``(H', W')``: RSS of the centre frame, or
    ``(F, H', W')``: every frame, centre-cropped to ``H' x W'``); optional ``maps`` ``(C, H, W)``
    (transformed along with the coil images; ``maps_width`` is kept for compatibility) and ``epoch`` (schedule time,
    otherwise the value given to :meth:`set_epoch`). The result has ``kspace`` (the corrupted full
    k-space), ``masked_kspace``, ``mask``, ``target`` and ``maps`` (if given) updated, plus
    ``augment_params`` (:meth:`AugmentPlan.as_dict`). An example drawn not to be augmented comes
    back unchanged except for ``augment_params``.

    Per example: with probability ``schedule(t)`` (the augmentation ratio) the example is augmented,
    i.e. gets at least one transform or artefact: each fires with its own probability ``p``, and the
    draw is repeated until one does (the relative odds of the transforms stay those of their ``p``).
    """

    def __init__(
        self,
        geometric: Mapping[str, RandomTransform] | None = None,
        motion: RandomRigidMotion | None = None,
        noise: RandomKspaceNoise | None = None,
        schedule: RatioSchedule | float | Callable[[float], float] = 0.5,
        maps_width: int = 24,
    ):
        self.geometric = dict(default_geometric() if geometric is None else geometric)
        self.motion = RandomRigidMotion() if motion is None else motion
        self.noise = RandomKspaceNoise() if noise is None else noise
        if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
            schedule = RatioSchedule("constant", check_probability(schedule, "schedule"))
        if not callable(schedule):
            raise ValueError(f"schedule must be a ratio in [0, 1] or a callable t -> ratio, got {schedule!r}")
        self.schedule, self.maps_width, self.time = schedule, maps_width, 0.0

    @classmethod
    def without_artefacts(cls, **kwargs: Any) -> DualSpaceAugment:
        """Geometry only (noise and motion off): the clean re-expanded k-space reaches the output."""
        return cls(motion=RandomRigidMotion(p=0.0), noise=RandomKspaceNoise(p=0.0), **kwargs)

    def set_epoch(self, t: float) -> None:
        """Training time for the schedule when examples carry no ``epoch`` key."""
        self.time = float(t)

    def ratio(self, t: float | None = None) -> float:
        return check_probability(float(self.schedule(self.time if t is None else float(t))), "schedule(t)")

    def _neutral(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, t in (*self.geometric.items(), ("motion", self.motion), ("noise", self.noise)):
            out.update({f"{name}.{k}": v for k, v in t.neutral_params().items()})
        return out

    def sample(self, generator: torch.Generator, shape: Sequence[int], t: float | None = None) -> AugmentPlan:
        """Draw the plan for an example whose k-space has ``shape`` ``(..., C, H, W)``."""
        h, w = int(shape[-2]), int(shape[-1])
        ratio = self.ratio(t)
        neutral = self._neutral()
        if not bernoulli(generator, ratio):
            return AugmentPlan(False, ratio, neutral=neutral)
        if not any(float(getattr(rt, "p", 1.0)) > 0 for rt in (*self.geometric.values(), self.motion, self.noise)):
            return AugmentPlan(False, ratio, neutral=neutral)  # nothing can fire
        while True:  # terminates with probability 1: some transform fires with p > 0
            geometric = tuple(
                (name, tr) for name, rt in self.geometric.items() if (tr := rt.sample(generator, (h, w))) is not None
            )
            motion = self.motion.sample(generator, w)
            noise = self.noise.sample(generator)
            if geometric or motion is not None or noise is not None:
                return AugmentPlan(True, ratio, geometric, motion, noise, neutral)

    def artefact_fraction(self, shape: Sequence[int], draws: int = 1000, seed: int = 0,
                          t: float | None = None) -> float:
        """Measured share of ``draws`` examples (k-space ``shape``) that get at least one transform or
        artefact; equals the ratio ``schedule(t)`` up to sampling error."""
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
        gen = torch.Generator().manual_seed(int(seed))
        hits = 0
        for _ in range(draws):
            plan = self.sample(gen, shape, t)
            hits += bool(plan.geometric or plan.motion is not None or plan.noise is not None)
        return hits / draws

    @torch.no_grad()
    def apply(self, example: Mapping[str, Any], plan: AugmentPlan) -> dict[str, Any]:
        """Apply a recorded ``plan`` to ``example`` (deterministic)."""
        out = dict(example)
        out["augment_params"] = plan.as_dict()
        if not plan.applied:
            return out
        for key in ("kspace", "mask", "target"):
            if key not in example:
                raise ValueError(f"example is missing key {key!r} (has {sorted(example)})")
        kspace = example["kspace"]
        check_complex(kspace, "example['kspace']", min_dims=4)
        clean, target = kspace, example["target"]
        if plan.geometric:
            transforms = [t for _, t in plan.geometric]
            coils = ifft2c(kspace)  # the raw coil images, transformed as they are
            for t in transforms:
                (coils,) = t.apply(coils)
            clean = fft2c(coils)
            target = _target_like(clean, example["target"])
            given = example.get("maps")
            if given is not None:  # maps that come with the example move along with the anatomy
                maps = normalize_maps(given)
                for t in transforms:
                    (maps,) = t.apply(maps)
                out["maps"] = normalize_maps(maps).to(given.dtype)
        acquired = clean
        if plan.motion is not None:
            acquired = plan.motion.apply(acquired)
        if plan.noise is not None:
            noisy = dataclasses.replace(plan.noise, renormalize=False).apply(acquired, scan_dims=4)
            if plan.noise.renormalize:  # L(y) / L(y + n): the input and the target alike
                scale = signal_level(acquired, 4) / signal_level(noisy, 4).clamp_min(torch.finfo(torch.float32).tiny)
                noisy = noisy * scale
                target = target * scale.reshape(()).to(target.dtype)
            acquired = noisy
        out["kspace"] = acquired
        out["masked_kspace"] = apply_mask(acquired, example["mask"])
        out["target"] = target
        return out

    def __call__(self, example: Mapping[str, Any], generator: torch.Generator) -> dict[str, Any]:
        if "kspace" not in example:
            raise ValueError(f"example is missing key 'kspace' (has {sorted(example)})")
        t = example.get("epoch")
        plan = self.sample(generator, tuple(example["kspace"].shape), None if t is None else float(t))
        return self.apply(example, plan)


def _target_like(kspace: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """RSS image of ``kspace`` ``(F, C, H, W)`` shaped like ``reference``: the centre frame (2-D) or
    every frame (3-D), centre-cropped to the reference's ``(H', W')``."""
    frames = kspace.shape[0]
    if reference.ndim == 2:
        image = rss(ifft2c(kspace[frames // 2]))
    elif reference.ndim == 3 and reference.shape[0] == frames:
        image = rss(ifft2c(kspace))
    else:
        raise ValueError(f"target has shape {tuple(reference.shape)}; expected (H, W) or (F={frames}, H, W)")
    th, tw = reference.shape[-2:]
    h, w = image.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"target shape {tuple(reference.shape)} is larger than the k-space matrix {(h, w)}")
    return centre_crop(image, (th, tw)).to(reference.dtype)


@torch.no_grad()
def preview_artefacts(
    kspace: torch.Tensor,
    sigma: float = 0.0,
    max_shift: float = 0.0,
    shots: int = 8,
    ordering: str = "interleaved",
    seed: int = 0,
) -> dict[str, Any]:
    """Motion then noise on one fully sampled scan ``(..., C, H, W)`` (all of it one scan), for display.

    Tensors: ``kspace`` (corrupted), ``image_clean``, ``image_motion`` (motion only) and ``image``
    (RSS, of the last frame when there are several), ``difference`` (``image - image_clean``), its two
    parts ``difference_motion`` (``image_motion - image_clean``) and ``difference_noise``
    (``image - image_motion``), which need separate colour scales since ghosts dwarf the noise, the
    coil-RSS log-magnitude k-spaces ``log_kspace_clean`` and ``log_kspace``, and the drawn
    ``shifts`` ``(shots, 2)`` in pixels (zeros without motion).

    Readouts (floats): ``snr_added_db`` = ``-20 log10(sigma)``, the k-space SNR of the added noise
    alone (eq. (5); ``inf`` for ``sigma = 0``); ``snr_clean_db`` and ``snr_db``, the k-space SNR
    (:func:`moero.augment.kspace.kspace_snr_db`) before and after; ``snr_drop_db`` their difference;
    ``rms_shift_px`` = ``sqrt(mean_j (dx_j^2 + dy_j^2))``, the RMS displacement over the shots
    (eq. (6)). Motion keeps the centre's shot still; the draws come from ``seed``.
    """
    check_complex(kspace)
    sigma = check_sigma(sigma, "sigma")
    max_shift = check_motion_range(max_shift, "max_shift")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    # validated even when motion is off, so a bad value never passes silently
    lines = shot_of_line(kspace.shape[-1], shots, ordering)
    gen = torch.Generator().manual_seed(int(seed))
    moved = kspace
    shifts = torch.zeros(int(lines.max()) + 1, 2)
    if max_shift > 0:
        motion = RandomRigidMotion(max_shift, shots=shots, ordering=ordering, p=1.0).sample(gen, kspace.shape[-1])
        moved = motion.apply(kspace)
        shifts = torch.tensor(motion.shifts, dtype=torch.float32)
    out = moved
    if sigma > 0:
        out = KspaceNoise(sigma, draw_seed(gen)).apply(moved, scan_dims=kspace.ndim)

    def last_frame(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[-3:])[-1]

    clean_img = rss(ifft2c(last_frame(kspace)))
    moved_img = rss(ifft2c(last_frame(moved)))
    img = rss(ifft2c(last_frame(out)))
    snr_clean = kspace_snr_db(kspace)
    snr = kspace_snr_db(out) if sigma > 0 else snr_clean  # motion keeps every |y|: the SNR is unchanged
    return {
        "kspace": out,
        "image_clean": clean_img,
        "image_motion": moved_img,
        "image": img,
        "difference": img - clean_img,
        "difference_motion": moved_img - clean_img,
        "difference_noise": img - moved_img,
        "log_kspace_clean": torch.log10(rss(last_frame(kspace)) + 1e-12),
        "log_kspace": torch.log10(rss(last_frame(out)) + 1e-12),
        "shifts": shifts,
        "snr_added_db": -20 * math.log10(sigma) if sigma > 0 else math.inf,
        "snr_clean_db": snr_clean,
        "snr_db": snr,
        "snr_drop_db": snr_clean - snr,
        "rms_shift_px": float(shifts.double().square().sum(dim=1).mean().sqrt()),
    }
