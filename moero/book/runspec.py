"""What a run of the results chapters is and where it lives (chapters 06-09).

* :class:`Experiment`: one training run (registry model, config overrides, subjects, seed, budgets);
* :func:`catalogue`: the experiments of a profile (baseline, VQ-Prompt, Moero with 2 and 4 experts,
  k-space and image augmentation, the augmentation-ratio sweep on a small set);
* :func:`runs_dir`, :func:`snapshot_path`: ``_build/runs/<profile>/<name>/seed-<k>/snapshot-<budget>.pt``;
* :func:`experiment_config`: the ``TrainConfig`` of an experiment (profile block + overrides + BranchNav);
* :func:`small_set`: the subjects of the small training set (``TrainConfig.train_subjects``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moero.data.readers import read_manifest
from moero.data.synthetic import ensure_synthetic
from moero.eval.evaluate import TEST_ACCELERATIONS
from moero.models.promptmr import preset
from moero.models.registry import parse_model_name
from moero.paths import build_dir, default_data_root
from moero.train.config import TrainConfig

__all__ = ["AUGMENTATIONS", "augmented_names", "SPEC_NAME", "MissingResultError", "Experiment", "model_names",
           "paper_model", "catalogue", "ratio_experiment", "seeds", "resolve_nproc", "runs_dir", "chosen_subjects",
           "small_set", "base_root",
           "experiment_config", "FIT_BY", "nav_settings", "snapshot_budgets", "snapshot_path", "test_accelerations"]

SPEC_NAME = "experiment.json"


class MissingResultError(FileNotFoundError):
    """A chapter refers to a result file that no run produced (the book build must fail)."""

@dataclass(frozen=True)
class Experiment:
    """One training run: a registry model (``promptmr``, ``vq-prompt``, ``moero-<C>x<K>``), TrainConfig
    overrides (``augment``: an ``AugmentConfig`` mapping, ...), an optional subset of training subjects, the
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


AUGMENTATIONS = ("kspace", "image")  # the augmented full-set runs of Tab. 1: <kind>-aug


def augmented_names(params: dict[str, Any]) -> list[str]:
    """The Tab. 1 runs a profile trains beside the baseline: ``<kind>-aug`` for each kind of its
    ``augmentations`` (default both; a profile short of time may train fewer, its chapter then says which claim
    is not testable)."""
    kinds = [str(k) for k in params.get("augmentations", AUGMENTATIONS)]
    unknown = sorted(set(kinds) - set(AUGMENTATIONS))
    if unknown or "kspace" not in kinds:
        raise ValueError(f"parameter 'augmentations' must hold 'kspace' and may hold 'image', got {kinds}")
    return [f"{k}-aug" for k in AUGMENTATIONS if k in kinds]


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
        Experiment("kspace-aug", "+ k-space aug (noise + motion)",
                   config={"augment": {"kind": "kspace", "probability": prob}}),
        Experiment("image-aug", "+ image aug", config={"augment": {"kind": "image", "probability": prob}}),
    ]
    exps = [e for e in exps if not e.name.endswith("-aug") or e.name in augmented_names(params)]
    small = int(params.get("small_subjects", 0))
    if small:
        small_budgets = tuple(int(b) for b in params.get("small_budgets", ()))
        for ratio in params.get("ratios", ()):
            cfg = {"augment": {"kind": "kspace", "probability": float(ratio)}} if ratio else {}
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


def resolve_nproc(value: int | str) -> int:
    """Training processes per run: an int, or ``"all"`` (every visible GPU, at least 1)."""
    if value == "all":
        return max(1, torch.cuda.device_count())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"parameter 'nproc' must be a positive int or 'all', got {value!r}")
    return value


def runs_dir(profile: str) -> Path:
    """``<build dir>/runs/<profile>``: every training run of the chapters."""
    return build_dir() / "runs" / profile


def chosen_subjects(rows: Sequence[dict[str, Any]], subjects: int) -> set[str]:
    """The ``subjects`` training subjects of manifest ``rows`` that a small training set keeps: sorted, every
    k-th, so they spread over centres and vendors."""
    names = sorted({r["subject"] for r in rows if r["split"] == "train"})
    return set(names[:: max(1, len(names) // subjects)][:subjects])


def small_set(root: str | Path, subjects: int) -> list[str]:
    """The training subjects of the small set of ``subjects`` subjects of ``root`` (:func:`chosen_subjects`),
    sorted; a ``ValueError`` when the tree has no training subject or ``subjects`` < 1."""
    rows = read_manifest(Path(root))
    if subjects < 1 or not any(r["split"] == "train" for r in rows):
        raise ValueError(f"subjects must be >= 1 and {root} must hold training subjects, got {subjects}")
    return sorted(chosen_subjects(rows, subjects))


def base_root(params: dict[str, Any], data_root: str | Path | None, dataset_size: str) -> Path:
    if data_root:
        return Path(data_root)

    return ensure_synthetic(default_data_root(dataset_size), size=dataset_size, seed=0, progress=False)


def experiment_config(exp: Experiment, params: dict[str, Any], run_dir: str | Path,
                      data_root: str | Path | None = None, dataset_size: str = "smoke"):
    """The ``TrainConfig`` of ``exp``: the profile's ``train`` settings, then the experiment's overrides."""
    nav = nav_settings(params, exp) if parse_model_name(exp.model).family == "moero" else {}
    values = {**dict(params.get("train", {})), **exp.config, "model": exp.model, "nav": nav, "seed": exp.seed,
              "run_dir": str(run_dir), "dataset_size": dataset_size, "progress": False, "resume": True,
              "resume_if_present": True}  # the first segment starts the run, later ones continue it
    root = base_root(params, data_root, dataset_size)
    if exp.subjects:  # the small set: the same tree, training restricted to the chosen subjects
        values["train_subjects"] = small_set(root, exp.subjects)
    values["data_root"] = str(root)
    return TrainConfig.from_dict(values)


FIT_BY = 0.25  # the centres must be fitted by this fraction of the first Tab. 2 budget (routing active when judged)


def nav_settings(params: dict[str, Any], exp: Experiment) -> dict[str, Any]:
    """BranchNav keyword arguments of ``exp``: the profile's ``nav``, with ``warmup_fraction``,
    ``buffer_fraction`` and ``refit_fraction`` turned into ``warmup``, ``buffer_size`` and ``refit_every`` in
    samples, as fractions of the samples the run sees by its **first** Tab. 2 budget (steps x batch size):
    the centres are fitted early (by :data:`FIT_BY` of that budget at the latest), so every budget at which
    Moero is judged is routed. With ``budget_unit`` epochs use the paper's ``warmup: epoch`` instead."""
    nav = dict(params.get("nav", {}))
    fractions = {k: nav.pop(k) for k in ("warmup_fraction", "buffer_fraction", "refit_fraction") if k in nav}
    if not fractions:
        return nav
    if params.get("budget_unit", "steps") != "steps":
        raise ValueError("parameters 'nav.warmup_fraction'/'nav.buffer_fraction'/'nav.refit_fraction' need "
                         "budget_unit 'steps'")
    warm, buf = float(fractions.get("warmup_fraction", 0.0)), float(fractions.get("buffer_fraction", 0.1))
    if not (0.0 <= warm < 1.0 and 0.0 < buf and warm + buf <= FIT_BY):
        raise ValueError(f"parameters 'nav.warmup_fraction' ({warm}) and 'nav.buffer_fraction' ({buf}) must be >= 0, "
                         f"> 0 and together at most {FIT_BY} (the centres are fitted by then)")
    first = min(int(b) for b in params.get("budgets") or snapshot_budgets(params, exp))
    samples = first * int(params.get("train", {}).get("batch_size", 1))
    nav["warmup"] = int(round(warm * samples))
    nav["buffer_size"] = max(exp.num_experts, int(round(buf * samples)))
    if "refit_fraction" in fractions:
        refit = float(fractions["refit_fraction"])
        if not refit > 0:
            raise ValueError(f"parameter 'nav.refit_fraction' must be > 0, got {refit}")
        nav["refit_every"] = max(1, int(round(refit * samples)))
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


def test_accelerations(params: dict[str, Any]) -> tuple[float, ...]:
    """The accelerations every test file is reconstructed at (``test_accelerations``; default 8, 16, 24)."""
    return tuple(float(a) for a in params.get("test_accelerations", TEST_ACCELERATIONS))
