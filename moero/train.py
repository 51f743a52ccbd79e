"""Training engine: a :class:`TrainConfig` dataclass and the :class:`Trainer` (reference section 7).

The loss is ``1 - SSIM`` (7x7 window, each target's maximum as data range) plus the sum of the VQ
commitment losses the model returns; AdamW (lr 2e-4, weight decay 1e-2), a step (PromptMR+: x0.1
at the last epoch) or cosine schedule, gradient clipping, bfloat16 autocast on GPU only.

Exact resume. The order of examples is a pure function of ``(seed, epoch)`` (the sampler's
``set_epoch``), masks are drawn by the dataset from ``(seed, epoch, index)``, and the checkpoint
stores the model, every module buffer, the optimiser, scheduler, scaler, the random generators of
every rank and the position ``(epoch, batch)``; a resumed run therefore replays exactly what an
uninterrupted run does (bitwise on CPU with ``num_workers=0``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import resource
import sys
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from moero import distributed as mdist
from moero.checkpoint import (
    load_checkpoint,
    load_module_buffers,
    module_buffers,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from moero.metrics import SSIMLoss, score_images

__all__ = [
    "TrainConfig",
    "Trainer",
    "collate_examples",
    "example_meta",
    "peak_memory_bytes",
    "set_gradient_checkpointing",
    "build_model",
    "build_datasets",
    "build_sampler",
    "make_augment",
    "model_inputs",
    "train",
    "CHECKPOINT_NAME",
    "LOG_NAME",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "metrics.jsonl"
FORMAT = "moero-train/1"


# ---------------------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Every setting of a training run; load from YAML (:meth:`from_yaml`), override any field.

    Paths and run: ``run_dir`` (checkpoint, ``metrics.jsonl``, ``config.yaml``), ``seed``, ``device``
    (``auto``/``cpu``/``cuda``). Data: ``data_root`` (a CMRxRecon2025 tree; ``None``: the synthetic
    set of ``dataset_profile``), splits, ``batch_size`` (per rank), ``num_workers``, ``balanced``
    (``BalancedSampler`` of eq. (10)), mask kinds/accelerations/ACS, ``image_shape`` (``[H, W]``:
    centre crop / pad every image so that batches stack; empty: native sizes), ``augment`` (``none``,
    ``kspace``, ``image``, ``dual``) with ``augment_probability``. Model: ``preset``, ``vq_prompt``,
    ``gradient_checkpointing``. Optimisation: ``epochs``, ``max_steps`` (0: epochs decide),
    ``max_steps_this_run`` (0: no limit; else stop after that many steps of this run, with a
    checkpoint, for time-sliced jobs), ``lr``, ``weight_decay``, ``schedule`` (``step``, ``cosine``,
    ``constant``), ``lr_step_epoch`` (-1: the last epoch, as PromptMR+), ``lr_gamma``,
    ``warmup_steps``, ``grad_clip`` (0: off), ``amp`` (``auto``: bf16 on GPU, off on CPU; ``bf16``,
    ``fp16``, ``off``), ``vq_weight``, ``ssim_window``. Bookkeeping: ``checkpoint_every`` (steps, 0:
    end of epoch and run only), ``val_every`` (epochs, 0: never), ``max_val_examples`` (0: all),
    ``val_crop`` (official centre crop in validation), ``log_every``, ``resume``, ``progress``,
    ``ddp_broadcast_buffers``.
    """

    run_dir: str = "_build/runs/train"
    seed: int = 0
    device: str = "auto"
    # data
    data_root: str | None = None
    dataset_profile: str = "smoke"
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 1
    num_workers: int = 0
    balanced: bool = True
    mask_kinds: list[str] = field(default_factory=lambda: ["uniform", "kt_gaussian", "kt_radial"])
    accelerations: list[float] = field(default_factory=lambda: [4, 8, 10, 12, 16, 20, 24])
    acs: int = 20
    image_shape: list[int] = field(default_factory=list)
    augment: str = "none"
    augment_probability: float = 0.5
    # model
    preset: str = "tiny"
    vq_prompt: bool = False
    gradient_checkpointing: bool = False
    # optimisation
    epochs: int = 1
    max_steps: int = 0
    max_steps_this_run: int = 0
    lr: float = 2e-4
    weight_decay: float = 1e-2
    schedule: str = "step"
    lr_step_epoch: int = -1
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 1.0
    amp: str = "auto"
    vq_weight: float = 1.0
    ssim_window: str = "uniform"
    # bookkeeping
    checkpoint_every: int = 100
    val_every: int = 1
    max_val_examples: int = 0
    val_crop: bool = True
    log_every: int = 1
    resume: bool = False
    progress: bool = True
    ddp_broadcast_buffers: bool = False

    _CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {
        "schedule": ("step", "cosine", "constant"),
        "amp": ("auto", "bf16", "fp16", "off"),
        "augment": ("none", "kspace", "image", "dual"),
        "ssim_window": ("uniform", "gaussian"),
    }
    _POSITIVE: typing.ClassVar[tuple[str, ...]] = ("batch_size", "epochs", "lr", "log_every")
    _NON_NEGATIVE: typing.ClassVar[tuple[str, ...]] = (
        "num_workers", "max_steps", "max_steps_this_run", "weight_decay", "warmup_steps", "grad_clip",
        "vq_weight", "checkpoint_every", "val_every", "max_val_examples", "acs",
    )

    def __post_init__(self) -> None:
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
        if not 0.0 <= self.augment_probability <= 1.0:
            raise ValueError(f"config field 'augment_probability' must lie in [0, 1], got {self.augment_probability}")
        if self.image_shape and (len(self.image_shape) != 2 or min(self.image_shape) < 8):
            raise ValueError(f"config field 'image_shape' must be [] or [H, W] with H, W >= 8, got {self.image_shape}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"config field 'lr_gamma' must lie in (0, 1], got {self.lr_gamma}")

    # -- loading and overriding
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; an unknown key is a ``ValueError`` naming it."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known: {cls.field_names()}")
        return cls(**dict(values))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """Read a YAML mapping of fields from ``path``, then apply ``overrides``."""
        import yaml

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
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_override(text: str) -> tuple[str, Any]:
    """``field=value`` (value parsed as YAML) -> ``(field, value)``; used by ``--set``."""

    if "=" not in text:
        raise ValueError(f"--set expects field=value, got {text!r}")
    name, raw = text.split("=", 1)
    name = name.strip().replace("-", "_")
    if name not in TrainConfig.field_names():
        raise ValueError(f"--set: unknown config field {name!r}; known: {TrainConfig.field_names()}")
    return name, parse_value(raw)


def parse_value(raw: str) -> Any:
    """A command-line value as YAML (``1e-3``, ``true``, ``[4, 8]``, ``null``); plain text otherwise."""
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the field type ``hint``; a ``ValueError`` names the field otherwise."""
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
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad
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
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    return value


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


# ---------------------------------------------------------------------------- batches
def collate_examples(examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack tensors of equal shape, keep everything else (metadata) as per-example lists."""
    if not examples:
        raise ValueError("collate_examples: empty batch")
    out: dict[str, Any] = {}
    for key in examples[0]:
        values = [ex[key] for ex in examples]
        if all(isinstance(v, torch.Tensor) for v in values):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise ValueError(f"collate_examples: key {key!r} has shapes {sorted(shapes)} in one batch "
                                 "(use batch_size 1 for mixed matrix sizes)")
            out[key] = torch.stack(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values)
        elif all(isinstance(v, Mapping) for v in values):
            out[key] = collate_examples(values)
        else:
            out[key] = list(values)
    return out


_META_KEYS = ("metadata", "meta", "attrs")


def example_meta(batch: Mapping[str, Any], key: str, i: int = 0, default: Any = None) -> Any:
    """The value of metadata ``key`` for example ``i`` of a collated batch (top level or nested)."""
    holders = [batch] + [batch[k] for k in _META_KEYS if isinstance(batch.get(k), Mapping)]
    for holder in holders:
        if key in holder:
            value = holder[key]
            if isinstance(value, torch.Tensor):
                return value[i].item() if value.ndim else value.item()
            if isinstance(value, list | tuple):
                return value[i]
            return value
    return default


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def model_inputs(
    model: nn.Module, batch: Mapping[str, Any], acs: int = 20
) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """Positional and keyword inputs of ``model`` for a collated batch: ``(masked_kspace, mask)``, plus
    ``num_low_frequencies`` (ACS width) for models whose forward takes it, when the batch carries it or
    when a mask does not sample the whole centre line (kt-radial: an ``acs x acs`` square), where the
    model cannot measure it; then ``acs``."""
    args = (batch["masked_kspace"], batch["mask"])
    forward = getattr(model, "forward", None)
    if forward is None or "num_low_frequencies" not in inspect.signature(forward).parameters:
        return args, {}
    given = example_meta(batch, "num_low_frequencies", 0, default=None)
    if given is not None:
        return args, {"num_low_frequencies": batch.get("num_low_frequencies", given)}
    mask = batch["mask"]
    centre = mask[..., mask.shape[-1] // 2].reshape(mask.shape[0], -1)
    if bool((centre > 0).all()):
        return args, {}
    return args, {"num_low_frequencies": max(1, min(acs, mask.shape[-1]))}


def _output_parts(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(image, vq_loss)`` from a model output: an object/dict with ``image`` (and ``vq_loss``) or a tensor."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, Mapping):
        return out["image"], out.get("vq_loss")
    return out.image, getattr(out, "vq_loss", None)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocator peak on GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB, macOS bytes


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Pass the switch to the model: ``set_gradient_checkpointing(flag)``, a frozen dataclass ``config``
    with a ``checkpoint`` field (``moero.models``), or a ``gradient_checkpointing`` attribute."""
    if hasattr(model, "set_gradient_checkpointing"):
        model.set_gradient_checkpointing(enabled)
        return
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and "checkpoint" in {f.name for f in dataclasses.fields(config)}:
        model.config = dataclasses.replace(config, checkpoint=bool(enabled))
        return
    if hasattr(model, "gradient_checkpointing"):
        model.gradient_checkpointing = bool(enabled)
        return
    if enabled:
        raise ValueError(f"config field 'gradient_checkpointing': {type(model).__name__} has no checkpointing switch")


def _has_vq(model: nn.Module) -> bool:
    try:
        from moero.vq import VectorQuantizer
    except ImportError:  # pragma: no cover - moero.vq ships with the package
        return False
    return any(isinstance(m, VectorQuantizer) for m in model.modules())


# ---------------------------------------------------------------------------- trainer
class Trainer:
    """Runs training and validation for one :class:`TrainConfig` (single process or torchrun DDP).

    Args:
        config: the run's settings.
        model: any ``nn.Module`` called as ``model(batch["masked_kspace"], batch["mask"])`` that returns a
            tensor image ``(B, H, W)`` or an object/dict with ``image`` and optionally ``vq_loss``.
        train_dataset: examples are dicts with ``masked_kspace``, ``mask``, ``target`` ``(H, W)`` and
            metadata (``file`` groups validation per volume). ``set_epoch(epoch)`` is called when present
            (mask draws and augmentation seeded by ``(seed, epoch, index)``).
        val_dataset: validated every ``val_every`` epochs and at the end (optional).
        train_sampler: a sampler with ``set_epoch`` (e.g. ``moero.sampler.BalancedSampler``) already
            split for this rank; default: ``DistributedSampler`` (shuffled by ``seed``; one replica when single).
        callbacks: called with every record (``kind`` = ``train``, ``val`` or ``summary``); an exception
            raised there stops the run (the last checkpoint stays valid).
        dist_info: from :func:`moero.distributed.init_distributed` (default: read the environment).

    Hooks a model may define (the Moero experts use them):
        ``ddp_ignored_parameters() -> list[str]``: names of parameters (and buffers) DDP must leave alone;
        passed to ``DDP._set_params_and_buffers_to_ignore_for_model`` before wrapping. The model then
        synchronises their gradients itself in ``after_backward``.
        ``after_backward(step: int)``: called on every rank once per step after ``backward`` and before
        clipping and the optimiser step (all-reduce expert gradients in a fixed order, sync routing
        statistics).
        ``handles_vq_sync = True``: the model's ``after_backward`` also syncs its VQ statistics; otherwise
        the trainer calls :func:`moero.vq.sync_vq_modules` once per step after ``after_backward``
        (quantisers are switched to ``auto_update=False`` at start).

    Records: ``self.history`` (list of dicts) and ``run_dir/metrics.jsonl`` (rank 0) hold every record;
    ``fit()`` returns the summary (steps, it/s, peak memory, last validation).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        train_dataset: Dataset,
        val_dataset: Dataset | None = None,
        *,
        train_sampler: Any = None,
        collate_fn: Callable[[list[Any]], dict[str, Any]] = collate_examples,
        callbacks: Iterable[Callable[[dict[str, Any]], None]] = (),
        dist_info: mdist.DistInfo | None = None,
    ) -> None:
        self.config = config
        self.dist = dist_info or mdist.init_distributed(config.device)
        self.device = self.dist.device
        self.is_main = self.dist.rank == 0
        self.run_dir = Path(config.run_dir)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.collate_fn = collate_fn
        self.callbacks = list(callbacks)
        self.history: list[dict[str, Any]] = []

        self.model = model.to(self.device)
        set_gradient_checkpointing(self.model, config.gradient_checkpointing)
        self.has_vq = _has_vq(self.model)
        if self.has_vq:
            from moero.vq import set_auto_update

            set_auto_update(self.model, False)
        self.wrapped: nn.Module = self.model
        if self.dist.world_size > 1:
            ignored = list(self.model.ddp_ignored_parameters()) if hasattr(self.model, "ddp_ignored_parameters") else []
            if ignored:
                DDP._set_params_and_buffers_to_ignore_for_model(self.model, ignored)
            # buffers: synced once at wrapping (rank 0's), then by the model's own once-per-step sync
            buffer_sync = {"broadcast_buffers": config.ddp_broadcast_buffers}
            if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
                buffer_sync = {"forward_sync_buffers": config.ddp_broadcast_buffers}
            self.wrapped = DDP(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None, **buffer_sync
            )

        self.sampler = train_sampler if train_sampler is not None else DistributedSampler(
            train_dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=config.seed
        )
        self.steps_per_epoch = max(1, math.ceil(len(self.sampler) / config.batch_size))
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        amp = config.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else "off"
        if amp in ("bf16", "fp16") and self.device.type != "cuda":
            raise ValueError(f"config field 'amp': {amp} autocast is for GPU runs only (device {self.device})")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.ssim_loss = SSIMLoss(window=config.ssim_window)

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.validated_step = -1
        self._log_path = self.run_dir / LOG_NAME
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(config.to_yaml())

    # -- schedule
    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate after ``step`` optimiser steps (LambdaLR)."""
        cfg = self.config
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "constant":
            return warm
        if cfg.schedule == "cosine":
            span = max(1, self.total_steps - cfg.warmup_steps)
            progress = min(1.0, max(0, step - cfg.warmup_steps) / span)
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        at = cfg.lr_step_epoch if cfg.lr_step_epoch >= 0 else self.epochs - 1
        if at <= 0:  # a one-epoch run keeps its learning rate
            return warm
        return warm * (cfg.lr_gamma if step >= at * self.steps_per_epoch else 1.0)

    # -- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors and primitives only); collective on all ranks."""
        rngs = mdist.all_gather_objects(rng_state())
        state = {
            "format": FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "validated_step": self.validated_step,
            "world_size": self.dist.world_size,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "buffers": module_buffers(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "sampler": self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else {},
            "config": self.config.to_dict(),
        }
        return state

    def save(self) -> Path | None:
        """Write the checkpoint (rank 0; every rank must call: RNG states are gathered)."""
        state = self.state_dict()
        if self.is_main:
            save_checkpoint(self.checkpoint_path, state)
        mdist.barrier()
        return self.checkpoint_path if self.is_main else None

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` (all ranks read the same file)."""
        path = Path(path)
        state = load_checkpoint(path, map_location="cpu")
        if state.get("format") != FORMAT:
            raise ValueError(f"checkpoint {path}: format {state.get('format')!r}, expected {FORMAT!r}")
        self.model.load_state_dict(state["model"])
        load_module_buffers(self.model, state["buffers"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if hasattr(self.sampler, "load_state_dict") and state.get("sampler"):
            self.sampler.load_state_dict(state["sampler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch, self.validated_step = int(state["batch_in_epoch"]), int(state["validated_step"])
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:  # another world size: the data order is still exact, only per-rank RNG streams restart
            mdist.seed_everything(self.config.seed + self.step)
        self._trim_log()

    def _trim_log(self) -> None:
        """Keep the records up to the restored step (a crash may have logged steps after the checkpoint)."""
        if not self._log_path.is_file():
            return
        kept = []
        for line in self._log_path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("step", 0) <= self.step and rec.get("kind") != "summary":
                kept.append(rec)
        self.history = kept
        mdist.barrier()
        if self.is_main:
            self._log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        mdist.barrier()

    # -- records
    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.is_main:
            with open(self._log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        for cb in self.callbacks:
            cb(rec)

    def _autocast(self) -> torch.autocast:
        """bfloat16 (or float16) autocast on GPU when configured; a disabled context otherwise."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    def model_inputs(self, batch: Mapping[str, Any]) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        """The model's inputs for a collated batch (see :func:`model_inputs`)."""
        return model_inputs(self.model, batch, self.config.acs)

    # -- one step
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward, loss, backward, hooks, clipping, optimiser and scheduler step."""
        cfg = self.config
        batch = _to_device(batch, self.device)
        target = batch["target"].float()
        args, kwargs = self.model_inputs(batch)
        with self._autocast():
            out = self.wrapped(*args, **kwargs)
        image, vq_loss = _output_parts(out)
        data_range = target.detach().amax(dim=(-2, -1))
        ssim_loss = self.ssim_loss(image.float(), target, data_range)
        loss = ssim_loss + (cfg.vq_weight * vq_loss.float() if vq_loss is not None else 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.scale(loss).backward()
        if hasattr(self.model, "after_backward"):
            self.model.after_backward(self.step)
        if self.has_vq and not getattr(self.model, "handles_vq_sync", False):
            from moero.vq import sync_vq_modules

            sync_vq_modules(self.model)
        grad_norm = math.nan
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        stats = torch.stack([loss.detach().float(), ssim_loss.detach().float(),
                             (vq_loss.detach().float() if vq_loss is not None else loss.new_zeros(()))])
        stats = mdist.all_reduce_mean(stats).tolist()
        return {"loss": stats[0], "ssim_loss": stats[1], "vq_loss": stats[2], "grad_norm": grad_norm, "lr": lr}

    # -- epochs
    def _batches(self, epoch: int) -> list[list[int]]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        indices = [int(i) for i in self.sampler]
        bs = self.config.batch_size
        return [indices[i : i + bs] for i in range(0, len(indices), bs)]

    def _loader(self, dataset: Dataset, batches: list[list[int]], seed: int) -> DataLoader:
        # a dedicated generator: building the loader never draws from the global RNG (exact resume)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.config.num_workers,
            collate_fn=self.collate_fn,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=self.device.type == "cuda",
        )

    def _progress(self, total: int, initial: int, desc: str) -> Any:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        # one line that updates rarely when not a terminal (papermill captures every refresh)
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=tty, ncols=None if tty else 100,
                    mininterval=0.1 if tty else 10.0, disable=not (self.config.progress and self.is_main),
                    leave=True, file=sys.stderr)

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``max_steps_this_run``), validating and checkpointing on the way."""
        cfg = self.config
        if cfg.resume and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
        elif self.is_main and self._log_path.exists():
            self._log_path.unlink()  # a fresh run starts a fresh log
        mdist.barrier()
        steps_this_run, train_time = 0, 0.0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        bar = self._progress(self.total_steps, self.step, "train")
        stopped = False
        while self.epoch < self.epochs and self.step < self.total_steps and not stopped:
            if hasattr(self.train_dataset, "set_epoch"):
                self.train_dataset.set_epoch(self.epoch)
            # models with epoch-dependent state (Moero's BranchNav warm-up) see the same epoch
            if hasattr(self.model, "set_epoch"):
                self.model.set_epoch(self.epoch)
            batches = self._batches(self.epoch)
            loader = self._loader(self.train_dataset, batches[self.batch_in_epoch :], cfg.seed * 100_003 + self.epoch)
            self.model.train()
            for batch in loader:
                t0 = time.perf_counter()
                stats = self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                dt = time.perf_counter() - t0
                train_time += dt
                self.step += 1
                self.batch_in_epoch += 1
                steps_this_run += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", refresh=False)
                if self.step % cfg.log_every == 0:
                    self._record({"kind": "train", "step": self.step, "epoch": self.epoch, **stats, "step_time_s": dt})
                last = self.step >= self.total_steps
                stopped = bool(cfg.max_steps_this_run) and steps_this_run >= cfg.max_steps_this_run and not last
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or stopped:
                    self.save()
                if last or stopped:
                    break
            if stopped:
                break
            # the epoch is over (or the step budget spent): validate once, then move on
            if self._should_validate(self.epoch):
                self.validate()
                self.validated_step = self.step
            if self.step >= self.total_steps:
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            if not cfg.checkpoint_every:
                self.save()
        bar.close()
        if not stopped:
            self.save()
        summary = {
            "kind": "summary",
            "step": self.step,
            "epoch": self.epoch,
            "complete": self.step >= self.total_steps,
            "steps_this_run": steps_this_run,
            "iterations_per_s": steps_this_run / train_time if train_time > 0 else math.nan,
            "peak_memory_bytes": peak_memory_bytes(self.device),
            "world_size": self.dist.world_size,
            "device": str(self.device),
        }
        vals = [r for r in self.history if r["kind"] == "val"]
        if vals:
            summary.update({k: vals[-1][k] for k in ("ssim", "psnr", "nmse")})
        self._record(summary)
        return summary

    def _should_validate(self, epoch: int) -> bool:
        cfg = self.config
        if self.val_dataset is None or cfg.val_every == 0 or self.validated_step == self.step:
            return False
        return (epoch + 1) % cfg.val_every == 0 or self.step >= self.total_steps

    # -- validation
    @torch.no_grad()
    def predict(self, dataset: Dataset, indices: Sequence[int]) -> Iterable[tuple[dict[str, Any], torch.Tensor]]:
        """Yield ``(batch, image)`` for the examples ``indices`` (eval mode, batch size 1, this rank only)."""
        was_training = self.model.training
        self.model.eval()
        try:
            loader = self._loader(dataset, [[int(i)] for i in indices], self.config.seed)
            for batch in loader:
                batch = _to_device(batch, self.device)
                args, kwargs = self.model_inputs(batch)
                with self._autocast():
                    out = self.model(*args, **kwargs)
                image, _ = _output_parts(out)
                yield batch, image.float()
        finally:
            self.model.train(was_training)

    def validate(self) -> dict[str, Any]:
        """Per-image official metrics (crop, 99.5th-percentile normalisation), mean per file, then over files.

        Examples are split across ranks (``rank::world``) and the per-image rows gathered.
        """
        assert self.val_dataset is not None
        n = len(self.val_dataset)
        if self.config.max_val_examples:
            n = min(n, self.config.max_val_examples)
        mine = range(self.dist.rank, n, self.dist.world_size)
        rows = []
        for batch, image in self.predict(self.val_dataset, mine):
            scores = score_images(batch["target"].float(), image, crop=self.config.val_crop)
            file = example_meta(batch, "file", 0, default=None)
            if file is None:
                file = example_meta(batch, "path", 0, default="?")
            rows.append({"file": str(file), **{k: float(v[0]) for k, v in scores.items()}})
        rows = [r for part in mdist.all_gather_objects(rows) for r in part]
        per_file: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            per_file.setdefault(r["file"], []).append(r)
        file_means = [{m: sum(r[m] for r in rs) / len(rs) for m in ("ssim", "psnr", "nmse")}
                      for rs in per_file.values()]
        rec = {"kind": "val", "step": self.step, "epoch": self.epoch, "files": len(file_means), "images": len(rows)}
        for m in ("ssim", "psnr", "nmse"):
            rec[m] = sum(f[m] for f in file_means) / len(file_means) if file_means else math.nan
        self._record(rec)
        return rec


# ---------------------------------------------------------------------------- building a run from a config
def build_model(config: TrainConfig) -> nn.Module:
    """``moero.models.PromptMR`` of ``config.preset`` (with VQ-Prompt and checkpointing as configured)."""
    from moero import models

    model_config = models.preset(config.preset, vq_prompt=config.vq_prompt, checkpoint=config.gradient_checkpointing)
    return models.PromptMR(model_config)


def _dataset_root(config: TrainConfig) -> Path:
    if config.data_root:
        return Path(config.data_root)
    from moero.data import ensure_synthetic
    from moero.results import build_dir

    return ensure_synthetic(build_dir() / "data" / config.dataset_profile, profile=config.dataset_profile, seed=0,
                            progress=False)


def make_augment(kind: str, probability: float) -> Any:
    """The augmentation callable for ``TrainConfig.augment``: ``kspace`` (noise + motion), ``image``
    (geometry only), ``dual`` (both), ``none`` (None); ``probability`` is the augmentation ratio."""
    if kind == "none":
        return None
    from moero.augment import DualSpaceAugment

    if kind == "kspace":
        return DualSpaceAugment(geometric={}, schedule=probability)
    if kind == "image":
        return DualSpaceAugment.without_artefacts(schedule=probability)
    if kind == "dual":
        return DualSpaceAugment(schedule=probability)
    raise ValueError(f"config field 'augment': unknown kind {kind!r}")


def build_datasets(config: TrainConfig, frames: int) -> tuple[Dataset, Dataset | None]:
    """Training and validation ``moero.dataset.SliceDataset`` of the configured tree, masks and augmentation."""
    from moero.dataset import SliceDataset
    from moero.masks import MaskSampler

    root = _dataset_root(config)
    masks = MaskSampler(kinds=tuple(config.mask_kinds), accelerations=tuple(config.accelerations), acs=config.acs)
    shape = tuple(config.image_shape) if config.image_shape else None
    train_ds = SliceDataset(root, split=config.train_split, frames=frames, mask_sampler=masks, seed=config.seed,
                            augment=make_augment(config.augment, config.augment_probability), shape=shape)
    if len(train_ds) == 0:
        raise ValueError(f"config field 'train_split': no examples of split {config.train_split!r} under {root}")
    val_ds = None
    if config.val_split and config.val_every:
        val_ds = SliceDataset(root, split=config.val_split, frames=frames, mask_sampler=masks,
                              seed=config.seed + 1, shape=shape)
        if len(val_ds) == 0:
            val_ds = None
    return train_ds, val_ds


def build_sampler(config: TrainConfig, dataset: Dataset, info: mdist.DistInfo) -> Any:
    """``BalancedSampler`` (eq. (10)) when ``config.balanced``, else ``None`` (the trainer's shuffling sampler)."""
    if not config.balanced:
        return None
    from moero.sampler import BalancedSampler

    return BalancedSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=config.seed)


def train(config: TrainConfig, callbacks: Iterable[Callable[[dict[str, Any]], None]] = ()) -> dict[str, Any]:
    """Build model, datasets and sampler from ``config`` and run :meth:`Trainer.fit` (torchrun-aware)."""
    info = mdist.init_distributed(config.device)
    try:
        torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
        model = build_model(config)
        frames = int(getattr(getattr(model, "config", None), "frames", 1))
        train_ds, val_ds = build_datasets(config, frames)
        sampler = build_sampler(config, train_ds, info)
        mdist.seed_everything(config.seed)
        trainer = Trainer(config, model, train_ds, val_ds, train_sampler=sampler, callbacks=callbacks, dist_info=info)
        return trainer.fit()
    finally:
        mdist.cleanup_distributed()
