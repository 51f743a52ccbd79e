"""Timing helpers shared by the benchmarks: interleaved pairs, the ratio's median with a bootstrap interval,
goals judged by the interval, the allocator's peak memory, and the smoke size every benchmark has.

Method (issue 30): a benchmark times its target against a reference measured in the same run, in
``pairs()`` interleaved pairs (7 by default, ``BENCH_PAIRS`` to change; the order alternates from pair to
pair), at the thread count ``python -m benchmarks`` sets (1 by default). The ratio is the median of the
per-pair ratios with a 95 % bootstrap interval; a goal counts as met only when the whole interval clears it.
At the smoke size (``run(smoke=True)``, what ``make test`` runs) there is one pair of tiny inputs: the
point is that the code runs, not the number.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from moero.train.efficiency import Ratio, machine_note, paired_ratio, peak_memory  # noqa: F401  (the package's)

DEFAULT_PAIRS = 7


def pairs(smoke: bool = False) -> int:
    """Interleaved pairs per ratio: 1 at the smoke size, else ``BENCH_PAIRS`` (default 7, at least 7)."""
    return 1 if smoke else max(DEFAULT_PAIRS, int(os.environ.get("BENCH_PAIRS", DEFAULT_PAIRS)))


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


def interleaved_ratio(target: Callable[[], Any], reference: Callable[[], Any], pairs: int = DEFAULT_PAIRS,
                      repeat: int = 1, device: Any = None, warmup: int = 1) -> tuple[float, float, Ratio]:
    """``(target s, reference s, target / reference as a Ratio)`` from ``pairs`` interleaved pairs."""
    ratio, t, r = paired_ratio(target, reference, pairs, repeat, warmup, device or "cpu")
    return statistics.median(t), statistics.median(r), ratio


def goal_columns(ratio: Ratio, goal: float, higher_is_better: bool, name: str = "ratio") -> dict[str, Any]:
    """Columns of a ratio against its goal: median, interval, the goal, and ``met`` (the interval clears it)."""
    return {name: ratio.median, f"{name} low": ratio.low, f"{name} high": ratio.high,
            "goal": f"{'>=' if higher_is_better else '<='} {goal:g}", "met": ratio.clears(goal, higher_is_better)}


def print_machine(note: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print (and return) the load average and the thread count the timings ran at."""
    note = note or machine_note()
    print(f"load average (1 min) {note['load_avg_1min']}, torch threads {note['threads']}, CPUs {note['cpus']}")
    return note


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
