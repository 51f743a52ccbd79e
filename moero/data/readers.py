"""Reading CMRxRecon2025 (MATLAB v7.3) and fastMRI (HDF5) k-space, and the embedded synthetic set.

Every reader returns the package convention ``(T, Z, C, H=readout, W=phase)``:

* CMRxRecon2025: MATLAB ``(nx, ny, nc, nz, nt)``, which h5py reads reversed as ``(nt, nz, nc, ny, nx)``;
  we swap the last two axes (:func:`moero.data.matfile.h5_to_package`). Files without a time axis
  (BlackBlood, T1w, T2w, LGE here) are MATLAB ``(nx, ny, nc, nz)`` and get ``T = 1``. Masks, MATLAB
  ``(nx, ny)`` or ``(nx, ny, nt)``, become ``(T, H, W)`` booleans.
* fastMRI: ``kspace`` is ``(slices, coils, H, W)`` (or ``(slices, H, W)`` single coil), already
  row-major in our order, so it becomes ``(1, slices, coils, H, W)``.

Bad input (missing key, wrong dtype or rank, a zero-size axis, truncated or non-HDF5 file, NaN/Inf, a
mask that does not match ``kus``) raises :class:`DataError`, a ``ValueError`` that names the file and the key.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from moero.data.layout import manifest_rows  # the layout index imports nothing from here
from moero.data.matfile import complex_from_h5, h5_to_package

__all__ = [
    "DataError",
    "Volume",
    "FULL_KEYS",
    "load_cmrxrecon",
    "load_fastmri",
    "kspace_key",
    "read_kspace_window",
    "volume_shape",
    "read_manifest",
    "MANIFEST_NAME",
]

FULL_KEYS = ("kspace_full", "kspace")
MANIFEST_NAME = "manifest.csv"


class DataError(ValueError):
    """A data file that cannot be used; ``file`` and ``key`` say which and where."""

    def __init__(self, file: str | Path, key: str | None, reason: str):
        self.file = str(file)
        self.key = key
        self.reason = reason
        where = f"{self.file}" + (f" [key {key!r}]" if key else "")
        super().__init__(f"{where}: {reason}")


@dataclass
class Volume:
    """One k-space file: ``kspace`` complex64 ``(T, Z, C, H, W)``; ``mask`` bool ``(T, H, W)`` or None."""

    kspace: torch.Tensor
    mask: torch.Tensor | None
    path: Path
    key: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.kspace.shape)


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "no such file")
    try:
        return h5py.File(path, "r")
    except OSError as err:  # truncated, not HDF5, unreadable
        raise DataError(path, None, f"not a readable HDF5 / MATLAB v7.3 file ({err})") from None


def _is_complex_dtype(dtype: np.dtype) -> bool:
    if dtype.kind == "c":
        return True
    names = dtype.names or ()
    return "real" in names and "imag" in names and all(dtype[n].kind == "f" for n in ("real", "imag"))


def _check_kspace_dataset(f: h5py.File, path: Path, key: str, ranks: Sequence[int]) -> h5py.Dataset:
    if key not in f:
        raise DataError(path, key, f"key missing; the file has {sorted(f.keys())}")
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise DataError(path, key, "is a group, not an array")
    if not _is_complex_dtype(ds.dtype):
        raise DataError(path, key, f"expected complex k-space (compound real/imag), got dtype {ds.dtype}")
    if ds.ndim not in ranks:
        raise DataError(path, key, f"expected {' or '.join(map(str, ranks))} dimensions, got shape {ds.shape}")
    if 0 in ds.shape:  # T or Z = 0 would drop the file silently, H or C = 0 fail inside the FFT
        raise DataError(path, key, f"has a zero-size axis: shape {ds.shape} (h5py order)")
    return ds


def kspace_key(f: h5py.File, path: Path, keys: Sequence[str] = FULL_KEYS) -> str:
    """The first of ``keys`` present in ``f``; a :class:`DataError` listing them otherwise."""
    for key in keys:
        if key in f:
            return key
    raise DataError(path, "/".join(keys), f"none of the keys {list(keys)} found; the file has {sorted(f.keys())}")


def _to_tzchw(arr: np.ndarray, fmt: str) -> np.ndarray:
    """h5py array of a whole file -> ``(T, Z, C, H, W)``."""
    if fmt == "fastmri":
        if arr.ndim == 3:  # single coil (slices, H, W)
            arr = arr[:, None]
        return arr[None]
    arr = h5_to_package(arr)  # (..., H, W)
    while arr.ndim < 5:
        arr = arr[None]
    return arr


def _check_finite(arr: np.ndarray, path: Path, key: str) -> None:
    if not np.isfinite(arr).all():
        raise DataError(path, key, "k-space contains NaN or Inf")


def _read(ds: h5py.Dataset, path: Path, key: str, index: Any = ()) -> np.ndarray:
    try:
        raw = ds[index]
    except (OSError, ValueError, TypeError) as err:
        raise DataError(path, key, f"could not read the data (truncated file?): {err}") from None
    return complex_from_h5(raw)


def load_cmrxrecon(path: str | Path, mask_path: str | Path | None = None, check_finite: bool = True) -> Volume:
    """A CMRxRecon2025 ``.mat`` file -> :class:`Volume` ``(T, Z, C, H, W)``.

    Fully sampled files hold ``kspace_full`` or ``kspace`` (``mask`` is None). Undersampled files
    hold ``kus`` and a ``mask``, in the same file or in ``mask_path`` (the ``Mask_TaskX`` folder of the
    real layout); the mask must match ``kus`` in ``(H, W)`` and in ``T`` (or have no time axis).
    """
    path = Path(path)
    with _open(path) as f:
        if "kus" in f:
            key = "kus"
        else:
            key = kspace_key(f, path)
        ds = _check_kspace_dataset(f, path, key, (3, 4, 5))
        kspace = _to_tzchw(_read(ds, path, key), "cmrxrecon")
        mask = None
        if key == "kus":
            if mask_path is None and "mask" in f:
                mask = _read_mask(f, path, kspace.shape)
            elif mask_path is None:
                raise DataError(path, "mask", "undersampled file ('kus') without a 'mask' key and no mask_path given")
    if key == "kus" and mask_path is not None:
        with _open(mask_path) as fm:
            mask = _read_mask(fm, Path(mask_path), kspace.shape)
    if check_finite:
        _check_finite(kspace, path, key)
    return Volume(torch.from_numpy(np.ascontiguousarray(kspace)), mask, path, key)


def _read_mask(f: h5py.File, path: Path, kshape: tuple[int, ...]) -> torch.Tensor:
    if "mask" not in f:
        raise DataError(path, "mask", f"key missing; the file has {sorted(f.keys())}")
    ds = f["mask"]
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "biuf":
        raise DataError(path, "mask", f"expected a real or logical array, got {getattr(ds, 'dtype', 'a group')}")
    try:
        raw = ds[()]
    except (OSError, ValueError) as err:
        raise DataError(path, "mask", f"could not read the data: {err}") from None
    if 0 in np.shape(raw):
        raise DataError(path, "mask", f"has a zero-size axis: shape {np.shape(raw)} (h5py order)")
    mask = h5_to_package(np.asarray(raw)) != 0
    t, _, _, h, w = kshape
    if mask.ndim == 2:
        mask = np.broadcast_to(mask, (t, *mask.shape))
    if mask.ndim != 3 or mask.shape[-2:] != (h, w) or mask.shape[0] not in (1, t):
        raise DataError(
            path, "mask", f"mask shape (T, H, W) = {mask.shape} does not match kus (T, H, W) = {(t, h, w)}"
        )
    mask = np.broadcast_to(mask, (t, h, w))
    return torch.from_numpy(np.ascontiguousarray(mask))


def load_fastmri(path: str | Path, key: str = "kspace", check_finite: bool = True) -> Volume:
    """A fastMRI ``.h5`` file -> :class:`Volume` ``(1, slices, C, H, W)``; ``mask`` from the file's
    ``mask`` dataset (along W, fastMRI test/challenge files) or None."""
    path = Path(path)
    with _open(path) as f:
        ds = _check_kspace_dataset(f, path, key, (3, 4))
        kspace = _to_tzchw(_read(ds, path, key), "fastmri")
        mask = None
        if "mask" in f:
            m = np.asarray(f["mask"][()]) != 0
            w = kspace.shape[-1]
            if m.shape != (w,):
                raise DataError(path, "mask", f"expected a mask of shape ({w},) along W, got {m.shape}")
            mask = torch.from_numpy(np.broadcast_to(m, kspace.shape[-2:])[None].copy())
    if check_finite:
        _check_finite(kspace, path, key)
    return Volume(torch.from_numpy(np.ascontiguousarray(kspace)), mask, path, key)


def volume_shape(path: str | Path, fmt: str = "cmrxrecon") -> tuple[str, tuple[int, int, int, int, int]]:
    """``(key, (T, Z, C, H, W))`` of a file's k-space without reading the data (validates key and dtype)."""
    path = Path(path)
    with _open(path) as f:
        if fmt == "fastmri":
            key = "kspace"
            ds = _check_kspace_dataset(f, path, key, (3, 4))
            shp = ds.shape if ds.ndim == 4 else (ds.shape[0], 1, *ds.shape[1:])
            return key, (1, *shp)
        key = kspace_key(f, path)
        ds = _check_kspace_dataset(f, path, key, (3, 4, 5))
        shp = tuple(ds.shape)
    shp = (*shp[:-2], shp[-1], shp[-2])
    shp = (1,) * (5 - len(shp)) + shp
    return key, shp  # type: ignore[return-value]


def read_kspace_window(
    path: str | Path, slice_index: int, frames: Sequence[int], fmt: str = "cmrxrecon", key: str | None = None
) -> torch.Tensor:
    """Read only ``frames`` of slice ``slice_index`` -> complex64 ``(len(frames), C, H, W)`` (lazy h5py slicing).

    ``frames`` may repeat (clamped windows); the contiguous range covering them is read once.
    Raises :class:`DataError` for a bad file, key, index, or NaN/Inf in what was read.
    """
    path = Path(path)
    frames = [int(t) for t in frames]
    with _open(path) as f:
        if fmt == "fastmri":
            key = key or "kspace"
            ds = _check_kspace_dataset(f, path, key, (3, 4))
            if any(t != 0 for t in frames):
                raise DataError(path, key, f"fastMRI files have one frame; asked for frames {frames}")
            if not 0 <= slice_index < ds.shape[0]:
                raise DataError(path, key, f"slice {slice_index} out of range 0..{ds.shape[0] - 1}")
            arr = _read(ds, path, key, slice_index)
            arr = (arr[None] if arr.ndim == 2 else arr)[None]  # (1, C, H, W)
            out = arr[[0] * len(frames)]
        else:
            key = key or kspace_key(f, path)
            ds = _check_kspace_dataset(f, path, key, (3, 4, 5))
            nt = ds.shape[0] if ds.ndim == 5 else 1
            nz = ds.shape[-4] if ds.ndim >= 4 else 1
            if not 0 <= slice_index < nz:
                raise DataError(path, key, f"slice {slice_index} out of range 0..{nz - 1}")
            if min(frames) < 0 or max(frames) >= nt:
                raise DataError(path, key, f"frames {frames} out of range 0..{nt - 1}")
            lo, hi = min(frames), max(frames) + 1
            if ds.ndim == 5:
                block = _read(ds, path, key, (slice(lo, hi), slice_index))  # (F', C, ny, nx)
            elif ds.ndim == 4:
                block = _read(ds, path, key, slice_index)[None]
            else:
                block = _read(ds, path, key)[None]
            out = h5_to_package(block)[[t - lo for t in frames]]
    _check_finite(out, path, key)
    return torch.from_numpy(np.ascontiguousarray(out))


# ----------------------------------------------------------------------------------------------
# the embedded synthetic dataset


def read_manifest(root: str | Path, centres: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of ``<root>/manifest.csv`` (file paths relative to ``root``; ints converted).

    A value that is not a non-negative integer in an integer column is a :class:`DataError` naming the
    file, the row (1 = the header) and the column.

    A tree without ``manifest.csv`` (a real CMRxRecon2025 download) is indexed from its folder layout
    instead: the fully sampled files of :func:`moero.data.layout.layout_index` (cached in the root).
    ``centres`` (a centre-role CSV, as ``moero manifest --centres``) indexes the layout with those roles
    even where a ``manifest.csv`` exists.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file() or centres is not None:
        rows = manifest_rows(root, centres) if Path(root).is_dir() else []
        if not rows:
            raise DataError(path, None, "no manifest.csv in this dataset root, and no FullSample .mat file in "
                            "the CMRxRecon2025 layout MultiCoil/<Modality>/<Set>/FullSample/<Center>/<Vendor>/<Pnnn>/")
        return rows
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as err:
        raise DataError(path, None, f"not UTF-8 text (byte {err.start})") from None
    except csv.Error as err:
        raise DataError(path, None, f"not a CSV file ({err})") from None
    required = {"file", "subject", "centre", "vendor", "modality", "view", "pathology", "split"}
    if rows and not required <= set(rows[0]):
        raise DataError(path, None, f"manifest lacks columns {sorted(required - set(rows[0]))}")
    for number, row in enumerate(rows, start=2):
        rel = Path(row.get("file") or "")
        if not row.get("file") or rel.is_absolute() or ".." in rel.parts:
            raise DataError(path, None, f"row {number}, column 'file': {row.get('file')!r} is not a path inside "
                                        "the dataset root")
        for col in ("frames", "slices", "coils", "readout", "phase"):
            value = row.get(col, "")
            if value in ("", None):
                continue
            try:
                row[col] = int(str(value).strip())
            except ValueError:
                raise DataError(path, None, f"row {number}, column {col!r}: {value!r} is not an integer") from None
            if row[col] < 0:
                raise DataError(path, None, f"row {number}, column {col!r}: {row[col]} is negative")
    return rows




