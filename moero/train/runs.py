"""Trained runs: rebuild any registry model from its checkpoint and score it by the official protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from moero.data.dataset import SliceDataset
from moero.eval.evaluate import TEST_SPLITS, ZeroFilled, evaluate, write_tables
from moero.physics.masks import MaskSampler
from moero.train.checkpoint import load_checkpoint, load_module_buffers
from moero.train.config import TrainConfig
from moero.train.distributed import resolve_device
from moero.train.trainer import build_model, dataset_root

__all__ = ["load_trained", "evaluate_checkpoint"]


def load_trained(checkpoint: str | Path, overrides: dict[str, Any] | None = None
                 ) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """``(model, config, state)`` of a checkpoint written by the trainer: the registry model of its
    config (``model``, ``preset``, ``nav``) with weights and module buffers (codebooks, routing) restored."""
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict({**state["config"], **(overrides or {})})
    model = build_model(config)
    model.load_state_dict(state["model"])
    load_module_buffers(model, state["buffers"], checkpoint)
    return model, config, state


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
) -> dict[str, list[dict[str, Any]]]:
    """Load ``checkpoint`` (None: the zero-filled reference), evaluate on ``splits`` (and ``modalities``)
    of ``data_root`` (default: the checkpoint config's), write the tables to ``out``."""
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
    masks = MaskSampler(kinds=tuple(config.mask_kinds), accelerations=tuple(config.accelerations), acs=config.acs)
    dataset = SliceDataset(root, split=list(splits), frames=frames, mask_sampler=masks, seed=config.seed + 2,
                           modalities=list(modalities) if modalities else None)
    if len(dataset) == 0:
        raise ValueError(f"no examples of splits {list(splits)} under {root}")
    results = evaluate(model, dataset, resolve_device(device), progress=progress, max_files=max_files)
    if out is not None:
        write_tables(results, out, label)
    return results
