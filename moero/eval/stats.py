"""Seeds and standard errors of the results chapters (the book's rule for a verdict).

A result is a list of per-file rows (``file`` plus metrics; on the test grid also ``kind`` and
``acceleration``), one list per training seed. Two models are compared *paired*: the same test files,
the same masks, seed ``s`` of one against seed ``s`` of the other. With ``D[s, f]`` the difference on
file ``f`` for seed pair ``s`` (averaged over the file's masks), the mean difference is ``D.mean()`` and
its standard error adds the two crossed sources of noise,

    SE^2 = var_s(mean_f D[s, f]) / S + var_f(mean_s D[s, f]) / F,

the spread over training seeds and over test files (sample variances). A deterministic reference
(zero filling, CG-SENSE) is one "seed" paired with every seed of the model.

The verdicts use the *subject* as the unit (files of one subject are not independent):
:func:`subject_differences` gives ``D[s, u]`` per seed pair and subject, :func:`crossed_interval` its
mean with a t interval on Satterthwaite degrees of freedom (the seed term has only ``S - 1``, so a fixed
"2 SE" rule is no 5 % test), :func:`holm` adjusts a family of p-values and :func:`judge_family` /
:func:`verdict` turn them into ``holds`` / ``contradicts`` / ``inconclusive at this scale`` / ``not
testable at this scale (<reason>)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from scipy.stats import t as student_t

__all__ = ["file_means", "seed_summary", "paired_difference", "VERDICTS", "MIN_SEEDS", "subject_of",
           "subject_means", "subject_differences", "Interval", "t_interval", "seed_interval", "crossed_interval",
           "holm", "verdict", "Comparison", "Judgement", "judge_family"]

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


def _paired_table(a: Sequence[Rows], b: Sequence[Rows], means: Callable[[Rows], dict[str, float]], units: str,
                  caller: str) -> tuple[np.ndarray, list[str]]:
    """``D[s, u] = means(a[s])[u] - means(b[s])[u]`` over the units common to both (``b`` may hold one run,
    paired with every seed of ``a``), and the units; every seed must cover the same units."""
    table = []
    common_units: list[str] | None = None
    for s, rows in enumerate(a):
        ma, mb = means(rows), means(b[s if len(b) > 1 else 0])
        common = sorted(set(ma) & set(mb))
        if common_units is None:
            common_units = common
        elif common != common_units:
            raise ValueError(f"{caller}: the seeds were scored on different {units}")
        table.append([ma[u] - mb[u] for u in common])
    d = np.asarray(table, dtype=np.float64)
    if d.size == 0:
        raise ValueError(f"{caller}: no {units[:-1] if units.endswith('s') else units} is common to both results")
    return d, list(common_units or [])


def paired_difference(a: Sequence[Rows], b: Sequence[Rows], metric: str = "ssim",
                      keep: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, float]:
    """Mean difference ``a - b`` and its standard error (module docstring) over seed pairs and test files.

    ``a``, ``b``: one row list per seed; ``b`` may hold a single run (a deterministic reference), used for
    every seed of ``a``. Returns ``{"mean", "se", "seeds", "files"}``."""
    if not a or not b or (len(b) != 1 and len(b) != len(a)):
        raise ValueError(f"paired_difference needs runs of a and b per seed (or one b), got {len(a)} and {len(b)}")
    d, _ = _paired_table(a, b, lambda rows: file_means(rows, metric, keep), "test files", "paired_difference")
    seeds, nfiles = d.shape
    var = (d.mean(axis=1).var(ddof=1) / seeds if seeds > 1 else 0.0) + (
        d.mean(axis=0).var(ddof=1) / nfiles if nfiles > 1 else 0.0)
    return {"mean": float(d.mean()), "se": float(math.sqrt(var)), "seeds": int(seeds), "files": int(nfiles)}


# ---------------------------------------------------------------------------- subjects, intervals, verdicts
# The unit of the test data is the subject: the files (views, modalities) of one subject share anatomy,
# scanner and coil set, so they are not independent. A comparison is the table D[s, u] of paired
# differences per seed pair s and subject u (each subject's files averaged first), modelled as
# D = mu + a_s + b_u + e_su with crossed random seed and subject effects.

VERDICTS = ("holds", "contradicts", "inconclusive at this scale", "not testable at this scale")
MIN_SEEDS = 5  # seeds a verdict needs (issue 24: at least 5 for every headline comparison)


def subject_of(row: Mapping[str, Any]) -> str:
    """The subject of a per-file row: its ``subject`` field, else the last three folders of its ``file``
    (``Center/Vendor/Pxxx`` in the CMRxRecon layout), else the file itself."""
    subject = str(row.get("subject", "") or "")
    if subject:
        return subject
    parts = PurePosixPath(str(row["file"]).replace("\\", "/")).parent.parts
    return "/".join(parts[-3:]) if parts else str(row["file"])


def subject_means(rows: Rows, metric: str = "ssim", keep: Callable[[Mapping[str, Any]], bool] | None = None,
                  subject: Callable[[Mapping[str, Any]], str] | None = None) -> dict[str, float]:
    """Mean of ``metric`` per subject: each file's rows (masks) averaged first (:func:`file_means`), then
    the subject's files. ``subject`` maps a row to its subject (default :func:`subject_of`)."""
    of = subject or subject_of
    owner: dict[str, str] = {}
    for r in rows:
        if keep is None or keep(r):
            owner.setdefault(str(r["file"]), of(r))
    acc: dict[str, list[float]] = {}
    for f, v in file_means(rows, metric, keep).items():
        acc.setdefault(owner[f], []).append(v)
    return {s: sum(v) / len(v) for s, v in acc.items()}


def subject_differences(a: Sequence[Rows], b: Sequence[Rows], metric: str = "ssim",
                        keep: Callable[[Mapping[str, Any]], bool] | None = None,
                        subject: Callable[[Mapping[str, Any]], str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The table ``D[s, u]`` of ``a - b`` per seed pair and subject, and the subjects (sorted).

    ``a``, ``b``: one row list per seed; ``b`` may hold one run (a deterministic reference), paired with
    every seed of ``a``. Every seed must cover the same subjects."""
    if not a or not b or (len(b) != 1 and len(b) != len(a)):
        raise ValueError(f"subject_differences needs runs of a and b per seed (or one b), got {len(a)} and {len(b)}")
    return _paired_table(a, b, lambda rows: subject_means(rows, metric, keep, subject), "subjects",
                         "subject_differences")


@dataclass(frozen=True)
class Interval:
    """Mean of a seed x subject table with its standard error, Satterthwaite degrees of freedom, the
    two-sided t interval at ``level`` and the p-value of ``mean = 0`` (NaN where not estimable)."""

    mean: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p: float
    seeds: int
    subjects: int
    level: float = 0.95


def t_interval(mean: float, se: float, df: float, level: float = 0.95) -> tuple[float, float]:
    """``mean -+ t_{df, (1 + level) / 2} se`` (NaN bounds when ``se`` or ``df`` is not finite)."""
    if se == 0.0:
        return mean, mean
    if not (math.isfinite(se) and df > 0):
        return math.nan, math.nan
    q = float(student_t.ppf(0.5 + level / 2.0, df))
    return mean - q * se, mean + q * se


def seed_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of one value per training seed with a t interval on ``S - 1`` degrees of freedom (a measure with
    no test subjects, e.g. how much the routes follow the content); SE, interval and p NaN for one seed."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"seed_interval needs finite values, one per seed, got {v.tolist()}")
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean, math.nan, math.nan, math.nan, math.nan, math.nan, int(v.size), 0, level)
    se = float(v.std(ddof=1) / math.sqrt(v.size))
    df = float(v.size - 1)
    if se == 0.0:
        return Interval(mean, 0.0, df, mean, mean, 1.0 if mean == 0.0 else 0.0, int(v.size), 0, level)
    lo, hi = t_interval(mean, se, df, level)
    return Interval(mean, se, df, lo, hi, float(2.0 * student_t.sf(abs(mean) / se, df)), int(v.size), 0, level)


def crossed_interval(d: np.ndarray, level: float = 0.95) -> Interval:
    """Mean of ``D[s, u]`` (seeds x subjects) with a t interval for crossed seed and subject effects.

    Variance (the two-way mean squares ``MS_seed = U var_s(row means)``, ``MS_subj = S var_u(column
    means)``): ``SE^2 = (MS_seed + MS_subj) / (S U) = var_s / S + var_u / U``, which exceeds the unbiased
    ``(MS_seed + MS_subj - MS_res) / (S U)`` by ``MS_res / (S U)``: conservative, never negative. Degrees
    of freedom by Satterthwaite, ``SE^4 / ((var_s / S)^2 / (S - 1) + (var_u / U)^2 / (U - 1))``: between
    ``min(S, U) - 1`` and ``S + U - 2``, near ``S - 1`` when the seed term dominates (as at CPU scale).
    With one seed or one subject the missing term is not estimable: SE, interval and p are NaN."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"crossed_interval needs a finite (seeds, subjects) table, got shape {d.shape}")
    seeds, subjects = d.shape
    mean = float(d.mean())
    if seeds < 2 or subjects < 2:
        return Interval(mean, math.nan, math.nan, math.nan, math.nan, math.nan, seeds, subjects, level)
    vs = float(d.mean(axis=1).var(ddof=1)) / seeds
    vu = float(d.mean(axis=0).var(ddof=1)) / subjects
    var = vs + vu
    se = math.sqrt(var)
    if var <= 0.0:  # every cell equal: no noise at all
        return Interval(mean, 0.0, math.inf, mean, mean, 1.0 if mean == 0.0 else 0.0, seeds, subjects, level)
    denom = vs * vs / (seeds - 1) + vu * vu / (subjects - 1)
    df = var * var / denom
    lo, hi = t_interval(mean, se, df, level)
    p = float(2.0 * student_t.sf(abs(mean) / se, df))
    return Interval(mean, se, df, lo, hi, p, seeds, subjects, level)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (same order; NaN entries stay NaN and do not
    count in the family): ``p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))`` over the sorted finite ones."""
    p = [float(x) for x in pvalues]
    finite = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
    m = len(finite)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


def verdict(effect: float, p_holm: float, seeds: int, paper: float | None, *, subjects: int = 2,
            ci: tuple[float, float] | None = None, margin: float | None = None, reason: str | None = None,
            alpha: float = 0.05, min_seeds: int = MIN_SEEDS) -> str:
    """The book's verdict on one comparison of a family, exactly one of :data:`VERDICTS` (the last with
    its reason in brackets).

    ``holds`` / ``contradicts``: the Holm-adjusted p-value is below ``alpha`` (the interval at the Holm
    level excludes 0) and our ``effect`` has the sign of the ``paper``'s effect / the opposite sign. A
    parity claim (``paper == 0``) needs an equivalence ``margin`` and the interval ``ci`` at the Holm
    level: ``holds`` when ``ci`` lies inside ``(-margin, margin)``, ``contradicts`` when it lies beyond
    ``margin`` on one side. Not testable: a given ``reason``, fewer than ``min_seeds`` seeds, one subject,
    no paper value. Otherwise ``inconclusive at this scale``."""
    if reason:
        return f"not testable at this scale ({reason})"
    if seeds < min_seeds:
        return f"not testable at this scale ({seeds} seed{'s' if seeds != 1 else ''}; a verdict needs {min_seeds})"
    if subjects < 2:
        return "not testable at this scale (one test subject)"
    if paper is None or not math.isfinite(float(paper)):
        return "not testable at this scale (no paper value)"
    if float(paper) == 0.0:
        if margin is None or ci is None:
            return "not testable at this scale (a parity claim needs an equivalence margin)"
        lo, hi = ci
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return "inconclusive at this scale"
        if -margin < lo and hi < margin:
            return "holds"
        if lo > margin or hi < -margin:
            return "contradicts"
        return "inconclusive at this scale"
    if not math.isfinite(p_holm) or p_holm >= alpha:
        return "inconclusive at this scale"
    return "holds" if math.copysign(1.0, effect) == math.copysign(1.0, float(paper)) else "contradicts"


@dataclass
class Comparison:
    """One claim to judge: ``diffs`` ``D[s, u]`` (ours minus reference, seeds x subjects; e.g. from
    :func:`subject_differences`), the ``paper``'s effect in the same units (None: unknown; 0: a parity
    claim, judged with ``margin``), and a ``reason`` that makes it not testable (e.g. "routing not
    active"); a comparison with a reason or too few seeds is not part of the Holm family."""

    name: str
    diffs: np.ndarray
    paper: float | None
    margin: float | None = None
    reason: str | None = None


@dataclass
class Judgement:
    """Our effect with its 95 % interval (and the interval at its Holm level) beside the paper's, the raw
    and Holm-adjusted p-values, the seeds and subjects behind it and the verdict."""

    name: str
    effect: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    ci_low_holm: float
    ci_high_holm: float
    p: float
    p_holm: float
    seeds: int
    subjects: int
    paper: float | None
    verdict: str

    def as_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def judge_family(comparisons: Sequence[Comparison], alpha: float = 0.05, min_seeds: int = MIN_SEEDS,
                 level: float = 0.95) -> list[Judgement]:
    """Judge a family of comparisons (the verdicts of chapters 06-09) with Holm's correction.

    Each comparison gets :func:`crossed_interval`; those with a reason, fewer than ``min_seeds`` seeds or
    no estimable p form no part of the family. Holm adjusts the p-values of the rest (:func:`holm`); the
    Holm-level interval of the comparison at sorted rank i (0-based) of m has level ``1 - alpha / (m -
    i)`` (a parity claim: ``1 - alpha / m``, Bonferroni). :func:`verdict` decides."""
    nothing = math.nan
    # a comparison with a reason and no data (e.g. a split without test files) is reported, never estimated
    stats = [crossed_interval(c.diffs, level) if np.asarray(c.diffs).size or not c.reason else
             Interval(nothing, nothing, nothing, nothing, nothing, nothing, int(np.asarray(c.diffs).shape[0]), 0, level)
             for c in comparisons]
    tested = [c.reason is None and st.seeds >= min_seeds and math.isfinite(st.p) and c.paper is not None
              and (float(c.paper) != 0.0) for c, st in zip(comparisons, stats, strict=True)]
    parity = [c.reason is None and st.seeds >= min_seeds and c.paper is not None and float(c.paper) == 0.0
              for c, st in zip(comparisons, stats, strict=True)]
    family = holm([st.p if t else math.nan for st, t in zip(stats, tested, strict=True)])
    m = sum(tested) + sum(parity)
    order = sorted((st.p, i) for i, (st, t) in enumerate(zip(stats, tested, strict=True)) if t)
    step_level = {i: 1.0 - alpha / (m - rank) for rank, (_, i) in enumerate(order)}
    out = []
    for i, (c, st) in enumerate(zip(comparisons, stats, strict=True)):
        lvl = step_level.get(i, 1.0 - alpha / max(m, 1))
        lo_h, hi_h = t_interval(st.mean, st.se, st.df, lvl) if (tested[i] or parity[i]) else (math.nan, math.nan)
        v = verdict(st.mean, family[i], st.seeds, c.paper, subjects=st.subjects, ci=(lo_h, hi_h),
                    margin=c.margin, reason=c.reason, alpha=alpha, min_seeds=min_seeds)
        out.append(Judgement(c.name, st.mean, st.se, st.df, st.ci_low, st.ci_high, lo_h, hi_h, st.p, family[i],
                             st.seeds, st.subjects, c.paper, v))
    return out
