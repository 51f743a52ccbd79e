"""Writing the synthetic tree: every file of a size as MATLAB v7.3, the manifest, the stamp that skips redone work."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from moero.data.digest import file_sha256
from moero.data.matfile import write_mat73
from moero.data.readers import MANIFEST_NAME
from moero.data.synthetic.acquisition import NUM_VIRTUAL_COILS, simulate_file
from moero.data.synthetic.protocol import SIZES, VENDORS, DatasetSize, FileSpec, plan_dataset

GENERATOR_VERSION = "3"


MANIFEST_COLUMNS = ("file", "subject", "centre", "vendor", "field", "modality", "name", "view", "pathology", "split",
                    "frames", "slices", "coils", "readout", "phase")


def code_hash() -> str:
    """Hash of the generator's source: changing the code makes existing trees stale."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for path in [*sorted(here.glob("*.py")), here.parent / "matfile.py"]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _resolve_size(profile: str | DatasetSize, overrides: dict[str, Any] | None) -> DatasetSize:
    if isinstance(profile, str):
        if profile not in SIZES:
            raise ValueError(f"unknown dataset size {profile!r}; choose one of {sorted(SIZES)}")
        profile = SIZES[profile]
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(DatasetSize)}
        if unknown:
            raise ValueError(f"unknown DatasetSize fields in overrides: {sorted(unknown)}")
        profile = dataclasses.replace(profile, **overrides)
    return profile


def generate(root: str | Path, size: str | DatasetSize = "smoke", seed: int = 0, progress: bool = True,
             overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write the dataset of ``size`` (a name of :data:`SIZES` or a :class:`DatasetSize`) under ``root``.

    Returns the manifest rows (also written to ``root/manifest.csv``). Prefer
    :func:`moero.data.synthetic.ensure_synthetic`, which skips the work when the tree is already there.
    """
    size = _resolve_size(size, overrides)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    specs = plan_dataset(size, seed)
    rows = []
    iterator: Any = specs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(specs, desc=f"synthetic {size.name}", unit="file")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-file arrays: one thread is fastest and thread-count independent
    try:
        for spec in iterator:
            rows.append(_write_one(root, spec, seed, size.render_factor))
    finally:
        torch.set_num_threads(threads)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _write_one(root: Path, spec: FileSpec, seed: int, render_factor: int) -> dict[str, Any]:
    kspace = simulate_file(spec, seed, render_factor)
    array = kspace.numpy() if spec.has_time_axis else kspace[0].numpy()  # no time axis: MATLAB (nx,ny,nc,nz)
    write_mat73(root / spec.relpath, {"kspace": array})
    return {
        "file": spec.relpath, "subject": f"{spec.centre}/{spec.vendor}/{spec.subject}", "centre": spec.centre,
        "vendor": spec.vendor, "field": VENDORS[spec.vendor].field_t, "modality": spec.modality,
        "name": spec.name, "view": spec.view, "pathology": spec.pathology, "split": spec.split,
        "frames": spec.frames, "slices": spec.slices, "coils": NUM_VIRTUAL_COILS, "readout": spec.readout,
        "phase": spec.phase,
    }


# ---------------------------------------------------------------------------------------------
# command line: python -m moero generate-data


STAMP_NAME = "moero_synthetic.json"


def _stamp(size: str, seed: int) -> dict[str, Any]:
    return {"size": size, "seed": int(seed), "generator": GENERATOR_VERSION, "code": code_hash()}


def _inventory(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``root`` but the stamp."""
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != STAMP_NAME}


def _damaged(root: Path, files: dict[str, Any], verify: bool) -> str | None:
    """Why the tree at ``root`` does not match the stamp's ``files`` (sizes; hashes when ``verify``), or None."""
    for name, entry in files.items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{path} has {path.stat().st_size} bytes, the stamp says {entry.get('size')}"
        if verify and file_sha256(path) != entry.get("sha256"):
            return f"{path} does not match its SHA-256 in {root / STAMP_NAME}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


OWNER_MARKER = ".moero-owner.json"  # in a temporary or backup folder of ensure_synthetic: its PID and root


def _mark_owned(folder: Path, root: Path) -> None:
    (folder / OWNER_MARKER).write_text(json.dumps({"pid": os.getpid(), "root": root.name}))


def remove_stale_folders(root: Path) -> list[Path]:
    """Remove ``<root>.tmp-<pid>-*`` / ``<root>.old-<pid>-*`` folders left by generator processes that
    died: only those holding the marker file that names that PID and root (a user's ``<root>.old-2024``
    backup is never touched)."""
    removed = []
    for path in root.parent.glob(f"{root.name}.*-*"):
        kind, _, rest = path.name[len(root.name) + 1:].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            owner = json.loads((path / OWNER_MARKER).read_text())
        except (OSError, ValueError):
            continue  # no marker: not a folder of ours
        if isinstance(owner, dict) and owner.get("pid") == int(pid) and owner.get("root") == root.name:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def ensure_synthetic(root: str | Path, size: str = "smoke", seed: int = 0, progress: bool = True,
                     verify: bool = False) -> Path:
    """Generate the synthetic CMRxRecon-layout tree of ``size`` at ``root`` unless it is already there.

    A stamp file (size, seed, generator version, code hash, and every file's size and SHA-256)
    decides: same stamp and every file of the size it records (and, with ``verify``, of the SHA-256
    it records) -> return at once; otherwise regenerate into a temporary sibling folder and swap it
    in. A non-empty ``root`` without our stamp is refused (it could be real data). The temporary and
    backup folders (``<root>.tmp-<pid>-<random>``, ``<root>.old-<pid>-<random>``) hold a marker file
    naming their process; those of processes that died are removed first, a failed generation removes
    its own, and nothing else beside ``root`` is ever touched.
    """
    root = Path(root)
    if root.parent.is_dir():
        remove_stale_folders(root)
    want = _stamp(size, seed)
    stamp_path = root / STAMP_NAME
    if stamp_path.is_file():
        try:
            have = json.loads(stamp_path.read_text())
        except ValueError:
            have = None
        if (isinstance(have, dict) and {k: have.get(k) for k in want} == want and (root / MANIFEST_NAME).is_file()
                and isinstance(have.get("files"), dict)):
            damage = _damaged(root, have["files"], verify)
            if damage is None:
                return root
            import sys

            print(f"synthetic data {root}: {damage}; regenerating it", file=sys.stderr)
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"root {root} is not empty and holds no {STAMP_NAME}: refusing to overwrite it")
    import tempfile

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-{os.getpid()}-", dir=root.parent))  # a unique name
    try:
        _mark_owned(tmp, root)
        generate(tmp, size=size, seed=seed, progress=progress)
        (tmp / OWNER_MARKER).unlink()
        (tmp / STAMP_NAME).write_text(json.dumps({**want, "files": _inventory(tmp)}, indent=2, sort_keys=True))
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{root.name}.old-{os.getpid()}-", dir=root.parent))
            _mark_owned(root, root)  # travels with it: a kill before the removal below leaves a marked folder
            try:
                root.rename(old)  # onto the empty folder just made
            except BaseException:
                (root / OWNER_MARKER).unlink(missing_ok=True)
                old.rmdir()
                raise
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # only this call's own folder (gone once renamed to root)
        raise
    return root
