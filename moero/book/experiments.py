"""The experiments of the results chapters: Tab. 1, Tab. 2 and the learning curves (reference sections 3, 4, 7).

One place defines what the chapters train and evaluate, so that ``python -m moero book`` reproduces
every table from one command and the tests reach all of it:

* :func:`catalogue`: the experiments of a profile (baseline, VQ-Prompt, Moero with 2 and 4 experts,
  k-space and image augmentation, the augmentation-ratio sweep on a small and the full dataset);
* :func:`ensure_run`: run or resume an experiment in ``_build/runs/<profile>/<name>``. Training goes
  from snapshot to snapshot (budgets in steps or epochs); after each, ``checkpoint.pt`` is copied to
  ``snapshot-<budget>.pt``, so intermediate budgets (the paper's 12/18/24 epochs) are evaluated from
  the checkpoints of one run, never retrained. An interrupted run restarts at its last checkpoint
  (the trainer's exact resume). With ``nproc > 1`` each segment runs under ``torchrun``;
* :func:`evaluate_checkpoint` / :func:`reference_rows`: the official CMRxRecon2025 protocol
  (``moero.eval_cli.evaluate``) on the test splits, for models, zero-filled and CG-SENSE;
* :func:`learning_curves`, :func:`route_history`: what the metrics logs recorded;
* :func:`results_source`, :func:`require_result`: which results the book shows, and a hard failure
  when a chapter refers to a result file that no run produced.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.eval.evaluate import TEST_SPLITS
from moero.eval.tables import Table
from moero.models.promptmr import preset
from moero.models.registry import parse_model_name
from moero.train.trainer import ROUTES_NAME

__all__ = [
    "publish_figure",
    "Experiment",
    "MissingResultError",
    "ResultsSource",
    "catalogue",
    "runs_dir",
    "experiment_config",
    "chosen_subjects",
    "subset_root",
    "snapshot_budgets",
    "nav_settings",
    "ensure_run",
    "ratio_experiment",
    "resolve_nproc",
    "model_names",
    "paper_model",
    "segment_speed",
    "read_segments",
    "seeds",
    "Job",
    "plan",
    "run_job",
    "prepare",
    "test_accelerations",
    "EVAL_SEED",
    "ROUTE_LABELS",
    "segment_peak_memory",
    "read_table",
    "show_result",
    "load_model",
    "evaluate_checkpoint",
    "reference_rows",
    "learning_curves",
    "validation_curve",
    "specialisation_over_training",
    "route_history",
    "results_source",
    "require_result",
    "verdict",
    "compare_row",
    "admonition",
    "show_source",
    "TEST_SPLITS",
]

SPEC_NAME = "experiment.json"
# what Moero's test routes are compared with: the image's contrast, view, vendor, centre and its undersampling
ROUTE_LABELS = ("modality", "view", "vendor", "centre", "kind", "acceleration")
SEGMENTS_NAME = "segments.jsonl"
# progress of training segments: a log line, not notebook output (the chapters show results, not chatter)
LOG = logging.getLogger(__name__)


class MissingResultError(FileNotFoundError):
    """A chapter refers to a result file that no run produced (the book build must fail)."""


@dataclass(frozen=True)
class Experiment:
    """One training run: a registry model (``promptmr``, ``vq-prompt``, ``moero-<C>x<K>``), TrainConfig
    overrides (``augment``, ``augment_probability``...), an optional subset of training subjects, the
    training seed (initial weights, data order, masks and augmentation draws) and optional budgets of its
    own (the small-set runs stop earlier)."""

    name: str
    label: str
    model: str = "promptmr"
    config: dict[str, Any] = field(default_factory=dict)
    subjects: int = 0  # train on this many subjects only (0: all): the "small dataset"
    seed: int = 0
    budgets: tuple[int, ...] = ()  # snapshot budgets of this run (empty: the profile's)

    def __post_init__(self) -> None:
        try:
            parse_model_name(self.model)
        except ValueError as err:
            raise ValueError(f"Experiment {self.name!r}: {err}") from None
        if self.subjects < 0:
            raise ValueError(f"Experiment {self.name!r}: subjects must be >= 0, got {self.subjects}")
        if self.seed < 0:
            raise ValueError(f"Experiment {self.name!r}: seed must be >= 0, got {self.seed}")

    @property
    def num_experts(self) -> int:
        return parse_model_name(self.model).num_experts

    @property
    def run_name(self) -> str:
        """Folder of the run under :func:`runs_dir`: ``<name>/seed-<seed>``."""
        return f"{self.name}/seed-{self.seed}"

    def with_seed(self, seed: int) -> Experiment:
        return dataclasses.replace(self, seed=int(seed))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_names(params: dict[str, Any]) -> list[str]:
    """Registry names of the Tab. 2 models of a profile: ``promptmr``, ``vq-prompt``, ``moero-<C>x<K>`` for
    each ``K`` in ``params["experts"]`` (``C``: the cascades of the profile's preset)."""
    cascades = preset(str(params.get("train", {}).get("preset", "tiny"))).num_cascades
    return ["promptmr", "vq-prompt", *(f"moero-{cascades}x{int(k)}" for k in params.get("experts", (2, 4)))]


def _ratio_name(ratio: float, small: bool) -> str:
    return f"ratio-{ratio:g}-{'small' if small else 'full'}"


def paper_model(name: str) -> str:
    """The paper's model for one of ours: the same name, except that ``moero-CxK`` stands for the paper's
    ``moero-12xK`` (the expert count is what the comparison is about)."""
    spec = parse_model_name(name)
    return f"moero-12x{spec.num_experts}" if spec.family == "moero" else name


def catalogue(params: dict[str, Any]) -> dict[str, Experiment]:
    """The experiments of a profile, by name (seed 0; :meth:`Experiment.with_seed` for the others).
    ``params``: the notebook parameters (``experts``, ``augment_probability``, ``ratios``,
    ``small_subjects``, ``small_budgets``). Names: the registry names of :func:`model_names` (``promptmr`` is
    the baseline), ``kspace-aug``, ``image-aug``, and ``ratio-<r>-small`` for the augmentation-ratio sweep
    on ``small_subjects`` training subjects (on the full set, ratio 0 is the baseline and the profile's
    ratio is ``kspace-aug``, see :func:`ratio_experiment`)."""
    prob = float(params.get("augment_probability", 0.5))
    base, vq, *moeros = model_names(params)
    exps = [
        Experiment(base, "PromptMR+ (baseline)"),
        Experiment(vq, "+ VQ-Prompt", model=vq),
        *(Experiment(name, f"Moero {name.removeprefix('moero-')} (cascades x experts)", model=name) for name in moeros),
        Experiment("kspace-aug", "+ k-space aug (noise + motion)", config={"augment": "kspace",
                                                                           "augment_probability": prob}),
        Experiment("image-aug", "+ image aug", config={"augment": "image", "augment_probability": prob}),
    ]
    small = int(params.get("small_subjects", 0))
    if small:
        small_budgets = tuple(int(b) for b in params.get("small_budgets", ()))
        for ratio in params.get("ratios", ()):
            cfg = {"augment": "kspace", "augment_probability": float(ratio)} if ratio else {}
            exps.append(Experiment(_ratio_name(float(ratio), True), f"k-space aug ratio {ratio:g} (small set)",
                                   config=cfg, subjects=small, budgets=small_budgets))
    return {e.name: e for e in exps}


def ratio_experiment(params: dict[str, Any], ratio: float, small: bool) -> str:
    """Name of the sweep experiment of ``ratio`` on the small set, or of the full-set run with that ratio
    (``promptmr`` for 0, ``kspace-aug`` for the profile's ratio; a ``KeyError`` for any other)."""
    if small:
        return _ratio_name(float(ratio), True)
    if float(ratio) == 0.0:
        return "promptmr"
    if float(ratio) == float(params.get("augment_probability", 0.5)):
        return "kspace-aug"
    raise KeyError(f"no full-set run with augmentation ratio {ratio:g}")


def seeds(params: dict[str, Any], small: bool = False) -> list[int]:
    """Training seeds of the headline runs (``seeds``) or of the small-set sweep (``small_seeds``)."""
    values = [int(s) for s in params.get("small_seeds" if small else "seeds", params.get("seeds", [0]))]
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise ValueError(f"parameter '{'small_seeds' if small else 'seeds'}' must list distinct seeds >= 0, "
                         f"got {values}")
    return values


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
    headline = [*model_names(params), "kspace-aug", "image-aug"]
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
    import time
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

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


def resolve_nproc(value: int | str) -> int:
    """Training processes per run: an int, or ``"all"`` (every visible GPU, at least 1)."""
    if value == "all":
        return max(1, torch.cuda.device_count())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"parameter 'nproc' must be a positive int or 'all', got {value!r}")
    return value


def runs_dir(profile: str) -> Path:
    """``<build dir>/runs/<profile>``: every training run of the chapters."""
    from moero.paths import build_dir

    return build_dir() / "runs" / profile


def chosen_subjects(rows: Sequence[dict[str, Any]], subjects: int) -> set[str]:
    """The ``subjects`` training subjects of manifest ``rows`` that a small training set keeps: sorted, every
    k-th, so they spread over centres and vendors."""
    names = sorted({r["subject"] for r in rows if r["split"] == "train"})
    return set(names[:: max(1, len(names) // subjects)][:subjects])


def subset_root(root: str | Path, subjects: int, out: str | Path) -> Path:
    """A dataset root at ``out`` whose ``manifest.csv`` keeps the first ``subjects`` training subjects of
    ``root`` (spread over centres: sorted, every k-th) and every non-training file; paths stay absolute."""
    import csv

    from moero.data.readers import MANIFEST_NAME, read_manifest

    root, out = Path(root).resolve(), Path(out)
    rows = read_manifest(root)
    if subjects < 1 or not any(r["split"] == "train" for r in rows):
        raise ValueError(f"subjects must be >= 1 and {root} must hold training subjects, got {subjects}")
    keep = chosen_subjects(rows, subjects)
    kept = [dict(r, file=str(root / r["file"])) for r in rows if r["split"] != "train" or r["subject"] in keep]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{MANIFEST_NAME}.{os.getpid()}.tmp"  # parallel runs may write the same subset at once
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, out / MANIFEST_NAME)
    return out


def _base_root(params: dict[str, Any], data_root: str | Path | None, dataset_size: str) -> Path:
    if data_root:
        return Path(data_root)
    from moero.data.synthetic import ensure_synthetic
    from moero.paths import default_data_root

    return ensure_synthetic(default_data_root(dataset_size), size=dataset_size, seed=0, progress=False)


def experiment_config(exp: Experiment, params: dict[str, Any], run_dir: str | Path,
                      data_root: str | Path | None = None, dataset_size: str = "smoke"):
    """The ``TrainConfig`` of ``exp``: the profile's ``train`` settings, then the experiment's overrides."""
    from moero.train.config import TrainConfig

    nav = nav_settings(params, exp) if parse_model_name(exp.model).family == "moero" else {}
    values = {**dict(params.get("train", {})), **exp.config, "model": exp.model, "nav": nav, "seed": exp.seed,
              "run_dir": str(run_dir), "dataset_size": dataset_size, "progress": False, "resume": True,
              "resume_if_present": True}  # the first segment starts the run, later ones continue it
    root = _base_root(params, data_root, dataset_size)
    if exp.subjects:
        # runs/<profile>/<name>/seed-<k>: the subset is shared by every run of the profile
        root = subset_root(root, exp.subjects, Path(run_dir).parents[1] / f"data-{exp.subjects}-subjects")
    values["data_root"] = str(root)
    return TrainConfig.from_dict(values)


def nav_settings(params: dict[str, Any], exp: Experiment) -> dict[str, Any]:
    """BranchNav keyword arguments of ``exp``: the profile's ``nav``, with ``warmup_fraction`` and
    ``buffer_fraction`` turned into ``warmup`` and ``buffer_size`` in samples, as fractions of the samples
    the run sees by its last budget (steps x batch size), so the centres are fitted late in any run."""
    nav = dict(params.get("nav", {}))
    if "warmup_fraction" not in nav and "buffer_fraction" not in nav:
        return nav
    if params.get("budget_unit", "steps") != "steps":
        raise ValueError("parameters 'nav.warmup_fraction'/'nav.buffer_fraction' need budget_unit 'steps'")
    warm, buf = float(nav.pop("warmup_fraction", 0.0)), float(nav.pop("buffer_fraction", 0.1))
    if not (0.0 <= warm < 1.0 and 0.0 < buf <= 1.0 - warm):
        raise ValueError(f"parameters 'nav.warmup_fraction' ({warm}) and 'nav.buffer_fraction' ({buf}) must lie in "
                         "[0, 1) and (0, 1 - warmup_fraction]")
    samples = max(snapshot_budgets(params, exp)) * int(params.get("train", {}).get("batch_size", 1))
    nav["warmup"] = int(round(warm * samples))
    nav["buffer_size"] = max(exp.num_experts, int(round(buf * samples)))
    return nav


def snapshot_budgets(params: dict[str, Any], exp: Experiment | None = None) -> list[int]:
    """Sorted budgets (steps, or epochs when ``budget_unit == "epochs"``) at which checkpoints are kept: the
    experiment's own, else the profile's ``budgets`` and ``curve_budgets``."""
    if exp is not None and exp.budgets:
        budgets = sorted({int(b) for b in exp.budgets})
    else:
        budgets = sorted({int(b) for b in (*params.get("budgets", ()), *params.get("curve_budgets", ()))})
    if not budgets or budgets[0] < 1:
        raise ValueError(f"parameters 'budgets'/'curve_budgets' must hold positive budgets, got {budgets}")
    return budgets


def snapshot_path(run_dir: str | Path, budget: int) -> Path:
    return Path(run_dir) / f"snapshot-{int(budget):06d}.pt"


def _spec(exp: Experiment, config: Any, params: dict[str, Any]) -> dict[str, Any]:
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("resume", "max_steps", "epochs", "progress",
                                                            "resume_if_present", "overwrite", "max_nonfinite")}
    return {"experiment": exp.to_dict(), "config": cfg, "nav": params.get("nav", {}),
            "budget_unit": params.get("budget_unit", "steps")}


def _budget_fields(unit: str, budget: int) -> dict[str, int]:
    if unit == "steps":
        return {"max_steps": int(budget), "epochs": 1}
    if unit == "epochs":
        return {"max_steps": 0, "epochs": int(budget)}
    raise ValueError(f"parameter 'budget_unit' must be 'steps' or 'epochs', got {unit!r}")


def _checkpoint_position(run_dir: Path) -> tuple[int, int]:
    """``(step, epoch)`` of ``run_dir/checkpoint.pt`` (``(0, 0)`` without one)."""
    from moero.train.checkpoint import load_checkpoint
    from moero.train.trainer import CHECKPOINT_NAME

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
    if spec_path.is_file() and json.loads(spec_path.read_text()) != json.loads(json.dumps(spec)):
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
        from moero.train.trainer import CHECKPOINT_NAME

        tmp = snap.with_suffix(".tmp")
        shutil.copyfile(run_dir / CHECKPOINT_NAME, tmp)
        os.replace(tmp, snap)
    return run_dir


def _train_segment(exp: Experiment, config: Any, nproc: int) -> None:
    """Train ``config`` to its budget through the package's one training entry point
    (``moero.train.trainer.train`` in this process, ``python -m moero train`` under torchrun)."""
    run_dir = Path(config.run_dir)
    if nproc <= 1:
        from moero.train.trainer import train

        _append_json(run_dir / SEGMENTS_NAME, train(config))
        return
    seg = run_dir / "segment.yaml"
    seg.write_text(config.to_yaml())
    # torchrun through this interpreter (a kernel's PATH may lack the virtual environment's bin folder)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "moero", "train", "--config", str(seg)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun training of {exp.name} failed with exit code {proc.returncode}: {' '.join(cmd)}")
    from moero.train.trainer import LOG_NAME

    summaries = [r for r in _read_jsonl(run_dir / LOG_NAME) if r.get("kind") == "summary"]
    if summaries:
        _append_json(run_dir / SEGMENTS_NAME, summaries[-1])


def _append_json(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def load_model(run_dir: str | Path, budget: int | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(model, TrainConfig, checkpoint state)`` of a run's snapshot ``budget`` (None: ``checkpoint.pt``)."""
    from moero.train.runs import load_trained
    from moero.train.trainer import CHECKPOINT_NAME

    run_dir = Path(run_dir)
    path = snapshot_path(run_dir, budget) if budget is not None else run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise MissingResultError(f"checkpoint {path} does not exist: run the training chapter (06) first")
    return load_trained(path)


class _RouteRecorder(nn.Module):
    """Runs a model and keeps the routes of every call (Moero), for specialisation at evaluation."""

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




EVAL_SEED = 2  # seed of every evaluation's masks: the same files, kinds, accelerations and masks for all models
EVAL_BATCH = 8  # images of one file per forward at evaluation (scores are per image)


def _split_dataset(config: Any, frames: int, root: Path, split: str, shape: Sequence[int] | None,
                   kinds: Sequence[str], accelerations: Sequence[float]) -> Any:
    from moero.data.dataset import SliceDataset
    from moero.physics.masks import MaskSampler

    masks = MaskSampler(kinds=tuple(kinds), accelerations=tuple(accelerations), acs=config.acs)
    return SliceDataset(root, split=split, frames=frames, mask_sampler=masks, seed=EVAL_SEED,
                        shape=tuple(shape) if shape else None)


def test_accelerations(params: dict[str, Any]) -> tuple[float, ...]:
    """The accelerations every test file is reconstructed at (``test_accelerations``; default 8, 16, 24)."""
    from moero.eval.evaluate import TEST_ACCELERATIONS

    return tuple(float(a) for a in params.get("test_accelerations", TEST_ACCELERATIONS))


def _evaluate(model: nn.Module, config: Any, frames: int, data_root: str | Path | None, splits: Sequence[str],
              files_per_split: int, shape: Sequence[int] | None, device: str | torch.device,
              accelerations: Sequence[float] | None) -> dict[str, Any]:
    """Official metrics per file (and per mask kind and acceleration when ``accelerations`` is given: the
    Latin-square test grid of :func:`moero.eval.evaluate.evaluate_grid`; else one mask per file drawn from
    the training kinds and accelerations), with Moero's routes and the labels of every scored image."""
    from moero.eval.evaluate import IMAGE_LABELS, SCORED, evaluate, evaluate_grid
    from moero.eval.metrics import split_aggregates

    root = Path(data_root) if data_root else Path(config.data_root)
    # a real CMRxRecon2025 tree without manifest.csv is indexed by moero.data.layout, whose splits are the
    # manifest's (test-total by subject, rare, fresh), so the same splits apply to every tree
    kinds = tuple(config.mask_kinds)
    recorder = _RouteRecorder(model)
    files: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for split in splits:
        probe = _split_dataset(config, frames, root, split, shape, kinds, config.accelerations)
        if not len(probe):
            continue
        if accelerations:
            def make(kind: str, acceleration: float, split: str = split) -> Any:
                return _split_dataset(config, frames, root, split, shape, (kind,), (acceleration,))

            rows, images = evaluate_grid(recorder, make, accelerations, kinds, device=device,
                                         max_files=files_per_split, batch_size=EVAL_BATCH)
        else:
            res = evaluate(recorder, probe, device, progress=False, max_files=files_per_split, batch_size=EVAL_BATCH)
            rows = res["files"]
            images = [{k: str(probe.records[f].get(k, "")) for k in IMAGE_LABELS} for f in res["image_files"]]
        files += rows
        labels += images
    if not files:
        raise ValueError(f"no examples of splits {list(splits)} under {root}")
    return {"files": files, "splits": split_aggregates(files, metrics=SCORED), "routes": recorder.routes,
            "histograms": recorder.histograms, "labels": labels}


def _eval_cache(run_dir: Path, tag: str, splits: Sequence[str], params: dict[str, Any], grid: bool) -> Path:
    shape = "x".join(str(int(n)) for n in params.get("eval_shape") or ()) or "native"
    design = "grid-" + "-".join(f"{a:g}" for a in test_accelerations(params)) if grid else "drawn"
    return run_dir / f"eval-{tag}-{'+'.join(splits)}-{int(params.get('eval_files', 0))}-{shape}-{design}.json"


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
    cache = _eval_cache(run_dir, tag, splits, params, grid)
    snap = snapshot_path(run_dir, budget) if budget is not None else run_dir / "checkpoint.pt"
    if cache.is_file() and snap.is_file() and cache.stat().st_mtime >= snap.stat().st_mtime:
        return json.loads(cache.read_text())
    model, config, _ = load_model(run_dir, budget)
    base = data_root or _base_root(params, None, config.dataset_size)
    res = _evaluate(model, config, int(model.config.frames), base, splits, int(params.get("eval_files", 0)),
                    params.get("eval_shape") or None, device, test_accelerations(params) if grid else None)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(res, default=float))
    os.replace(tmp, cache)
    return res


def reference_rows(params: dict[str, Any], data_root: str | Path | None, dataset_size: str,
                   splits: Sequence[str] = TEST_SPLITS, device: str | torch.device = "cpu",
                   cache_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Official-protocol metrics of the zero-filled and CG-SENSE reconstructions on the test grid (the same
    files and masks as the models). CG-SENSE's Tikhonov weight is the one of ``cg["lams"]`` (default: its
    ``lam``) with the best SSIM on the validation split (``out["CG-SENSE"]["lam"]``, the sweep in
    ``out["CG-SENSE"]["val_sweep"]``). Cached as ``references-*.json`` in ``cache_dir``."""
    from moero.eval.evaluate import CGSense, ZeroFilled
    from moero.train.config import TrainConfig

    config = TrainConfig.from_dict({**dict(params.get("train", {})), "dataset_size": dataset_size})
    root = data_root or _base_root(params, None, dataset_size)
    cg = params.get("cg", {})
    cache = None
    if cache_dir is not None:
        lams = "-".join(f"{float(lam):g}" for lam in cg.get("lams", [cg.get("lam", 1e-2)]))
        cache = _eval_cache(Path(cache_dir), f"references-cg{int(cg.get('iters', 10))}-lam{lams}", splits, params, True)
        if cache.is_file():
            return json.loads(cache.read_text())
    files, shape = int(params.get("eval_files", 0)), params.get("eval_shape") or None
    sweep = []
    for lam in cg.get("lams", [cg.get("lam", 1e-2)]):
        val = _evaluate(CGSense(cg.get("iters", 10), lam), config, 1, root, ("val",), files, shape, device, None)
        sweep.append({"lam": float(lam), "val_ssim": float(val["splits"]["total"]["ssim"])})
    best = max(sweep, key=lambda r: r["val_ssim"])["lam"]
    accels = test_accelerations(params)
    out = {"zero-filled": _evaluate(ZeroFilled(), config, 1, root, splits, files, shape, device, accels),
           "CG-SENSE": {**_evaluate(CGSense(cg.get("iters", 10), best), config, 1, root, splits, files, shape,
                                    device, accels), "lam": best, "val_sweep": sweep}}
    if cache is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(out, default=float))
        os.replace(tmp, cache)
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


def specialisation_over_training(run_dir: str | Path, params: dict[str, Any], data_root: str | Path | None = None,
                                 labels: Sequence[str] = ROUTE_LABELS,
                                 device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """ARI / NMI between Moero's routes (per cascade) on the test images and their labels, at every Tab. 2
    budget, with the route counts per expert and ``nmi_kmeans_on_test``: the NMI of a spherical k-means
    (as many clusters as experts) fitted on the test histograms themselves, what these features allow."""
    from moero.eval.specialisation import specialisation
    from moero.models.routing import spherical_kmeans

    spec = json.loads((Path(run_dir) / SPEC_NAME).read_text())
    experts = parse_model_name(spec["experiment"]["model"]).num_experts
    rows = []
    for budget in sorted(int(b) for b in params["budgets"]):  # the Tab. 2 budgets: evaluations shared with it
        res = evaluate_checkpoint(run_dir, budget, params, data_root, device=device)
        if not res["routes"]:
            continue
        for k in range(len(res["routes"][0])):
            routes = [r[k] for r in res["routes"]]
            counts = [routes.count(j) for j in range(experts)]
            # separability: spherical k-means fitted on these test histograms themselves (what the best
            # centres could do with these features) against the routes the trained centres give
            oracle = None
            if res.get("histograms") and len(res["histograms"]) >= experts:
                hist = torch.tensor([h[k] for h in res["histograms"]], dtype=torch.float64)
                oracle = spherical_kmeans(hist, experts, restarts=4, max_iter=50, seed=0)[1].tolist()
            values = {name: [lab[name] for lab in res["labels"]] for name in labels}
            best = {r["label"]: r for r in specialisation(oracle, values)} if oracle is not None else {}
            for row in specialisation(routes, values):
                rows.append({"budget": budget, "cascade": k, **row, "route_counts": "/".join(map(str, counts)),
                             "nmi_kmeans_on_test": best.get(row["label"], {}).get("nmi", math.nan)})
    return rows


# ---------------------------------------------------------------------------- logs
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def learning_curves(run_dir: str | Path, smooth: int = 1) -> dict[str, list[tuple[int, float]]]:
    """``{"loss": [(step, loss)], "val_ssim": [(step, ssim)]}`` from a run's ``metrics.jsonl`` (training loss
    as a running mean over ``smooth`` steps; validation as the trainer logged it)."""
    from moero.train.trainer import LOG_NAME

    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise MissingResultError(f"metrics log {path} does not exist: the run has not been trained")
    records = _read_jsonl(path)
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
    by_step = {r["step"]: r for r in _read_jsonl(Path(run_dir) / ROUTES_NAME)}
    return [by_step[s] for s in sorted(by_step)]


def read_segments(run_dir: str | Path) -> list[dict[str, Any]]:
    """The training segments' summaries of a run (``segments.jsonl``: steps, iterations/s, peak memory)."""
    return _read_jsonl(Path(run_dir) / SEGMENTS_NAME)


def segment_speed(run_dir: str | Path) -> float:
    """Iterations/s of a run's training, weighted over its segments (NaN without a record)."""
    segs = [s for s in _read_jsonl(Path(run_dir) / SEGMENTS_NAME) if s.get("steps_this_run")]
    steps = sum(s["steps_this_run"] for s in segs)
    time_s = sum(s["steps_this_run"] / s["iterations_per_s"] for s in segs if s["iterations_per_s"] > 0)
    return steps / time_s if time_s > 0 else math.nan


def segment_peak_memory(run_dir: str | Path) -> float:
    """Largest peak memory (bytes) any training segment of the run reported (NaN without a record)."""
    peaks = [s["peak_memory_bytes"] for s in _read_jsonl(Path(run_dir) / SEGMENTS_NAME) if "peak_memory_bytes" in s]
    return float(max(peaks)) if peaks else math.nan


# ---------------------------------------------------------------------------- what the book shows
@dataclass(frozen=True)
class ResultsSource:
    """Where a chapter's displayed results come from: ``folder``, ``kind`` (``gpu`` or the run's profile) and a
    sentence saying so."""

    folder: Path
    kind: str
    note: str


def results_source(notebook: str, run: Any, gpu_root: str | Path | None = None) -> ResultsSource:
    """The committed GPU results of ``notebook`` (``book/results/gpu/<notebook>``, complete provenance) when
    they exist, else this run's own results folder."""
    from moero.paths import repo_root

    gpu = Path(gpu_root) if gpu_root else repo_root() / "book" / "results" / "gpu"
    prov = gpu / notebook / "provenance.json"
    if run.profile.name != "gpu" and prov.is_file():
        meta = json.loads(prov.read_text())
        if meta.get("complete"):
            card = meta.get("environment", {}).get("gpu", "GPU")
            return ResultsSource(gpu / notebook, "gpu",
                                 f"Shown: the gpu-profile results committed under book/results/gpu/{notebook} "
                                 f"(commit {meta.get('commit', '?')}, {card}); "
                                 f"this run's {run.profile.name}-profile results are in {_shown_path(run)}.")
    return ResultsSource(run.results_dir, run.profile.name,
                         f"Shown: this run's {run.profile.name}-profile results ({_shown_path(run)}); no gpu-profile "
                         f"results are committed under book/results/gpu/{notebook}.")


def _shown_path(run: Any) -> str:
    """Where the run's results live once the runner has swapped them in (not the staging folder it writes to),
    relative to the checkout when inside it."""
    from moero.paths import repo_root

    final = Path(getattr(run, "final_dir", run.results_dir)).resolve()
    try:
        return final.relative_to(repo_root().resolve()).as_posix()
    except ValueError:
        return str(final)


def require_result(folder: str | Path, name: str) -> Path:
    """The result file ``folder/name``; a :class:`MissingResultError` naming it when no run produced it (and,
    when the folder has a provenance, when that provenance does not list it)."""
    folder = Path(folder)
    path = folder / name
    if not path.is_file() or path.stat().st_size == 0:
        raise MissingResultError(f"result file {path} was referred to but no run produced it")
    prov = folder / "provenance.json"
    if prov.is_file() and name not in json.loads(prov.read_text()).get("files", {}):
        raise MissingResultError(f"result file {path} is not recorded in {prov}: no run of this notebook produced it")
    return path


def read_table(folder: str | Path, stem: str) -> list[dict[str, str]]:
    """Rows of ``<stem>.csv`` (a produced result, see :func:`require_result`)."""
    import csv

    with open(require_result(folder, f"{stem}.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def show_result(folder: str | Path, stem: str) -> Any:
    """Display a produced table (``<stem>.csv``, as one HTML :class:`~moero.eval.tables.Table` with the
    caption and units its provenance records) or figure (``<stem>.png``) from disk, failing if it is missing."""
    from IPython.display import Image

    folder = Path(folder)
    if (folder / f"{stem}.png").exists() or not (folder / f"{stem}.csv").exists():
        return Image(filename=str(require_result(folder, f"{stem}.png")))
    path = require_result(folder, f"{stem}.csv")
    prov = folder / "provenance.json"
    entry = json.loads(prov.read_text()).get("files", {}).get(path.name, {}) if prov.is_file() else {}
    return Table.from_csv(path.read_text(), caption=entry.get("caption", ""), units=entry.get("units"))


def publish_figure(run: Any, fig: Any, stem: str, caption: str = "") -> Any:
    """Save ``fig`` through ``run`` (PNG + provenance), close it, and display the file written to disk,
    so the chapter shows exactly the produced result (a missing file fails the notebook)."""
    import matplotlib.pyplot as plt

    run.figure(fig, stem, caption=caption)
    plt.close(fig)
    return show_result(run.results_dir, stem)


MIN_SEEDS = 3  # the book's rule: a verdict needs >= 3 seeds and a difference beyond twice its standard error


def verdict(ours: float, theirs: float, se: float | None = None, seeds: int = 1) -> str:
    """``holds`` / ``contradicts`` only when ``seeds >= MIN_SEEDS`` and ``|ours| > 2 se`` (``se``: the
    standard error of our difference, from paired differences over seeds and test files); otherwise
    ``inconclusive at this scale``, saying which way our single estimate points."""
    if math.isnan(ours):
        return "not measured"
    if math.isnan(theirs):
        return "no paper value"
    agree = (ours > 0) == (theirs > 0) if theirs != 0 else abs(ours) < 1e-3
    if se is None or seeds < MIN_SEEDS or not abs(ours) > 2 * se:
        why = f"{seeds} seed{'s' if seeds != 1 else ''}" if se is None or seeds < MIN_SEEDS else "within 2 SE"
        return f"inconclusive at this scale ({why}; sign {'agrees' if agree else 'differs'})"
    return "holds" if agree else "contradicts"


def compare_row(name: str, ours: float, theirs: float, se: float | None = None, seeds: int = 1) -> dict[str, Any]:
    """One row of a chapter's verdict table (shown with ``run.table``): our difference, its standard error
    and seed count, the paper's, and the :func:`verdict` (never "holds" from one seed)."""
    return {"comparison": name, "ours_difference": float(ours), "seeds": int(seeds),
            "ours_se": float("nan") if se is None else float(se), "trend_here": verdict(ours, theirs, se, seeds),
            "paper_difference": float(theirs)}


def admonition(text: str, title: str = "Note", kind: str = "note") -> Any:
    """A computed statement shown as the book's admonition box (wrapped text, never a cut print line)."""
    from IPython.display import HTML

    return HTML(f'<div class="admonition {html.escape(kind)}"><p class="admonition-title">{html.escape(title)}</p>'
                f"<p>{html.escape(text)}</p></div>")


def show_source(src: ResultsSource, run: Any, stem: str) -> Any:
    """Say where the chapter's results come from; repeat table ``stem`` only when it is not this run's own
    (committed gpu-profile results), so no table is shown twice."""
    from IPython.display import HTML

    box = admonition(src.note, title=f"Results shown: {src.kind} profile").data
    if Path(src.folder).resolve() == Path(run.results_dir).resolve():
        return HTML(box)
    return HTML(box + show_result(src.folder, stem)._repr_html_())
