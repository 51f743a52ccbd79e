"""The CUDA-only corners of training, each behind one small function with a CPU answer.

Pinned memory, non-blocking copies, the CUDA allocator's peak, TF32 and the NCCL backend exist only on
a GPU; the code around them (which path is taken, what is measured, which backend a device gets) is
the same on CPU and is tested there (``tests/test_gpu_bundle.py``). bf16 autocast runs on CPU too
where torch supports it (:func:`cpu_autocast_supported`), so the mixed-precision path of ``amp: auto``
is exercised without a GPU.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = [
    "AMP_MODES",
    "resolve_amp",
    "cpu_autocast_supported",
    "autocast",
    "tf32",
    "pin_memory",
    "copy_is_async",
    "to_device",
    "synchronize",
    "reset_peak_memory",
    "peak_memory_bytes",
    "dist_backend",
]

AMP_MODES = ("auto", "bf16", "fp16", "off")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _device(device: str | torch.device) -> torch.device:
    return torch.device(device)


def resolve_amp(amp: str, device: str | torch.device, allow_cpu: bool = False) -> torch.dtype | None:
    """Autocast dtype of ``amp`` on ``device``: ``auto`` is bf16 on GPU and off on CPU (or bf16 with
    ``allow_cpu``, where :func:`cpu_autocast_supported`); ``bf16``/``fp16`` on CPU need ``allow_cpu``."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    dev = _device(device)
    if amp == "off":
        return None
    if amp == "auto":
        if dev.type == "cuda":
            return torch.bfloat16
        return torch.bfloat16 if allow_cpu and cpu_autocast_supported(torch.bfloat16) else None
    if dev.type != "cuda" and not allow_cpu:
        raise ValueError(f"amp {amp}: autocast is for GPU runs only (device {dev})")
    if dev.type != "cuda" and not cpu_autocast_supported(_DTYPES[amp]):
        raise ValueError(f"amp {amp}: this torch ({torch.__version__}) has no CPU autocast to {_DTYPES[amp]}")
    return _DTYPES[amp]


def cpu_autocast_supported(dtype: torch.dtype) -> bool:
    """Whether this torch autocasts to ``dtype`` on CPU (bf16 since 1.10, fp16 since 2.4)."""
    checker = getattr(torch.amp, "is_autocast_available", None)
    if checker is not None and not checker("cpu"):
        return False
    if dtype == torch.bfloat16:
        return True
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = torch.nn.functional.linear(torch.ones(1, 2), torch.ones(2, 2))
    except (RuntimeError, TypeError, ValueError):
        return False
    return out.dtype == dtype


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``'s type; a disabled context when ``dtype`` is None."""
    dev = _device(device)
    return torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matrix products and convolutions on Ampere and later GPUs, restored on exit.

    The flags are process-wide and settable on a CPU-only build, where they change nothing."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def pin_memory(device: str | torch.device) -> bool:
    """Whether a DataLoader feeding ``device`` should pin its batches (only a CUDA device gains)."""
    return _device(device).type == "cuda"


def to_device(batch: Mapping[str, Any], device: str | torch.device) -> dict[str, Any]:
    """``batch`` with its tensors on ``device``; copies are non-blocking only from pinned memory to a GPU
    (elsewhere a non-blocking copy gains nothing); other values are kept as they are."""
    dev = _device(device)
    return {key: value.to(dev, non_blocking=copy_is_async(value, dev)) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}


def copy_is_async(tensor: Any, device: str | torch.device) -> bool:
    """Whether copying ``tensor`` to ``device`` may be non-blocking: from pinned host memory to a GPU only."""
    return _device(device).type == "cuda" and tensor.device.type == "cpu" and bool(tensor.is_pinned())


def synchronize(device: str | torch.device) -> None:
    """Wait for the GPU's queued work (timings); nothing on CPU."""
    dev = _device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a new peak for :func:`peak_memory_bytes` (CUDA allocator); on CPU the process peak cannot be reset."""
    dev = _device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_bytes(device: str | torch.device) -> int:
    """Peak memory: the CUDA allocator's peak on GPU, the process's peak resident set on CPU."""
    dev = _device(device)
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    try:
        import resource  # Unix only
    except ImportError:  # Windows: psutil's peak working set when installed, else unknown (0)
        try:
            import psutil

            return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
        except ImportError:
            return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB, macOS bytes


def dist_backend(device: str | torch.device) -> str:
    """The torch.distributed backend for ``device``: NCCL on GPU, gloo on CPU."""
    return "nccl" if _device(device).type == "cuda" else "gloo"
