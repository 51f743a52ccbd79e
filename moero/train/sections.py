"""Typed sections of a training configuration: the augmentation (:class:`AugmentConfig`) and Moero's
router (:class:`NavConfig`), nested in :class:`moero.train.config.TrainConfig` as ``augment`` and ``nav``.

Each section validates its fields where it is built (an error names ``<section>.<field>``), documents
them in field metadata (the command line's help is read from there) and builds what it configures:
:meth:`AugmentConfig.build` the DualSpace-CMR pipeline, :meth:`NavConfig.kwargs` the keyword arguments
of every :class:`~moero.models.routing.BranchNav`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moero.augment.kspace import DEFAULT_NOISE_SIGMAS, ORDERINGS, RandomKspaceNoise, RandomRigidMotion, check_sigma
from moero.augment.pipeline import DualSpaceAugment, default_geometric

__all__ = ["AugmentConfig", "NavConfig", "AUGMENT_KINDS", "section_from", "coerce_bool"]

AUGMENT_KINDS = ("none", "kspace", "image", "dual")
GEOMETRIC = tuple(default_geometric())  # flip, shift, rot90, rotation, scaling, elastic


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"config field {name!r} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value) or value < low:
        raise ValueError(f"config field {name!r} must be an integer >= {low}, got {value!r}")
    return int(value)


def _number(name: str, value: Any, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low:
        raise ValueError(f"config field {name!r} must be a finite number >= {low}, got {value!r}")
    return float(value)


def coerce_bool(name: str, value: Any) -> bool:
    """``value`` of config field ``name`` as a bool: true/false, yes/no, on/off, 1/0 (strings or values); a
    ``ValueError`` naming the field otherwise. The one rule for every boolean field (TrainConfig's too)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"config field {name!r}: expected bool, got {value!r}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"config field {name!r}: {value!r} is not one of {choices}")
    return str(value)


@dataclass
class AugmentConfig:
    """DualSpace-CMR augmentation of a training run (Sec. 3.1): image-domain transforms applied to image and
    coil maps, k-space thermal noise (eq. (5)) and multi-shot rigid motion (eqs. (6)-(7)).

    The noise levels, motion range, shot count and transform probabilities are *assumptions* (the paper's
    values are not public); the defaults are those of :mod:`moero.augment`."""

    kind: str = field(default="none", metadata=_help(
        "none | kspace (noise + motion) | image (geometric transforms) | dual (both)"))
    probability: float = field(default=0.5, metadata=_help(
        "augmentation ratio: probability that an example gets at least one transform or artefact"))
    noise_sigmas: list[float] = field(default_factory=lambda: list(DEFAULT_NOISE_SIGMAS), metadata=_help(
        "k-space noise std relative to the scan's RMS signal, drawn uniformly from this set (eq. (5))"))
    noise_p: float = field(default=0.3, metadata=_help("relative odds of the noise artefact"))
    motion_range: float = field(default=2.0, metadata=_help(
        "largest rigid shift per shot, pixels (eq. (6)); 0 is the identity"))
    shots: int = field(default=8, metadata=_help("shots of the simulated multi-shot acquisition"))
    ordering: str = field(default="interleaved", metadata=_help("phase-encode order of the shots: "
                                                                  "interleaved | segmented"))
    motion_p: float = field(default=0.3, metadata=_help("relative odds of the motion artefact"))
    transforms: list[str] = field(default_factory=lambda: list(GEOMETRIC), metadata=_help(
        "image-domain transforms of kinds image and dual: " + ", ".join(GEOMETRIC)))

    def __post_init__(self) -> None:
        self.kind = _choice("augment.kind", self.kind, AUGMENT_KINDS)
        self.probability = _probability("augment.probability", self.probability)
        sigmas = [self.noise_sigmas] if isinstance(self.noise_sigmas, int | float) else list(self.noise_sigmas)
        if not sigmas:
            raise ValueError("config field 'augment.noise_sigmas' must hold at least one noise level")
        self.noise_sigmas = [check_sigma(s, "config field 'augment.noise_sigmas'") for s in sigmas]
        self.noise_p = _probability("augment.noise_p", self.noise_p)
        self.motion_range = _number("augment.motion_range", self.motion_range, 0.0)
        self.shots = _count("augment.shots", self.shots, 1)
        self.ordering = _choice("augment.ordering", self.ordering, ORDERINGS)
        self.motion_p = _probability("augment.motion_p", self.motion_p)
        unknown = sorted(set(self.transforms) - set(GEOMETRIC))
        if unknown:
            raise ValueError(f"config field 'augment.transforms': unknown transforms {unknown}; known: {GEOMETRIC}")
        self.transforms = [str(t) for t in self.transforms]

    def build(self) -> DualSpaceAugment | None:
        """The dataset callable of ``kind`` (None for ``none``): ``kspace`` noise and motion only, ``image``
        the geometric transforms only, ``dual`` both; each example is augmented with ``probability``."""
        if self.kind == "none":
            return None
        artefacts = self.kind in ("kspace", "dual")
        geometric = {k: v for k, v in default_geometric().items() if k in self.transforms}
        motion = RandomRigidMotion(max_shift=self.motion_range, shots=self.shots, ordering=self.ordering,
                                   p=self.motion_p if artefacts else 0.0)
        noise = RandomKspaceNoise(self.noise_sigmas, p=self.noise_p if artefacts else 0.0)
        return DualSpaceAugment(geometric=geometric if self.kind in ("image", "dual") else {}, motion=motion,
                                noise=noise, schedule=self.probability)


@dataclass
class NavConfig:
    """BranchNav of every Moero cascade (eq. (9)): warm-up, k-means buffer and fit, balance rule and routing.
    The defaults are :class:`~moero.models.routing.BranchNav`'s."""

    warmup: int | str = field(default="epoch", metadata=_help(
        "'epoch' (buffer nothing in the first epoch, the paper's rule) or samples routed before buffering"))
    warmup_scope: str = field(default="global", metadata=_help(
        "an int warm-up counts samples over all ranks (global) or per rank (rank, the authors' way)"))
    buffer_size: int = field(default=2048, metadata=_help("histograms gathered before the k-means fit"))
    imbalance_ratio: float = field(default=3.0, metadata=_help(
        "route to the least-used expert while max n / min n exceeds this"))
    restarts: int = field(default=8, metadata=_help("k-means restarts"))
    max_iter: int = field(default=100, metadata=_help("k-means iterations per restart"))
    seed: int = field(default=42, metadata=_help("k-means seed"))
    eval_mode: str = field(default="nearest", metadata=_help(
        "evaluation routing: nearest (centre of highest cosine) | paper (the training rule)"))
    route_by: str = field(default="sample", metadata=_help("sample (one expert each) | batch (the mode)"))
    gather_per_step: int = field(default=8, metadata=_help("histograms each rank adds to the buffer per step"))
    refit_every: int = field(default=0, metadata=_help(
        "refit the centres every N routed samples after the first fit, experts matched to the old centres "
        "(0: fit once, the paper's way)"))
    freeze_codebook: str = field(default="never", metadata=_help(
        "freeze the codebook this navigator reads: never | fit (once the centres exist) | buffer (once "
        "buffering starts)"))
    capacity: float = field(default=0.0, metadata=_help(
        "c >= 1: no expert takes more than c / K of the training samples routed since the last fit (0: off)"))
    bias_rate: float = field(default=0.0, metadata=_help("step of the per-expert routing biases (0: off)"))
    center: bool = field(default=False, metadata=_help(
        "route on histograms minus the buffer's mean histogram at the fit (false: raw histograms, the paper)"))
    balance: bool = field(default=False, metadata=_help(
        "every fit sets routing biases that split its histograms equally over the experts (false: the paper)"))
    calibration: int = field(default=0, metadata=_help(
        "training examples re-encoded by the final network to refit the centres on at the end of training "
        "(0: off, the paper)"))

    def __post_init__(self) -> None:
        warm = self.warmup
        if isinstance(warm, str) and warm.strip().isdigit():
            warm = int(warm.strip())
        if not (warm == "epoch" or (isinstance(warm, int) and not isinstance(warm, bool) and warm >= 0)):
            raise ValueError(f"config field 'nav.warmup' must be 'epoch' or an integer >= 0, got {self.warmup!r}")
        self.warmup = warm
        self.warmup_scope = _choice("nav.warmup_scope", self.warmup_scope, ("global", "rank"))
        self.buffer_size = _count("nav.buffer_size", self.buffer_size, 1)
        self.imbalance_ratio = _number("nav.imbalance_ratio", self.imbalance_ratio, 1.0)
        self.restarts = _count("nav.restarts", self.restarts, 1)
        self.max_iter = _count("nav.max_iter", self.max_iter, 1)
        self.seed = _count("nav.seed", self.seed, 0)
        self.eval_mode = _choice("nav.eval_mode", self.eval_mode, ("nearest", "paper"))
        self.route_by = _choice("nav.route_by", self.route_by, ("sample", "batch"))
        self.gather_per_step = _count("nav.gather_per_step", self.gather_per_step, 1)
        self.refit_every = _count("nav.refit_every", self.refit_every, 0)
        self.freeze_codebook = _choice("nav.freeze_codebook", self.freeze_codebook, ("never", "fit", "buffer"))
        self.bias_rate = _number("nav.bias_rate", self.bias_rate, 0.0)
        self.capacity = _number("nav.capacity", self.capacity, 0.0)
        self.center = coerce_bool("nav.center", self.center)
        self.balance = coerce_bool("nav.balance", self.balance)
        self.calibration = _count("nav.calibration", self.calibration, 0)
        if self.balance and self.bias_rate > 0:
            raise ValueError("config fields 'nav.balance' and 'nav.bias_rate' both set the routing biases: choose one")
        if 0.0 < self.capacity < 1.0:
            raise ValueError(f"config field 'nav.capacity' must be 0 (off) or >= 1, got {self.capacity!r}")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~moero.models.routing.BranchNav`."""
        return dataclasses.asdict(self)


def section_from(cls: type, name: str, value: Any) -> Any:
    """``value`` (an instance, a mapping of fields, or for ``augment`` a kind name) as section ``cls``;
    an unknown field is a ``ValueError`` naming ``<name>.<field>``."""
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if isinstance(value, str) and cls is AugmentConfig:
        return cls(kind=value.strip())
    if not isinstance(value, Mapping):
        raise ValueError(f"config field {name!r}: expected a mapping of {cls.__name__} fields, got {value!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"config field {name!r}: unknown fields {[f'{name}.{u}' for u in unknown]}; known: {known}")
    return cls(**dict(value))
