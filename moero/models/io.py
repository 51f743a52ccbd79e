"""The model I/O contract shared by the trainer, the evaluator, the benchmarks and the book.

Every reconstruction model is a :class:`ReconModel`: called as ``model(masked_kspace, mask,
num_low_frequencies=None)`` with complex ``(B, F, C, H, W)`` k-space and a ``(B, F|1, H|1, W)`` mask,
it returns a :class:`ReconOutput` (or a subclass) with ``image`` ``(B, H, W)`` and ``vq_loss`` (a
scalar, 0 without VQ). The trainer's optional hooks are :class:`TrainingHooks` (no-op defaults, which
a model overrides): ``after_backward(step)``, ``ddp_ignored_parameters()``, ``set_epoch(epoch)``,
``routing_state()`` and the flag ``handles_vq_sync``; :func:`training_hooks` gives any model's hooks.
Batches are dicts collated by :func:`collate_examples`; per-example metadata (file, centre, vendor, ...)
sits under ``batch["meta"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "ReconOutput",
    "ReconModel",
    "TrainingHooks",
    "training_hooks",
    "collate_examples",
    "example_meta",
    "batch_to_device",
    "model_inputs",
    "output_parts",
    "set_gradient_checkpointing",
]


@dataclass
class ReconOutput:
    """What every model returns: the reconstructed magnitude image and its VQ commitment loss."""

    image: torch.Tensor  # (B, H, W) real
    vq_loss: torch.Tensor  # scalar; 0 without VQ


@runtime_checkable
class ReconModel(Protocol):
    """A reconstruction network of the package (PromptMR+, VQ-Prompt, Moero, the reference recons)."""

    def __call__(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                 num_low_frequencies: int | torch.Tensor | None = None) -> ReconOutput: ...


class TrainingHooks:
    """What the trainer calls on a model besides its forward, with no-op defaults; our models inherit it
    and override what they need (Moero: all of them)."""

    handles_vq_sync: bool = False  # the model syncs and applies its VQ statistics itself in after_backward

    def ddp_ignored_parameters(self) -> list[str]:
        """Names of parameters DDP must leave alone (synced by the model itself)."""
        return []

    def set_epoch(self, epoch: int) -> None:
        """The training epoch starts (epoch-dependent state, e.g. BranchNav's warm-up)."""

    def after_backward(self, step: int | None = None, process_group: Any = None) -> None:
        """Called once per step after ``backward``, before the optimiser step."""

    def routing_state(self) -> dict[str, Any] | None:
        """Route counts and router state to log per step (None: the model does not route)."""
        return None

    def calibrate_routing(self, batches: Callable[[int], Iterable[tuple[tuple[Any, ...], dict[str, Any]]]],
                          process_group: Any = None) -> None:
        """Called at the end of training with ``batches(n)``: the inputs of n fixed training examples (Moero
        refits its navigators on the current network's histograms)."""


class _ForeignHooks(TrainingHooks):
    """The hooks of a model that does not derive from :class:`TrainingHooks` (a user's network): whichever of
    the hooks it defines, the no-ops for the rest. The one place that looks hooks up by name."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.handles_vq_sync = bool(getattr(model, "handles_vq_sync", False))

    def _hook(self, name: str) -> Any:
        hook = getattr(self.model, name, None)
        return hook if callable(hook) else None

    def ddp_ignored_parameters(self) -> list[str]:
        hook = self._hook("ddp_ignored_parameters")
        return list(hook()) if hook else []

    def set_epoch(self, epoch: int) -> None:
        if hook := self._hook("set_epoch"):
            hook(epoch)

    def after_backward(self, step: int | None = None, process_group: Any = None) -> None:
        if hook := self._hook("after_backward"):
            hook(step)

    def routing_state(self) -> dict[str, Any] | None:
        hook = self._hook("routing_state")
        return hook() if hook else None

    def calibrate_routing(self, batches: Callable[[int], Iterable[tuple[tuple[Any, ...], dict[str, Any]]]],
                          process_group: Any = None) -> None:
        if hook := self._hook("calibrate_routing"):
            hook(batches)


def training_hooks(model: Any) -> TrainingHooks:
    """The hooks of ``model``: the model itself when it derives from :class:`TrainingHooks`, else an adapter
    calling whichever hooks it defines (no-ops for the others)."""
    return model if isinstance(model, TrainingHooks) else _ForeignHooks(model)


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


def example_meta(batch: Mapping[str, Any], key: str, i: int = 0, default: Any = None) -> Any:
    """The value of metadata ``key`` for example ``i`` of a collated batch (under ``batch["meta"]``)."""
    holder = batch.get("meta")
    if isinstance(holder, Mapping):
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


def model_inputs(batch: Mapping[str, Any], acs: int = 20) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """The :class:`ReconModel` inputs of a collated batch: ``(masked_kspace, mask)`` and the keyword
    ``num_low_frequencies`` (ACS width): the batch's own value when it carries one, ``acs`` when a mask
    does not sample the whole centre line (kt-radial: an ``acs x acs`` square) so that the model cannot
    measure it, else None (the model measures the central run of lines)."""
    args = (batch["masked_kspace"], batch["mask"])
    given = example_meta(batch, "num_low_frequencies", 0, default=None)
    if given is not None:
        return args, {"num_low_frequencies": given}
    mask = batch["mask"]
    centre = mask[..., mask.shape[-1] // 2].reshape(mask.shape[0], -1)
    if bool((centre > 0).all()):
        return args, {"num_low_frequencies": None}
    return args, {"num_low_frequencies": max(1, min(acs, mask.shape[-1]))}


def output_parts(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, vq_loss)`` of a :class:`ReconOutput`; a ``TypeError`` names anything else."""
    if not isinstance(out, ReconOutput):
        raise TypeError(f"a model must return a ReconOutput (image, vq_loss), got {type(out).__name__}")
    return out.image, out.vq_loss


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Switch the model's gradient checkpointing through its ``set_gradient_checkpointing`` hook; a model
    without the hook can only run without it (the error names the config field)."""
    if hasattr(model, "set_gradient_checkpointing"):
        model.set_gradient_checkpointing(bool(enabled))
    elif enabled:
        raise ValueError(f"config field 'gradient_checkpointing': {type(model).__name__} has no checkpointing switch")
