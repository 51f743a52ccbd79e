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
_SMOKE: dict[str, dict[str, Any]] = {
    "00_profiles": {},
    "10_synthetic_data": {},
    "01_forward_model": {"accelerations": [4, 8], "frames": 3, "cg_iters": 5},
    "02_kspace_augmentation": {},
    "03_image_augmentation": {},
    "04_vq_codebooks": {},
    "05_histogram_routing": {},
    "06_training": {},
    "07_augmentation_ablation": {},
    "08_model_ablation": {},
    "09_efficiency": {},
}
_CPU: dict[str, dict[str, Any]] = {
    "00_profiles": {},
    "10_synthetic_data": {},
    "01_forward_model": {"accelerations": [4, 8, 12, 24], "frames": 6, "cg_iters": 20},
    "02_kspace_augmentation": {},
    "03_image_augmentation": {},
    "04_vq_codebooks": {},
    "05_histogram_routing": {},
    "06_training": {},
    "07_augmentation_ablation": {},
    "08_model_ablation": {},
    "09_efficiency": {},
}
_GPU: dict[str, dict[str, Any]] = copy.deepcopy(_CPU)
_PAPER: dict[str, dict[str, Any]] = copy.deepcopy(_CPU)

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
