"""``python -m moero plot RUN_DIR...``: learning curves of training runs from their ``metrics.jsonl``.

Three panels, one line per run: training loss (``1 - SSIM`` + VQ losses) against the step,
validation SSIM against the step, and training speed (iterations per second, ``1 / step_time_s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moero.train.rundir import read_records

__all__ = ["read_metrics", "plot_runs"]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of ``<run_dir>/metrics.jsonl`` (a path to the file itself works too); errors name the line."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: no metrics.jsonl (is this a run folder written by `moero train`?)")
    return read_records(path)


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, smooth: int = 1) -> Path:
    """Draw loss, validation SSIM and it/s of ``run_dirs`` to the PNG ``out``; ``smooth`` is the width of
    a running mean over training records. Returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("plot: give at least one run folder")
    if smooth < 1:
        raise ValueError(f"plot: smooth must be >= 1, got {smooth}")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for run in run_dirs:
        records = read_metrics(run)
        label = Path(run).name if Path(run).is_dir() else Path(run).parent.name
        train = [r for r in records if r.get("kind") == "train" and math.isfinite(float(r.get("loss", math.nan)))]
        val = [r for r in records if r.get("kind") == "val" and "ssim" in r]
        if train:
            steps = [r["step"] for r in train]
            loss = [float(r["loss"]) for r in train]
            loss = [sum(loss[max(0, i - smooth + 1):i + 1]) / len(loss[max(0, i - smooth + 1):i + 1])
                    for i in range(len(loss))]
            axes[0].plot(steps, loss, label=label)
            speed = [(r["step"], 1.0 / float(r["step_time_s"])) for r in train if float(r.get("step_time_s", 0)) > 0]
            if speed:
                axes[2].plot(*zip(*speed, strict=True), label=label)
        if val:
            axes[1].plot([r["step"] for r in val], [float(r["ssim"]) for r in val], marker="o", label=label)
    for ax, title, ylabel in zip(axes, ("training loss", "validation SSIM", "speed"), ("loss", "SSIM", "it/s"),
                                 strict=True):
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        if ax.lines:
            ax.legend(fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
