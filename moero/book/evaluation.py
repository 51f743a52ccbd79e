"""The book's evaluations of trained runs, cached beside each snapshot (chapters 06-09).

Every score comes from the one engine, :func:`moero.train.scoring.score_model` (the same as
``python -m moero eval``): the test splits on the Latin-square test grid (R 8/16/24), the validation
split with masks drawn from the training kinds and accelerations. :func:`reference_rows` scores the
zero-filled and CG-SENSE references on the same grid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.book.runspec import (
    MissingResultError,
    base_root,
    snapshot_path,
    test_accelerations,
)
from moero.eval.evaluate import TEST_SPLITS, CGSense, ZeroFilled
from moero.train.config import TrainConfig
from moero.train.runs import load_trained
from moero.train.scoring import Protocol, score_model
from moero.train.trainer import CHECKPOINT_NAME

__all__ = ["protocol", "load_model", "evaluate_checkpoint", "reference_rows", "validation_curve"]


def load_model(run_dir: str | Path, budget: int | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(model, TrainConfig, checkpoint state)`` of a run's snapshot ``budget`` (None: ``checkpoint.pt``)."""
    run_dir = Path(run_dir)
    path = snapshot_path(run_dir, budget) if budget is not None else run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise MissingResultError(f"checkpoint {path} does not exist: run the training chapter (06) first")
    return load_trained(path)


def protocol(params: dict[str, Any], grid: bool) -> Protocol:
    """The evaluation protocol of a profile: its test grid (``test_accelerations``) or drawn masks, at most
    ``eval_files`` files per split, images at ``eval_shape`` (None: native)."""
    shape = params.get("eval_shape") or None
    kw = {"files_per_split": int(params.get("eval_files", 0)), "shape": tuple(shape) if shape else None}
    return Protocol.test_grid(test_accelerations(params), **kw) if grid else Protocol.drawn(**kw)


def _eval_cache(folder: Path, tag: str, splits: Sequence[str], proto: Protocol) -> Path:
    return folder / f"eval-{tag}-{'+'.join(splits)}-{proto.tag()}.json"


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel workers may write the same cache at once
    tmp.write_text(json.dumps(value, default=float))
    os.replace(tmp, path)


def evaluate_checkpoint(run_dir: str | Path, budget: int | None, params: dict[str, Any],
                        data_root: str | Path | None = None, splits: Sequence[str] = TEST_SPLITS,
                        device: str | torch.device = "cpu", grid: bool | None = None) -> dict[str, Any]:
    """Official-protocol metrics of a run's snapshot on ``splits`` (at most ``eval_files`` files per split,
    images at ``eval_shape`` or native size), cached next to it.

    ``grid`` (default: on for the test splits): every file at every test acceleration (Latin square of mask
    kinds); off: one mask per file drawn from the training kinds and accelerations (the validation curves).
    Returns ``{"files" (with kind and acceleration on the grid), "splits": {"total"|"rare"|"fresh": {"files",
    "ssim", "psnr", "nmse", "r_eff"}}, "routes", "labels"}`` (routes: the first sample's expert per cascade,
    per scored image; Moero only)."""
    run_dir = Path(run_dir)
    grid = tuple(splits) != ("val",) if grid is None else grid
    tag = "final" if budget is None else f"{int(budget):06d}"
    proto = protocol(params, grid)
    cache = _eval_cache(run_dir, tag, splits, proto)
    snap = snapshot_path(run_dir, budget) if budget is not None else run_dir / CHECKPOINT_NAME
    if cache.is_file() and snap.is_file() and cache.stat().st_mtime >= snap.stat().st_mtime:
        return json.loads(cache.read_text())
    model, config, _ = load_model(run_dir, budget)
    base = data_root or base_root(params, None, config.dataset_size)
    res = score_model(model, config, base, splits, proto, frames=int(model.config.frames), device=device)
    _write_json(cache, res)
    return res


def reference_rows(params: dict[str, Any], data_root: str | Path | None, dataset_size: str,
                   splits: Sequence[str] = TEST_SPLITS, device: str | torch.device = "cpu",
                   cache_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Official-protocol metrics of the zero-filled and CG-SENSE reconstructions on the test grid (the same
    files and masks as the models). CG-SENSE's Tikhonov weight is the one of ``cg["lams"]`` (default: its
    ``lam``) with the best SSIM on the validation split (``out["CG-SENSE"]["lam"]``, the sweep in
    ``out["CG-SENSE"]["val_sweep"]``). Cached as ``references-*.json`` in ``cache_dir``."""
    config = TrainConfig.from_dict({**dict(params.get("train", {})), "dataset_size": dataset_size})
    root = data_root or base_root(params, None, dataset_size)
    cg = params.get("cg", {})
    grid, drawn = protocol(params, True), protocol(params, False)
    cache = None
    if cache_dir is not None:
        lams = "-".join(f"{float(lam):g}" for lam in cg.get("lams", [cg.get("lam", 1e-2)]))
        cache = _eval_cache(Path(cache_dir), f"references-cg{int(cg.get('iters', 10))}-lam{lams}", splits, grid)
        if cache.is_file():
            return json.loads(cache.read_text())
    sweep = []
    for lam in cg.get("lams", [cg.get("lam", 1e-2)]):
        val = score_model(CGSense(cg.get("iters", 10), lam), config, root, ("val",), drawn, frames=1, device=device)
        sweep.append({"lam": float(lam), "val_ssim": float(val["splits"]["total"]["ssim"])})
    best = max(sweep, key=lambda r: r["val_ssim"])["lam"]
    out = {"zero-filled": score_model(ZeroFilled(), config, root, splits, grid, frames=1, device=device),
           "CG-SENSE": {**score_model(CGSense(cg.get("iters", 10), best), config, root, splits, grid, frames=1,
                                      device=device), "lam": best, "val_sweep": sweep}}
    if cache is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        _write_json(cache, out)
    return out


def validation_curve(run_dir: str | Path, params: dict[str, Any], data_root: str | Path | None = None,
                     device: str | torch.device = "cpu",
                     budgets: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """``[(budget, SSIM)]`` on the ``val`` split (official protocol) at every snapshot of ``budgets`` (default
    ``curve_budgets``)."""
    out = []
    if budgets is None:
        budgets = params.get("curve_budgets", params.get("budgets", ()))
    for budget in sorted(int(b) for b in budgets):
        res = evaluate_checkpoint(run_dir, budget, params, data_root, splits=("val",), device=device)
        out.append((budget, float(res["splits"]["total"]["ssim"])))
    return out
