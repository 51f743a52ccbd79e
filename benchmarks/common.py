"""Timing helpers shared by the benchmarks: median wall time over repeats, peak memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from moero.train.efficiency import peak_memory  # noqa: F401  (one implementation: the package's)


def sync(device: torch.device | str | None = None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], repeat: int = 20, warmup: int = 3, device: Any = None) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_ratio(
    target: Callable[[], Any], reference: Callable[[], Any], rounds: int = 5, repeat: int = 5, device: Any = None
) -> tuple[float, float, float]:
    """(target s, reference s, ratio) from alternating rounds, so drift hits both alike."""
    t_times, r_times = [], []
    target(), reference()
    for _ in range(rounds):
        t_times.append(median_time(target, repeat, 1, device))
        r_times.append(median_time(reference, repeat, 1, device))
    t, r = statistics.median(t_times), statistics.median(r_times)
    return t, r, t / r


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    print(f"\n## {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols]
        print("| " + " | ".join(cells) + " |")
