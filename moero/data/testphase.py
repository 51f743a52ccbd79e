"""The challenge's test phase, made from a fully sampled tree (the synthetic set or a real training set).

:func:`write_test_phase` takes the files of the test splits (``test-total``, ``rare``, ``fresh`` of
the tree's manifest or layout index) and writes two trees:

* ``out`` (what a participant gets): ``MultiCoil/<Modality>/TestSet/UnderSample_<Task>/<Center>/<Vendor>/
  <Pnnn>/<name>_kus_<Pattern><R>.mat`` with key ``kus`` (the masked k-space, zeros where not sampled,
  MATLAB ``(nx, ny, nc, nz[, nt])`` like the fully sampled file), and the mask alone in
  ``Mask_<Task>/.../<name>_mask_<Pattern><R>.mat`` (key ``mask``, MATLAB ``(nx, ny[, nt])``);
* ``truth`` (kept apart, for scoring): the fully sampled files under ``TestSet/FullSample_<Task>`` (the
  organisers' name for the scoring truth) and a ``manifest.csv`` that keeps their splits and pathologies.

Both folders must be empty or absent (:func:`check_outputs`), unless ``overwrite``; they may not lie in
one another or in the source tree.

Masks are drawn as the challenge does: one ``(Pattern, R)`` per
file from ``patterns`` (dealt round-robin over the files in a seeded order, so that every pair occurs
once the test splits hold as many files), 20 ACS lines (a 20x20 square for radial), the same Uniform mask in every
frame, kt-Gaussian drawn independently per frame, kt-Radial spokes rotated by the golden angle per
frame (:func:`moero.physics.masks.make_mask`). Every draw comes from ``seed`` and the file's path.

Which ``(Pattern, R)``: :data:`TEST_RULES`. ``"2025"`` (the default, :data:`CHALLENGE_PATTERNS`) is the
2025 test phase: R 8, 16 and 24 for Uniform, ktGaussian and ktRadial alike (the organisers' mask
generation and format files: ``Uniform16``, ``ktRadial24``, ...). ``"2024"`` is the 2024 test phase
(Uniform 4/8/10, kt patterns 4-24), kept for comparison with 2024 results.
"""

from __future__ import annotations

import csv
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from moero.data.layout import parse_layout_path
from moero.data.matfile import write_mat73
from moero.data.readers import MANIFEST_NAME, kspace_key, load_cmrxrecon, read_manifest
from moero.physics.masks import make_mask

__all__ = ["PATTERN_KINDS", "CHALLENGE_PATTERNS", "CHALLENGE_PATTERNS_2024", "TEST_RULES", "TEST_SPLITS",
           "check_outputs", "write_test_phase"]

# challenge pattern name (in file names) -> moero.physics.masks kind
PATTERN_KINDS = {"Uniform": "uniform", "ktGaussian": "kt_gaussian", "ktRadial": "kt_radial"}
# the 2025 test phase: R 8/16/24 for every pattern
CHALLENGE_PATTERNS: dict[str, tuple[int, ...]] = {"Uniform": (8, 16, 24), "ktGaussian": (8, 16, 24),
                                                  "ktRadial": (8, 16, 24)}
CHALLENGE_PATTERNS_2024: dict[str, tuple[int, ...]] = {
    "Uniform": (4, 8, 10), "ktGaussian": (4, 8, 12, 16, 20, 24), "ktRadial": (4, 8, 12, 16, 20, 24)}
TEST_RULES: dict[str, dict[str, tuple[int, ...]]] = {"2025": CHALLENGE_PATTERNS, "2024": CHALLENGE_PATTERNS_2024}
TEST_SPLITS = ("test-total", "rare", "fresh")


def _has_time_axis(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return f[kspace_key(f, path)].ndim == 5


def check_outputs(source: str | Path, out: str | Path, truth: str | Path, overwrite: bool = False) -> None:
    """A ``ValueError`` naming the folder when ``out`` or ``truth`` holds anything (unless ``overwrite``),
    or when the source tree and the two folders are not three separate trees."""
    folders = {"source": Path(source).resolve(), "test-phase": Path(out).resolve(), "truth": Path(truth).resolve()}
    names = list(folders)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa, pb = folders[a], folders[b]
            if pa == pb or pa in pb.parents or pb in pa.parents:
                raise ValueError(f"test phase: the {a} folder {pa} and the {b} folder {pb} must be separate trees")
    if overwrite:
        return
    for name in ("test-phase", "truth"):
        folder = folders[name]
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ValueError(f"test phase: {name} folder {folder} is not empty; choose an empty folder or give "
                             f"--overwrite to replace files of the same names there")


def write_test_phase(
    source: str | Path,
    out: str | Path,
    truth: str | Path,
    task: str = "TaskR1",
    patterns: Mapping[str, Sequence[int]] | None = None,
    splits: Sequence[str] = TEST_SPLITS,
    seed: int = 0,
    acs: int = 20,
    overwrite: bool = False,
    rules: str = "2025",
) -> list[dict[str, Any]]:
    """Write the test phase of ``source`` (module docstring); returns one row per undersampled file
    (``kus``, ``mask``, ``truth`` paths relative to their roots, ``pattern``, ``acceleration``).
    ``rules`` (a key of :data:`TEST_RULES`) picks the patterns unless ``patterns`` is given."""
    source, out, truth = Path(source), Path(out), Path(truth)
    if rules not in TEST_RULES:
        raise ValueError(f"test phase rules must be one of {sorted(TEST_RULES)}, got {rules!r}")
    check_outputs(source, out, truth, overwrite)
    patterns = dict(patterns or TEST_RULES[rules])
    choices = [(p, int(r)) for p, rs in patterns.items() for r in rs]
    for p, _ in choices:
        if p not in PATTERN_KINDS:
            raise ValueError(f"patterns: unknown pattern {p!r}; known: {sorted(PATTERN_KINDS)}")
    if not choices:
        raise ValueError("patterns: no (pattern, acceleration) to draw from")
    rows = [r for r in read_manifest(source) if r["split"] in set(splits)]
    if not rows:
        raise ValueError(f"{source}: no file of splits {list(splits)}")
    written, truth_rows = [], []
    # (Pattern, R) pairs dealt round-robin over the files in an order drawn from the seed: every pair occurs
    # once there are as many files as pairs, and the counts differ by at most one
    order = np.random.default_rng([seed, len(rows)]).permutation(len(rows))
    dealt = {int(i): choices[k % len(choices)] for k, i in enumerate(order)}
    for n, row in enumerate(rows):
        parsed = parse_layout_path(Path(row["file"]))
        if parsed is None or parsed["kind"] != "full":
            raise ValueError(f"{source / row['file']}: not a FullSample file of the CMRxRecon2025 layout")
        rng = np.random.default_rng([seed, zlib.crc32(row["file"].encode())])
        pattern, r = dealt[n]
        volume = load_cmrxrecon(source / row["file"])
        t, _, _, h, w = volume.shape
        mask = make_mask(PATTERN_KINDS[pattern], (t, h, w), r, acs=acs, seed=int(rng.integers(2**62)))
        kus = volume.kspace * mask[:, None, None]
        timed = _has_time_axis(source / row["file"])
        centre, vendor, subject = parsed["subject"].split("/")
        where = Path("MultiCoil", parsed["modality"], "TestSet")
        tail = Path(centre, vendor, subject)
        kus_rel = where / f"UnderSample_{task}" / tail / f"{parsed['name']}_kus_{pattern}{r}.mat"
        mask_rel = where / f"Mask_{task}" / tail / f"{parsed['name']}_mask_{pattern}{r}.mat"
        truth_rel = where / f"FullSample_{task}" / tail / f"{parsed['name']}.mat"
        write_mat73(out / kus_rel, {"kus": (kus if timed else kus[0]).numpy()})
        write_mat73(out / mask_rel, {"mask": (mask if timed else mask[0]).numpy()})
        (truth / truth_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row["file"], truth / truth_rel)
        truth_rows.append({**row, "file": truth_rel.as_posix()})
        written.append({"kus": kus_rel.as_posix(), "mask": mask_rel.as_posix(), "truth": truth_rel.as_posix(),
                        "pattern": pattern, "acceleration": r})
    columns = list(truth_rows[0])
    part = truth / f".{MANIFEST_NAME}.{os.getpid()}.part"
    with open(part, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(truth_rows)
    os.replace(part, truth / MANIFEST_NAME)
    return written
