"""The collectives the models use to keep their own state in step across ranks (DDP does not manage it):
one flattened tensor per call, in a fixed order, so a single collective serves many small tensors.

Every function is a no-op in a single process (``torch.distributed`` not initialised or a world of one).
The trainer injects nothing: a model calls these from its ``after_backward`` hook, outside ``forward``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["distributed_world", "all_reduce_flat", "broadcast_flat"]


def distributed_world(process_group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` of ``process_group``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(process_group), dist.get_world_size(process_group)
    return 0, 1


def _flatten(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])


def _copy_back(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()


@torch.no_grad()
def all_reduce_flat(tensors: Sequence[torch.Tensor], process_group: Any = None, dtype: torch.dtype = torch.float32,
                    copy_back: bool = True) -> torch.Tensor:
    """Sum ``tensors`` over the ranks of ``process_group`` in ONE all-reduce of their concatenation.

    With ``copy_back`` the sums are written back into ``tensors`` in place; the flat, reduced tensor is
    returned either way (callers may take views of it, e.g. as gradients). In a single process nothing
    travels and the flat tensor holds this rank's values.
    """
    flat = _flatten(tensors, dtype) if tensors else torch.zeros(0, dtype=dtype)
    if tensors and distributed_world(process_group)[1] > 1:
        dist.all_reduce(flat, group=process_group)
        if copy_back:
            _copy_back(flat, tensors)
    return flat


@torch.no_grad()
def broadcast_flat(tensors: Sequence[torch.Tensor], process_group: Any = None) -> None:
    """Overwrite ``tensors`` on every rank with the values of the group's first rank (ONE broadcast, float64
    so that integer buffers and parameters of any float type survive exactly)."""
    if not tensors or distributed_world(process_group)[1] == 1:
        return
    flat = _flatten(tensors, torch.float64)
    dist.broadcast(flat, src=dist.get_global_rank(process_group, 0) if process_group else 0, group=process_group)
    _copy_back(flat, tensors)
