"""Slice-level torch ``Dataset`` over a CMRxRecon2025 tree (real or synthetic) or a fastMRI folder.

Each example is one ``(file, slice, frame)``. It is read lazily (only the window of adjacent frames
of one slice, by h5py slicing) and holds:

* ``kspace``: fully sampled k-space of ``frames`` frames centred on ``frame``, complex64
  ``(F, C, H, W)``. Cine windows wrap around the cardiac cycle (``(t + d) mod T``, as PromptMR+
  does); other time series are clamped at their ends; a file without a time axis repeats its one
  frame;
* ``mask``: bool ``(F, H, W)``, the window's frames of ONE whole-series mask ``(T, H, W)`` drawn by
  ``mask_sampler.sample((T, H, W), seed)`` per ``(file, slice, epoch)`` (seed from
  :func:`series_seed`, independent of rank, worker and order). A repeated frame therefore carries
  the identical mask (no k-space copy is seen under two masks), kt-radial rotates with the frame
  index over the series, and a static file sees one 2-D mask repeated (all ones without a sampler);
* ``masked_kspace``: ``kspace`` times ``mask``; ``target``: float32 ``(H, W)`` RSS image of the centre
  frame of the fully sampled k-space (eq. (1) of the scoring protocol);
* ``num_low_frequencies`` (int, with a sampler): the ACS width the mask was drawn with;
* ``epoch`` (int) and ``meta``: file, slice, frame, frames, centre, vendor, modality, view,
  pathology, split, mask_kind, acceleration, acs and ``r_eff`` (the realised acceleration of the
  centre frame, ACS included: :func:`moero.physics.masks.effective_acceleration`);
  :func:`r_eff_summary` aggregates it per mask kind and nominal R.

Augmentation contract: ``augment(example, generator)`` receives the complete example above (with
the fully sampled ``kspace``, the sampled ``mask`` and the ``target``) and a ``torch.Generator``
seeded from ``(seed, epoch, index)`` (a stream separate from the mask's); the dataset returns
whatever it returns. An augmentation that changes ``kspace`` must recompute ``masked_kspace`` (and
``target`` if it moves the image), as ``moero.augment.DualSpaceAugment`` does.

Bad files raise :class:`moero.data.readers.DataError` (``on_error="raise"``) or are skipped
(``on_error="skip"``): listed in :attr:`SliceDataset.skipped` with the reason and announced by a
warning. Structural problems are found when the index is built; NaN/Inf when a window is read (the
dataset then returns the next readable example).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from moero.data.readers import MANIFEST_NAME, DataError, read_kspace_window, read_manifest, volume_shape
from moero.physics.fft import centred_slice, fft2c, ifft2c
from moero.physics.masks import effective_acceleration
from moero.physics.sense import apply_mask, rss

__all__ = ["SliceDataset", "example_seed", "series_seed", "adjacent_frames", "is_cyclic", "r_eff_summary"]

_SET_SPLIT = {"TrainingSet": "train", "ValidationSet": "val", "TestSet": "test"}


def example_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed from ``(seed, epoch, index, stream)``: independent of rank, worker and order."""
    words = np.random.SeedSequence([int(seed), int(epoch), int(index), int(stream)]).generate_state(2, np.uint32)
    return int(words[0]) << 31 ^ int(words[1])


def series_seed(seed: int, epoch: int, file_index: int, slice_index: int) -> int:
    """Seed of the whole-series mask of ``(file, slice)`` in ``epoch``: one draw shared by all its windows."""
    return example_seed(seed, epoch, int(file_index) * 65536 + int(slice_index), stream=2)


def adjacent_frames(frame: int, count: int, num_frames: int, cyclic: bool = False) -> list[int]:
    """``count`` frame indices centred on ``frame``: ``(frame + d) mod num_frames`` when ``cyclic``
    (a cine cardiac cycle), else clamped to ``[0, num_frames - 1]`` (a static file repeats frame 0)."""
    half = count // 2
    if cyclic:
        return [(frame + d) % num_frames for d in range(-half, count - half)]
    return [min(max(frame + d, 0), num_frames - 1) for d in range(-half, count - half)]


def is_cyclic(record: dict[str, Any]) -> bool:
    """Whether a file's time axis is a cardiac cycle (cine), whose frame windows wrap around."""
    name = Path(str(record.get("file", ""))).stem.lower()
    return str(record.get("modality", "")).lower() == "cine" or name.startswith("cine")


def r_eff_summary(metas: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, min and max centre-frame ``R_eff`` per ``(mask_kind, acceleration)`` of example metadata."""
    groups: dict[tuple[str, float], list[float]] = {}
    for m in metas:
        groups.setdefault((str(m.get("mask_kind", "")), float(m.get("acceleration", 1.0))), []).append(
            float(m["r_eff"]))
    return [{"mask_kind": k, "acceleration": r, "examples": len(v), "r_eff_mean": float(np.mean(v)),
             "r_eff_min": float(np.min(v)), "r_eff_max": float(np.max(v))}
            for (k, r), v in sorted(groups.items())]


def _crop_or_pad(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Centre crop / zero pad the last two axes to ``shape`` (centred-FFT convention: index n//2 stays centre)."""
    h, w = x.shape[-2:]
    out = x.new_zeros((*x.shape[:-2], *shape))
    sh, sw = min(h, shape[0]), min(w, shape[1])
    inner = x[..., centred_slice(h, sh), centred_slice(w, sw)]
    out[..., centred_slice(shape[0], sh), centred_slice(shape[1], sw)] = inner
    return out


def _meta_from_path(path: Path, root: Path) -> dict[str, Any]:
    """Centre, vendor, modality, subject and split from a CMRxRecon path
    ``MultiCoil/<Modality>/<Set>/FullSample/<Center>/<Vendor>/<Pnnn>/<name>.mat``."""
    parts = path.relative_to(root).parts
    meta = {"centre": "", "vendor": "", "modality": "", "subject": "", "view": "", "pathology": "", "split": ""}
    if len(parts) >= 7:
        modality, set_name, _, centre, vendor, subject = parts[-7:-1]
        meta.update(modality=modality, centre=centre, vendor=vendor, subject=f"{centre}/{vendor}/{subject}",
                    split=_SET_SPLIT.get(set_name, set_name))
    stem = path.stem
    meta["view"] = next((v for v in ("lax_2ch", "lax_3ch", "lax_4ch", "sax", "lvot") if v in stem), "")
    return meta


class SliceDataset(Dataset):
    """Examples ``(file, slice, frame)`` of a CMRxRecon tree or a fastMRI folder (see the module docstring).

    Args:
        root: dataset root (with ``manifest.csv`` when synthetic; otherwise the tree is walked for
            ``FullSample`` ``.mat`` files, or ``*.h5`` fastMRI files).
        split: keep only these manifest splits (``"train"``, ``"val"``, ``"test-total"``, ``"rare"``,
            ``"fresh"``, or a sequence of them); None keeps all.
        frames: number of adjacent frames per example (odd; cine wraps around the cycle, other
            series are clamped at the ends).
        mask_sampler: a :class:`moero.physics.masks.MaskSampler` (or anything with ``sample(shape, seed)``).
        augment: optional ``augment(example, generator) -> example``.
        seed: base seed of the mask and augmentation draws.
        on_error: ``"raise"`` or ``"skip"`` bad files.
        modalities: keep only these modality folders (e.g. ``("Cine",)``).
        shape: optional ``(H, W)`` to centre crop / zero pad every image (in image space) for batching.
        fmt: ``"auto"``, ``"cmrxrecon"`` or ``"fastmri"``.
        centres: a centre-role CSV (``moero manifest --centres``): splits from the layout with those roles.
        subjects: keep only these subjects (e.g. a small training set); None: all.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str] | None = None,
        frames: int = 5,
        mask_sampler: Any = None,
        augment: Callable[[dict[str, Any], torch.Generator], dict[str, Any]] | None = None,
        seed: int = 0,
        on_error: str = "raise",
        modalities: Sequence[str] | None = None,
        shape: tuple[int, int] | None = None,
        fmt: str = "auto",
        centres: str | Path | None = None,
        subjects: Sequence[str] | None = None,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be a positive integer, got {frames!r}")
        if fmt not in ("auto", "cmrxrecon", "fastmri"):
            raise ValueError(f"fmt must be 'auto', 'cmrxrecon' or 'fastmri', got {fmt!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root {self.root} is not a directory")
        self.centres = centres
        self.frames = frames
        self.mask_sampler = mask_sampler
        self.augment = augment
        self.seed = int(seed)
        self.on_error = on_error
        self.shape = tuple(shape) if shape is not None else None
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()
        splits = None if split is None else {split} if isinstance(split, str) else set(split)
        wanted = None if subjects is None else {str(x) for x in subjects}
        if fmt == "auto":
            walk_h5 = not (self.root / MANIFEST_NAME).is_file() and any(self.root.glob("*.h5"))
            fmt = "fastmri" if walk_h5 else "cmrxrecon"
        self.fmt = fmt
        candidates = self._candidates()
        self.records: list[dict[str, Any]] = []
        for rec in candidates:
            if splits is not None and rec["split"] not in splits:
                continue
            if modalities is not None and rec["modality"] not in modalities:
                continue
            if wanted is not None and rec["subject"] not in wanted:
                continue
            try:
                key, (t, z, c, h, w) = volume_shape(rec["path"], fmt)
            except DataError as err:
                self._handle(err)
                continue
            rec.update(key=key, num_frames=t, num_slices=z, coils=c, readout=h, phase=w)
            self.records.append(rec)
        counts = [r["num_slices"] * r["num_frames"] for r in self.records]
        self.example_file = np.repeat(np.arange(len(self.records)), counts).astype(np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # ------------------------------------------------------------------ index
    def _candidates(self) -> list[dict[str, Any]]:
        if self.fmt == "fastmri":
            return [
                {"path": p, "file": p.name, "centre": "", "vendor": "", "modality": "fastmri", "subject": p.stem,
                 "view": "", "pathology": "", "split": ""}
                for p in sorted(self.root.glob("*.h5"))
            ]
        try:
            # manifest.csv, else (or with a centre-role table) the layout index of a real CMRxRecon2025 tree
            rows = read_manifest(self.root, self.centres)
        except DataError:
            if (self.root / MANIFEST_NAME).exists():
                raise  # a manifest that cannot be read is an error, never a fallback to every file
            rows = None
        if rows is not None:
            out = []
            for row in rows:
                rec = {k: row.get(k, "") for k in ("centre", "vendor", "modality", "subject", "view", "pathology",
                                                    "split")}
                rec.update(path=self.root / row["file"], file=row["file"])
                out.append(rec)
            return out
        out = []
        for p in sorted(self.root.rglob("*.mat")):
            if "FullSample" not in p.parts:
                continue
            rec = _meta_from_path(p, self.root)
            rec.update(path=p, file=str(p.relative_to(self.root)))
            out.append(rec)
        return out

    def _handle(self, err: DataError) -> None:
        if self.on_error == "raise":
            raise err
        self.skipped.append((err.file, str(err)))
        warnings.warn(f"SliceDataset skipped {err}", stacklevel=3)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Mask draws depend on ``(seed, epoch, file, slice)``, augmentation draws on ``(seed, epoch, index)``;
        call once per epoch."""
        self.epoch = int(epoch)

    def locate(self, index: int) -> tuple[int, int, int]:
        """``(record index, slice, frame)`` of example ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} examples")
        f = int(self.example_file[index])
        local = index - int(self._offsets[f])
        nt = self.records[f]["num_frames"]
        return f, local // nt, local % nt

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            f, z, t = self.locate(i)
            if f in self._bad:
                continue
            try:
                return self._example(i, f, z, t)
            except DataError as err:
                if self.on_error == "raise":
                    raise
                self._bad.add(f)
                self._handle(err)
        raise DataError(self.root, None, "every file of the dataset was skipped as unreadable")

    def _example(self, index: int, f: int, z: int, t: int) -> dict[str, Any]:
        rec = self.records[f]
        window = adjacent_frames(t, self.frames, rec["num_frames"], cyclic=is_cyclic(rec))
        kspace = read_kspace_window(rec["path"], z, window, self.fmt, rec["key"])  # (F, C, H, W)
        if self.shape is not None:
            kspace = fft2c(_crop_or_pad(ifft2c(kspace), self.shape))
        f_count, _, h, w = kspace.shape
        meta = {k: rec[k] for k in ("file", "centre", "vendor", "modality", "view", "pathology", "split")}
        # the stored matrix (readout 2x oversampled, phase encode) sets the official scored region
        meta.update(slice=z, frame=t, frames=window, matrix=(int(rec["readout"]), int(rec["phase"])))
        extra: dict[str, Any] = {}
        if self.mask_sampler is not None:
            # one mask for the whole series of this (file, slice, epoch), indexed by the window
            series, info = self.mask_sampler.sample((rec["num_frames"], h, w), series_seed(self.seed, self.epoch, f, z))
            mask = series.to(torch.bool)[window]
            meta.update(mask_kind=str(info.get("kind", "")), acceleration=float(info.get("acceleration", 1)))
            if "acs" in info:
                meta["acs"] = int(info["acs"])
                extra["num_low_frequencies"] = int(info["acs"])
        else:
            mask = torch.ones((f_count, h, w), dtype=torch.bool)
            meta.update(mask_kind="full", acceleration=1.0)
        meta["r_eff"] = float(effective_acceleration(mask[self.frames // 2]))
        example = {
            "kspace": kspace,
            "mask": mask,
            "masked_kspace": apply_mask(kspace, mask),
            "target": rss(ifft2c(kspace[self.frames // 2])).to(torch.float32),
            "epoch": self.epoch,
            "meta": meta,
            **extra,
        }
        if self.augment is not None:
            gen = torch.Generator().manual_seed(example_seed(self.seed, self.epoch, index, stream=1))
            example = self.augment(example, gen)
        return example

    def file_records(self) -> list[dict[str, Any]]:
        """Per-file metadata (one dict per file kept), in index order; used by the balanced sampler."""
        return [{k: v for k, v in r.items() if k != "path"} for r in self.records]

    def __repr__(self) -> str:
        return (f"SliceDataset(root={str(self.root)!r}, files={len(self.records)}, examples={len(self)}, "
                f"frames={self.frames}, skipped={len(self.skipped)})")
