"""Training engine: the :class:`Trainer` of one :class:`~moero.train.config.TrainConfig`.

The loss is ``1 - SSIM`` (7x7 window, each target's maximum as data range) plus the sum of the VQ
commitment losses the model returns; AdamW (lr 2e-4, weight decay 1e-2), a step (PromptMR+: x0.1
at the last epoch) or cosine schedule, gradient clipping, bfloat16 autocast on GPU only.

Exact resume. The order of examples is a pure function of ``(seed, epoch)`` (the sampler's
``set_epoch``), masks are drawn by the dataset from ``(seed, epoch, index)``, and the checkpoint
stores the model, every module buffer, the optimiser, scheduler, scaler, the random generators of
every rank and the position ``(epoch, batch)``; a resumed run therefore replays exactly what an
uninterrupted run does (bitwise on CPU with ``num_workers=0``).

Reliability. :meth:`Trainer.fit` owns its run folder: an exclusive lock for the whole run
(:class:`moero.train.rundir.RunLock`); a fresh run into a folder holding a checkpoint or log is refused
unless ``overwrite`` (the old run is moved aside, never deleted); ``resume`` without a checkpoint is an
error unless ``resume_if_present``; a resume whose model, data or optimisation fields differ from the
checkpoint's (:func:`moero.train.config.resume_mismatch`), or whose world size differs, is refused
before anything is written. ``max_nonfinite`` consecutive non-finite losses (or gradient norms) stop
the run with a :class:`DivergenceError`; a checkpoint is written only from finite weights, so the last
checkpoint stays the last finite one. ``metrics.jsonl`` is strict JSON (non-finite numbers become null).
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler

import moero.models.registry as registry
import moero.train.device as mdevice
import moero.train.distributed as mdist
from moero.data.dataset import SliceDataset
from moero.data.sampler import BalancedSampler
from moero.eval.metrics import SSIMLoss, score_images
from moero.models.io import (
    ReconModel,
    collate_examples,
    example_meta,
    model_inputs,
    output_parts,
    set_gradient_checkpointing,
    training_hooks,
)
from moero.models.vq import VectorQuantizer, set_auto_update, sync_vq_modules
from moero.physics.masks import MaskSampler
from moero.train.checkpoint import (
    CheckpointError,
    clip,
    load_checkpoint,
    load_module_buffers,
    module_buffers,
    non_finite_tensors,
    remove_stale_temporaries,
    require_keys,
    rng_state,
    save_checkpoint,
    set_rng_state,
    short_repr,
)
from moero.train.config import AugmentConfig, TrainConfig, resume_mismatch
from moero.train.rundir import RunLock, move_aside, read_records

__all__ = [
    "Trainer",
    "tensorboard_writer",
    "peak_memory_bytes",
    "build_model",
    "build_datasets",
    "build_sampler",
    "make_augment",
    "train",
    "DivergenceError",
    "json_line",
    "CHECKPOINT_NAME",
    "LOG_NAME",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "metrics.jsonl"
ROUTES_NAME = "routing.jsonl"  # models with routing_state() (Moero): one record per logged step
FORMAT = "moero-train/1"
STATE_KEYS = ("format", "step", "epoch", "batch_in_epoch", "validated_step", "model", "buffers", "optimizer",
              "scheduler", "scaler", "rng", "config")


class DivergenceError(RuntimeError):
    """Training produced non-finite losses, gradient norms or weights; the last finite checkpoint is kept."""


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively), for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def json_line(record: Mapping[str, Any]) -> str:
    """One strict-JSON line (``NaN``/``Inf`` written as null, which every JSON reader accepts)."""
    return json.dumps(_finite_or_none(dict(record)), allow_nan=False, default=str) + "\n"
























def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocator peak on GPU, else the process's peak RSS."""
    return mdevice.peak_memory_bytes(device)




def _has_vq(model: nn.Module) -> bool:
    return any(isinstance(m, VectorQuantizer) for m in model.modules())


# ---------------------------------------------------------------------------- trainer
class Trainer:
    """Runs training and validation for one :class:`TrainConfig` (single process or torchrun DDP).

    Args:
        config: the run's settings.
        model: a :class:`~moero.models.io.ReconModel` called as ``model(masked_kspace, mask, ...)`` that
            returns a tensor image ``(B, H, W)`` or an object/dict with ``image`` and optionally ``vq_loss``.
        train_dataset: examples are dicts with ``masked_kspace``, ``mask``, ``target`` ``(H, W)`` and
            metadata (``file`` groups validation per volume). ``set_epoch(epoch)`` is called when present
            (mask draws and augmentation seeded by ``(seed, epoch, index)``).
        val_dataset: validated every ``val_every`` epochs and at the end (optional).
        train_sampler: a sampler with ``set_epoch`` (e.g. ``moero.data.sampler.BalancedSampler``) already
            split for this rank; default: ``DistributedSampler`` (shuffled by ``seed``; one replica when single).
        callbacks: called with every record (``kind`` = ``train``, ``val`` or ``summary``); an exception
            raised there stops the run (the last checkpoint stays valid).
        dist_info: from :func:`moero.train.distributed.init_distributed` (default: read the environment).

    Hooks: the model's :class:`~moero.models.io.TrainingHooks` (:func:`~moero.models.io.training_hooks`;
    no-ops for a model without them). ``ddp_ignored_parameters()`` names what DDP must leave alone (the
    model syncs those gradients itself in ``after_backward``); ``after_backward(step)`` runs on every rank
    once per step after ``backward`` and before clipping and the optimiser step; ``handles_vq_sync``: the
    model's ``after_backward`` syncs its VQ statistics too, otherwise the trainer calls
    :func:`moero.models.vq.sync_vq_modules` once per step (quantisers switched to ``auto_update=False``);
    ``set_epoch(epoch)`` at each epoch; ``routing_state()`` logged to ``routing.jsonl`` per logged step.

    Records: ``self.history`` (list of dicts) and ``run_dir/metrics.jsonl`` (rank 0) hold every record;
    ``fit()`` returns the summary (steps, it/s, peak memory, last validation).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: ReconModel,
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
        self.hooks = training_hooks(self.model)
        set_gradient_checkpointing(self.model, config.gradient_checkpointing)
        self.has_vq = _has_vq(self.model)
        if self.has_vq:
            set_auto_update(self.model, False)
        self.wrapped: nn.Module = self.model
        if self.dist.world_size > 1:
            ignored = list(self.hooks.ddp_ignored_parameters())
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
        try:  # auto: bf16 on GPU, off on CPU
            self.amp_dtype = mdevice.resolve_amp(config.amp, self.device)
        except ValueError as err:
            raise ValueError(f"config field 'amp': {err}") from None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.ssim_loss = SSIMLoss(window=config.ssim_window, sigma=config.ssim_sigma)

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.validated_step = -1
        self.nonfinite_streak = 0  # consecutive steps with a non-finite loss or gradient norm
        self._log_path = self.run_dir / LOG_NAME

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
        """Write the checkpoint (rank 0; every rank must call: RNG states are gathered).

        Non-finite weights are never written: a :class:`DivergenceError` keeps the last finite checkpoint."""
        bad = non_finite_tensors(dict(self.model.state_dict()))
        if bad:
            raise DivergenceError(f"training diverged: weights {bad[:3]} are non-finite at step {self.step}; "
                                  f"not saved, the last finite checkpoint stays at {self.checkpoint_path}")
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
            raise ValueError(f"checkpoint {path}: format {short_repr(state.get('format'))}, expected {FORMAT!r}")
        require_keys(state, STATE_KEYS, path)
        diffs = resume_mismatch(state["config"], self.config, int(state.get("world_size", 1)), self.dist.world_size)
        if diffs:
            raise ValueError(f"cannot resume {path}: {'; '.join(diffs)} (these must match the checkpoint; "
                             f"device, num_workers, logging, checkpoint and validation settings may change)")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # a foreign model's weights: torch lists every key
            raise CheckpointError(f"checkpoint {path}: weights do not fit this model ({clip(err)})"
                                  ) from None
        load_module_buffers(self.model, state["buffers"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if hasattr(self.sampler, "load_state_dict") and state.get("sampler"):
            self.sampler.load_state_dict(state["sampler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch, self.validated_step = int(state["batch_in_epoch"]), int(state["validated_step"])
        set_rng_state(state["rng"][self.dist.rank])  # the world size matches (checked above)
        self._trim_log()

    def _trim_log(self) -> None:
        """Keep the records up to the restored step (a crash may have logged steps after the checkpoint)."""
        if not self._log_path.is_file():
            return
        kept = [rec for rec in read_records(self._log_path)  # a torn last line is dropped with a warning
                if isinstance(rec.get("step", 0), int | float) and rec.get("step", 0) <= self.step
                and rec.get("kind") not in ("summary", "error")]
        self.history = kept
        mdist.barrier()
        if self.is_main:
            self._log_path.write_text("".join(json_line(r) for r in kept))
        mdist.barrier()

    # -- records
    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.is_main:
            with open(self._log_path, "a") as fh:
                fh.write(json_line(rec))
            self._tensorboard(rec)
            routing = self.hooks.routing_state() if rec.get("kind") == "train" else None
            if routing is not None:  # Moero: route counts per logged step
                with open(Path(self.config.run_dir) / ROUTES_NAME, "a") as fh:
                    fh.write(json_line({"step": rec["step"], **routing}))
        for cb in self.callbacks:
            cb(rec)

    def _autocast(self) -> torch.autocast:
        """bfloat16 (or float16) autocast on GPU when configured; a disabled context otherwise."""
        return mdevice.autocast(self.device, self.amp_dtype)

    def model_inputs(self, batch: Mapping[str, Any]) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        """The model's inputs for a collated batch (see :func:`model_inputs`)."""
        return model_inputs(batch, self.config.acs)

    # -- one step
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward, loss, backward, hooks, clipping, optimiser and scheduler step."""
        cfg = self.config
        batch = mdevice.to_device(batch, self.device)
        target = batch["target"].float()
        args, kwargs = self.model_inputs(batch)
        with self._autocast():
            out = self.wrapped(*args, **kwargs)
        image, vq_loss = output_parts(out)
        data_range = target.detach().amax(dim=(-2, -1))
        ssim_loss = self.ssim_loss(image.float(), target, data_range)
        loss = ssim_loss + (cfg.vq_weight * vq_loss.float() if vq_loss is not None else 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.scale(loss).backward()
        self.hooks.after_backward(self.step)
        if self.has_vq and not self.hooks.handles_vq_sync:
            sync_vq_modules(self.model)
        # the norm is always measured (divergence detection); max_norm inf scales by exactly 1 (no clipping)
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        stats = torch.stack([loss.detach().float(), ssim_loss.detach().float(),
                             (vq_loss.detach().float() if vq_loss is not None else loss.new_zeros(()))])
        stats = mdist.all_reduce_mean(stats).tolist()
        return {"loss": stats[0], "ssim_loss": stats[1], "vq_loss": stats[2], "grad_norm": grad_norm, "lr": lr}

    def _tensorboard(self, rec: dict[str, Any]) -> None:
        """The record's numbers as TensorBoard scalars ``<kind>/<name>`` in ``run_dir/tensorboard`` (only
        when the optional ``tensorboard`` package is installed; metrics.jsonl stays the record of truth)."""
        if not hasattr(self, "_tb_writer"):
            self._tb_writer = tensorboard_writer(self.run_dir)
        if self._tb_writer is None or "step" not in rec:
            return
        for name, value in rec.items():
            if name in ("kind", "step", "epoch") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self._tb_writer.add_scalar(f"{rec.get('kind', 'record')}/{name}", value, int(rec["step"]))
        self._tb_writer.flush()

    # -- epochs
    def _batches(self, epoch: int) -> list[list[int]]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        indices = [int(i) for i in self.sampler]
        bs = self.config.batch_size
        return [indices[i : i + bs] for i in range(0, len(indices), bs)]

    def calibration_batches(self, n: int) -> Iterable[tuple[tuple[torch.Tensor, ...], dict[str, Any]]]:
        """Model inputs of ``n`` fixed training examples (a permutation seeded by the run's seed; the same on
        every rank), in batches of ``batch_size``; draws nothing from the global random generators."""
        order = torch.randperm(len(self.train_dataset), generator=torch.Generator().manual_seed(
            int(self.config.seed) * 7919 + 17))[: int(n)].tolist()
        batches = [order[i : i + self.config.batch_size] for i in range(0, len(order), self.config.batch_size)]
        for batch in self._loader(self.train_dataset, batches, int(self.config.seed)):
            yield self.model_inputs(mdevice.to_device(batch, self.device))

    def _loader(self, dataset: Dataset, batches: list[list[int]], seed: int) -> DataLoader:
        # a dedicated generator: building the loader never draws from the global RNG (exact resume)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.config.num_workers,
            collate_fn=self.collate_fn,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=mdevice.pin_memory(self.device),
        )

    def _progress(self, total: int, initial: int, desc: str) -> Any:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        # one line that updates rarely when not a terminal (papermill captures every refresh)
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=tty, ncols=None if tty else 100,
                    mininterval=0.1 if tty else 10.0, disable=not (self.config.progress and self.is_main),
                    leave=True, file=sys.stderr)

    def _claim_run_dir(self) -> RunLock | None:
        """Rank 0 locks the run folder and applies the fresh / overwrite / resume rules; every rank learns
        the outcome (an error is raised on all ranks). Returns rank 0's held lock."""
        lock, error = None, None
        if self.is_main:
            try:
                lock = RunLock(self.run_dir).acquire()
                self._prepare_run_dir()
            except Exception as exc:
                if lock is not None:
                    lock.release()
                error = exc
        message = mdist.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if message is not None:
            raise RuntimeError(f"rank 0 could not start the run: {message}")
        return lock

    def _prepare_run_dir(self) -> None:
        """Rank 0, lock held: refuse to clobber a run, move it aside (``overwrite``), remove stale temporaries."""
        cfg = self.config
        has_checkpoint = self.checkpoint_path.is_file()
        if cfg.resume and not cfg.resume_if_present and not has_checkpoint:
            raise ValueError(f"config field 'resume': there is no checkpoint {self.checkpoint_path} to resume "
                             f"(a typo in run_dir?); set resume_if_present to start afresh when there is none")
        if not (cfg.resume or cfg.resume_if_present) or not has_checkpoint:
            held = [p.name for p in (self.checkpoint_path, self._log_path, self.run_dir / ROUTES_NAME) if p.exists()]
            # resume_if_present with a log but no checkpoint: start afresh, the old log moved aside, never deleted
            if held and not (cfg.overwrite or cfg.resume_if_present):
                raise ValueError(f"run_dir {self.run_dir} holds a run ({', '.join(held)}): continue it with resume, "
                                 f"move it aside with overwrite, or choose another run_dir")
            if held:
                moved = move_aside(self.run_dir)
                print(f"{'overwrite' if cfg.overwrite else 'resume_if_present (no checkpoint)'}: the previous run "
                      f"in {self.run_dir} was moved to {moved}", file=sys.stderr)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.run_dir, CHECKPOINT_NAME)  # left by a writer that was killed

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``max_steps_this_run``), validating and checkpointing on the way.

        Holds the run folder's lock throughout (see the module doc for the refusals)."""
        lock = self._claim_run_dir()
        try:
            return self._fit()
        finally:
            if lock is not None:
                lock.release()

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        if (cfg.resume or cfg.resume_if_present) and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
        else:
            mdist.barrier()  # a fresh run: any earlier log was refused or moved aside with its run folder
        if self.is_main:  # written only after the checks: a refused resume leaves the folder as it was
            (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        mdist.barrier()
        steps_this_run, train_time = 0, 0.0
        mdevice.reset_peak_memory(self.device)
        bar = self._progress(self.total_steps, self.step, "train")
        stopped = False
        while self.epoch < self.epochs and self.step < self.total_steps and not stopped:
            if hasattr(self.train_dataset, "set_epoch"):
                self.train_dataset.set_epoch(self.epoch)
            # models with epoch-dependent state (Moero's BranchNav warm-up) see the same epoch
            self.hooks.set_epoch(self.epoch)
            batches = self._batches(self.epoch)
            loader = self._loader(self.train_dataset, batches[self.batch_in_epoch :], cfg.seed * 100_003 + self.epoch)
            self.model.train()
            for batch in loader:
                t0 = time.perf_counter()
                stats = self.train_step(batch)
                mdevice.synchronize(self.device)  # the step's time, not its launch
                dt = time.perf_counter() - t0
                train_time += dt
                self.step += 1
                self.batch_in_epoch += 1
                steps_this_run += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", refresh=False)
                finite = self._count_nonfinite(stats)
                if self.step % cfg.log_every == 0 or not finite:
                    self._record({"kind": "train", "step": self.step, "epoch": self.epoch, **stats, "step_time_s": dt})
                if self.nonfinite_streak >= cfg.max_nonfinite:
                    bar.close()
                    self._diverged()
                last = self.step >= self.total_steps
                if last and finite:  # Moero: route the final network by its own histograms (before it is saved)
                    self.hooks.calibrate_routing(self.calibration_batches)
                stopped = bool(cfg.max_steps_this_run) and steps_this_run >= cfg.max_steps_this_run and not last
                # a non-finite step is never checkpointed: the checkpoint stays the last finite one
                if ((cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or stopped) and finite:
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
            if not cfg.checkpoint_every and not self.nonfinite_streak:
                self.save()
        bar.close()
        if self.nonfinite_streak:  # the run ended on non-finite steps: its result is broken, not complete
            self._diverged()
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

    def _count_nonfinite(self, stats: Mapping[str, Any]) -> bool:
        """Update the streak of non-finite steps; True when this step's loss (and gradient norm) are finite.

        With fp16 autocast an infinite gradient norm is the loss scaler's normal overflow (the step is
        skipped), so only the loss counts there."""
        finite = math.isfinite(stats["loss"])
        if self.amp_dtype is not torch.float16:
            finite = finite and math.isfinite(stats["grad_norm"])
        self.nonfinite_streak = 0 if finite else self.nonfinite_streak + 1
        return finite

    def _diverged(self) -> None:
        """Record and raise the :class:`DivergenceError` of a run that stopped on non-finite steps."""
        kept = (f"the last finite checkpoint is {self.checkpoint_path}" if self.checkpoint_path.is_file()
                else "no checkpoint was written")
        message = (f"training diverged: {self.nonfinite_streak} consecutive non-finite losses or gradient norms "
                   f"up to step {self.step} (config field 'max_nonfinite' = {self.config.max_nonfinite}; "
                   f"lower 'lr'?); stopped, {kept}")
        self._record({"kind": "error", "step": self.step, "epoch": self.epoch, "error": message})
        raise DivergenceError(message)

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
                batch = mdevice.to_device(batch, self.device)
                args, kwargs = self.model_inputs(batch)
                with self._autocast():
                    out = self.model(*args, **kwargs)
                image, _ = output_parts(out)
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
            matrix = example_meta(batch, "matrix", 0, default=None)  # the file's stored matrix: the official region
            scores = score_images(batch["target"].float(), image, crop=self.config.val_crop,
                                  matrix=tuple(matrix) if matrix is not None else None)
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
    """The registry model ``config.model`` at preset ``config.preset`` (``moero.models.registry``), with the
    ``model_overrides`` of the config."""
    nav = config.nav.kwargs() if registry.parse_model_name(config.model).family == "moero" else None
    return registry.build_model(config.model, config.preset, nav_kwargs=nav,
                                **{"checkpoint": config.gradient_checkpointing, **config.model_overrides})


def dataset_root(config: TrainConfig) -> Path:
    """``config.data_root``; the trainer never generates data (the command line fills in the default)."""
    if not config.data_root:
        raise ValueError("config field 'data_root': no dataset given (python -m moero train fills in the "
                         "synthetic set of dataset_size)")
    return Path(config.data_root)


def make_augment(kind: str, probability: float) -> Any:
    """The augmentation callable of kind ``kspace`` (noise + motion), ``image`` (geometry only), ``dual``
    (both) or ``none`` (None) at ratio ``probability``, with :class:`AugmentConfig`'s other defaults."""
    return AugmentConfig(kind=kind, probability=probability).build()


def tensorboard_writer(run_dir: str | Path) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``run_dir/tensorboard``, or None when the optional
    ``tensorboard`` package (``pip install moero[tensorboard]``) is not installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))


def build_datasets(config: TrainConfig, frames: int) -> tuple[Dataset, Dataset | None]:
    """Training and validation ``moero.data.dataset.SliceDataset`` of the configured tree, masks and augmentation.

    A fastMRI folder (``*.h5`` files, no manifest, e.g. ``multicoil_train``) is one split: every file
    trains, whatever ``train_split`` says, and there is no validation from it (score ``multicoil_val``
    with ``moero eval --data-root``)."""
    root = dataset_root(config)
    masks = MaskSampler(kinds=tuple(config.mask_kinds), accelerations=tuple(config.accelerations), acs=config.acs)
    shape = tuple(config.image_shape) if config.image_shape else None
    fastmri = not (root / "manifest.csv").is_file() and any(root.glob("*.h5"))
    train_ds = SliceDataset(root, split=None if fastmri else config.train_split, frames=frames, mask_sampler=masks,
                            seed=config.seed, augment=config.augment.build(),
                            subjects=config.train_subjects or None,
                            shape=shape)
    if len(train_ds) == 0:
        raise ValueError(f"config field 'train_split': no examples of split {config.train_split!r} under {root}"
                         + (f" for train_subjects {config.train_subjects}" if config.train_subjects else ""))
    val_ds = None
    if config.val_split and config.val_every and not fastmri:
        val_ds = SliceDataset(root, split=config.val_split, frames=frames, mask_sampler=masks,
                              seed=config.seed + 1, shape=shape)
        if len(val_ds) == 0:
            val_ds = None
    return train_ds, val_ds


def build_sampler(config: TrainConfig, dataset: Dataset, info: mdist.DistInfo) -> Any:
    """``BalancedSampler`` (eq. (10)) when ``config.balanced``, else ``None`` (the trainer's shuffling sampler)."""
    if not config.balanced:
        return None
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
