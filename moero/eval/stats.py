"""Seeds and standard errors of the results chapters (the book's rule for a verdict).

A result is a list of per-file rows (``file`` plus metrics; on the test grid also ``kind`` and
``acceleration``), one list per training seed. Two models are compared *paired*: the same test files,
the same masks, seed ``s`` of one against seed ``s`` of the other. With ``D[s, f]`` the difference on
file ``f`` for seed pair ``s`` (averaged over the file's masks), the mean difference is ``D.mean()`` and
its standard error adds the two crossed sources of noise,

    SE^2 = var_s(mean_f D[s, f]) / S + var_f(mean_s D[s, f]) / F,

the spread over training seeds and over test files (sample variances). A deterministic reference
(zero filling, CG-SENSE) is one "seed" paired with every seed of the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["file_means", "seed_summary", "paired_difference"]

Rows = Sequence[Mapping[str, Any]]


def file_means(rows: Rows, metric: str = "ssim", keep: Callable[[Mapping[str, Any]], bool] | None = None
               ) -> dict[str, float]:
    """Mean of ``metric`` per file over its rows (masks) that ``keep`` accepts."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if keep is None or keep(r):
            acc.setdefault(str(r["file"]), []).append(float(r[metric]))
    return {f: sum(v) / len(v) for f, v in acc.items()}


def seed_summary(runs: Sequence[Rows], metric: str = "ssim",
                 keep: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, float]:
    """``{"mean", "sd", "seeds"}`` of the per-seed means over files (``sd``: over seeds, NaN for one seed)."""
    if not runs:
        raise ValueError("seed_summary needs at least one run")
    means = []
    for rows in runs:
        per_file = file_means(rows, metric, keep)
        if not per_file:
            raise ValueError(f"seed_summary: a run has no rows for metric {metric!r} that the filter keeps")
        means.append(sum(per_file.values()) / len(per_file))
    arr = np.asarray(means)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else math.nan,
            "seeds": int(arr.size)}


def paired_difference(a: Sequence[Rows], b: Sequence[Rows], metric: str = "ssim",
                      keep: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, float]:
    """Mean difference ``a - b`` and its standard error (module docstring) over seed pairs and test files.

    ``a``, ``b``: one row list per seed; ``b`` may hold a single run (a deterministic reference), used for
    every seed of ``a``. Returns ``{"mean", "se", "seeds", "files"}``."""
    if not a or not b or (len(b) != 1 and len(b) != len(a)):
        raise ValueError(f"paired_difference needs runs of a and b per seed (or one b), got {len(a)} and {len(b)}")
    table = []
    files: list[str] | None = None
    for s, rows in enumerate(a):
        fa, fb = file_means(rows, metric, keep), file_means(b[s if len(b) > 1 else 0], metric, keep)
        common = sorted(set(fa) & set(fb))
        if files is None:
            files = common
        elif common != files:
            raise ValueError("paired_difference: the seeds were scored on different test files")
        table.append([fa[f] - fb[f] for f in common])
    d = np.asarray(table, dtype=np.float64)
    if d.size == 0:
        raise ValueError("paired_difference: no test file is common to both results")
    seeds, nfiles = d.shape
    var = (d.mean(axis=1).var(ddof=1) / seeds if seeds > 1 else 0.0) + (
        d.mean(axis=0).var(ddof=1) / nfiles if nfiles > 1 else 0.0)
    return {"mean": float(d.mean()), "se": float(math.sqrt(var)), "seeds": int(seeds), "files": int(nfiles)}
