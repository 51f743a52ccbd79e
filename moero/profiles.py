"""Run profiles: the one place that sets sizes for data, models and every notebook.

``smoke``: the test suite (seconds per notebook). ``cpu``: the default of ``make book`` (minutes on
two cores, shows trends). ``gpu``: one GPU, under an hour. ``paper``: the paper's configurations on
the real CMRxRecon2025 data, several GPUs through torchrun.

A notebook asks :func:`notebook_params` for its sizes; papermill passes ``profile`` and optional
overrides through the notebook's ``parameters`` cell.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Profile", "PROFILES", "get_profile", "notebook_params"]


@dataclass(frozen=True)
class Profile:
    """Sizes shared by a whole run of the book, plus per-notebook parameters."""

    name: str
    description: str
    dataset: str  # synthetic dataset size profile (moero.data), ignored when real data is given
    model_preset: str  # moero.models preset name
    device: str  # "cpu", "cuda" or "auto"
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)


# Per-notebook parameters, keyed by notebook stem. Each notebook owns its entry.
_SMOKE_RUNS: dict[str, Any] = {  # shared by 06-08: the same runs (changing one setting retrains them)
    "train": {"preset": "tiny", "image_shape": [32, 24], "lr": 1e-3, "schedule": "constant", "val_every": 0,
              "checkpoint_every": 0, "device": "cpu", "accelerations": [4, 8], "acs": 8},
    "budget_unit": "steps", "budgets": [2, 4], "curve_budgets": [2, 4], "experts": [2, 4],
    "nav": {"warmup": 1, "buffer_size": 4, "restarts": 1, "max_iter": 10},
    "augment_probability": 0.5, "ratios": [0.0, 1.0], "small_subjects": 1, "eval_files": 1, "eval_shape": [48, 32],
    "cg": {"iters": 4, "lam": 0.01}, "threads": 2, "nproc": 1,
}
_CPU_RUNS: dict[str, Any] = {
    "train": {"preset": "tiny", "image_shape": [48, 32], "lr": 1e-3, "schedule": "constant", "val_every": 0,
              "checkpoint_every": 100, "device": "cpu", "accelerations": [4, 8, 12]},
    "budget_unit": "steps", "budgets": [200, 400, 600], "curve_budgets": [50, 100, 200, 400, 600], "experts": [2, 4],
    "nav": {"warmup": 16, "buffer_size": 16, "restarts": 2, "max_iter": 30},
    "augment_probability": 0.5, "ratios": [0.0, 0.5, 1.0], "small_subjects": 4, "eval_files": 2, "eval_shape": [96, 64],
    "cg": {"iters": 10, "lam": 0.01}, "threads": 2, "nproc": 1,
}
_SMOKE: dict[str, dict[str, Any]] = {
    "00_profiles": {},
    "10_synthetic_data": {"loader_examples": 4},
    "01_forward_model": {
        "accelerations": [4, 8], "frames": 3, "cg_iters": 8, "cg_lam": 1e-2, "acs": 12,
        "mask_shape": [128, 96], "espirit_kernel": 5,
    },
    "02_kspace_augmentation": {"sigmas": [0.05, 0.2], "motion_ranges": [0.0, 2.0], "shots": [1, 8], "gre": True},
    "03_image_augmentation": {"ratios": [0.0, 1.0], "examples": 3, "frames": 3},
    "04_vq_codebooks": {"num_files": 12, "frames_per_file": 1, "image_size": 32, "patch": 4, "num_codes": 32,
                        "steps": 30, "batch_size": 8, "restart_after": 5},
    "05_histogram_routing": {"preset": "tiny-2x2", "num_examples": 24, "fit_examples": 8, "passes": 3,
                             "buffer_size": 16, "warmup": 12},
    "06_training": {**copy.deepcopy(_SMOKE_RUNS), "curve_smooth": 5},
    "07_augmentation_ablation": copy.deepcopy(_SMOKE_RUNS),
    "08_model_ablation": copy.deepcopy(_SMOKE_RUNS),
    "09_efficiency": {"names": ["promptmr", "vq-prompt", "moero-2", "moero-4"], "preset": "tiny", "cascades": 2,
                      "shape": [32, 24], "rounds": 1, "warmup": 1, "ddp_world": 2, "ddp_rounds": 1,
                      "ddp_names": ["vq-prompt", "moero-2", "moero-2-find_unused"], "stage_steps": 2,
                      "stage_shape": [32, 24], "threads": 2},
}
_CPU: dict[str, dict[str, Any]] = {
    "00_profiles": {},
    "10_synthetic_data": {"loader_examples": 24},
    "01_forward_model": {
        "accelerations": [4, 8, 12, 24], "frames": 6, "cg_iters": 15, "cg_lam": 1e-2, "acs": 20,
        "mask_shape": [512, 246], "espirit_kernel": 6,
    },
    "02_kspace_augmentation": {
        "sigmas": [0.05, 0.1, 0.2, 0.4], "motion_ranges": [0.0, 1.0, 2.0, 4.0], "shots": [1, 4, 16], "gre": True,
    },
    "03_image_augmentation": {"ratios": [0.0, 0.3, 0.6, 1.0], "examples": 4, "frames": 5},
    "04_vq_codebooks": {"num_files": 60, "frames_per_file": 2, "image_size": 64, "patch": 4, "num_codes": 128,
                        "steps": 400, "batch_size": 16, "restart_after": 20},
    "05_histogram_routing": {"preset": "small-4x4", "num_examples": 120, "fit_examples": 40, "passes": 4,
                             "buffer_size": 96, "warmup": 120},
    "06_training": {**copy.deepcopy(_CPU_RUNS), "curve_smooth": 5},
    "07_augmentation_ablation": copy.deepcopy(_CPU_RUNS),
    "08_model_ablation": copy.deepcopy(_CPU_RUNS),
    "09_efficiency": {"names": ["promptmr", "vq-prompt", "moero-2", "moero-4"], "preset": "tiny", "cascades": 2,
                      "shape": [64, 48], "rounds": 3, "warmup": 2, "ddp_world": 2, "ddp_rounds": 2,
                      "ddp_names": ["vq-prompt", "moero-2", "moero-2-find_unused", "moero-4", "moero-4-find_unused"],
                      "stage_steps": 3, "stage_shape": [64, 48], "threads": 2},
}
_GPU: dict[str, dict[str, Any]] = copy.deepcopy(_CPU)
_PAPER: dict[str, dict[str, Any]] = copy.deepcopy(_CPU)
# 06-08 on one GPU in under an hour: the small preset at 128x96 crops, a few thousand steps in total
_GPU_RUNS: dict[str, Any] = {
    **copy.deepcopy(_CPU_RUNS),
    "train": {"preset": "small", "image_shape": [128, 96], "lr": 5e-4, "schedule": "constant", "val_every": 0,
              "checkpoint_every": 200, "device": "auto", "num_workers": 4},
    "budgets": [400, 600, 800], "curve_budgets": [100, 200, 400, 600, 800],
    "nav": {"warmup": 100, "buffer_size": 128, "restarts": 4, "max_iter": 50},
    "small_subjects": 20, "eval_files": 0, "eval_shape": None, "ratios": [0.0, 0.25, 0.5, 1.0],
}
# the paper: 12 cascades (U-Net [72, 96, 120]), 12 / 18 / 24 epochs (snapshots of one run), PromptMR+'s
# x0.1 step at epoch 11, native matrix sizes (batch 1), BranchNav as the authors run it, torchrun on all GPUs
_PAPER_RUNS: dict[str, Any] = {
    **copy.deepcopy(_CPU_RUNS),
    "train": {"preset": "paper", "image_shape": [], "lr": 2e-4, "schedule": "step", "lr_step_epoch": 11,
              "val_every": 1, "max_val_examples": 200, "checkpoint_every": 1000, "device": "auto",
              "gradient_checkpointing": True, "num_workers": 4},
    "budget_unit": "epochs", "budgets": [12, 18, 24], "curve_budgets": [3, 6, 12, 18, 24],
    "nav": {"warmup": 8000, "buffer_size": 2048, "restarts": 8, "max_iter": 100},
    "small_subjects": 20, "eval_files": 0, "eval_shape": None, "ratios": [0.0, 0.25, 0.5, 1.0],
    "nproc": "all",
}
for _runs, _table in ((_GPU_RUNS, _GPU), (_PAPER_RUNS, _PAPER)):
    _table["06_training"] = {**copy.deepcopy(_runs), "curve_smooth": 50}
    _table["07_augmentation_ablation"] = copy.deepcopy(_runs)
    _table["08_model_ablation"] = copy.deepcopy(_runs)
_GPU["09_efficiency"] = {**_GPU["09_efficiency"], "preset": "small", "cascades": 4, "shape": [256, 192],
                         "rounds": 5, "warmup": 3, "stage_shape": [256, 192]}
_PAPER["09_efficiency"] = {**_PAPER["09_efficiency"], "preset": "paper", "cascades": 12, "shape": [256, 192],
                           "rounds": 5, "warmup": 3, "stage_shape": [], "names": ["promptmr", "vq-prompt",
                           "moero-2", "moero-4"]}

PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", "test suite: seconds per notebook", "smoke", "tiny", "cpu", _SMOKE),
    "cpu": Profile("cpu", "default of make book: minutes on 2 CPU cores", "cpu", "small", "cpu", _CPU),
    "gpu": Profile("gpu", "one GPU, under an hour", "gpu", "medium", "auto", _GPU),
    "paper": Profile(
        "paper", "the paper's configurations on real CMRxRecon2025 data, several GPUs", "gpu", "paper", "auto", _PAPER
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a ``ValueError`` lists the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def notebook_params(notebook: str, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of ``notebook`` under ``profile``, updated by ``overrides`` (unknown keys refused)."""
    prof = get_profile(profile)
    if notebook not in prof.notebooks:
        raise ValueError(f"profile {profile!r} has no entry for notebook {notebook!r}")
    params = copy.deepcopy(prof.notebooks[notebook])
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ValueError(
                f"parameter {key!r} is not a parameter of notebook {notebook!r}; known: {sorted(params)}"
            )
        params[key] = value
    return params
