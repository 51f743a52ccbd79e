"""CMRxRecon2025 submissions: the ``img4ranking`` files, and scoring a submission folder.

Format (official ``run4Ranking_2025.m`` and ``Evaluation.py``):

* one ``.mat`` file per undersampled input, same folder layout and name
  ``{Task}/MultiCoil/{Modality}/{Set}/UnderSample_{Task}/{Center}/{Vendor}/Pnnn/{name}_kus_{Pattern}{R}.mat``;
* key ``img4ranking``: float32 magnitude images of the protocol's selection (frames and slices from
  :func:`moero.eval.metrics.selected_frames` / :func:`~moero.eval.metrics.central_slices`), centre
  cropped to :func:`~moero.eval.metrics.protocol_crop_size`, in MATLAB axis order
  ``(x = readout, y = phase, slices[, frames])``: 4-D when more than one frame (a single slice kept
  as a singleton axis), else 3-D ``(x, y, slices)``;
* MATLAB v5 format (``scipy.io.savemat``), which the official loader reads with ``scipy.io.loadmat``
  in MATLAB order. A v7.3 (HDF5) file would come back through its h5py fallback with reversed axes,
  fail the shape check and count as missing; :func:`load_img4ranking` reproduces that.

Scoring (:func:`score_submission`, ``Val_Score2025.py``): every submitted file is matched to its
ground truth ``basename.split('_kus_')[0] + '.mat'`` in the same ``Center/Vendor/Pnnn``; a file
without ground truth is an error ("extra file"), a file whose shape differs from the truth's is not
scored (comment ``shape mismatch``). Per-file metrics are :func:`moero.eval.metrics.score_images` of
the 2-D images (each normalised by its 99.5th percentile, no further crop). ``Val_Score2025.py``
calls ``calmetric(gt, recon)`` while ``calmetric`` expects ``(pred, gt)`` and swaps the order only in
its 4-D branch: so for 4-D files (more than one frame) the
*submission's* normalised maximum is the data range and ``||submission||^2`` the NMSE denominator,
for 3-D files the truth's. ``official_order=True`` (default) reproduces that; ``False`` uses the
truth everywhere, as ``moero eval`` does for models. Per (centre, vendor) group (TaskR1) and per
disease (TaskR2: the truth manifest's ``disease`` column, else ``pathology``; the challenge's disease
sheet can be supplied as that column) with ``N`` expected ground-truth files and ``n`` scored ones:
``ssim = sum / N`` and ``psnr = sum / N`` (a missing file counts as 0), ``nmse = mean * (2 - n / N)``.
``overall`` is the mean of the (centre, vendor) group values (the official scripts stop at the groups;
this last mean is an assumption) next to the plain mean over scored files.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm import tqdm

from moero.data.layout import parse_layout_path
from moero.data.readers import load_cmrxrecon, read_manifest
from moero.eval.metrics import (
    center_crop,
    central_slices,
    group_key_values,
    official_group_scores,
    protocol_crop_size,
    score_images,
    selected_frames,
    split_aggregates,
)
from moero.eval.tables import Table
from moero.physics.fft import ifft2c
from moero.physics.sense import rss

__all__ = [
    "RANKING_KEY",
    "ranking_selection",
    "img4ranking",
    "truth_img4ranking",
    "save_img4ranking",
    "load_img4ranking",
    "ranking_images",
    "ground_truth_name",
    "score_submission",
    "write_submission_tables",
]

RANKING_KEY = "img4ranking"
METRICS = ("ssim", "psnr", "nmse")


def ranking_selection(num_frames: int, num_slices: int, modality: str) -> tuple[list[int], list[int]]:
    """``(frames, slices)`` (0-based) that ``run4Ranking_2025.m`` keeps for a file of ``modality``."""
    return selected_frames(modality, num_frames), central_slices(num_slices, modality)


def img4ranking(images: torch.Tensor) -> np.ndarray:
    """The ``img4ranking`` array of selected magnitude images ``(frames, slices, H, W)``: centre crop
    ``round(H/3) x round(W/2)``, float32, MATLAB order ``(x, y, slices, frames)`` (``(x, y, slices)``
    for one frame)."""
    if images.ndim != 4:
        raise ValueError(f"img4ranking: images must be (frames, slices, H, W), got {tuple(images.shape)}")
    if images.is_complex():
        images = images.abs()
    cropped = center_crop(images.float(), protocol_crop_size(*images.shape[-2:]))
    arr = cropped.permute(2, 3, 1, 0).cpu().numpy()  # (x, y, slices, frames)
    if arr.shape[3] == 1:
        arr = arr[..., 0]
    return np.ascontiguousarray(arr, dtype=np.float32)


def truth_img4ranking(kspace: torch.Tensor, modality: str) -> np.ndarray:
    """``img4ranking`` of fully sampled k-space ``(T, Z, C, H, W)``: RSS of the centred inverse FFT
    (reference eq. (1)) of the selected frames and slices."""
    if kspace.ndim != 5:
        raise ValueError(f"truth_img4ranking: k-space must be (T, Z, C, H, W), got {tuple(kspace.shape)}")
    frames, slices = ranking_selection(kspace.shape[0], kspace.shape[1], modality)
    selected = kspace[frames][:, slices]  # (F, S, C, H, W)
    return img4ranking(rss(ifft2c(selected), dim=2))


def save_img4ranking(path: str | Path, array: np.ndarray) -> Path:
    """Write ``{'img4ranking': array}`` as a MATLAB v5 file, atomically (temporary file, then rename)."""
    import scipy.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            scipy.io.savemat(fh, {RANKING_KEY: np.asarray(array, dtype=np.float32)}, format="5",
                             do_compression=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_img4ranking(path: str | Path) -> np.ndarray:
    """``img4ranking`` of a file as the official ``loadFun.loadmat`` reads it: ``scipy.io.loadmat``
    first, h5py (no transpose, so reversed axes) for v7.3 files. ``ValueError`` naming file and key."""
    import scipy.io

    path = Path(path)
    if path.is_file() and h5py.is_hdf5(path):  # v7.3: scipy cannot read it, the official loader falls back to h5py
        with h5py.File(path, "r") as f:
            if RANKING_KEY not in f:
                keys = sorted(f.keys())
                raise ValueError(f"{path} [key {RANKING_KEY!r}]: key missing; the file has {keys}") from None
            return np.asarray(f[RANKING_KEY][:])
    try:
        data = scipy.io.loadmat(path)
    except Exception as err:  # a truncated or crafted file fails anywhere in scipy's parser (IndexError, ...)
        raise ValueError(f"{path}: not a readable MATLAB file ({type(err).__name__}: {str(err)[:120]})") from None
    if RANKING_KEY not in data:
        keys = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(f"{path} [key {RANKING_KEY!r}]: key missing; the file has {keys}")
    return np.asarray(data[RANKING_KEY])


def ranking_images(array: np.ndarray) -> torch.Tensor:
    """The 2-D images ``(N, x, y)`` of an ``img4ranking`` array (the loops of ``Evaluation.calmetric``)."""
    arr = torch.from_numpy(np.asarray(array, dtype=np.float64))
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr.permute(2, 0, 1)
    if arr.ndim == 4:
        return arr.permute(2, 3, 0, 1).reshape(-1, *arr.shape[:2])
    raise ValueError(f"img4ranking must have 2 to 4 axes, got shape {tuple(arr.shape)}")


def ground_truth_name(submitted: str | Path) -> str:
    """``cine_sax_kus_ktGaussian16.mat`` -> ``cine_sax.mat`` (``Val_Score2025.py``)."""
    return Path(submitted).name.split("_kus_")[0] + ".mat"


def _truth_array(path: Path, modality: str) -> np.ndarray:
    """The truth's ``img4ranking``: stored as such, or computed from fully sampled k-space."""
    try:
        with h5py.File(path, "r") as f:
            has_kspace = any(k in f for k in ("kspace_full", "kspace"))
    except OSError:
        has_kspace = False  # a v5 .mat file: an img4ranking file
    if not has_kspace:
        return load_img4ranking(path)
    return truth_img4ranking(load_cmrxrecon(path).kspace, modality)


def score_submission(submission: str | Path, ground_truth: str | Path, progress: bool = True,
                     official_order: bool = True, centres: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Score a submission folder against a ground-truth tree (module docstring).

    ``ground_truth`` is a CMRxRecon2025 tree whose ``FullSample`` or ``FullSample_<Task>`` files (the
    organisers' truth folders; a submitted file of a task is matched to its task's truth first) hold
    fully sampled k-space or ``img4ranking`` (indexed by ``manifest.csv`` or the folder layout, with the
    centre roles of ``centres`` when given; splits and pathologies from there).
    Returns ``files`` (one row per submitted file), ``groups`` (centre, vendor), ``overall``,
    ``splits`` (total / rare / fresh over scored files) and ``missing`` (expected truth files without
    a scored submission).
    """
    submission, ground_truth = Path(submission), Path(ground_truth)
    if not submission.is_dir():
        raise ValueError(f"submission {submission} is not a directory")
    truth: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (modality, subject, name, task) -> row
    for row in read_manifest(ground_truth, centres):
        parsed = parse_layout_path(Path(row["file"]))
        if parsed is None or parsed["kind"] != "full":
            continue
        key = (parsed["modality"], parsed["subject"], parsed["name"] + ".mat", parsed["task"])
        truth[key] = {**row, "set": parsed["set"], "task": parsed["task"]}
    submitted = sorted(submission.rglob("*_kus_*.mat"))
    if not submitted:
        raise ValueError(f"submission {submission}: no *_kus_*.mat file")
    files: list[dict[str, Any]] = []
    cache: dict[str, np.ndarray] = {}
    for path in tqdm(submitted, desc="score", disable=not progress, ncols=100, mininterval=10.0):
        rel = path.relative_to(submission)
        parsed = parse_layout_path(rel)
        if parsed is None or parsed["kind"] != "kus":
            raise ValueError(f"submission file {rel}: not in the layout "
                             "{Task}/MultiCoil/{Modality}/{Set}/UnderSample_{Task}/{Center}/{Vendor}/Pnnn/")
        key = (parsed["modality"], parsed["subject"], ground_truth_name(path))
        gt = truth.get((*key, parsed["task"])) or truth.get((*key, ""))  # FullSample_<Task>, else FullSample
        if gt is None:
            raise ValueError(f"submission file {rel}: extra file, no ground truth {ground_truth_name(path)} "
                             f"for {parsed['subject']} ({parsed['modality']}) under {ground_truth}")
        row = {"file": rel.as_posix(), "truth": gt["file"], "modality": parsed["modality"],
               "centre": parsed["centre"], "vendor": parsed["vendor"], "subject": parsed["subject"],
               "name": parsed["name"], "pattern": parsed["pattern"], "acceleration": parsed["acceleration"],
               "split": gt.get("split", ""), "pathology": gt.get("pathology", ""), "comment": ""}
        try:
            if gt["file"] not in cache:
                cache[gt["file"]] = _truth_array(ground_truth / gt["file"], parsed["modality"])
            target = cache[gt["file"]]
            pred = load_img4ranking(path)
        except (ValueError, OSError) as err:  # a failed file: scored as a missing one, named in its comment
            files.append({**row, "images": 0, **dict.fromkeys(METRICS, math.nan), "comment": str(err)})
            continue
        if not np.issubdtype(pred.dtype, np.number) or not np.isfinite(pred).all():
            bad = int(pred.size - np.isfinite(pred).sum()) if np.issubdtype(pred.dtype, np.number) else pred.size
            files.append({**row, "images": 0, **dict.fromkeys(METRICS, math.nan),
                          "comment": f"{path}: {bad} non-finite or non-numeric values; scored as a missing file"})
            continue
        if pred.shape != target.shape:
            files.append({**row, "images": 0, **dict.fromkeys(METRICS, math.nan),
                          "comment": f"shape mismatch: submitted {pred.shape}, truth {target.shape}"})
            continue
        gt_images, pred_images = ranking_images(target), ranking_images(pred)
        if official_order and target.ndim == 4:  # Evaluation.calmetric's 4-D branch, called as (gt, recon)
            gt_images, pred_images = pred_images, gt_images
        scores = score_images(gt_images, pred_images, crop=False)
        files.append({**row, "images": int(scores["ssim"].numel()),
                      **{m: float(scores[m].mean()) for m in METRICS}})
    sets = {parse_layout_path(Path(r["file"]))["set"] for r in files}
    tasks = {parse_layout_path(Path(r["file"]))["task"] for r in files}
    expected = [r for r in truth.values() if r["set"] in sets and (not r["task"] or r["task"] in tasks)]
    scored = [r for r in files if not r["comment"]]
    return {"files": files, **_group_scores(scored, expected), "splits": [
        {"split": k, **v} for k, v in split_aggregates(scored).items()],
        "missing": _missing(scored, expected)}


def _group_scores(scored: Sequence[dict[str, Any]], expected: Sequence[dict[str, Any]]) -> dict[str, list]:
    """Official adjusted group means (``Val_Score2025.py``, :func:`official_group_scores`): per (centre,
    vendor) as TaskR1 and per disease as TaskR2 (from the truth's ``disease`` column, else its
    ``pathology``), every expected file counted; plus the mean over the centre/vendor groups."""
    def with_disease(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "disease": r.get("disease") or r.get("pathology") or ""} for r in rows]

    tables = {}
    for name, keys, rows, truth in (("groups", ("centre", "vendor"), scored, expected),
                                    ("diseases", ("disease",), with_disease(scored), with_disease(expected))):
        count = Counter(k for r in truth for k in group_key_values(r, keys))
        tables[name] = official_group_scores(rows, keys, expected=count, metrics=METRICS)
    overall = {"groups": len(tables["groups"]), "files": len(scored)}
    for m in METRICS:
        vals = [g[m] for g in tables["groups"] if not math.isnan(g[m])]
        overall[m] = sum(vals) / len(vals) if vals else math.nan
        overall[f"{m}_files"] = sum(r[m] for r in scored) / len(scored) if scored else math.nan
    return {**tables, "overall": [overall]}


def _missing(scored: Sequence[dict[str, Any]], expected: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    done = {r["truth"] for r in scored}
    return [{"truth": r["file"], "centre": r["centre"], "vendor": r["vendor"], "modality": r["modality"]}
            for r in expected if r["file"] not in done]


def write_submission_tables(results: dict[str, list[dict[str, Any]]], out: str | Path) -> list[Path]:
    """``submission_{files,groups,diseases,overall,splits,missing}`` as CSV and Markdown in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("files", "groups", "diseases", "overall", "splits", "missing"):
        rows = results[name] or [{"note": "none"}]
        table = Table(rows, caption=f"submission {name}")
        for suffix, text in (("csv", table.to_csv()), ("md", table.to_markdown())):
            path = out / f"submission_{name}.{suffix}"
            path.write_text(text)
            written.append(path)
    return written
