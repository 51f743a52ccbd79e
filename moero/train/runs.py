"""Trained runs: rebuild any registry model from its checkpoint and score it by the official protocol."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from moero.data.dataset import SliceDataset
from moero.eval.evaluate import TEST_SPLITS, ZeroFilled, evaluate, write_tables
from moero.physics.masks import MaskSampler
from moero.train.checkpoint import (
    CheckpointError,
    clip,
    load_checkpoint,
    load_module_buffers,
    non_finite_tensors,
    require_keys,
)
from moero.train.config import TrainConfig
from moero.train.distributed import resolve_device
from moero.train.scoring import Protocol, score_model
from moero.train.trainer import build_model, dataset_root

__all__ = ["load_trained", "model_to_predict", "evaluate_checkpoint", "check_writable"]


def load_trained(checkpoint: str | Path, overrides: dict[str, Any] | None = None
                 ) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """``(model, config, state)`` of a checkpoint written by the trainer: the registry model of its
    config (``model``, ``preset``, ``nav``) with weights and module buffers (codebooks, routing) restored.

    A checkpoint lacking the trainer's keys, or holding non-finite weights (a diverged run), is a
    :class:`CheckpointError` naming the file."""
    state = load_checkpoint(checkpoint)
    require_keys(state, ("config", "model", "buffers"), checkpoint)
    bad = non_finite_tensors({**state["model"], **state["buffers"]})
    if bad:
        raise CheckpointError(f"checkpoint {checkpoint} holds non-finite weights {bad[:3]} (a diverged run?); "
                              f"refusing to evaluate it")
    try:
        config = TrainConfig.from_dict({**state["config"], **(overrides or {})})
    except ValueError as err:
        raise CheckpointError(f"checkpoint {checkpoint}: {clip(err, 200)}") from None
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # a foreign model's weights: torch lists every key, tens of kB
        raise CheckpointError(f"checkpoint {checkpoint}: weights do not fit model {config.model!r} "
                              f"({clip(err)})") from None
    load_module_buffers(model, state["buffers"], checkpoint)
    return model, config, state


def model_to_predict(checkpoint: str | Path | None, model: nn.Module | None, frames: int | None
                     ) -> tuple[nn.Module, TrainConfig | None, int | None]:
    """What ``predict`` runs: ``model`` as given (config None, ``frames`` as given), else the trained model of
    ``checkpoint`` (:func:`load_trained`) with its config and, unless given, its own frame window."""
    if model is not None:
        return model, None, frames
    if checkpoint is None:
        raise ValueError("predict: give a checkpoint or a model")
    model, config, _ = load_trained(checkpoint)
    return model, config, frames or int(getattr(model.config, "frames", 1))


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` and prove a file can be written there, before any long work; an ``OSError``
    names the folder otherwise."""
    import os
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise OSError(f"output folder {folder} is not writable: {err.strerror or err}") from None
    return folder


def evaluate_checkpoint(
    checkpoint: str | Path | None,
    data_root: str | None = None,
    splits: Sequence[str] = TEST_SPLITS,
    out: str | Path | None = None,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    max_files: int = 0,
    progress: bool = True,
    modalities: Sequence[str] | None = None,
    protocol: Protocol | None = None,
) -> dict[str, Any]:
    """Load ``checkpoint`` (None: the zero-filled reference), score it on ``splits`` (and ``modalities``)
    of ``data_root`` (default: the checkpoint config's) with :func:`moero.train.scoring.score_model` under
    ``protocol`` (default: masks drawn from the run's kinds and accelerations with the evaluation seed),
    and write the tables to ``out`` (checked writable first).

    A fastMRI folder (``*.h5``, no manifest) is scored whole, by fastMRI's conventions
    (:func:`moero.eval.fastmri.evaluate_fastmri`: fastMRI's masks at R 4 and 8, or the protocol's
    accelerations, 320 x 320 centre crop against ``reconstruction_rss``, the volume's maximum as data
    range; a row per file and acceleration); ``splits`` does not apply to it."""
    if max_files < 0:
        raise ValueError(f"parameter 'max_files' must be >= 0 (0: all files), got {max_files}")
    protocol = protocol or Protocol.drawn()
    if max_files:
        protocol = dataclasses.replace(protocol, files_per_split=max_files)
    if out is not None:
        check_writable(out)
    if checkpoint is not None:
        model, config, _ = load_trained(checkpoint, overrides)
        frames = int(model.config.frames)
        label = Path(checkpoint).parent.name
    else:
        config = TrainConfig.from_dict(overrides or {})
        model, frames, label = ZeroFilled(), 1, "zero-filled"
    if data_root:
        config = config.replace(data_root=str(data_root))
    root = dataset_root(config)
    if not (root / "manifest.csv").is_file() and any(root.glob("*.h5")):  # fastMRI: one folder, one split
        masks = MaskSampler(kinds=tuple(config.mask_kinds), accelerations=tuple(config.accelerations),
                            acs=config.acs)
        dataset = SliceDataset(root, split=None, frames=frames, mask_sampler=masks, seed=protocol.seed,
                               modalities=list(modalities) if modalities else None)
        if len(dataset) == 0:
            raise ValueError(f"no examples under {root}")
        results = evaluate(model, dataset, resolve_device(device), progress=progress, max_files=max_files,
                           accelerations=protocol.accelerations or None)  # a row per file and acceleration
    else:
        results = score_model(model, config, root, splits, protocol, frames=frames, device=resolve_device(device),
                              modalities=modalities)
        results["splits"] = [{"split": k, **v} for k, v in results["splits"].items()]
    if out is not None:
        write_tables(results, out, label)
    return results
