"""The model I/O contract shared by the trainer, the evaluator and the benchmarks.

A reconstruction model (:class:`ReconModel`) is called as ``model(masked_kspace, mask,
num_low_frequencies=None)`` with complex ``(B, F, C, H, W)`` k-space and returns an object with
``image`` ``(B, H, W)`` and ``vq_loss`` (a scalar; 0 without VQ). It may define
``after_backward(process_group)`` (called once per step after ``backward``: Moero syncs its experts
there) and ``ddp_ignored_parameters()``. Batches are dicts collated by :func:`collate_examples`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "collate_examples",
    "example_meta",
    "batch_to_device",
    "model_inputs",
    "output_parts",
    "set_gradient_checkpointing",
]


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


def batch_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
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


def output_parts(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(image, vq_loss)`` from a model output: an object/dict with ``image`` (and ``vq_loss``) or a tensor."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, Mapping):
        return out["image"], out.get("vq_loss")
    return out.image, getattr(out, "vq_loss", None)


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
