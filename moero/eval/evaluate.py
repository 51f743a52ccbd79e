"""``python -m moero eval``: score a checkpoint (or the zero-filled baseline) by the official
CMRxRecon2025 protocol and write the result tables (CSV and Markdown) that the results chapters use.

Only the images the protocol scores are reconstructed (central slices, frames by modality); each file
gets the mean over its images, then groups (centre, vendor) and the Tab. 2 splits (total, rare,
fresh) are means over files. Tables: ``eval_files``, ``eval_groups``, ``eval_splits`` in ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.eval.metrics import central_slices, group_means, score_images, selected_frames, split_aggregates

__all__ = ["TEST_SPLITS", "ZeroFilled", "protocol_indices", "evaluate", "write_tables"]

TEST_SPLITS = ("test-total", "rare", "fresh")


class ZeroFilled(nn.Module):
    """The zero-filled reference: RSS of the inverse FFT of the centre frame's masked k-space."""

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from moero.physics.fft import ifft2c
        from moero.physics.sense import rss

        return rss(ifft2c(masked_kspace[:, masked_kspace.shape[1] // 2]), dim=1)


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
    max_files: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Per-file, per-group and per-split official metrics of ``model`` on a ``SliceDataset``."""
    from tqdm import tqdm

    from moero.models.io import collate_examples, model_inputs, output_parts

    device = torch.device(device)
    model = model.to(device).eval()
    acs = int(getattr(getattr(dataset, "mask_sampler", None), "acs", 20))
    indices = protocol_indices(dataset)
    if max_files:
        indices = [i for i in indices if dataset.locate(i)[0] < max_files]
    per_file: dict[int, list[dict[str, float]]] = {}
    for i in tqdm(indices, desc="eval", disable=not progress, mininterval=10.0, ncols=100):
        f = dataset.locate(i)[0]
        batch = collate_examples([dataset[i]])
        args, kwargs = model_inputs(model, {k: v.to(device) if isinstance(v, torch.Tensor) else v
                                            for k, v in batch.items()}, acs)
        out = model(*args, **kwargs)
        image, _ = output_parts(out)
        scores = score_images(batch["target"].to(device).float(), image.float())
        per_file.setdefault(f, []).append({k: float(v[0]) for k, v in scores.items()})
    files = []
    for f, rows in sorted(per_file.items()):
        rec = dataset.records[f]
        meta = {k: rec.get(k, "") for k in ("file", "modality", "centre", "vendor", "pathology", "split")}
        files.append({**meta, "images": len(rows),
                      **{m: sum(r[m] for r in rows) / len(rows) for m in ("ssim", "psnr", "nmse")}})
    if not files:
        raise ValueError("evaluate: the dataset holds no example the protocol scores")
    splits = split_aggregates(files)
    return {"files": files, **group_means(files), "splits": [{"split": k, **v} for k, v in splits.items()]}


def write_tables(results: dict[str, list[dict[str, Any]]], out: str | Path, label: str = "") -> list[Path]:
    """Write ``eval_files``, ``eval_groups``, ``eval_splits`` as CSV and Markdown; returns the paths."""
    from moero.eval.tables import Table

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






