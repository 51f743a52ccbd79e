"""The one engine that scores a trained model by the official CMRxRecon2025 protocol.

``python -m moero eval`` (:func:`moero.train.runs.evaluate_checkpoint`) and the book's chapters
(:mod:`moero.book.evaluation`) both call :func:`score_model`, so a checkpoint gets the same per-file
scores from either. The :class:`Protocol` says how the test files are undersampled:

* ``Protocol.test_grid()``: every file at every test acceleration (R 8/16/24), the mask kind assigned by
  a Latin square (:func:`moero.eval.evaluate.latin_kind`);
* ``Protocol.drawn()``: one mask per scored image drawn from the run's training kinds and accelerations.

One seed rule: the masks are drawn with ``Protocol.seed`` (:data:`EVAL_SEED` by default), never with the
run's training seed, so every model, seed and reference is scored on the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.data.dataset import SliceDataset
from moero.eval.evaluate import IMAGE_LABELS, SCORED, TEST_ACCELERATIONS, evaluate, evaluate_grid
from moero.eval.metrics import group_means, split_aggregates
from moero.physics.masks import MaskSampler
from moero.train.config import TrainConfig

__all__ = ["EVAL_SEED", "EVAL_BATCH", "Protocol", "RouteRecorder", "protocol_dataset", "score_model"]

EVAL_SEED = 2  # seed of every evaluation's masks: the same files, kinds, accelerations and masks for all models
EVAL_BATCH = 8  # images of one file per forward at evaluation (scores are per image)


@dataclass(frozen=True)
class Protocol:
    """How the scored files are undersampled and which of them are scored.

    ``accelerations``: the test grid's accelerations (empty: one mask per image drawn from the config's
    kinds and accelerations); ``seed``: of every mask; ``files_per_split``: at most this many files per
    split (0: all); ``shape``: images resized to ``(H, W)`` (None: native); ``batch_size``: images of one
    file per forward; ``centres``: a centre-role CSV that sets the splits of a tree's layout."""

    accelerations: tuple[float, ...] = ()
    seed: int = EVAL_SEED
    files_per_split: int = 0
    shape: tuple[int, int] | None = None
    batch_size: int = EVAL_BATCH
    centres: str | None = None

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"evaluation seed must be >= 0, got {self.seed}")
        if self.files_per_split < 0:
            raise ValueError(f"files per split must be >= 0 (0: all), got {self.files_per_split}")
        if any(float(a) < 1 for a in self.accelerations):
            raise ValueError(f"test accelerations must be >= 1, got {list(self.accelerations)}")

    @property
    def grid(self) -> bool:
        return bool(self.accelerations)

    @classmethod
    def test_grid(cls, accelerations: Sequence[float] = TEST_ACCELERATIONS, **kw: Any) -> Protocol:
        return cls(accelerations=tuple(float(a) for a in accelerations), **kw)

    @classmethod
    def drawn(cls, **kw: Any) -> Protocol:
        return cls(accelerations=(), **kw)

    def tag(self) -> str:
        """A file-name fragment naming the protocol (the book's evaluation caches)."""
        shape = "x".join(str(int(n)) for n in self.shape or ()) or "native"
        design = "grid-" + "-".join(f"{a:g}" for a in self.accelerations) if self.grid else "drawn"
        seed = "" if self.seed == EVAL_SEED else f"-seed{self.seed}"
        return f"{self.files_per_split}-{shape}-{design}{seed}"


class RouteRecorder(nn.Module):
    """Runs a model and keeps the routes of every call (Moero) and the histograms they were chosen on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)
        self.routes: list[list[int]] = []
        self.histograms: list[list[list[float]]] = []  # per image, per cascade: the histogram it was routed on

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: Any = None) -> Any:
        out = self.model(masked_kspace, mask, num_low_frequencies)
        routes = getattr(out, "routes", None)
        if routes is not None:  # (cascades, B): one row of experts per sample
            self.routes += [[int(r) for r in routes[:, b]] for b in range(routes.shape[1])]
            hists = getattr(out, "histograms", [])[: routes.shape[0]]  # cascade k routes on histograms[k]
            self.histograms += [[[round(float(v), 6) for v in h[b]] for h in hists] for b in range(routes.shape[1])]
        return out


def protocol_dataset(config: TrainConfig, frames: int, root: Path, split: str, protocol: Protocol,
                     kinds: Sequence[str], accelerations: Sequence[float],
                     modalities: Sequence[str] | None = None) -> SliceDataset:
    """The ``split`` of ``root`` with masks of ``kinds`` x ``accelerations`` drawn with the protocol's seed,
    images at its shape: what :func:`score_model` reconstructs (and the book's galleries show)."""
    masks = MaskSampler(kinds=tuple(kinds), accelerations=tuple(accelerations), acs=config.acs)
    return SliceDataset(root, split=split, frames=frames, mask_sampler=masks, seed=protocol.seed,
                        shape=tuple(protocol.shape) if protocol.shape else None,
                        modalities=list(modalities) if modalities else None, centres=protocol.centres)


def score_model(model: nn.Module, config: TrainConfig, root: str | Path, splits: Sequence[str],
                protocol: Protocol, frames: int | None = None, device: str | torch.device = "cpu",
                modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """Official metrics of ``model`` on ``splits`` of the tree ``root`` under ``protocol``.

    ``frames``: adjacent frames per example (default: the model's own, else 1). Returns ``{"files"`` (per
    file, with ``kind`` and ``acceleration`` on the grid), ``"splits"`` (``{"total"|"rare"|"fresh": {"files",
    "ssim", "psnr", "nmse", "r_eff"}}``), ``"groups"``/``"overall"`` (means per centre and vendor),
    ``"routes"``, ``"histograms"`` (Moero: per scored image) and ``"labels"`` (of every scored image)}``."""
    root = Path(root)
    if frames is None:
        frames = int(getattr(getattr(model, "config", None), "frames", 1) or 1)
    kinds = tuple(config.mask_kinds)
    recorder = RouteRecorder(model)
    files: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for split in splits:
        probe = protocol_dataset(config, frames, root, split, protocol, kinds, config.accelerations, modalities)
        if not len(probe):
            continue
        if protocol.grid:
            def make(kind: str, acceleration: float, split: str = split) -> SliceDataset:
                return protocol_dataset(config, frames, root, split, protocol, (kind,), (acceleration,), modalities)

            rows, images = evaluate_grid(recorder, make, protocol.accelerations, kinds, device=device,
                                         max_files=protocol.files_per_split, batch_size=protocol.batch_size)
        else:
            res = evaluate(recorder, probe, device, progress=False, max_files=protocol.files_per_split,
                           batch_size=protocol.batch_size)
            rows = res["files"]
            images = [{k: str(probe.records[f].get(k, "")) for k in IMAGE_LABELS} for f in res["image_files"]]
        files += rows
        labels += images
    if not files:
        raise ValueError(f"no examples of splits {list(splits)} under {root}")
    return {"files": files, "splits": split_aggregates(files, metrics=SCORED),
            **group_means(files, metrics=SCORED), "routes": recorder.routes,
            "histograms": recorder.histograms, "labels": labels}
