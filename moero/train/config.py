"""Training configuration: the :class:`TrainConfig` dataclass, YAML loading and ``field=value`` overrides.

Every field is validated where it enters (type, choices, ranges); an error names the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moero.models.promptmr import ModelConfig
from moero.models.registry import PRESET_NAMES, parse_model_name
from moero.train.sections import AugmentConfig, NavConfig, coerce_bool, section_from

__all__ = [
    "AUTHORS_TRAINING", "TrainConfig", "AugmentConfig", "NavConfig", "field_help", "parse_override", "parse_value",
    "resume_mismatch", "RESUME_FIXED", "RESUME_FREE", "LEGACY_FIELDS",
]

SECTIONS: dict[str, type] = {"augment": AugmentConfig, "nav": NavConfig}
# keys of configs written before the typed sections, still read (checkpoints, config.yaml): old -> dotted new
LEGACY_FIELDS: dict[str, str] = {"augment_probability": "augment.probability"}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


# ---------------------------------------------------------------------------- configuration
# The Moero authors' optimisation (5o1/Moero: plm/models/cmr25module.py, plm/configs/task/*-train-moero*.yaml):
# AdamW(2e-4, weight decay 1e-2) with no LR scheduler (constant), fp32 (precision 32; their TF32 matmul
# callback is not reproduced), no gradient clipping, and the 7x7 Gaussian (sigma 1) SSIM loss of the
# naneu submodule. Merge into a TrainConfig with ``TrainConfig.from_dict({**AUTHORS_TRAINING, ...})``.
AUTHORS_TRAINING: dict[str, Any] = {
    "lr": 2e-4,
    "weight_decay": 1e-2,
    "schedule": "constant",
    "warmup_steps": 0,
    "grad_clip": 0.0,
    "amp": "off",
    "ssim_window": "gaussian",
    "ssim_sigma": 1.0,
    "vq_weight": 1.0,
}


@dataclass
class TrainConfig:
    """Every setting of a training run; load from YAML (:meth:`from_yaml`), override any field.

    Paths and run: ``run_dir`` (checkpoint, ``metrics.jsonl``, ``config.yaml``), ``seed``, ``device``
    (``auto``/``cpu``/``cuda``). Data: ``data_root`` (a CMRxRecon2025 tree; ``None``: the synthetic
    set of ``dataset_size``), splits, ``batch_size`` (per rank), ``num_workers``, ``balanced``
    (``BalancedSampler`` of eq. (10)), mask kinds/accelerations/ACS, ``image_shape`` (``[H, W]``:
    centre crop / pad every image so that batches stack; empty: native sizes), ``augment`` (an
    :class:`AugmentConfig`: kind ``none``/``kspace``/``image``/``dual``, ratio, noise levels, motion range,
    shots). Model: ``model`` (a registry name: ``promptmr``, ``vq-prompt``, ``moero-<C>x<K>``), ``preset``
    (size), ``nav`` (a :class:`NavConfig`: BranchNav settings of Moero), ``model_overrides``
    (:class:`~moero.models.promptmr.ModelConfig` fields replacing the preset's, e.g. ``vq_restart_after``),
    ``gradient_checkpointing``. Optimisation: ``epochs``, ``max_steps`` (0: epochs decide),
    ``max_steps_this_run`` (0: no limit; else stop after that many steps of this run, with a
    checkpoint, for time-sliced jobs), ``lr``, ``weight_decay``, ``schedule`` (``step``, ``cosine``,
    ``constant``), ``lr_step_epoch`` (-1: the last epoch, as PromptMR+), ``lr_gamma``,
    ``warmup_steps``, ``grad_clip`` (0: off), ``amp`` (``auto``: bf16 on GPU, off on CPU; ``bf16``,
    ``fp16``, ``off``), ``vq_weight``, ``ssim_window``, ``ssim_sigma`` (of the Gaussian window).
    Bookkeeping: ``checkpoint_every`` (steps, 0:
    end of epoch and run only), ``val_every`` (epochs, 0: never), ``max_val_examples`` (0: all),
    ``val_crop`` (official centre crop in validation), ``log_every``, ``progress``,
    ``ddp_broadcast_buffers``. Run ownership: ``resume`` (continue from ``run_dir/checkpoint.pt``; an
    error when there is none), ``resume_if_present`` (resume when a checkpoint exists, else start afresh),
    ``overwrite`` (a fresh run into a folder holding a run moves that run aside first), and
    ``max_nonfinite`` (consecutive non-finite losses or gradient norms that stop a diverged run).

    Resume checks (:func:`resume_mismatch`): the fields of :data:`RESUME_FIXED` define the model, the
    data and its order, or the optimisation, and must equal the checkpoint's; :data:`RESUME_FREE` may
    change. ``max_steps`` and ``epochs`` may change only when the learning-rate schedule does not depend
    on the run length (``constant``, or ``step`` with an explicit ``lr_step_epoch``), so extending a run
    never moves the schedule under it.
    """

    run_dir: str = field(default="_build/runs/train", metadata=_help(
        "folder of checkpoint.pt, metrics.jsonl and config.yaml"))
    seed: int = field(default=0, metadata=_help("seed of weights, data order, masks and augmentation"))
    device: str = field(default="auto", metadata=_help("auto | cpu | cuda"))
    # data
    data_root: str | None = field(default=None, metadata=_help(
        "a CMRxRecon2025 tree (default: the synthetic set of --dataset-size)"))
    dataset_size: str = field(default="smoke", metadata=_help(
        "synthetic dataset size when data_root is empty: smoke | cpu | gpu | paper"))
    train_split: str = field(default="train", metadata=_help("manifest split used for training"))
    val_split: str = field(default="val", metadata=_help(
        "manifest split used for validation ('' or none: no validation)"))
    batch_size: int = field(default=1, metadata=_help("examples per step and rank"))
    num_workers: int = field(default=0, metadata=_help("data loader worker processes"))
    balanced: bool = field(default=True, metadata=_help("draw files by the sample-balancing weight of eq. (10)"))
    mask_kinds: list[str] = field(default_factory=lambda: ["uniform", "kt_gaussian", "kt_radial"], metadata=_help(
        "mask kinds drawn per example, e.g. [uniform,kt_gaussian]"))
    accelerations: list[float] = field(default_factory=lambda: [4, 8, 10, 12, 16, 20, 24], metadata=_help(
        "accelerations drawn per example, e.g. [4,8,12]"))
    acs: int = field(default=20, metadata=_help("fully sampled calibration lines"))
    train_subjects: list[str] = field(default_factory=list, metadata=_help(
        "train on these subjects of the training split only, e.g. [P001,P007] ([]: every subject)"))
    image_shape: list[int] = field(default_factory=list, metadata=_help(
        "[H,W] centre crop/pad so batches stack ([] keeps native sizes)"))
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata=_help(
        "DualSpace-CMR augmentation: a kind (none | kspace | image | dual) or a mapping of AugmentConfig fields"))
    # model (moero.models.registry): promptmr | vq-prompt | moero-<C>x<K>, at a preset size
    model: str = field(default="promptmr", metadata=_help(
        "registry name: promptmr | vq-prompt | moero-<C>x<K> (e.g. moero-12x2)"))
    preset: str = field(default="tiny", metadata=_help("model preset: tiny | small | medium | paper"))
    nav: NavConfig = field(default_factory=NavConfig, metadata=_help(
        "BranchNav of a Moero model: a mapping of NavConfig fields, e.g. {warmup: 64, buffer_size: 256}"))
    model_overrides: dict = field(default_factory=dict, metadata=_help(
        "ModelConfig fields replacing the preset's, e.g. {vq_restart_after: 20}"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("recompute cascades in backward to save memory"))
    # optimisation
    epochs: int = field(default=1, metadata=_help("training epochs"))
    max_steps: int = field(default=0, metadata=_help("total optimiser steps (0: epochs decide)"))
    max_steps_this_run: int = field(default=0, metadata=_help(
        "stop after this many steps of this invocation, with a checkpoint (0: no limit)"))
    lr: float = field(default=2e-4, metadata=_help("AdamW learning rate"))
    weight_decay: float = field(default=1e-2, metadata=_help("AdamW weight decay"))
    schedule: str = field(default="step", metadata=_help("step | cosine | constant"))
    lr_step_epoch: int = field(default=-1, metadata=_help(
        "epoch where the step schedule multiplies the rate by lr_gamma (-1: the last)"))
    lr_gamma: float = field(default=0.1, metadata=_help("factor of the step schedule"))
    warmup_steps: int = field(default=0, metadata=_help("linear warm-up steps"))
    grad_clip: float = field(default=1.0, metadata=_help("gradient norm clipping (0: off)"))
    amp: str = field(default="auto", metadata=_help("auto (bf16 on GPU) | bf16 | fp16 | off"))
    vq_weight: float = field(default=1.0, metadata=_help("weight of the VQ commitment losses"))
    ssim_window: str = field(default="uniform", metadata=_help("SSIM loss window: uniform | gaussian"))
    ssim_sigma: float = field(default=1.5, metadata=_help(
        "std of the Gaussian SSIM window (the authors' loss: 7x7, sigma 1)"))
    # bookkeeping
    checkpoint_every: int = field(default=100, metadata=_help("checkpoint every N steps (0: per epoch)"))
    val_every: int = field(default=1, metadata=_help("validate every N epochs (0: never)"))
    max_val_examples: int = field(default=0, metadata=_help("validate on at most N examples (0: all)"))
    val_crop: bool = field(default=True, metadata=_help("official centre crop in validation metrics"))
    log_every: int = field(default=1, metadata=_help("log a training record every N steps"))
    resume: bool = field(default=False, metadata=_help(
        "continue from run_dir/checkpoint.pt (an error when there is none)"))
    resume_if_present: bool = field(default=False, metadata=_help(
        "continue from run_dir/checkpoint.pt when it exists, else start afresh"))
    overwrite: bool = field(default=False, metadata=_help(
        "start afresh in a run_dir that holds a run, moving that run aside to <run_dir>.old-<time>"))
    max_nonfinite: int = field(default=3, metadata=_help(
        "stop as diverged after N consecutive non-finite losses or gradient norms"))
    progress: bool = field(default=True, metadata=_help("show a progress bar"))
    ddp_broadcast_buffers: bool = field(default=False, metadata=_help(
        "let DDP broadcast rank 0's buffers every forward"))

    _CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {
        "schedule": ("step", "cosine", "constant"),
        "amp": ("auto", "bf16", "fp16", "off"),
        "ssim_window": ("uniform", "gaussian"),
    }
    _POSITIVE: typing.ClassVar[tuple[str, ...]] = (
        "batch_size", "epochs", "lr", "log_every", "max_nonfinite", "ssim_sigma",
    )
    _NON_NEGATIVE: typing.ClassVar[tuple[str, ...]] = (
        "seed", "num_workers", "max_steps", "max_steps_this_run", "weight_decay", "warmup_steps", "grad_clip",
        "vq_weight", "checkpoint_every", "val_every", "max_val_examples", "acs",
    )

    def __post_init__(self) -> None:
        # '' / none / null: no validation split (the command line documents --val-split '')
        if self.val_split is None or (isinstance(self.val_split, str)
                                      and self.val_split.strip().lower() in ("", "none", "null")):
            self.val_split = ""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        for name, choices in self._CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"config field {name!r}: {getattr(self, name)!r} is not one of {choices}")
        for name in self._POSITIVE:
            if not getattr(self, name) > 0:
                raise ValueError(f"config field {name!r} must be > 0, got {getattr(self, name)!r}")
        for name in self._NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"config field {name!r} must be >= 0, got {getattr(self, name)!r}")
        if self.image_shape and (len(self.image_shape) != 2 or min(self.image_shape) < 8):
            raise ValueError(f"config field 'image_shape' must be [] or [H, W] with H, W >= 8, got {self.image_shape}")
        try:
            parse_model_name(self.model)
        except ValueError as err:
            raise ValueError(f"config field 'model': {err}") from None
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"config field 'preset': {self.preset!r} is not one of {PRESET_NAMES}")
        if not isinstance(self.model_overrides, dict):
            raise ValueError(f"config field 'model_overrides' must be a mapping, got {self.model_overrides!r}")
        unknown = sorted(set(self.model_overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
        if unknown:
            raise ValueError(f"config field 'model_overrides': unknown ModelConfig fields {unknown}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"config field 'lr_gamma' must lie in (0, 1], got {self.lr_gamma}")
        if self.resume and self.overwrite:
            raise ValueError("config fields 'resume' and 'overwrite' exclude each other")

    # -- loading and overriding
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; an unknown key is a ``ValueError`` naming it.

        Section fields may be given dotted (``augment.probability``: applied over the section's mapping or
        kind in the same ``values``); :data:`LEGACY_FIELDS` (``augment_probability``) are read as their new
        dotted names."""
        plain: dict[str, Any] = {}
        dotted: dict[str, Any] = {}
        for key, value in values.items():
            key = LEGACY_FIELDS.get(key, key)
            (dotted if "." in key else plain)[key] = value
        unknown = sorted(set(plain) - set(cls.field_names()) | {k for k in dotted if k.split(".")[0] not in SECTIONS})
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known: {cls.field_names()}")
        for key, value in dotted.items():
            head, tail = key.split(".", 1)
            section = section_from(SECTIONS[head], head, plain.get(head))
            plain[head] = {**dataclasses.asdict(section), tail: value}
        return cls(**plain)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """Read a YAML mapping of fields from ``path``, then apply ``overrides``."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of fields, got {type(data).__name__}")
        try:
            return cls.from_dict({**data, **dict(overrides or {})})
        except ValueError as err:
            raise ValueError(f"config file {path}: {err}") from err

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with fields replaced (values validated like the constructor's)."""
        return type(self).from_dict({**self.to_dict(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain values (sections as mappings), as written to ``config.yaml`` and checkpoints."""
        return {f.name: dataclasses.asdict(v) if f.name in SECTIONS else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Fields that define the model, the data and its order, or the optimisation: a resumed run must use the
# checkpoint's values (the world size is compared with them: world size x batch size is the global batch).
RESUME_FIXED: tuple[str, ...] = (
    "model", "preset", "nav", "model_overrides", "seed", "batch_size", "data_root", "dataset_size", "train_split",
    "train_subjects",
    "balanced",
    "mask_kinds", "accelerations", "acs", "image_shape", "augment", "lr", "weight_decay",
    "schedule", "lr_step_epoch", "lr_gamma", "warmup_steps", "grad_clip", "amp", "vq_weight", "ssim_window",
    "ssim_sigma", "gradient_checkpointing", "max_steps", "epochs",
)
# Fields a resumed run may change: where and how it runs, what it logs, when it checkpoints and validates.
RESUME_FREE: tuple[str, ...] = (
    "run_dir", "device", "num_workers", "val_split", "max_steps_this_run", "checkpoint_every", "val_every",
    "max_val_examples", "val_crop", "log_every", "resume", "resume_if_present", "overwrite", "max_nonfinite",
    "progress", "ddp_broadcast_buffers",
)


def _length_free(values: Mapping[str, Any]) -> bool:
    """Whether the schedule of ``values`` is independent of the run length (``max_steps``, ``epochs``)."""
    schedule = values.get("schedule")
    return schedule == "constant" or (schedule == "step" and int(values.get("lr_step_epoch", -1)) >= 0)


def resume_mismatch(saved: Mapping[str, Any], config: TrainConfig, saved_world: int = 1, world: int = 1) -> list[str]:
    """``field old -> new`` for every :data:`RESUME_FIXED` field (and the world size) where ``config``
    differs from the checkpoint's ``saved`` config; empty when the run may resume.

    ``max_steps`` / ``epochs`` may grow or shrink when the schedule does not depend on them
    (:func:`_length_free`). ``data_root`` is compared as a resolved path."""
    current = config.to_dict()
    known = {*TrainConfig.field_names(), *LEGACY_FIELDS}
    old_cfg = TrainConfig.from_dict({k: v for k, v in saved.items() if k in known}).to_dict()
    diffs = []
    for name in RESUME_FIXED:
        old, new = old_cfg.get(name), current.get(name)
        if name in ("max_steps", "epochs") and _length_free(current) and _length_free(old_cfg):
            continue
        if name == "data_root" and old and new:
            old, new = str(Path(old).resolve()), str(Path(new).resolve())
        if old != new:
            diffs.append(f"{name} {old!r} -> {new!r}")
    if int(saved_world) != int(world):
        diffs.append(f"world_size {saved_world} -> {world} (the per-rank data position and random streams are "
                     f"defined per world size; resume with {saved_world} processes)")
    return diffs


def parse_override(text: str) -> tuple[str, Any]:
    """``field=value`` (value parsed as YAML) -> ``(field, value)``; used by ``--set``."""

    if "=" not in text:
        raise ValueError(f"--set expects field=value, got {text!r}")
    name, raw = text.split("=", 1)
    name = LEGACY_FIELDS.get(name.strip().replace("-", "_"), name.strip().replace("-", "_"))
    head, _, tail = name.partition(".")
    if head not in TrainConfig.field_names() or (tail and (head not in SECTIONS or tail not in
                                                            {f.name for f in dataclasses.fields(SECTIONS[head])})):
        raise ValueError(f"--set: unknown config field {name!r}; known: {TrainConfig.field_names()} "
                         f"and the fields of {[f'{k}.*' for k in SECTIONS]}")
    return name, parse_value(raw)


def field_help() -> dict[str, str]:
    """Help of every config field, from the fields' metadata (``<section>.<field>`` for the sections)."""
    out = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}
    for head, cls in SECTIONS.items():
        out.update({f"{head}.{f.name}": f.metadata.get("help", "") for f in dataclasses.fields(cls)})
    return out


def parse_value(raw: str) -> Any:
    """A command-line value as YAML (``1e-3``, ``true``, ``[4, 8]``, ``null``); plain text otherwise."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the field type ``hint``; a ``ValueError`` names the field otherwise."""
    if isinstance(hint, type) and hint in SECTIONS.values():
        return section_from(hint, name, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = type(None) in args
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)]
        hint = inner[0]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ValueError(f"config field {name!r}: expected {_hint_name(hint)}, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.strip("[]()").split(",")) if v]
        if not isinstance(value, list | tuple):
            raise bad
        return [_coerce(name, v, args[0] if args else str) for v in value]
    if hint is bool:
        return coerce_bool(name, value)
    if hint is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if hint is float:
        if isinstance(value, bool):
            raise bad
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if not math.isfinite(out):
            raise bad
        return out
    if hint is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    return value


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
