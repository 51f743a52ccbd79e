"""Notebook parameters of ``moero book`` (``-p KEY VALUE``): parsed, routed to the notebooks that have
them, and checked against the type and sign of the profile's values before any notebook runs."""

from __future__ import annotations

import json
from typing import Any

from moero.book.profiles import get_profile

__all__ = ["coerce_param", "check_param_type", "split_params"]


def coerce_param(value: str) -> Any:
    """``-p key value`` values: JSON when they parse (numbers, lists, booleans), else strings."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def check_param_type(key: str, value: Any, default: Any) -> None:
    """A ``ValueError`` naming ``key`` unless ``value`` has the type of the profile's ``default`` (an
    integer is a valid number; None defaults accept anything; list items and mapping values are
    checked against the default's first item / same key)."""
    if default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list | tuple):
        ok = isinstance(value, list | tuple)
        if ok and default:
            for i, item in enumerate(value):
                check_param_type(f"{key}[{i}]", item, default[0])
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
        if ok:
            for name, item in value.items():
                if name in default:
                    check_param_type(f"{key}.{name}", item, default[name])
    else:
        ok = True
    if not ok:
        raise ValueError(f"parameter {key!r}: expected {_type_name(default)} like the profile's {default!r}, "
                         f"got {value!r}")
    numeric = isinstance(default, int | float) and not isinstance(default, bool)
    if numeric and default >= 0 and not value >= 0:  # sizes, counts, rates: never negative (nor NaN)
        raise ValueError(f"parameter {key!r}: must be >= 0 like the profile's {default!r}, got {value!r}")


def split_params(profile: str, stems: list[str], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route ``-p`` overrides: ``key`` goes to every notebook that has it, ``stem.key`` to one notebook.

    Each value must have the type of the profile's value (:func:`check_param_type`)."""
    entries = get_profile(profile).notebooks
    out: dict[str, dict[str, Any]] = {stem: {} for stem in stems}
    for key, value in params.items():
        stem, _, name = key.rpartition(".")
        targets = [stem] if stem else [s for s in stems if key in entries.get(s, {})]
        targets = [t for t in targets if t in out and name in entries.get(t, {})]
        if not targets:
            raise ValueError(f"parameter {key!r} is not a parameter of any notebook run for profile {profile!r}")
        for target in targets:
            check_param_type(key, value, entries[target][name])
            out[target][name] = value
    return out
