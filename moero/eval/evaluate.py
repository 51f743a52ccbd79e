"""``python -m moero eval``: score a checkpoint (or the zero-filled baseline) by the official
CMRxRecon2025 protocol and write the result tables (CSV and Markdown) that the results chapters use.

Only the images the protocol scores are reconstructed (central slices, frames by modality); each file
gets the mean over its images, then groups (centre, vendor) and the Tab. 2 splits (total, rare,
fresh) are means over files. Tables: ``eval_files``, ``eval_groups``, ``eval_splits`` in ``--out``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from moero.data.testphase import TEST_SPLITS  # the manifest's test splits, one definition
from moero.eval.fastmri import FASTMRI_CROP, evaluate_fastmri  # fastMRI folders: their own conventions
from moero.eval.metrics import (
    central_slices,
    group_means,
    score_images,
    selected_frames,
    split_aggregates,
)
from moero.eval.tables import Table
from moero.models.io import ReconOutput, collate_examples, example_meta, model_inputs, output_parts
from moero.physics.coils import estimate_maps_lowres
from moero.physics.fft import ifft2c
from moero.physics.recon import cg_sense
from moero.physics.sense import rss

__all__ = ["TEST_SPLITS", "TEST_ACCELERATIONS", "IMAGE_LABELS", "latin_kind", "evaluate_grid", "ZeroFilled",
           "CGSense", "protocol_indices", "evaluate", "evaluate_fastmri", "FASTMRI_CROP", "write_tables"]

TEST_ACCELERATIONS = (8, 16, 24)  # the official CMRxRecon2025 test accelerations
IMAGE_LABELS = ("file", "subject", "modality", "view", "vendor", "centre", "split")  # what routes are compared with


def latin_kind(file_index: int, acceleration_index: int, kinds: Sequence[str]) -> str:
    """The mask kind of file ``file_index`` at the ``acceleration_index``-th test acceleration: a Latin
    square, so each file meets every kind over three accelerations and each acceleration every kind over
    the files (one reconstruction per file and acceleration instead of one per kind)."""
    return kinds[(int(file_index) + int(acceleration_index)) % len(kinds)]


@torch.no_grad()
def evaluate_grid(
    model: nn.Module, make_dataset: Callable[[str, float], Any], accelerations: Sequence[float] = TEST_ACCELERATIONS,
    kinds: Sequence[str] = ("uniform", "kt_gaussian", "kt_radial"), design: str = "latin",
    device: str | torch.device = "cpu", max_files: int = 0, batch_size: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Official metrics of ``model`` per file at every test acceleration and mask kind.

    ``make_dataset(kind, acceleration)``: the test ``SliceDataset`` whose masks are all of that kind and
    acceleration (same files, same seeds). ``design``: ``"full"`` scores every file under every
    (kind, acceleration); ``"latin"`` scores every file at every acceleration with the kind of
    :func:`latin_kind`. Returns ``(rows, images)``: :func:`evaluate`'s per-file rows with ``kind`` and
    ``acceleration`` added, and the labels (:data:`IMAGE_LABELS`, kind, acceleration) of every scored
    image in the order the model saw them (to pair with what a wrapper of ``model`` records per call).
    """
    if design not in ("full", "latin"):
        raise ValueError(f"design must be 'full' or 'latin', got {design!r}")
    if not accelerations or not kinds:
        raise ValueError("evaluate_grid needs at least one acceleration and one mask kind")
    rows: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for j, acceleration in enumerate(accelerations):
        for kind in kinds:
            dataset = make_dataset(kind, acceleration)
            chosen = set(range(min(len(dataset.records), max_files or len(dataset.records))))
            if design == "latin":
                chosen = {f for f in chosen if latin_kind(f, j, kinds) == kind}
            if not chosen:
                continue
            res = evaluate(model, dataset, device, progress=False, files=chosen, batch_size=batch_size)
            rows += [{**r, "kind": kind, "acceleration": float(acceleration)} for r in res["files"]]
            for f in res["image_files"]:
                rec = dataset.records[f]
                images.append({**{k: str(rec.get(k, "")) for k in IMAGE_LABELS}, "kind": kind,
                               "acceleration": float(acceleration)})
    return rows, images


class ZeroFilled(nn.Module):
    """The zero-filled reference: RSS of the inverse FFT of the centre frame's masked k-space."""

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: Any = None) -> ReconOutput:
        image = rss(ifft2c(masked_kspace[:, masked_kspace.shape[1] // 2]), dim=1)
        return ReconOutput(image, image.new_zeros(()))


def protocol_indices(dataset: Any) -> list[int]:
    """Example indices of a ``SliceDataset`` that the official protocol scores (order: file, frame, slice)."""
    wanted: dict[int, set[tuple[int, int]]] = {}
    for f, rec in enumerate(dataset.records):
        frames = selected_frames(rec["modality"], rec["num_frames"])
        slices = central_slices(rec["num_slices"], rec["modality"])
        wanted[f] = {(t, z) for t in frames for z in slices}
    out = []
    for i in range(len(dataset)):
        f, z, t = dataset.locate(i)
        if (t, z) in wanted[f]:
            out.append(i)
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Any, device: str | torch.device = "cpu", progress: bool = True,
    max_files: int = 0, files: Container[int] | None = None, batch_size: int = 1,
    accelerations: Sequence[float] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per-file, per-group and per-split official metrics of ``model`` on a ``SliceDataset``
    (fastMRI folders: :func:`evaluate_fastmri` at ``accelerations``). ``max_files``: only the first files;
    ``files``: only these file indices of the dataset; ``batch_size``: images of one file reconstructed per
    forward."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if getattr(dataset, "fmt", "") == "fastmri":  # a row per file and acceleration (default: 4 and 8)
        return evaluate_fastmri(model, dataset, device, progress, max_files, accelerations)

    device = torch.device(device)
    model = model.to(device).eval()
    acs = int(getattr(getattr(dataset, "mask_sampler", None), "acs", 20))
    indices = protocol_indices(dataset)
    if max_files:
        indices = [i for i in indices if dataset.locate(i)[0] < max_files]
    if files is not None:
        indices = [i for i in indices if dataset.locate(i)[0] in files]
    per_file: dict[int, list[dict[str, float]]] = {}
    image_files: list[int] = []
    # consecutive images of one file share a shape: batch them (scores are per image either way)
    chunks: list[list[int]] = []
    for i in indices:
        if chunks and len(chunks[-1]) < batch_size and dataset.locate(chunks[-1][0])[0] == dataset.locate(i)[0]:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    for chunk in tqdm(chunks, desc="eval", disable=not progress, mininterval=10.0, ncols=100):
        f = dataset.locate(chunk[0])[0]
        batch = collate_examples([dataset[i] for i in chunk])
        args, kwargs = model_inputs({k: v.to(device) if isinstance(v, torch.Tensor) else v
                                     for k, v in batch.items()}, acs)
        out = model(*args, **kwargs)
        image, _ = output_parts(out)
        rec = dataset.records[f]  # the file's stored matrix sets the official region (image_shape crops or pads)
        matrix = (rec["readout"], rec["phase"]) if "readout" in rec and "phase" in rec else None
        scores = score_images(batch["target"].to(device).float(), image.float(), matrix=matrix)
        for b in range(len(chunk)):
            row = {k: float(v[b]) for k, v in scores.items()}
            r_eff = example_meta(batch, "r_eff", b, default=None)  # sampled fraction of the centre frame, ACS incl.
            row["r_eff"] = float(r_eff) if r_eff is not None else math.nan
            per_file.setdefault(f, []).append(row)
            image_files.append(f)
    files = []
    for f, rows in sorted(per_file.items()):
        rec = dataset.records[f]
        meta = {k: rec.get(k, "") for k in ("file", "subject", "modality", "centre", "vendor", "pathology", "split")}
        files.append({**meta, "images": len(rows),
                      **{m: sum(r[m] for r in rows) / len(rows) for m in SCORED}})
    if not files:
        raise ValueError("evaluate: the dataset holds no example the protocol scores")
    splits = split_aggregates(files, metrics=SCORED)
    return {"files": files, **group_means(files, metrics=SCORED),
            "splits": [{"split": k, **v} for k, v in splits.items()], "image_files": image_files}


# metrics per file and their means per group and split; r_eff: the mean effective acceleration of the scored images
SCORED = ("ssim", "psnr", "nmse", "r_eff")


def write_tables(results: dict[str, list[dict[str, Any]]], out: str | Path, label: str = "") -> list[Path]:
    """Write ``eval_files``, ``eval_groups``, ``eval_splits`` as CSV and Markdown; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("files", "groups", "splits"):
        rows = [{"model": label, **r} if label else r for r in results[name]]
        table = Table(rows, caption=f"{label} {name}".strip())
        for suffix, text in (("csv", table.to_csv()), ("md", table.to_markdown())):
            path = out / f"eval_{name}.{suffix}"
            path.write_text(text)
            written.append(path)
    return written


class CGSense(nn.Module):
    """The CG-SENSE reference (eq. (1)): low-resolution ACS maps, ``iters`` CG iterations with Tikhonov ``lam``
    on the centre frame; returns the magnitude ``(B, H, W)``."""

    def __init__(self, iters: int = 10, lam: float = 1e-2) -> None:
        super().__init__()
        self.iters, self.lam = int(iters), float(lam)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: Any = None) -> ReconOutput:
        centre = masked_kspace.shape[1] // 2
        kspace, m = masked_kspace[:, centre], mask[:, centre]
        maps = torch.stack([estimate_maps_lowres(kspace[b], m[b]) for b in range(kspace.shape[0])])
        image = cg_sense(kspace, maps, m.unsqueeze(1), self.iters, self.lam).abs()
        return ReconOutput(image, image.new_zeros(()))
