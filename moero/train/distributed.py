"""Process-group helpers for ``torchrun`` (DistributedDataParallel) and single-process runs alike.

``torchrun --nproc_per_node N -m moero train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and starts the process group
with ``gloo`` on CPU and ``nccl`` on GPU. Without those variables everything runs as rank 0 of 1,
and every helper here becomes a no-op, so the same training code serves both cases.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from moero.models.collective import all_reduce_flat
from moero.train.device import dist_backend

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "rank",
    "world_size",
    "barrier",
    "all_reduce_mean",
    "all_gather_objects",
    "broadcast_object",
    "seed_everything",
    "free_port",
    "rank_seed",
    "resolve_device",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank, device and backend (None if single)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str | torch.device = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Start the process group from the ``torchrun`` environment (or reuse a started one).

    ``device``: ``auto`` (CUDA ``LOCAL_RANK`` when available, else CPU), ``cpu`` or ``cuda``.
    Backend: ``nccl`` for CUDA, ``gloo`` for CPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank_ = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank_)
    want = str(device)
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(want)
    if world <= 1 and not dist.is_initialized():
        return DistInfo(0, 1, 0, dev, None)
    backend = dist_backend(dev)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": _dt.timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev, dist.get_backend())


def cleanup_distributed() -> None:
    """Destroy the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """In-place mean across ranks (identity when single) through :func:`all_reduce_flat`; returns ``t``."""
    if is_distributed():
        all_reduce_flat([t], dtype=t.dtype)
        t.div_(dist.get_world_size())
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order: ``[obj]`` when single."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``src``'s ``obj`` on every rank (identity when single)."""
    if not is_distributed():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def free_port() -> int:
    """A TCP port on the loopback interface that is free now (for a local multi-process DDP rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """A per-rank seed derived from the run's seed (distinct ranks, same run -> distinct streams)."""
    r = rank() if rank_ is None else rank_
    return (int(seed) * 1_000_003 + r * 7919) % (2**63 - 1)


def seed_everything(seed: int, per_rank: bool = True) -> int:
    """Seed Python, NumPy and torch (all devices); ``per_rank`` mixes in the rank. Returns the seed used."""
    used = rank_seed(seed) if per_rank else int(seed)
    random.seed(used)
    np.random.seed(used % (2**32))
    torch.manual_seed(used)
    return used


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return dev
