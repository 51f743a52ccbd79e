"""The plan of the results chapters: every run and evaluation chapters 06-08 show, scheduled as jobs.

* :func:`plan`: the jobs (train an experiment to its snapshot budgets, then its evaluations);
* :func:`prepare`: run the jobs not yet done, ``workers`` at a time in spawned processes;
* :func:`ensure_run`: run or resume one experiment in ``_build/runs/<profile>/<name>/seed-<k>``. Training
  goes from snapshot to snapshot; after each, ``checkpoint.pt`` is copied to ``snapshot-<budget>.pt``, so
  intermediate budgets are evaluated from the checkpoints of one run, never retrained. An interrupted run
  restarts at its last checkpoint (the trainer's exact resume). With ``nproc > 1`` each segment runs
  under ``torchrun``.

What a run is lives in :mod:`moero.book.runspec`, its logs in :mod:`moero.book.logs`, its evaluations
in :mod:`moero.book.evaluation` and what a chapter shows in :mod:`moero.book.show`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from moero.book.evaluation import evaluate_checkpoint, reference_rows
from moero.book.logs import SEGMENTS_NAME, append_json, read_jsonl
from moero.book.runspec import (
    SPEC_NAME,
    Experiment,
    augmented_names,
    catalogue,
    experiment_config,
    model_names,
    runs_dir,
    seeds,
    snapshot_budgets,
    snapshot_path,
)
from moero.eval.evaluate import TEST_SPLITS
from moero.models.registry import parse_model_name
from moero.train.checkpoint import load_checkpoint
from moero.train.trainer import CHECKPOINT_NAME, LOG_NAME, train

__all__ = ["Job", "plan", "run_job", "prepare", "ensure_run"]

# progress of training segments: a log line, not notebook output (the chapters show results, not chatter)
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One unit of the chapters' work: train ``exp`` (None: the zero-filled / CG-SENSE references) and run
    its evaluations, ``("test" | "val", budget)``."""
    exp: Experiment | None
    evals: tuple[tuple[str, int], ...] = ()


def plan(params: dict[str, Any]) -> list[Job]:
    """Everything chapters 06-08 show, as jobs: every headline model and augmentation (all ``seeds``; the
    validation curve, the test grid at the last budget, and at every budget for the Tab. 2 models), the
    small-set ratio sweep (all ``small_seeds``; validation at every snapshot, test at the last) and the
    references. Longest first, so parallel workers finish together."""
    cat = catalogue(params)
    budgets = sorted(int(b) for b in params.get("budgets", ()))
    curve = sorted(int(b) for b in params.get("curve_budgets", budgets))
    headline = [*model_names(params), *augmented_names(params)]
    jobs = [Job(None)]
    tab2 = set(model_names(params))
    for name in headline:
        for seed in seeds(params):
            tests = budgets if name in tab2 else budgets[-1:]  # Tab. 2 is read at every budget
            evals = [("test", b) for b in tests] + [("val", b) for b in curve]
            jobs.append(Job(cat[name].with_seed(seed), tuple(dict.fromkeys(evals))))
    for exp in cat.values():
        if exp.subjects:
            for seed in seeds(params, small=True):
                own = snapshot_budgets(params, exp)
                jobs.append(Job(exp.with_seed(seed), (*(("val", b) for b in own), ("test", own[-1]))))

    def cost(job: Job) -> float:
        if job.exp is None:
            return 0.0
        steps = max(snapshot_budgets(params, job.exp))
        return steps * (1.5 if job.exp.model != "promptmr" else 1.0) + 200 * len(job.evals)

    return sorted(jobs, key=cost, reverse=True)


def run_job(job: Job, params: dict[str, Any], profile: str, data_root: str | Path | None, dataset_size: str,
            nproc: int = 1, threads: int = 0, device: str = "cpu") -> str:
    """Train and evaluate one :class:`Job` (what a worker process of :func:`prepare` runs); returns its folder."""
    if threads:
        torch.set_num_threads(int(threads))
    if job.exp is None:
        reference_rows(params, data_root, dataset_size, device=device, cache_dir=runs_dir(profile))
        return str(runs_dir(profile))
    run_dir = ensure_run(job.exp, params, profile, data_root=data_root, dataset_size=dataset_size, nproc=nproc)
    for kind, budget in job.evals:
        splits = ("val",) if kind == "val" else TEST_SPLITS
        evaluate_checkpoint(run_dir, budget, params, data_root, splits=splits, device=device)
    return str(run_dir)


def prepare(params: dict[str, Any], profile: str, data_root: str | Path, dataset_size: str, nproc: int = 1,
            workers: int = 1, device: str = "cpu", jobs: Sequence[Job] | None = None) -> dict[str, float]:
    """Run every job of :func:`plan` (or ``jobs``) not yet done, ``workers`` at a time in spawned processes of
    one thread each (``workers`` 1: here, with the threads already set). Finished runs and cached evaluations
    are kept, so a re-execution only does what is missing. Returns the wall time in seconds per run folder."""
    jobs = list(plan(params) if jobs is None else jobs)
    if workers > 1 and nproc > 1:
        raise ValueError("parameters 'workers' and 'nproc' cannot both exceed 1 (torchrun runs one job at a time)")
    times: dict[str, float] = {}
    if workers <= 1:
        for job in jobs:
            start = time.perf_counter()
            folder = run_job(job, params, profile, data_root, dataset_size, nproc=nproc, device=device)
            times[folder] = time.perf_counter() - start
        return times
    with ProcessPoolExecutor(max_workers=int(workers), mp_context=get_context("spawn")) as pool:
        start = time.perf_counter()
        futures = [pool.submit(run_job, job, params, profile, str(data_root), dataset_size, 1, 1, device)
                   for job in jobs]
        for fut in as_completed(futures):
            times[fut.result()] = time.perf_counter() - start
    return times


def _spec(exp: Experiment, config: Any, params: dict[str, Any]) -> dict[str, Any]:
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("resume", "max_steps", "epochs", "progress",
                                                            "resume_if_present", "overwrite", "max_nonfinite")}
    spec = {"experiment": exp.to_dict(), "config": cfg, "budget_unit": params.get("budget_unit", "steps")}
    if parse_model_name(exp.model).family == "moero":  # routing settings concern Moero runs only
        spec["nav"] = params.get("nav", {})
    else:
        cfg.pop("nav", None)
    return spec


def _same_spec(stored: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether a run folder's ``experiment.json`` names ``spec``. A non-Moero run written when every spec carried
    the routing settings (the profile's ``nav`` and the config's) still matches: they never reached it."""
    spec = json.loads(json.dumps(spec))
    if "nav" not in spec:
        stored = {k: v for k, v in stored.items() if k != "nav"}
        stored["config"] = {k: v for k, v in stored.get("config", {}).items() if k != "nav"}
    return stored == spec


def _budget_fields(unit: str, budget: int) -> dict[str, int]:
    if unit == "steps":
        return {"max_steps": int(budget), "epochs": 1}
    if unit == "epochs":
        return {"max_steps": 0, "epochs": int(budget)}
    raise ValueError(f"parameter 'budget_unit' must be 'steps' or 'epochs', got {unit!r}")


def _checkpoint_position(run_dir: Path) -> tuple[int, int]:
    """``(step, epoch)`` of ``run_dir/checkpoint.pt`` (``(0, 0)`` without one)."""
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        return 0, 0
    state = load_checkpoint(path)
    return int(state["step"]), int(state["epoch"])


def ensure_run(exp: Experiment, params: dict[str, Any], profile: str, data_root: str | Path | None = None,
               dataset_size: str = "smoke", nproc: int = 1, log: Any = LOG.info) -> Path:
    """Run (or resume) ``exp`` to every snapshot budget of ``params``; return its run folder.

    A folder whose ``experiment.json`` names other settings is started afresh (its files belong to
    another configuration); otherwise finished snapshots are kept and training resumes from
    ``checkpoint.pt``."""
    run_dir = runs_dir(profile) / exp.run_name
    config = experiment_config(exp, params, run_dir, data_root, dataset_size)
    spec = _spec(exp, config, params)
    spec_path = run_dir / SPEC_NAME
    if spec_path.is_file() and not _same_spec(json.loads(spec_path.read_text()), spec):
        log(f"{exp.run_name}: settings changed, starting the run afresh")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2, sort_keys=True))
    unit = spec["budget_unit"]
    for budget in snapshot_budgets(params, exp):
        snap = snapshot_path(run_dir, budget)
        if snap.is_file():
            continue
        step, epoch = _checkpoint_position(run_dir)
        done = step if unit == "steps" else epoch
        if done > budget:
            raise ValueError(f"run {run_dir}: checkpoint is at {unit} {done}, past the missing snapshot {budget}")
        if done < budget:
            log(f"{exp.run_name}: training to {unit} {budget} (from {done})")
            _train_segment(exp, config.replace(**_budget_fields(unit, budget)), nproc)

        tmp = snap.with_suffix(".tmp")
        shutil.copyfile(run_dir / CHECKPOINT_NAME, tmp)
        os.replace(tmp, snap)
    return run_dir


def _train_segment(exp: Experiment, config: Any, nproc: int) -> None:
    """Train ``config`` to its budget through the package's one training entry point
    (``moero.train.trainer.train`` in this process, ``python -m moero train`` under torchrun)."""
    run_dir = Path(config.run_dir)
    if nproc <= 1:
        append_json(run_dir / SEGMENTS_NAME, train(config))
        return
    seg = run_dir / "segment.yaml"
    seg.write_text(config.to_yaml())
    # torchrun through this interpreter (a kernel's PATH may lack the virtual environment's bin folder)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "moero", "train", "--config", str(seg)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun training of {exp.name} failed with exit code {proc.returncode}: {' '.join(cmd)}")

    summaries = [r for r in read_jsonl(run_dir / LOG_NAME) if r.get("kind") == "summary"]
    if summaries:
        append_json(run_dir / SEGMENTS_NAME, summaries[-1])
