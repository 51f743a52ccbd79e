"""fastMRI's evaluation and submission format, for numbers comparable with published fastMRI results.

:func:`evaluate_fastmri` scores a model on a fastMRI folder (``*.h5``: ``kspace`` (slices, coils, H, W),
``reconstruction_rss``) as fastMRI's ``evaluate.py`` does, at each acceleration of the fastMRI challenge
(R 4 with centre fraction 0.08, R 8 with 0.04; :mod:`moero.physics.fastmri_masks`):

* masks: fastMRI's own (``fastmri_random`` unless the run trained on ``fastmri_equispaced``), one per
  file and acceleration, seeded as fastMRI seeds its validation masks, by the file name
  (``tuple(map(ord, name))``), the same mask for every slice of the file (a dataset without a mask
  sampler, asked for no acceleration, is scored as it comes: one row per file);
* every slice is scored; the target is the file's ``reconstruction_rss`` when it has one (else the RSS
  of the fully sampled k-space, centre-cropped to 320 x 320 or less), the reconstruction is
  centre-cropped to the target's size; the data range is the maximum of the whole target volume;
  SSIM (7x7 uniform window, as scikit-image) is the mean over slices, PSNR and NMSE are taken over the
  whole volume;
* tables: ``files`` (one row per file and acceleration), ``groups`` (the mean per acceleration, as the
  fastMRI leaderboard reports them), ``overall`` and ``splits`` (``total`` and one row ``R<r>`` per
  acceleration).

:func:`save_reconstruction` writes the leaderboard's format: ``reconstructions/<file>.h5`` holding
``reconstruction``, float32 ``(slices, 320, 320)`` (:func:`leaderboard_crop`: centre crop, or zero
padding of a smaller image).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from moero.eval.metrics import center_crop, group_means, ssim
from moero.models.io import collate_examples, model_inputs, output_parts
from moero.physics.fastmri_masks import FASTMRI_ACCELERATIONS, FASTMRI_KINDS, fastmri_mask, low_frequencies
from moero.physics.sense import apply_mask

__all__ = ["FASTMRI_CROP", "RECONSTRUCTION_KEY", "fastmri_seed", "leaderboard_crop", "evaluate_fastmri",
           "save_reconstruction"]

FASTMRI_CROP = (320, 320)
RECONSTRUCTION_KEY = "reconstruction"
METRICS = ("ssim", "psnr", "nmse")


def fastmri_seed(name: str) -> tuple[int, ...]:
    """fastMRI's mask seed for a file: the code points of its name."""
    return tuple(map(ord, name))


def leaderboard_crop(images: torch.Tensor, size: tuple[int, int] = FASTMRI_CROP) -> torch.Tensor:
    """``(..., H, W)`` images centre-cropped to ``size`` (zero-padded where smaller)."""
    h, w = images.shape[-2:]
    pad_h, pad_w = max(size[0] - h, 0), max(size[1] - w, 0)
    if pad_h or pad_w:
        images = torch.nn.functional.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return center_crop(images, size)


def _targets(path: str | Path) -> torch.Tensor | None:
    """The file's ``reconstruction_rss`` (slices, 320, 320) as float64, or None when it has none."""
    import h5py

    with h5py.File(path, "r") as f:
        return torch.from_numpy(f["reconstruction_rss"][()]).double() if "reconstruction_rss" in f else None


def _kind(dataset: Any) -> str:
    kinds = tuple(getattr(getattr(dataset, "mask_sampler", None), "kinds", ()))
    return next((k for k in kinds if k in FASTMRI_KINDS), "fastmri_random")


@torch.no_grad()
def evaluate_fastmri(
    model: nn.Module, dataset: Any, device: str | torch.device = "cpu", progress: bool = True, max_files: int = 0,
    accelerations: Sequence[float] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Score ``model`` on a fastMRI ``SliceDataset`` at each of ``accelerations`` (default 4 and 8) by
    fastMRI's conventions (module docstring)."""
    device = torch.device(device)
    model = model.to(device).eval()
    kind = _kind(dataset)
    unmasked = not accelerations and getattr(dataset, "mask_sampler", None) is None  # score what the dataset gives
    accelerations = (1.0,) if unmasked else tuple(float(a) for a in (accelerations or FASTMRI_ACCELERATIONS))
    indices = [i for i in range(len(dataset)) if not max_files or dataset.locate(i)[0] < max_files]
    targets: dict[int, torch.Tensor | None] = {}
    pairs: dict[tuple[int, float], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for i in tqdm(indices, desc="eval fastMRI", disable=not progress, mininterval=10.0, ncols=100):
        f, z, _ = dataset.locate(i)
        rec = dataset.records[f]
        if f not in targets:
            targets[f] = _targets(rec["path"])
        example = dataset[i]
        kspace = example["kspace"]  # (F, C, H, W), fully sampled
        for r in accelerations:
            if unmasked:
                mask, acs = example["mask"], int(kspace.shape[-1])
            else:
                shape = (kspace.shape[0], *kspace.shape[-2:])
                mask = fastmri_mask(kind, shape, r, fastmri_seed(Path(rec["file"]).name))
                acs = low_frequencies(int(kspace.shape[-1]), r)
            batch = collate_examples([{"masked_kspace": apply_mask(kspace, mask), "mask": mask}])
            args, _ = model_inputs({k: v.to(device) for k, v in batch.items()}, acs)
            image = output_parts(model(*args, num_low_frequencies=torch.tensor([acs], device=device)))[0][0]
            stored = targets[f]
            if stored is not None:
                target = stored[z]
            else:
                target = example["target"].double()
                target = center_crop(target, tuple(min(c, n) for c, n in zip(FASTMRI_CROP, target.shape, strict=True)))
            pairs.setdefault((f, r), []).append((target, center_crop(image.double().cpu(), tuple(target.shape))))
    files = []
    for (f, r), rows in sorted(pairs.items()):
        gt = torch.stack([t for t, _ in rows])
        pred = torch.stack([p for _, p in rows])
        maxval = gt.max()
        mse = (gt - pred).pow(2).mean()
        rec = dataset.records[f]
        labels = ("file", "subject", "modality", "centre", "vendor", "pathology", "split")
        files.append({**{k: rec.get(k, "") for k in labels}, "acceleration": r, "mask": "none" if unmasked else kind,
                      "images": len(rows), "ssim": float(ssim(gt, pred, maxval).mean()),
                      "psnr": float(10 * torch.log10(maxval**2 / mse)),
                      "nmse": float((gt - pred).pow(2).sum() / gt.pow(2).sum())})
    if not files:
        raise ValueError("evaluate: the fastMRI folder holds no slice")
    tables = group_means(files, ("acceleration",), METRICS)

    def mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"files": len({x["file"] for x in rows}), "rows": len(rows),
                **{m: sum(x[m] for x in rows) / len(rows) if rows else math.nan for m in METRICS}}

    splits = [{"split": "total", **mean(files)}]
    if not unmasked:
        splits += [{"split": f"R{r:g}", **mean([x for x in files if x["acceleration"] == r])} for r in accelerations]
    return {"files": files, **tables, "splits": splits}


def save_reconstruction(path: str | Path, images: torch.Tensor | np.ndarray) -> Path:
    """Write ``{"reconstruction": images}`` (float32 ``(slices, H, W)``) as an HDF5 file, atomically."""
    import h5py

    path = Path(path)
    array = np.asarray(images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images, np.float32)
    if array.ndim != 3:
        raise ValueError(f"save_reconstruction: images must be (slices, H, W), got {array.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(RECONSTRUCTION_KEY, data=array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
