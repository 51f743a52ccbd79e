"""``python -m moero predict``: reconstruct the challenge's undersampled files and write a submission.

For every ``UnderSample_<task>`` file of a CMRxRecon2025 tree (found by the layout index,
:mod:`moero.data.layout`): read ``kus`` and its mask (the ``mask`` key of the same file, else the
matching ``Mask_<task>`` file), reconstruct the images the protocol scores (frames and slices of
:func:`moero.eval.submission.ranking_selection`, each from the window of adjacent frames the model
was trained on, as :class:`moero.data.dataset.SliceDataset` builds it), and write the official
``img4ranking`` file (:mod:`moero.eval.submission`) under
``<out>/<task>/MultiCoil/<Modality>/<Set>/UnderSample_<task>/<Center>/<Vendor>/<Pnnn>/``, then a zip
``<out>/<task>.zip`` of that folder.

Resumable: files already written are skipped (each file is written to a temporary name, then
renamed). A bad input (unreadable, no mask, wrong shape, NaN) is reported, skipped, and the other
files are still written.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.data.dataset import adjacent_frames, is_cyclic
from moero.data.layout import layout_index
from moero.data.readers import DataError, Volume, load_cmrxrecon
from moero.eval.submission import img4ranking, ranking_selection, save_img4ranking
from moero.models.io import model_inputs, output_parts
from moero.train.distributed import resolve_device

__all__ = ["reconstruct_selection", "submission_path", "predict", "zip_folder"]


@torch.no_grad()
def reconstruct_selection(model: nn.Module, volume: Volume, modality: str, frames: int, acs: int,
                          device: torch.device, cyclic: bool = False) -> torch.Tensor:
    """Magnitude images ``(frames kept, slices kept, H, W)`` of an undersampled volume, one model call
    per image on its window of ``frames`` adjacent frames (centre frame = the image's frame)."""
    if volume.mask is None:
        raise DataError(volume.path, "mask", "undersampled file without a mask")
    t, z = volume.kspace.shape[:2]
    keep_t, keep_z = ranking_selection(t, z, modality)
    out = torch.empty(len(keep_t), len(keep_z), *volume.kspace.shape[-2:])
    for a, frame in enumerate(keep_t):
        window = adjacent_frames(frame, frames, t, cyclic)
        mask = volume.mask[window].to(device)
        for b, slc in enumerate(keep_z):
            kspace = volume.kspace[window, slc].to(device)  # (F, C, H, W), zeros where not sampled
            batch = {"masked_kspace": (kspace * mask[:, None]).unsqueeze(0), "mask": mask.unsqueeze(0),
                     "num_low_frequencies": torch.tensor([acs], device=device)}
            args, kwargs = model_inputs(batch, acs)
            image, _ = output_parts(model(*args, **kwargs))
            out[a, b] = image[0].float().cpu()
    return out


def submission_path(out: Path, task: str, rel: str) -> Path:
    """``<out>/<task>/MultiCoil/...`` of an input file ``rel`` (relative to the data root)."""
    parts = Path(rel).parts
    start = parts.index("MultiCoil") if "MultiCoil" in parts else 0
    return out / task / Path(*parts[start:])


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip ``folder`` (entries start with its name) to ``archive`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=archive.name + ".", suffix=".part", dir=archive.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*.mat")):
                zf.write(path, path.relative_to(folder.parent).as_posix())
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive


def predict(
    checkpoint: str | Path | None,
    data_root: str | Path,
    task: str,
    out: str | Path,
    device: str = "auto",
    progress: bool = True,
    model: nn.Module | None = None,
    frames: int | None = None,
    acs: int | None = None,
    make_zip: bool = True,
) -> dict[str, Any]:
    """Write the submission of ``task`` (module docstring). The model is the registry model of
    ``checkpoint`` (:func:`moero.train.runs.load_trained`), or ``model`` with ``frames`` and ``acs``.

    Returns ``{"written", "skipped" (already there), "errors" ([file, message]), "zip"}``.
    """
    from tqdm import tqdm

    data_root, out = Path(data_root), Path(out)
    if model is None:
        if checkpoint is None:
            raise ValueError("predict: give a checkpoint or a model")
        from moero.train.runs import load_trained

        model, config, _ = load_trained(checkpoint)
        frames = frames or int(getattr(model.config, "frames", 1))
        acs = acs if acs is not None else int(config.acs)
    frames, acs = int(frames or 1), int(20 if acs is None else acs)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    rows = [r for r in layout_index(data_root) if r["kind"] == "kus" and r["task"] == task]
    if not rows:
        tasks = sorted({r["task"] for r in layout_index(data_root) if r["kind"] == "kus"})
        raise ValueError(f"predict: no UnderSample_{task} file under {data_root} (tasks found: {tasks})")
    written, skipped, errors = [], [], []
    for row in tqdm(rows, desc=f"predict {task}", disable=not progress, ncols=100):
        target = submission_path(out, task, row["file"])
        if target.is_file():
            skipped.append(str(target))
            continue
        try:
            mask_path = data_root / row["mask_file"] if row["mask_file"] else None
            volume = load_cmrxrecon(data_root / row["file"], mask_path)
            images = reconstruct_selection(model, volume, row["modality"], frames, acs, dev, is_cyclic(row))
        except (DataError, ValueError, OSError) as err:
            message = str(err) if str(data_root / row["file"]) in str(err) else f"{data_root / row['file']}: {err}"
            errors.append([row["file"], message])
            print(f"error: {message}", file=sys.stderr)
            continue
        save_img4ranking(target, img4ranking(images))
        written.append(str(target))
    archive = None
    if make_zip and (out / task).is_dir():
        archive = str(zip_folder(out / task, out / f"{task}.zip"))
    return {"written": written, "skipped": skipped, "errors": errors, "zip": archive}
