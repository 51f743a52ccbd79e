"""Index of a CMRxRecon2025 tree from its folder layout alone (no ``manifest.csv`` needed).

The official layout is::

    MultiCoil/<Modality>/<TrainingSet|ValidationSet|TestSet>/<Folder>/<Center>/<Vendor>/<Pnnn>/<file>.mat

with ``<Folder>`` one of ``FullSample`` (``<name>.mat``: fully sampled ``kspace``; the organisers' scoring
truth is ``FullSample_TaskX``, indexed the same way with its task), ``UnderSample_TaskX``
(``<name>_kus_<Pattern><R>.mat``: key ``kus``, with or without ``mask``) and ``Mask_TaskX``
(``<name>_mask_<Pattern><R>.mat``: key ``mask``). Modality comes from the folder, the view and the
contrast from the file name (``cine_lax_4ch`` -> view ``lax_4ch``, contrast ``cine``). Only the HDF5
headers are read (the array shapes: frames, slices, coils, readout, phase), never the data.

Splits (the paper's Tab. 2 columns ``test-total``, ``rare``, ``fresh``) are not in the layout. They
are assigned per subject, deterministically:

* a subject of a **fresh** centre -> ``fresh``; a subject with a pathology (from the CSV) or of a
  **rare** centre -> ``rare``;
* otherwise ``ValidationSet`` -> ``val``, ``TestSet`` -> ``test-total``, and ``TrainingSet`` subjects
  are ordered by a hash of ``Center/Vendor/Pnnn``: the first ``val_fraction`` -> ``val``, the next
  ``test_fraction`` -> ``test-total`` (at least one each from 3 subjects on), the rest ``train`` (the
  same subjects on every machine and run of the same tree).

Centre roles. The challenge's tasks define them (cmrxrecon.github.io/2025/Tasks.html): TaskR1
(multi-centre) adds 2 centres unseen in training to the validation set and 5 to the test set; TaskR2
(multi-disease) adds 2 / 5 diseases unseen in training. The centre names of those held-out sets are
not published with the training data, so the default table :data:`CENTRE_ROLES` is empty and a rule
on the tree itself stands in for it: **a centre with files in ``ValidationSet``/``TestSet`` but none
in ``TrainingSet`` is fresh** (a tree holding only ``TrainingSet`` therefore has no fresh centre), and
the files of a ``*TaskR2`` folder are rare. Pass a CSV (``--centres`` of
``moero manifest``, or ``centres=`` here) to set roles explicitly; its rows are either
``centre,role`` (role ``known`` | ``fresh`` | ``rare``) or ``centre,vendor,subject,pathology`` /
``...,split`` for single subjects (``subject`` as ``Pnnn``).

The CSV is read as UTF-8 (a byte-order mark is accepted) and checked against the tree: a centre or
subject that the tree does not hold, a split outside :data:`SPLITS` and two rows that disagree on one
centre or subject are errors naming the file and line.

The index is cached atomically in ``<root>/.moero_layout.csv`` (written to a temporary file, then
renamed), keyed by a signature of every ``.mat`` file (path, size, modification time) and the options.
The cache is only a cache: it is used when its signature matches *and* its rows name exactly the
layout files of the tree, each a plain relative path inside the root, with valid values; otherwise the
index is rebuilt.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SET_SPLITS",
    "SPLITS",
    "CENTRE_ROLES",
    "LAYOUT_CACHE",
    "INDEX_COLUMNS",
    "MANIFEST_COLUMNS",
    "parse_layout_path",
    "read_centre_table",
    "scan_layout",
    "layout_index",
    "manifest_rows",
    "write_manifest",
]

SET_SPLITS = {"TrainingSet": "train", "ValidationSet": "val", "TestSet": "test-total"}
# centre -> role (known | fresh | rare). Empty by default: roles follow from the tree (module docstring).
CENTRE_ROLES: dict[str, str] = {}
ROLES = ("known", "fresh", "rare")
SPLITS = ("train", "val", "test-total", "rare", "fresh")
LAYOUT_CACHE = ".moero_layout.csv"
SHAPE_COLUMNS = ("frames", "slices", "coils", "readout", "phase")
INDEX_COLUMNS = ("file", "kind", "task", "pattern", "acceleration", "mask_file", "subject", "centre", "vendor",
                 "modality", "name", "view", "contrast", "pathology", "split", "set", *SHAPE_COLUMNS)
MANIFEST_COLUMNS = ("file", "subject", "centre", "vendor", "modality", "name", "view", "pathology", "split",
                    *SHAPE_COLUMNS)
VIEWS = ("lax_2ch", "lax_3ch", "lax_4ch", "lax_lvot", "lvot", "sax", "tra", "cor", "sag")
_UNDERSAMPLED = re.compile(r"^(?P<name>.+)_(?P<tag>kus|mask)_(?P<pattern>[A-Za-z]+?)(?P<r>\d+(?:\.\d+)?)$")
_FOLDER = re.compile(r"^(?P<kind>UnderSample|Mask)_(?P<task>\w+)$")
_FULL = re.compile(r"^FullSample(?:_(?P<task>\w+))?$")


def _view_contrast(name: str) -> tuple[str, str]:
    """``cine_lax_4ch`` -> ``("lax_4ch", "cine")``; ``T1map`` -> ``("", "T1map")``."""
    for view in VIEWS:
        if name.endswith("_" + view) or f"_{view}_" in name:
            return view, name.replace("_" + view, "")
    return "", name


def parse_layout_path(rel: Path) -> dict[str, Any] | None:
    """Fields of one ``.mat`` path relative to the root (see the module docstring); None if it does not
    follow the layout. ``kind`` is ``full``, ``kus`` or ``mask``."""
    parts = rel.parts
    set_at = next((i for i, p in enumerate(parts) if p in SET_SPLITS), None)
    if set_at is None or set_at < 1 or len(parts) != set_at + 6:
        return None
    modality, set_name = parts[set_at - 1], parts[set_at]
    folder, centre, vendor, subject = parts[set_at + 1:set_at + 5]
    stem = Path(parts[-1]).stem
    row: dict[str, Any] = {"file": rel.as_posix(), "task": "", "pattern": "", "acceleration": "", "mask_file": "",
                           "subject": f"{centre}/{vendor}/{subject}", "centre": centre, "vendor": vendor,
                           "modality": modality, "set": set_name, "pathology": "none", "split": ""}
    full = _FULL.match(folder)
    if full is not None:  # FullSample, or the organisers' scoring truth FullSample_<Task>
        row.update(kind="full", name=stem, task=full["task"] or "")
    else:
        fm, m = _FOLDER.match(folder), _UNDERSAMPLED.match(stem)
        if fm is None or m is None:
            return None
        kind = "kus" if fm["kind"] == "UnderSample" else "mask"
        if (m["tag"] == "kus") != (kind == "kus"):
            return None
        row.update(kind=kind, task=fm["task"], name=m["name"], pattern=m["pattern"], acceleration=m["r"])
    row["view"], row["contrast"] = _view_contrast(row["name"])
    return row


def read_centre_table(path: str | Path | None) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``(centre -> role, subject key Center/Vendor/Pnnn -> {pathology, split})`` from a CSV (see the
    module docstring); the defaults of :data:`CENTRE_ROLES` when ``path`` is None. Errors name the file
    and line: an unknown role or split, or two rows that disagree about one centre or subject."""
    roles = dict(CENTRE_ROLES)
    subjects: dict[str, dict[str, str]] = {}
    if path is None:
        return roles, subjects
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"centre table {path}: no such file")
    seen: dict[str, tuple[int, Any]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is accepted
            table = list(enumerate(csv.DictReader(fh), start=2))
    except UnicodeDecodeError as err:
        raise ValueError(f"centre table {path}: not UTF-8 text (byte {err.start})") from None
    except csv.Error as err:
        raise ValueError(f"centre table {path}: not a CSV file ({err})") from None
    for n, row in table:
        centre = (row.get("centre") or row.get("center") or "").strip()
        if not centre:
            raise ValueError(f"centre table {path}, line {n}: column 'centre' is empty or missing")
        if (row.get("subject") or "").strip():
            key = f"{centre}/{(row.get('vendor') or '').strip()}/{row['subject'].strip()}"
            value: Any = {k: (row.get(k) or "").strip() for k in ("pathology", "split")}
            if value["split"] and value["split"] not in SPLITS:
                raise ValueError(f"centre table {path}, line {n}: field 'split' must be one of {SPLITS}, "
                                 f"got {value['split']!r}")
            target: dict[str, Any] = subjects
        else:
            key, value = centre, (row.get("role") or "").strip().lower()
            if value not in ROLES:
                raise ValueError(f"centre table {path}, line {n}: field 'role' must be one of {ROLES}, got {value!r}")
            target = roles
        if key in seen and seen[key][1] != value:
            raise ValueError(f"centre table {path}, lines {seen[key][0]} and {n} disagree about {key}")
        seen[key] = (n, value)
        target[key] = value
    return roles, subjects


def _check_centre_table(path: str | Path | None, rows: list[dict[str, Any]], roles: Mapping[str, str],
                        subjects: Mapping[str, Any]) -> None:
    """A ``ValueError`` naming the file when the table names a centre or subject that the tree lacks."""
    if path is None:
        return
    unknown = sorted(set(roles) - set(CENTRE_ROLES) - {r["centre"] for r in rows})
    unknown += sorted(set(subjects) - {r["subject"] for r in rows})
    if unknown:
        raise ValueError(f"centre table {path}: not in the tree: {unknown[:5]} (a misspelt centre or subject?)")


def _shape(path: Path) -> dict[str, Any]:
    """``frames, slices, coils, readout, phase`` of a k-space file from its HDF5 header (MATLAB
    ``(nx, ny, nc, nz[, nt])``, stored reversed); empty values when the file is not readable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            key = next((k for k in ("kspace_full", "kspace", "kus") if k in f), None)
            shape = tuple(f[key].shape) if key is not None else ()
    except OSError:
        shape = ()
    if len(shape) not in (3, 4, 5):
        return dict.fromkeys(SHAPE_COLUMNS, "")
    shape = (1,) * (5 - len(shape)) + shape  # (nt, nz, nc, ny, nx)
    return {"frames": shape[0], "slices": shape[1], "coils": shape[2], "readout": shape[4], "phase": shape[3]}


def _holdout(subjects: Iterable[str], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """``train`` / ``val`` / ``test-total`` per subject: subjects ordered by a hash of their key (stable
    across machines and Python versions), the first ``val_fraction`` to ``val``, the next
    ``test_fraction`` to ``test-total`` (at least one each from 3 subjects on)."""
    order = sorted(set(subjects), key=lambda s: (zlib.crc32(s.encode()), s))
    n = len(order)
    n_val = max(1, round(val_fraction * n)) if n >= 3 and val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if n >= 3 and test_fraction > 0 else 0
    return {s: "val" if i < n_val else "test-total" if i < n_val + n_test else "train" for i, s in enumerate(order)}


def _assign_splits(rows: list[dict[str, Any]], roles: Mapping[str, str], subjects: Mapping[str, Mapping[str, str]],
                   val_fraction: float, test_fraction: float) -> None:
    trained = {r["centre"] for r in rows if r["set"] == "TrainingSet"}
    held_out = _holdout([r["subject"] for r in rows if r["set"] == "TrainingSet" and not subjects.get(r["subject"])
                         and roles.get(r["centre"], "known") == "known"], val_fraction, test_fraction)
    for row in rows:
        role = roles.get(row["centre"])
        if role is None:
            role = "fresh" if trained and row["centre"] not in trained else "known"
        given = subjects.get(row["subject"], {})
        row["pathology"] = given.get("pathology") or "none"
        if given.get("split"):
            row["split"] = given["split"]
        elif role == "fresh":
            row["split"] = "fresh"
        elif role == "rare" or row["pathology"] != "none" or row["task"].endswith("R2"):
            row["split"] = "rare"
        elif row["set"] == "TrainingSet":
            row["split"] = held_out.get(row["subject"], "train")
        else:
            row["split"] = SET_SPLITS[row["set"]]


def _link_masks(rows: list[dict[str, Any]]) -> None:
    """Point each ``kus`` row at its ``Mask_TaskX`` file when there is one."""
    masks = {(r["modality"], r["set"], r["task"], r["subject"], r["name"], r["pattern"], r["acceleration"]): r["file"]
             for r in rows if r["kind"] == "mask"}
    for r in rows:
        if r["kind"] == "kus":
            r["mask_file"] = masks.get(
                (r["modality"], r["set"], r["task"], r["subject"], r["name"], r["pattern"], r["acceleration"]), "")


def scan_layout(root: str | Path, centres: str | Path | None = None, val_fraction: float = 0.1,
                test_fraction: float = 0.2) -> list[dict[str, Any]]:
    """Every ``.mat`` file of the layout under ``root`` as a row of :data:`INDEX_COLUMNS` (sorted by path)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset root {root} is not a directory")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be >= 0, sum <= 1")
    roles, subjects = read_centre_table(centres)
    rows = []
    for rel in sorted(_mat_files(root)):
        row = parse_layout_path(Path(rel))
        if row is not None:
            row.update(_shape(root / rel) if row["kind"] != "mask" else dict.fromkeys(SHAPE_COLUMNS, ""))
            rows.append(row)
    _check_centre_table(centres, rows, roles, subjects)
    _link_masks(rows)
    _assign_splits(rows, roles, subjects, val_fraction, test_fraction)
    return [{k: r[k] for k in INDEX_COLUMNS} for r in rows]


def _mat_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every ``.mat`` file under ``root`` (symbolic links to folders not followed): relative POSIX path ->
    ``(size, modification time in ns)``."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".mat"):
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:  # a dangling link
                    continue
                files[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return files


def _signature(files: Mapping[str, tuple[int, int]], centres: str | Path | None, options: Iterable[Any]) -> str:
    """Hash of every ``.mat`` file (path, size, time) and the options: changes when a file comes, goes or
    changes, whatever the folder times say."""
    h = hashlib.sha256(json.dumps([str(centres or ""), *map(str, options)]).encode())
    if centres is not None and Path(centres).is_file():
        h.update(Path(centres).read_bytes())
    for rel in sorted(files):
        h.update(f"{rel}:{files[rel][0]}:{files[rel][1]}\n".encode())
    return h.hexdigest()[:16]


def _read_cache(cache: Path, sig: str, files: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]] | None:
    """The cached rows when the cache matches the tree (module docstring), else None (rebuild)."""
    try:
        with open(cache, newline="", encoding="utf-8") as fh:
            if fh.readline().strip() != f"# signature {sig}":
                return None
            rows = [_ints(r) for r in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError, AttributeError):
        return None
    expected = {rel for rel in files if parse_layout_path(Path(rel)) is not None}
    names = [r.get("file") for r in rows]
    if len(names) != len(expected) or set(names) != expected:
        return None  # cut down, padded or pointing elsewhere (../)
    for row in rows:
        if set(row) != set(INDEX_COLUMNS) or row["kind"] not in ("full", "kus", "mask"):
            return None
        if row["mask_file"] and row["mask_file"] not in expected:
            return None
        if row["split"] not in SPLITS:
            return None
    return rows


def _write_csv_atomic(path: Path, rows: list[dict[str, Any]], columns: Iterable[str], comment: str = "") -> Path:
    """Write ``rows`` to a temporary file beside ``path``, then rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            if comment:
                fh.write(f"# {comment}\n")
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def layout_index(root: str | Path, centres: str | Path | None = None, refresh: bool = False,
                 val_fraction: float = 0.1, test_fraction: float = 0.2) -> list[dict[str, Any]]:
    """:func:`scan_layout`, cached in ``<root>/.moero_layout.csv`` (rebuilt when the tree or options change;
    a read-only root is simply not cached)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset root {root} is not a directory")
    cache = root / LAYOUT_CACHE
    files = _mat_files(root)
    sig = _signature(files, centres, (val_fraction, test_fraction, *INDEX_COLUMNS))  # columns: the format
    if cache.is_file() and not refresh:
        cached = _read_cache(cache, sig, files)
        if cached is not None:
            return cached
    rows = scan_layout(root, centres, val_fraction, test_fraction)
    try:
        _write_csv_atomic(cache, rows, INDEX_COLUMNS, f"signature {sig}")
    except OSError:
        pass  # read-only tree: index every time
    return rows


def _ints(row: dict[str, Any]) -> dict[str, Any]:
    """The shape columns of a cached row as integers (a ``ValueError`` when one is not a non-negative one)."""
    for col in SHAPE_COLUMNS:
        if row.get(col, "") not in ("", None):
            row[col] = int(row[col])
            if row[col] < 0:
                raise ValueError(f"column {col!r}: {row[col]} is negative")
    return row


def manifest_rows(root: str | Path, centres: str | Path | None = None) -> list[dict[str, Any]]:
    """The fully sampled files of the layout index as ``manifest.csv`` rows (:data:`MANIFEST_COLUMNS`)."""
    return [{k: r[k] for k in MANIFEST_COLUMNS} for r in layout_index(root, centres) if r["kind"] == "full"]


def write_manifest(root: str | Path, out: str | Path | None = None, centres: str | Path | None = None) -> Path:
    """Write ``manifest_rows(root)`` to ``out`` (default ``<root>/manifest.csv``) atomically; returns the path."""
    rows = manifest_rows(root, centres)
    if not rows:
        raise ValueError(f"dataset root {root}: no FullSample .mat file in the CMRxRecon2025 layout")
    return _write_csv_atomic(Path(out) if out else Path(root) / "manifest.csv", rows, MANIFEST_COLUMNS)
