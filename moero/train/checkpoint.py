"""Checkpoints that survive crashes and load without unpickling code.

* :func:`save_checkpoint` writes atomically: a temporary file in the target's folder, ``flush`` +
  ``fsync``, ``os.replace`` onto the final name, then ``fsync`` of the folder, so a crash at any
  moment leaves either the previous checkpoint or the new one, never half a file.
* Everything stored is a tensor or a primitive container (dict, list, tuple, str, int, float,
  bool, None); :func:`save_checkpoint` refuses anything else, so :func:`load_checkpoint` can use
  ``torch.load(weights_only=True)``, which refuses foreign pickled objects; that refusal becomes a
  :class:`CheckpointError` naming the file.
* The file gets the mode of any other file the process creates (``0o666`` less the umask), not the
  ``0o600`` of the temporary file; :func:`remove_stale_temporaries` deletes the temporary files of
  writers that died (call it while holding the run folder's lock).
* :func:`non_finite_tensors` names the tensors of a state holding NaN or Inf (a diverged run).
* :func:`rng_state` / :func:`set_rng_state` capture the Python, NumPy, torch and CUDA generators as
  tensors, for exact resume.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "module_buffers",
    "load_module_buffers",
    "check_primitive",
    "require_keys",
    "non_finite_tensors",
    "remove_stale_temporaries",
    "check_loaded",
    "short_repr",
    "clip",
]

_PRIMITIVES = (str, int, float, bool, type(None))
# bounds of what a loaded checkpoint may hold outside tensors: a crafted file of shared references (a list
# of itself, twice, 60 deep: 2**60 items once expanded) or a huge integer would hang whatever formats it
MAX_NODES = 1_000_000  # containers and values, shared references counted every time they occur
MAX_CONFIG_NODES = 10_000
MAX_DEPTH = 64
MAX_INT_BITS = 128


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read safely; the message names the file."""


def check_primitive(obj: Any, where: str = "state") -> None:
    """Raise :class:`CheckpointError` if ``obj`` holds anything but tensors and primitive containers."""
    if isinstance(obj, (torch.Tensor, *_PRIMITIVES)):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise CheckpointError(f"{where}: key {key!r} is not a str or int")
            check_primitive(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            check_primitive(value, f"{where}[{i}]")
        return
    raise CheckpointError(f"{where} holds a {type(obj).__name__}, which weights_only loading would refuse")


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters, never expanding more than a few levels or items
    (safe on crafted or huge values)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother, r.maxlong = 3, 6, 6, 6, 60, 60, 40
    try:
        text = r.repr(value)
    except Exception:  # a value whose repr fails (an oversized int under the digit limit, say)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters (for messages quoting another error)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _expanded_size(obj: Any, path: str | Path, memo: dict[int, int], depth: int = 0) -> int:
    """Number of nodes of ``obj`` with shared references expanded (memoised by id: linear in the file)."""
    if isinstance(obj, torch.Tensor | str | float | bool | type(None)):
        return 1
    if isinstance(obj, int):
        if obj.bit_length() > MAX_INT_BITS:
            raise CheckpointError(f"checkpoint {path} holds an integer of {obj.bit_length()} bits (crafted?)")
        return 1
    if depth > MAX_DEPTH:
        raise CheckpointError(f"checkpoint {path} nests containers deeper than {MAX_DEPTH} levels (crafted?)")
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, dict):
        items = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple):
        items = list(obj)
    else:  # a dtype, a device: what weights_only loading allows besides containers is a single value
        return 1
    total = 1
    for item in items:
        total += _expanded_size(item, path, memo, depth + 1)
        if total > MAX_NODES:
            break
    memo[key] = total
    return total


def check_loaded(state: Any, path: str | Path) -> dict[str, Any]:
    """Check the structure of a loaded checkpoint before anything uses or formats it: a dict with string
    keys, at most :data:`MAX_NODES` nodes (shared references expanded), :data:`MAX_CONFIG_NODES` in its
    ``config``, no integer wider than :data:`MAX_INT_BITS` bits; model and buffers map names to tensors.
    A :class:`CheckpointError` naming the file otherwise."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    if _expanded_size(state, path, {}) > MAX_NODES:
        raise CheckpointError(f"checkpoint {path} holds more than {MAX_NODES} values once expanded (crafted?)")
    for key in state:
        if not isinstance(key, str):
            raise CheckpointError(f"checkpoint {path}: top-level key {short_repr(key)} is not a string")
    if "config" in state:
        if not isinstance(state["config"], dict) or not all(isinstance(k, str) for k in state["config"]):
            raise CheckpointError(f"checkpoint {path}: 'config' is not a mapping of field names")
        if _expanded_size(state["config"], path, {}) > MAX_CONFIG_NODES:
            raise CheckpointError(f"checkpoint {path}: 'config' holds more than {MAX_CONFIG_NODES} values")
    for key in ("model", "buffers"):
        if key in state and not (isinstance(state[key], dict) and all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state[key].items())):
            raise CheckpointError(f"checkpoint {path}: {key!r} is not a mapping of names to tensors")
    return state


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` gives every other run file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def remove_stale_temporaries(folder: str | Path, name: str) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files of :func:`save_checkpoint` in ``folder`` (left by a killed writer);
    only safe while no other process writes there (the caller holds the run folder's lock)."""
    removed = []
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def require_keys(state: Mapping[str, Any], keys: tuple[str, ...], path: str | Path) -> None:
    """A :class:`CheckpointError` naming the file and the missing keys unless ``state`` holds all ``keys``."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing} (not a checkpoint written by the trainer?)")


def non_finite_tensors(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point or complex tensors in ``tensors`` that hold NaN or Inf."""
    bad = []
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                bad.append(str(name))
    return bad


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (see module doc); returns the path."""
    path = Path(path)
    state = dict(state)
    check_primitive(state, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0o600; a checkpoint is a run file like the others
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} holds objects that weights_only loading refuses (foreign pickled code?): "
            f"{clip(err)}") from err
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError, MemoryError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated: {clip(err)}") from err
    return check_loaded(state, path)


# ---------------------------------------------------------------------------- random generators
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA, when present) generator states as tensors and primitives."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- buffers
def module_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every buffer of ``model`` (persistent or not), by name, as CPU copies."""
    return {name: buf.detach().cpu().clone() for name, buf in model.named_buffers()}


@torch.no_grad()
def load_module_buffers(model: nn.Module, buffers: Mapping[str, torch.Tensor], path: str | Path = "?") -> None:
    """Copy saved buffers back into ``model``; a missing or misshapen buffer is an error naming it."""
    own = dict(model.named_buffers())
    missing = sorted(set(own) - set(buffers))
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks buffers {missing}")
    for name, buf in own.items():
        saved = buffers[name]
        if saved.shape != buf.shape:
            raise CheckpointError(f"checkpoint {path}: buffer {name!r} has shape {tuple(saved.shape)}, "
                                  f"the model {tuple(buf.shape)}")
        buf.copy_(saved.to(buf.device))
