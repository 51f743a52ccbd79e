"""``python -m moero predict --data <fastMRI folder>``: fastMRI's leaderboard submission.

For every ``*.h5`` file of a fastMRI folder: its ``kspace`` (slices, coils, H, W) undersampled by the
file's own ``mask`` (fastMRI's test and challenge files carry one), or, for a fully sampled file (a
validation file, to rehearse), by fastMRI's mask of ``kind`` at ``acceleration`` seeded by the file
name (:func:`moero.eval.fastmri.fastmri_seed`); every slice is reconstructed, and
``<out>/reconstructions/<file>.h5`` holds ``reconstruction``, float32 ``(slices, 320, 320)``
(:func:`moero.eval.fastmri.leaderboard_crop`), as fastMRI's ``save_reconstructions`` writes it and the
leaderboard expects. Files are written atomically; a bad input is reported and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from moero.data.dataset import adjacent_frames
from moero.data.readers import DataError, load_fastmri
from moero.eval.fastmri import fastmri_seed, leaderboard_crop, save_reconstruction
from moero.models.io import model_inputs, output_parts
from moero.physics.fastmri_masks import fastmri_mask, low_frequencies
from moero.train.distributed import resolve_device
from moero.train.runs import model_to_predict

__all__ = ["is_fastmri_folder", "predict_fastmri"]


def is_fastmri_folder(root: str | Path) -> bool:
    """A folder of fastMRI ``*.h5`` files (and no CMRxRecon ``MultiCoil`` tree)."""
    root = Path(root)
    return root.is_dir() and not (root / "MultiCoil").is_dir() and any(root.glob("*.h5"))


@torch.no_grad()
def predict_fastmri(checkpoint: str | Path | None, data_root: str | Path, out: str | Path, device: str = "auto",
                    progress: bool = True, model: nn.Module | None = None, frames: int | None = None,
                    kind: str = "fastmri_random", acceleration: float = 4.0) -> dict[str, Any]:
    """Write ``<out>/reconstructions/<file>.h5`` for every ``*.h5`` of ``data_root`` (module docstring).
    Returns ``{"written", "errors" ([file, message]), "masked" (files without a mask of their own)}``."""
    data_root, out = Path(data_root), Path(out)
    model, _, frames = model_to_predict(checkpoint, model, frames)
    files = sorted(data_root.glob("*.h5"))
    if not files:
        raise ValueError(f"predict: no fastMRI .h5 file in {data_root}")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    window = adjacent_frames(0, int(frames or 1), 1, False)  # one frame, repeated to the model's window
    written, errors, masked = [], [], []
    for path in tqdm(files, desc="predict fastMRI", disable=not progress, ncols=100):
        try:
            volume = load_fastmri(path)
            kspace = volume.kspace[0]  # (slices, C, H, W)
            mask = volume.mask
            if mask is None:
                mask = fastmri_mask(kind, (1, *kspace.shape[-2:]), acceleration, fastmri_seed(path.name))
                masked.append(path.name)
            acs = low_frequencies(int(kspace.shape[-1]), acceleration)
            images = []
            for z in range(kspace.shape[0]):
                m = mask[window].to(dev)
                k = volume.kspace[window, z].to(dev)  # (F, C, H, W)
                batch = {"masked_kspace": (k * m[:, None]).unsqueeze(0), "mask": m.unsqueeze(0),
                         "num_low_frequencies": torch.tensor([acs], device=dev)}
                args, kwargs = model_inputs(batch, acs)
                images.append(output_parts(model(*args, **kwargs))[0][0].float().cpu())
        except (DataError, ValueError, OSError) as err:
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            errors.append([path.name, message])
            print(f"error: {message}", file=sys.stderr)
            continue
        target = out / "reconstructions" / path.name
        save_reconstruction(target, leaderboard_crop(torch.stack(images)))
        written.append(str(target))
    return {"written": written, "errors": errors, "masked": masked}
