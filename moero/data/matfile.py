"""MATLAB v7.3 MAT-files (HDF5) written and read with h5py, as the CMRxRecon2025 files are.

A v7.3 MAT-file is an HDF5 file with a 512-byte user block whose first 128 bytes are the MATLAB
header (116 bytes of text, 8 bytes of subsystem offset, version ``0x0200``, endian mark ``IM``).
Each variable is a dataset with a ``MATLAB_class`` attribute (``single``, ``double``, ``logical``,
``uint8``...); complex arrays are a compound type with fields ``real`` and ``imag``.

Axis order. MATLAB is column-major and HDF5 row-major, so a MATLAB array of size
``(nx, ny, nc, nz, nt)`` is stored with HDF5 dimensions ``(nt, nz, nc, ny, nx)``; h5py (and every
other row-major reader) sees the reversed order. The package convention is
``(T, Z, C, H=readout=nx, W=phase=ny)``, which is h5py's order with the last two axes swapped:
:func:`h5_to_package` and :func:`package_to_h5` do exactly that swap, nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "MATLAB_HEADER_TEXT",
    "write_mat73",
    "read_mat73_header",
    "h5_to_package",
    "package_to_h5",
    "complex_from_h5",
    "complex_to_h5",
]

USERBLOCK_SIZE = 512
# Fixed creation date: the same data give the same header bytes (reproducible files).
MATLAB_HEADER_TEXT = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2025 HDF5 schema 1.00 ."

_CLASS_OF_DTYPE = {
    np.dtype(np.float32): "single",
    np.dtype(np.float64): "double",
    np.dtype(np.bool_): "logical",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int8): "int8",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int64): "int64",
    np.dtype(np.uint64): "uint64",
}


def _header_bytes() -> bytes:
    text = MATLAB_HEADER_TEXT.encode("ascii").ljust(116, b" ")
    return text + b"\x00" * 8 + b"\x00\x02" + b"IM"


def package_to_h5(array: np.ndarray) -> np.ndarray:
    """``(..., H=nx, W=ny)`` -> the row-major order h5py stores for MATLAB ``(nx, ny, ...)``: swap the last two axes."""
    return np.ascontiguousarray(np.swapaxes(array, -1, -2)) if array.ndim >= 2 else array


def h5_to_package(array: np.ndarray) -> np.ndarray:
    """h5py's view of a MATLAB ``(nx, ny, nc, nz, nt)`` array, ``(nt, nz, nc, ny, nx)``, -> ``(..., H=nx, W=ny)``."""
    return np.swapaxes(array, -1, -2) if array.ndim >= 2 else array


def complex_to_h5(array: np.ndarray) -> np.ndarray:
    """Complex array -> MATLAB's compound ``{real, imag}`` structured array of the same precision."""
    part = np.float32 if array.dtype == np.complex64 else np.float64
    out = np.empty(array.shape, dtype=[("real", part), ("imag", part)])
    out["real"] = array.real
    out["imag"] = array.imag
    return out


def complex_from_h5(array: np.ndarray) -> np.ndarray:
    """MATLAB compound ``{real, imag}`` (or already complex) array -> ``complex64``."""
    if np.iscomplexobj(array):
        return array.astype(np.complex64, copy=False)
    names = array.dtype.names
    if not names or "real" not in names or "imag" not in names:
        raise TypeError(f"dtype {array.dtype} is not a complex compound with fields 'real' and 'imag'")
    out = np.empty(array.shape, dtype=np.complex64)
    out.real = array["real"]
    out.imag = array["imag"]
    return out


def write_mat73(path: str | Path, variables: dict[str, np.ndarray], matlab_order: bool = True) -> Path:
    """Write ``variables`` to a MATLAB v7.3 file at ``path``.

    With ``matlab_order=True`` (default) arrays are given in the package order ``(..., H, W)`` and
    stored so that MATLAB sees ``(H, W, ...reversed leading axes)``, e.g. a ``(T, Z, C, H, W)``
    k-space becomes MATLAB ``(nx, ny, nc, nz, nt)``. With ``False`` arrays are stored as given (h5py order).
    Complex arrays become compound ``{real, imag}``; booleans become MATLAB ``logical`` (uint8).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w", userblock_size=USERBLOCK_SIZE, libver="earliest") as f:
        for name, value in variables.items():
            arr = np.asarray(value)
            if matlab_order:
                arr = package_to_h5(arr)
            if np.iscomplexobj(arr):
                cls = "single" if arr.dtype == np.complex64 else "double"
                data = complex_to_h5(arr)
            else:
                cls = _CLASS_OF_DTYPE.get(arr.dtype)
                if cls is None:
                    raise ValueError(f"variable {name!r}: dtype {arr.dtype} has no MATLAB class")
                data = arr.astype(np.uint8) if arr.dtype == np.bool_ else arr
            ds = f.create_dataset(name, data=data, track_times=False)
            ds.attrs.create("MATLAB_class", np.bytes_(cls))
            if cls == "logical":
                ds.attrs.create("MATLAB_int_decode", np.int32(1))
    with open(tmp, "r+b") as fh:
        fh.write(_header_bytes())
    tmp.replace(path)
    return path


def read_mat73_header(path: str | Path) -> dict[str, Any]:
    """The MATLAB header of ``path``: ``{"text", "version", "endian"}``; ``ValueError`` if absent."""
    with open(path, "rb") as fh:
        head = fh.read(128)
    if len(head) < 128 or not head.startswith(b"MATLAB"):
        raise ValueError(f"{path}: no MATLAB header in the first 128 bytes")
    return {
        "text": head[:116].decode("ascii", "replace").rstrip(),
        "version": int.from_bytes(head[124:126], "little"),  # 0x0200 for v7.3
        "endian": head[126:128].decode("ascii", "replace"),
    }
