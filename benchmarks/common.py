"""Timing helpers shared by the benchmarks: median wall time over repeats, peak memory."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import torch


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


def peak_memory(fn: Callable[[], Any], device: Any = None) -> int:
    """Peak bytes allocated while ``fn`` runs: CUDA allocator on GPU, tracemalloc-free RSS proxy on CPU.

    On CPU, torch allocations are not seen by tracemalloc, so we use the CPU allocator's profiler
    when available and fall back to tracemalloc (Python objects only) otherwise.
    """
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.events()
    # running sum of allocations/frees in time order gives the peak of live bytes
    live = peak = 0
    for ev in sorted(events, key=lambda e: e.time_range.start):
        live += ev.cpu_memory_usage
        peak = max(peak, live)
    if peak == 0:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return int(peak)


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
