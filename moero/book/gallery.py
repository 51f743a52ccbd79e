"""Reconstructions you can see (chapters 06-08): test images reconstructed by every method on the
evaluation grid's own masks, with absolute-error maps and the per-image SSIM of the official protocol.

The images are those :func:`moero.train.scoring.score_model` scores (same files, masks, seeds and
shapes), reconstructed again from the trained snapshots: no extra training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.eval.evaluate import latin_kind, protocol_indices
from moero.eval.metrics import center_crop, score_images
from moero.models.io import collate_examples, model_inputs, output_parts
from moero.train.config import TrainConfig
from moero.train.scoring import Protocol, protocol_dataset

__all__ = ["pick_files", "reconstruct_grid", "plot_gallery", "trained_gallery"]

ERROR_GAIN = 5  # |error| maps are shown x5 on the target's grey scale


def pick_files(config: TrainConfig, root: str | Path, split: str, protocol: Protocol, count: int) -> list[int]:
    """Indices of ``count`` files of ``split`` with different (modality, view), in file order."""
    probe = protocol_dataset(config, 1, Path(root), split, protocol, tuple(config.mask_kinds), config.accelerations)
    chosen, seen = [], set()
    limit = protocol.files_per_split or len(probe.records)
    for f, rec in enumerate(probe.records[:limit]):
        key = (rec.get("modality"), rec.get("view"))
        if key not in seen:
            seen.add(key)
            chosen.append(f)
        if len(chosen) == count:
            break
    return chosen


@torch.no_grad()
def reconstruct_grid(models: Mapping[str, nn.Module], config: TrainConfig, root: str | Path, split: str,
                     protocol: Protocol, files: Sequence[int], device: str | torch.device = "cpu"
                     ) -> list[dict[str, Any]]:
    """For each file of ``files`` and test acceleration: the target and every model's reconstruction of the
    file's first scored image, under the grid's mask (kind by :func:`latin_kind`), with per-image SSIM.

    Returns rows ``{"file", "label", "acceleration", "kind", "target", "images": {name: image},
    "ssim": {name: value}}`` (images at the protocol's shape; the SSIM over the official scored region)."""
    kinds = tuple(config.mask_kinds)
    rows = []
    for f in files:
        for j, acceleration in enumerate(protocol.accelerations):
            kind = latin_kind(f, j, kinds)
            target, images, ssims, label = None, {}, {}, ""
            for name, model in models.items():
                frames = int(getattr(getattr(model, "config", None), "frames", 1) or 1)
                ds = protocol_dataset(config, frames, Path(root), split, protocol, (kind,), (acceleration,))
                index = next(i for i in protocol_indices(ds) if ds.locate(i)[0] == f)
                batch = collate_examples([ds[index]])
                args, kwargs = model_inputs({k: v.to(device) if isinstance(v, torch.Tensor) else v
                                             for k, v in batch.items()}, config.acs)
                image = output_parts(model.to(device).eval()(*args, **kwargs))[0].float().cpu()
                rec = ds.records[f]
                matrix = (rec["readout"], rec["phase"]) if "readout" in rec and "phase" in rec else None
                ref = batch["target"].float()
                ssims[name] = float(score_images(ref, image, matrix=matrix)["ssim"][0])
                images[name] = image[0]
                target = ref[0]
                label = f"{rec.get('modality', '')} {rec.get('view', '')}".strip()
            rows.append({"file": f, "label": label, "acceleration": float(acceleration), "kind": kind,
                         "target": target, "images": images, "ssim": ssims})
    return rows


def plot_gallery(rows: Sequence[Mapping[str, Any]], crop: Sequence[int] | None = None) -> Any:
    """One figure: per row of :func:`reconstruct_grid`, the target and each reconstruction (top) with its
    absolute error x5 (bottom), SSIM in each title. ``crop``: show the central ``(H, W)`` only."""
    import matplotlib.pyplot as plt

    names = list(rows[0]["images"])
    cols = 1 + len(names)
    # ~1.65 in per panel, 12 pt titles: at the page's width (about 7 in) they read at about 9 pt
    fig, axes = plt.subplots(2 * len(rows), cols, figsize=(1.65 * cols, 3.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        target = row["target"]
        show = (lambda x: center_crop(x, tuple(crop))) if crop else (lambda x: x)
        vmax = float(target.max())
        ax = axes[2 * r, 0]
        ax.imshow(show(target).numpy(), cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(f"target, R={row['acceleration']:g}\n{row['kind']}", fontsize=12)
        axes[2 * r + 1, 0].text(0.5, 0.5, f"{row['label']}\n\n|error| x{ERROR_GAIN}", ha="center", va="center",
                                fontsize=12,
                                transform=axes[2 * r + 1, 0].transAxes)
        for c, name in enumerate(names, start=1):
            image = row["images"][name]
            axes[2 * r, c].imshow(show(image).numpy(), cmap="gray", vmin=0, vmax=vmax)
            axes[2 * r, c].set_title(f"{name}\nSSIM {row['ssim'][name]:.3f}", fontsize=12)
            axes[2 * r + 1, c].imshow(show((image - target).abs() * ERROR_GAIN).numpy(), cmap="inferno", vmin=0,
                                      vmax=vmax)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def trained_gallery(params: dict[str, Any], profile: str, root: str | Path, models: Mapping[str, str], budget: int,
                    references: Mapping[str, Mapping[str, Any]], device: str | torch.device = "cpu",
                    files: int | None = None) -> list[dict[str, Any]]:
    """:func:`reconstruct_grid` of zero filling, CG-SENSE (its Tikhonov weight chosen on validation, from
    ``references``) and the first seed's snapshot ``budget`` of every run of ``models`` (run name -> label), on
    ``files`` test files of different contrasts and views (default: the profile's ``gallery_files``, else 2)."""
    from moero.book.evaluation import load_model, protocol
    from moero.book.results import run_folders
    from moero.eval.evaluate import CGSense, ZeroFilled

    shown: dict[str, nn.Module] = {"zero-filled": ZeroFilled(),
                                   "CG-SENSE": CGSense(params["cg"].get("iters", 10), references["CG-SENSE"]["lam"])}
    config = None
    for name, label in models.items():
        shown[label], config, _ = load_model(run_folders(params, profile, name)[0], budget)
    if config is None:
        raise ValueError("trained_gallery: no trained model to show")
    grid = protocol(params, grid=True)
    picked = pick_files(config, root, "test-total", grid, int(files or params.get("gallery_files", 2)))
    return reconstruct_grid(shown, config, root, "test-total", grid, picked, device=device)
