"""What a run's logs recorded (chapters 06-09): training losses, validation, routes, segment speed and memory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from moero.book.runspec import MissingResultError
from moero.train.trainer import LOG_NAME, ROUTES_NAME

__all__ = ["SEGMENTS_NAME", "read_jsonl", "append_json", "learning_curves", "route_history", "read_segments",
           "segment_speed", "segment_peak_memory"]

SEGMENTS_NAME = "segments.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_json(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def learning_curves(run_dir: str | Path, smooth: int = 1) -> dict[str, list[tuple[int, float]]]:
    """``{"loss": [(step, loss)], "val_ssim": [(step, ssim)]}`` from a run's ``metrics.jsonl`` (training loss
    as a running mean over ``smooth`` steps; validation as the trainer logged it)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise MissingResultError(f"metrics log {path} does not exist: the run has not been trained")
    records = read_jsonl(path)
    train = sorted({r["step"]: r["loss"] for r in records if r.get("kind") == "train"}.items())
    losses = [v for _, v in train]
    smooth = max(1, int(smooth))
    smoothed = [sum(losses[max(0, i - smooth + 1) : i + 1]) / len(losses[max(0, i - smooth + 1) : i + 1])
                for i in range(len(losses))]
    val = sorted({r["step"]: r["ssim"] for r in records if r.get("kind") == "val"}.items())
    return {"loss": [(s, v) for (s, _), v in zip(train, smoothed, strict=True)], "val_ssim": val}


def route_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Moero's route counts per cascade after each logged step (``routing.jsonl``; the last record of a step
    wins, so a resumed run's replayed steps count once)."""
    by_step = {r["step"]: r for r in read_jsonl(Path(run_dir) / ROUTES_NAME)}
    return [by_step[s] for s in sorted(by_step)]


def read_segments(run_dir: str | Path) -> list[dict[str, Any]]:
    """The training segments' summaries of a run (``segments.jsonl``: steps, iterations/s, peak memory)."""
    return read_jsonl(Path(run_dir) / SEGMENTS_NAME)


def segment_speed(run_dir: str | Path) -> float:
    """Iterations/s of a run's training, weighted over its segments (NaN without a record)."""
    segs = [s for s in read_jsonl(Path(run_dir) / SEGMENTS_NAME) if s.get("steps_this_run")]
    steps = sum(s["steps_this_run"] for s in segs)
    time_s = sum(s["steps_this_run"] / s["iterations_per_s"] for s in segs if s["iterations_per_s"] > 0)
    return steps / time_s if time_s > 0 else math.nan


def segment_peak_memory(run_dir: str | Path) -> float:
    """Largest peak memory (bytes) any training segment of the run reported (NaN without a record)."""
    peaks = [s["peak_memory_bytes"] for s in read_jsonl(Path(run_dir) / SEGMENTS_NAME) if "peak_memory_bytes" in s]
    return float(max(peaks)) if peaks else math.nan
