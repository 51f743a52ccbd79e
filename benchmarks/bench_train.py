"""Training iterations/s and peak memory of PromptMR ``small`` on CPU: one process vs 2-process DDP (gloo).

Every run trains the real pipeline (``SliceDataset`` of the smoke synthetic set, masks drawn per example,
images cropped to one size so that every step costs the same) through :class:`moero.train.Trainer`;
the step time is the median of the per-step times after warm-up; each setting runs in fresh processes,
so the peak memory (process peak RSS) is its own. Rows: one process with 1 and with 2
threads, and 2 DDP ranks with 1 thread each (this machine's 2 cores). ``ddp_over_single`` is the
per-rank step time of DDP over the 1-thread single process (the cost of gradient all-reduce and
contention); each DDP step trains 2 examples, so ``examples_per_s`` compares throughput.
The model is VQ-PromptMR+ (``vq-prompt``). Not interleaved pairs: each setting needs fresh processes
(its own peak RSS, its own thread count), so the rows are medians of separate runs.
Run: ``.venv/bin/python -m benchmarks bench_train`` (env ``BENCH_TRAIN_STEPS``, ``BENCH_TRAIN_PRESET``); the
smoke size trains the ``tiny`` preset for one timed step on 32 x 24 crops.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from moero.train.distributed import free_port

TITLE = "Training step of PromptMR on CPU: single process vs 2-process DDP (gloo)"
WARMUP = 2


SMOKE = {"preset": "tiny", "steps": 1, "image_shape": [32, 24]}
FULL = {"preset": None, "steps": None, "image_shape": [96, 48]}


def _steps() -> int:
    return int(os.environ.get("BENCH_TRAIN_STEPS", "5"))


def _preset() -> str:
    return os.environ.get("BENCH_TRAIN_PRESET", "small")


def _config(run_dir: str, data_root: str, size: dict[str, Any]) -> Any:
    from moero.train.config import TrainConfig

    return TrainConfig(run_dir=run_dir, data_root=data_root, device="cpu", preset=size["preset"], model="vq-prompt",
                       mask_kinds=["uniform", "kt_gaussian"], accelerations=[8], image_shape=size["image_shape"],
                       max_steps=WARMUP + size["steps"], checkpoint_every=0, val_every=0, progress=False)


def _measure(config: Any, info: Any) -> dict[str, Any]:
    from moero.train.trainer import Trainer, build_datasets, build_model, build_sampler

    torch.manual_seed(0)
    model = build_model(config)
    train_ds, _ = build_datasets(config, model.config.frames)
    trainer = Trainer(config, model, train_ds, None, train_sampler=build_sampler(config, train_ds, info),
                      dist_info=info)
    summary = trainer.fit()
    times = [r["step_time_s"] for r in trainer.history if r["kind"] == "train"][WARMUP:]
    return {"step_s": statistics.median(times), "peak_memory_bytes": summary["peak_memory_bytes"]}


def _worker(rank: int, world: int, port: int, threads: int, run_dir: str, data_root: str, out: str,
            size: dict[str, Any]) -> None:
    """One rank (or the single process) in a fresh process, so that its peak RSS is its own."""
    from moero.train.distributed import DistInfo, cleanup_distributed, init_distributed

    torch.set_num_threads(threads)
    if world == 1:
        torch.save([_measure(_config(run_dir, data_root, size), DistInfo(0, 1, 0, torch.device("cpu"), None))], out)
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    info = init_distributed("cpu")
    result = _measure(_config(run_dir, data_root, size), info)
    results = [None] * world
    torch.distributed.all_gather_object(results, result)
    if rank == 0:
        torch.save(results, out)
    cleanup_distributed()


def _launch(world: int, threads: int, tmp: str, data_root: str, size: dict[str, Any]) -> list[dict[str, Any]]:
    port = free_port()
    out = Path(tmp) / f"result_{world}_{threads}.pt"
    mp.spawn(_worker, args=(world, port, threads, f"{tmp}/run_{world}_{threads}", data_root, str(out), size),
             nprocs=world, join=True)
    return torch.load(out, weights_only=True)


def run(smoke: bool = False) -> list[dict[str, Any]]:
    from moero.data.synthetic import ensure_synthetic
    from moero.paths import default_data_root

    size = dict(SMOKE) if smoke else {**FULL, "preset": _preset(), "steps": _steps()}
    root = str(ensure_synthetic(default_data_root("smoke"), size="smoke", seed=0, progress=False))
    rows = []
    singles = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1,) if smoke else (1, 2):  # the smoke size runs each code path once
            singles[threads] = _launch(1, threads, tmp, root, size)[0]
        ddp = _launch(2, 1, tmp, root, size)
    single1 = singles[1]
    ddp_step = max(r["step_s"] for r in ddp)  # the slower rank sets the pace
    for threads, res in singles.items():
        name = f"single, {threads} thread{'s' if threads > 1 else ''}"
        rows.append({"setting": name, "preset": size["preset"], "threads_per_rank": threads, "step_s": res["step_s"],
                     "iterations_per_s": 1 / res["step_s"], "examples_per_s": 1 / res["step_s"],
                     "peak_memory_MiB": res["peak_memory_bytes"] / 2**20, "ddp_over_single": None})
    rows.append({"setting": "DDP 2 ranks (gloo)", "preset": size["preset"], "threads_per_rank": 1, "step_s": ddp_step,
                 "iterations_per_s": 1 / ddp_step, "examples_per_s": 2 / ddp_step,
                 "peak_memory_MiB": max(r["peak_memory_bytes"] for r in ddp) / 2**20,
                 "ddp_over_single": ddp_step / single1["step_s"]})
    return rows
