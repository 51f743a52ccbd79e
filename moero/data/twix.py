"""Real raw data: Siemens twix (``.dat``) k-space through ``twixtools`` (optional extra ``raw``).

:func:`read_twix` returns the imaging scan as a :class:`TwixScan` with k-space in the package's
volume order ``(T, Z, C, H, W)`` (cardiac phases, slices, coils, readout, phase encode; see
``moero/__init__.py``). :func:`example_gre_dat` fetches the example ``gre.dat`` (a real 2-channel
Siemens Skyra gradient-echo scan, MIT licence) from the *source distribution* of
``twixtools==0.24`` (the wheel lacks it) and caches it outside the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moero.data.digest import file_sha256

__all__ = ["TwixScan", "read_twix", "example_gre_dat", "cache_root", "RawDataUnavailable", "GRE_SHA256"]

TWIXTOOLS_SDIST = "twixtools==0.24"
_GRE_MEMBER = "twixtools-0.24/example_data/gre.dat"
GRE_SHA256 = "10ce71c8cba94fb47989fe69d45c86673508f178e8b4c2399e805f27936b01ca"

# twixtools dimension names -> our axes; everything else must be singleton or selected
_FRAME_DIM, _SLICE_DIM = "Phs", "Sli"
_KEPT = (_FRAME_DIM, _SLICE_DIM, "Lin", "Cha", "Col")


class RawDataUnavailable(RuntimeError):
    """The example raw data could not be obtained (download or extraction failed); the message says why."""


@dataclass
class TwixScan:
    """One imaging scan: ``kspace`` complex64 ``(T, Z, C, H, W)`` plus what the header says about it."""

    kspace: torch.Tensor
    path: Path
    kspace_center: tuple[int, int]  # (readout column, phase-encode line) of the k-space centre
    header: dict[str, Any] = field(default_factory=dict)


def _require_twixtools():
    try:
        import twixtools
    except ImportError as err:  # the optional extra is missing: say how to get it
        raise ImportError("reading Siemens raw data needs twixtools: pip install 'moero[raw]'") from err
    return twixtools


def read_twix(
    path: str | os.PathLike, remove_os: bool = False, select: dict[str, int] | None = None
) -> TwixScan:
    """Read the last (imaging) measurement of a Siemens twix file into ``(T, Z, C, H, W)`` k-space.

    ``remove_os`` drops the 2x readout oversampling (twixtools' flag). Segments and averages are
    averaged; any other non-singleton twix dimension (echoes, repetitions, sets, partitions...) must be
    picked by ``select={"Eco": 0, ...}``, else a ``ValueError`` names it. The phase-encode lines are
    placed so that the header's k-space centre line sits at ``W // 2`` as ``fft2c`` expects.
    """
    twixtools = _require_twixtools()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"twix file {str(path)!r} does not exist")
    try:
        scans = twixtools.map_twix(str(path), verbose=False)
    except Exception as err:  # twixtools raises assorted errors on foreign files
        raise ValueError(f"{str(path)!r} is not a readable Siemens twix file: {err}") from err
    scans = scans if isinstance(scans, list) else [scans]
    image = scans[-1].get("image") if scans and isinstance(scans[-1], dict) else None
    if image is None:
        raise ValueError(f"{str(path)!r} holds no imaging data ('image' category) in its last measurement")
    image.flags["remove_os"] = bool(remove_os)
    image.flags["zf_missing_lines"] = True
    dims = list(image.dims)
    select = dict(select or {})
    unknown = [k for k in select if k not in dims]
    if unknown:
        raise ValueError(f"select names unknown twix dimensions {unknown}; known: {dims}")
    index: list[Any] = []
    for name, size in zip(dims, image.shape, strict=True):
        if name in select:
            if not 0 <= select[name] < size:
                raise ValueError(f"select[{name!r}]={select[name]} is out of range for size {size}")
            index.append(slice(select[name], select[name] + 1))
        elif name in _KEPT or size == 1 or image.flags["average"].get(name, False):
            index.append(slice(None))
        else:
            raise ValueError(f"twix dimension {name!r} has size {size}; pick one with select={{{name!r}: i}}")
    data = np.asarray(image[tuple(index)])
    # keep our five axes, in twix order (..., Phs, ..., Sli, ..., Lin, Cha, Col), dropping singletons
    order = [dims.index(d) for d in (_FRAME_DIM, _SLICE_DIM, "Cha", "Col", "Lin")]
    others = [i for i in range(len(dims)) if i not in order]
    data = np.transpose(data, order + others)  # the other axes are singletons by now
    data = data.reshape(data.shape[:5])
    lines = data.shape[-1]
    centre_line = int(getattr(image, "kspace_center_lin", lines // 2))
    centre_col = int(getattr(image, "kspace_center_col", data.shape[-2] // 2)) // (2 if remove_os else 1)
    data = np.roll(data, lines // 2 - centre_line, axis=-1)
    hdr = scans[-1].get("hdr", {})
    dicom, meas = hdr.get("Dicom", {}), hdr.get("Meas", {})
    header = {
        "field_strength_T": dicom.get("flMagneticFieldStrength"),
        "model": dicom.get("ManufacturersModelName"),
        "sequence": meas.get("tSequenceFileName"),
        "dims": dims,
    }
    kspace = torch.from_numpy(np.ascontiguousarray(data)).to(torch.complex64)
    return TwixScan(kspace=kspace, path=path, kspace_center=(centre_col, lines // 2), header=header)


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """Where downloaded example data live: ``override``, else ``$MOERO_CACHE``, else ``~/.cache/moero``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("MOERO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moero"


def example_gre_dat(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path to twixtools' example ``gre.dat``, downloaded once from the ``twixtools==0.24`` sdist.

    Runs ``python -m pip download --no-binary :all: --no-deps twixtools==0.24`` into a temporary
    folder, extracts ``example_data/gre.dat``, checks its SHA-256 and caches it (atomic write) under
    :func:`cache_root`. Raises :class:`RawDataUnavailable` with pip's message when that fails.
    """
    target = cache_root(cache_dir) / "twixtools-0.24" / "gre.dat"
    if target.is_file() and file_sha256(target) == GRE_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="moero-twixtools-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", TWIXTOOLS_SDIST, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        archives = sorted(Path(tmp).glob("twixtools-0.24*.tar.gz"))
        if proc.returncode != 0 or not archives:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise RawDataUnavailable(f"could not download the {TWIXTOOLS_SDIST} sdist ({' '.join(cmd)}): {tail}")
        try:
            with tarfile.open(archives[0], "r:gz") as tar:
                member = tar.extractfile(_GRE_MEMBER)
                if member is None:
                    raise KeyError(_GRE_MEMBER)
                payload = member.read()
        except (KeyError, tarfile.TarError) as err:
            raise RawDataUnavailable(f"{archives[0].name} has no readable {_GRE_MEMBER}: {err}") from err
    partial = target.with_suffix(".dat.partial")
    partial.write_bytes(payload)
    if file_sha256(partial) != GRE_SHA256:
        partial.unlink()
        raise RawDataUnavailable(f"{_GRE_MEMBER} from the {TWIXTOOLS_SDIST} sdist has an unexpected SHA-256")
    os.replace(partial, target)
    return target
