"""Moero training speed and memory against the 4-cascade baseline (issue 8, reference section 3).

Per-iteration time of a full training step (forward, backward, synchronisation, AdamW) of Moero with
4 cascades x K experts (K = 2, 4) over the PromptMR+ baseline with 4 cascades, same inputs (batch 1
per process, as the paper), measured in interleaved rounds so that load drift hits all alike:

* single process;
* 2-process DDP (gloo on CPU, nccl on GPU): ours (experts outside DDP's reducer, one all-reduce per
  step in ``Moero.after_backward``) and the paper's way (``find_unused_parameters=True``).

``vs <baseline>`` is the baseline's time over the model's in the same round: the median over rounds
(at least 7 interleaved rounds) with a bootstrap interval, i.e. the model's iterations/s relative to the
baseline (goal >= 0.95, met when the interval's lower end clears it). One thread per process in
both settings. Two baselines: ``promptmr`` (the paper's baseline, no VQ) and
``vq-prompt`` (VQ-Prompt, what Moero adds branches to). Peak memory: the largest live bytes
allocated during one training step (CUDA allocator on GPU, the CPU allocator's profiler on CPU) and,
beside it, the static bytes of parameters + AdamW state.

Run: ``python -m benchmarks bench_moero`` (``MOERO_BENCH_SIZE=HxW``, ``MOERO_BENCH_ROUNDS`` to change). The
smoke size: ``tiny`` preset, 2 cascades x 2 experts, 32 x 24, one round.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from benchmarks.common import DEFAULT_PAIRS, Ratio, peak_memory
from moero.train.distributed import free_port
from moero.train.efficiency import FIND_UNUSED, build_model, interleaved_times, phantom_batch, training_step

TITLE = "Moero 4 cascades x K experts vs the 4-cascade baseline: training iterations/s and memory"
EXPERTS = (2, 4)
CASCADES = 4
PRESET = "small"
WARMUP = 4  # steps before timing: allocator, AdamW state, and the routing centres get fitted
SMOKE = {"MOERO_BENCH_SIZE": "32x24", "MOERO_BENCH_ROUNDS": "1", "MOERO_BENCH_SMOKE": "1"}


def _smoke() -> bool:
    return os.environ.get("MOERO_BENCH_SMOKE") == "1"


def _size() -> tuple[int, int]:
    h, w = os.environ.get("MOERO_BENCH_SIZE", "128x96").lower().split("x")
    return int(h), int(w)


def _rounds() -> int:
    return int(os.environ.get("MOERO_BENCH_ROUNDS", str(DEFAULT_PAIRS)))


def _grid() -> tuple[str, int, tuple[int, ...], int]:
    """Preset, cascades, expert counts and warm-up steps (smaller at the smoke size)."""
    return ("tiny", 2, (2,), 1) if _smoke() else (PRESET, CASCADES, EXPERTS, WARMUP)


def scan(seed: int, device: torch.device, frames: int = 3, coils: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """One undersampled phantom scan ``(1, F, C, H, W)`` and its mask (x4 with a 12-line ACS block)."""
    return phantom_batch(_size(), frames, coils, seed, device)


def build(name: str, device: torch.device) -> torch.nn.Module:
    """A registry model of the ``small`` preset with ``CASCADES`` cascades (``moero-CxK:find_unused``: the paper's
    DDP way); Moero's centres are fitted during the warm-up steps (steady-state routing)."""
    preset, cascades, _, _ = _grid()
    return build_model(name, preset, cascades=cascades, device=device)


def step_fn(model: torch.nn.Module, core: torch.nn.Module, kspace: torch.Tensor,
            mask: torch.Tensor) -> Callable[[], None]:
    """One training step; the synchronisation is the model's own (Moero) or sync_vq_modules (baseline)."""
    return training_step(model, core, kspace, mask)


def static_bytes(model: torch.nn.Module) -> int:
    """Parameters, buffers and the two AdamW moments per parameter (held between steps)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * params + sum(b.numel() * b.element_size() for b in model.buffers())


def _ratio(times: dict[str, list[float]], ref: str, name: str) -> Ratio:
    """The reference's time over the model's time in the same round (drift cancels): median over rounds
    and bootstrap interval."""
    return Ratio.of([r / t for r, t in zip(times[ref], times[name], strict=True)])


def _ratio_columns(times: dict[str, list[float]], ref: str, name: str) -> dict[str, float]:
    r = _ratio(times, ref, name)
    return {f"vs {ref}": r.median, f"vs {ref} low": r.low, f"vs {ref} high": r.high}


def single_process(device: torch.device) -> list[dict[str, Any]]:
    _, cascades, experts, warmup = _grid()
    names = ["promptmr", "vq-prompt", *(f"moero-{cascades}x{k}" for k in experts)]
    kspace, mask = scan(0, device)
    models = {n: build(n, device) for n in names}
    steps = {n: step_fn(m, m, kspace, mask) for n, m in models.items()}
    for fn in steps.values():  # warm-up: allocator, AdamW state, routing centres fitted
        for _ in range(warmup):
            fn()
    times = interleaved_times(steps, _rounds(), 3, device)
    peaks = {n: peak_memory(fn, device) for n, fn in steps.items()}
    static = {n: static_bytes(m) for n, m in models.items()}
    ref = "vq-prompt"
    rows = []
    for n in names:
        rows.append({
            "setting": "single process", "model": n, "s/it": statistics.median(times[n]),
            **_ratio_columns(times, "promptmr", n), **_ratio_columns(times, ref, n),
            "step peak MiB": peaks[n] / 2**20, "step peak vs vq-prompt": peaks[n] / peaks[ref],
            "params+adam MiB": static[n] / 2**20,
            "total vs vq-prompt": (peaks[n] + static[n]) / (peaks[ref] + static[ref]),
        })
    return rows



def _ddp_worker(rank: int, world: int, port: int, out: str, use_cuda: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if use_cuda:
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    try:
        kspace, mask = scan(rank, device)
        _, cascades, experts, warmup = _grid()
        names = ["promptmr", "vq-prompt"]
        for k in experts:
            names += [f"moero-{cascades}x{k}", f"moero-{cascades}x{k}{FIND_UNUSED}"]
        steps = {}
        for n in names:
            core = build(n, device)
            ignored = core.ddp_ignored_parameters() if hasattr(core, "ddp_ignored_parameters") else []
            if ignored:
                DDP._set_params_and_buffers_to_ignore_for_model(core, ignored)
            wrapped = DDP(core, device_ids=[device] if use_cuda else None, broadcast_buffers=False,
                          find_unused_parameters=n.endswith(FIND_UNUSED))
            steps[n] = step_fn(wrapped, core, kspace, mask)
            for _ in range(warmup):
                steps[n]()
        times = interleaved_times(steps, _rounds(), 3, device, dist.barrier)
        if rank == 0:
            torch.save(times, Path(out) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def ddp(world: int = 2) -> list[dict[str, Any]]:
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_worker, args=(world, free_port(), tmp, use_cuda), nprocs=world, join=True)
        times = torch.load(Path(tmp) / "ddp.pt", weights_only=True)
    backend = "nccl" if use_cuda else "gloo"
    rows = []
    for n, t in times.items():
        rows.append({
            "setting": f"DDP x{world} ({backend})", "model": n,
            "s/it": statistics.median(t), **_ratio_columns(times, "promptmr", n),
            **_ratio_columns(times, "vq-prompt", n),
        })
    return rows


def run(smoke: bool = False) -> list[dict[str, Any]]:
    saved = {k: os.environ.get(k) for k in SMOKE}
    if smoke:
        os.environ.update(SMOKE)  # the DDP workers read the size from the environment too
    try:
        device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
        if device.type == "cpu":
            torch.set_num_threads(1)  # as each DDP rank below: the same compute per process in both settings
        rows = single_process(device)
        rows += ddp(2)
        h, w = _size()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for row in rows:
        row["size"] = f"1x3x4x{h}x{w}"
    return rows
