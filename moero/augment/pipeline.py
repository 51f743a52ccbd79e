"""DualSpace-CMR augmentation (reference section 4): k-space artefacts and the joint image/map pipeline.

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
  ``N // 2``, the centre of :func:`moero.fft.fft2c`). Shots are shared by all frames of a slice,
  as in segmented cine, where each heartbeat acquires the same lines for every frame.

Pipeline (:class:`DualSpaceAugment`)
------------------------------------
combine ``x = A^H y`` (fully sampled, maps normalised) -> image-domain transforms of ``x`` and the
maps jointly (:mod:`moero.geometry`) -> renormalise maps -> re-expand ``y' = F S' x'`` -> motion ->
noise -> undersample with the example's mask. Motion and noise act on the whole k-space before
masking, since they corrupt the acquisition itself; on the sampled points this equals corrupting
the masked k-space. Motion comes before noise: the object moves, the receiver adds noise. The
target is recomputed from the clean re-expanded k-space (RSS of its inverse FFT, the dataset's
convention), so it carries the geometry but never the artefacts.
"""

from __future__ import annotations

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
    transform_image_and_maps,
)
from moero.augment.kspace import KspaceNoise, RandomKspaceNoise, RandomRigidMotion, RigidMotion, check_complex
from moero.physics.fft import ifft2c
from moero.physics.sense import apply_mask, estimate_maps_lowres, normalize_maps, rss, sense_adjoint, sense_forward

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

    The frames (leading axes) are averaged, then :func:`moero.physics.estimate_maps_lowres` runs on
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
    square[h // 2 - width // 2 : h // 2 - width // 2 + width, w // 2 - width // 2 : w // 2 - width // 2 + width] = True
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
    (estimated by :func:`estimate_maps_from_full` when absent) and ``epoch`` (schedule time,
    otherwise the value given to :meth:`set_epoch`). The result has ``kspace`` (the corrupted full
    k-space), ``masked_kspace``, ``mask``, ``target`` and ``maps`` (if given) updated, plus
    ``augment_params`` (:meth:`AugmentPlan.as_dict`). An example drawn not to be augmented comes
    back unchanged except for ``augment_params``.

    Per example: with probability ``schedule(t)`` (the augmentation ratio) the example is augmented;
    then each transform fires with its own probability ``p``.
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
        geometric = tuple(
            (name, tr) for name, rt in self.geometric.items() if (tr := rt.sample(generator, (h, w))) is not None
        )
        motion = self.motion.sample(generator, w)
        noise = self.noise.sample(generator)
        return AugmentPlan(True, ratio, geometric, motion, noise, neutral)

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
            given = example.get("maps")
            maps = estimate_maps_from_full(kspace, self.maps_width) if given is None else normalize_maps(given)
            image = sense_adjoint(kspace, maps)
            image, maps = transform_image_and_maps(image, maps, [t for _, t in plan.geometric])
            clean = sense_forward(image, maps)
            target = _target_like(clean, example["target"])
            if given is not None:
                out["maps"] = maps.to(given.dtype)
        acquired = clean
        if plan.motion is not None:
            acquired = plan.motion.apply(acquired)
        if plan.noise is not None:
            acquired = plan.noise.apply(acquired, scan_dims=4)
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
    top, left = (h - th) // 2, (w - tw) // 2
    return image[..., top : top + th, left : left + tw].to(reference.dtype)




@torch.no_grad()
def preview_artefacts(
    kspace: torch.Tensor,
    sigma: float = 0.0,
    max_shift: float = 0.0,
    shots: int = 8,
    ordering: str = "interleaved",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Motion then noise on one fully sampled scan ``(..., C, H, W)`` (all of it one scan), for display.

    Returns ``kspace`` (corrupted), ``image_clean`` and ``image`` (RSS, of the last frame when there
    are several), their ``difference`` and the coil-RSS log-magnitude k-spaces ``log_kspace_clean``
    and ``log_kspace``. Motion keeps the centre's shot still; the draws come from ``seed``.
    """
    check_complex(kspace)
    gen = torch.Generator().manual_seed(int(seed))
    out = kspace
    if max_shift > 0:
        motion = RandomRigidMotion(max_shift, shots=shots, ordering=ordering, p=1.0).sample(gen, kspace.shape[-1])
        out = motion.apply(out)
    if sigma > 0:
        out = KspaceNoise(sigma, draw_seed(gen)).apply(out, scan_dims=kspace.ndim)

    def last_frame(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[-3:])[-1]

    clean_img, img = rss(ifft2c(last_frame(kspace))), rss(ifft2c(last_frame(out)))
    return {
        "kspace": out,
        "image_clean": clean_img,
        "image": img,
        "difference": img - clean_img,
        "log_kspace_clean": torch.log10(rss(last_frame(kspace)) + 1e-12),
        "log_kspace": torch.log10(rss(last_frame(out)) + 1e-12),
    }
