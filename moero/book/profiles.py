"""Run profiles: the one place that sets sizes for data, models and every notebook.

``smoke``: the test suite (seconds per notebook). ``cpu``: the default of ``make book`` (minutes on
two cores, shows trends). ``gpu-short``: the GPU bundle's run (chapters 01 and 06-09 on one H200 in
about 7 minutes, ``make gpu-bundle``). ``gpu``: one GPU, under an hour. ``paper``: the paper's configurations on
the real CMRxRecon2025 data, several GPUs through torchrun.

The profiles are written in ``profiles.yaml`` beside this module: per profile one ``results`` block that
the training runs of chapters 06-08 share, plus each notebook's parameters (chapters 06-08: that block and
their own differences). A notebook asks :func:`notebook_params` for its sizes; papermill passes
``profile`` and optional overrides through the notebook's ``parameters`` cell.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Profile", "PROFILES", "PROFILES_FILE", "get_profile", "notebook_params", "load_profiles",
           "profile_differences"]

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")
RESULTS_CHAPTERS = ("06_training", "07_augmentation_ablation", "08_model_ablation")


@dataclass(frozen=True)
class Profile:
    """Sizes shared by a whole run of the book, plus per-notebook parameters."""

    name: str
    description: str
    dataset: str  # size of the synthetic dataset (moero.data.synthetic.SIZES), ignored when real data is given
    device: str  # "cpu", "cuda" or "auto"
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # the block chapters 06-08 share


def load_profiles(path: str | Path = PROFILES_FILE) -> dict[str, Profile]:
    """The profiles written in ``path``; a ``ValueError`` names the file and the profile when one is malformed."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"error: {path}: expected a mapping of profile names")
    out = {}
    for name, spec in raw.items():
        missing = {"description", "dataset", "device", "notebooks"} - set(spec or {})
        if missing:
            raise ValueError(f"error: {path}: profile {name!r} lacks {sorted(missing)}")
        results = dict(spec.get("results") or {})
        for chapter in RESULTS_CHAPTERS:  # the shared runs: every results chapter must use the same block
            params = spec["notebooks"].get(chapter)
            if params is not None and any(params.get(k) != v for k, v in results.items()):
                raise ValueError(f"error: {path}: profile {name!r}, notebook {chapter}: differs from the shared "
                                 f"results block in {sorted(k for k, v in results.items() if params.get(k) != v)}")
        out[name] = Profile(str(name), str(spec["description"]), str(spec["dataset"]), str(spec["device"]),
                            copy.deepcopy(spec["notebooks"]), results)
    return out


PROFILES: dict[str, Profile] = load_profiles()


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
            raise ValueError(f"parameter {key!r} is not a parameter of notebook {notebook!r}; known: {sorted(params)}")
        params[key] = value
    return params


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def profile_differences(names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per setting whose value differs between the profiles ``names`` (default: all): ``setting``
    (``<notebook>.<key>``, chapters 06-08 as ``results.<key>``) and one column per profile."""
    names = list(names or PROFILES)
    flat = {}
    for n in names:
        prof = get_profile(n)
        values = {"dataset": prof.dataset, "device": prof.device, **_flatten(prof.results, "results")}
        for nb, params in prof.notebooks.items():
            if nb not in RESULTS_CHAPTERS:
                values.update(_flatten(params, nb))
            else:
                values.update(_flatten({k: v for k, v in params.items() if k not in prof.results}, nb))
        flat[n] = values
    keys = list(dict.fromkeys(k for n in names for k in flat[n]))
    rows = []
    for key in keys:
        vals = [flat[n].get(key, "-") for n in names]
        if any(v != vals[0] for v in vals[1:]):
            rows.append({"setting": key, **{n: v for n, v in zip(names, vals, strict=True)}})
    return rows
