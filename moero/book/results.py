"""What the results chapters (06-08) compute from the runs of :mod:`moero.book.experiments`.

Every number shown comes from the cached evaluations of the runs: test results per seed, their mean
and standard deviation over seeds, paired differences with standard errors
(:func:`moero.eval.stats.paired_difference`) and the "Setting" statement of each chapter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moero.book import evaluation, logs, runspec
from moero.data.readers import read_manifest
from moero.eval.metrics import DEFAULT_SPLITS
from moero.eval.stats import Comparison, paired_difference, seed_summary, subject_differences
from moero.models.registry import build_model

__all__ = ["seed_results", "reference_results", "at_acceleration", "method_row", "margin_rows", "routing_rows",
           "paired", "setting_text", "parameter_count", "training_examples", "training_wall_time",
           "r_eff_by_acceleration", "acceleration_columns", "run_folders", "late_gain_rows",
           "epochs_of", "budget_label", "compared", "change_between"]

Result = dict[str, Any]


def run_folders(params: dict[str, Any], profile: str, name: str, small: bool = False) -> list[Path]:
    """Run folders of experiment ``name`` for every seed of the profile (``small``: the sweep's seeds)."""
    exp = runspec.catalogue(params)[name]
    return [runspec.runs_dir(profile) / exp.with_seed(s).run_name for s in runspec.seeds(params, small=small)]


def seed_results(params: dict[str, Any], profile: str, name: str, budget: int, data_root: str | Path,
                 small: bool = False, seeds: Sequence[int] | None = None, device: str = "cpu") -> list[Result]:
    """The test-grid evaluation of ``name``'s snapshot ``budget``, one per seed (cached by the chapters' jobs)."""
    exp = runspec.catalogue(params)[name]
    chosen = runspec.seeds(params, small=small) if seeds is None else list(seeds)
    runs = runspec.runs_dir(profile)
    return [evaluation.evaluate_checkpoint(runs / exp.with_seed(s).run_name, budget, params, data_root,
                                  device=device) for s in chosen]


def reference_results(params: dict[str, Any], profile: str, data_root: str | Path, dataset_size: str,
                      device: str = "cpu") -> dict[str, Result]:
    """Zero-filled and CG-SENSE (Tikhonov weight chosen on validation) on the test grid."""
    return evaluation.reference_rows(params, data_root, dataset_size, device=device,
                                     cache_dir=runspec.runs_dir(profile))


def at_acceleration(acceleration: float | None, split: str = "total"):
    """Row filter: files of ``split`` (total / rare / fresh) at one test acceleration (None: all)."""
    in_split = DEFAULT_SPLITS[split]
    return lambda r: in_split(r) and (acceleration is None or float(r["acceleration"]) == float(acceleration))


def acceleration_columns(params: dict[str, Any]) -> list[str]:
    """Column names ``ssim_r8``, ``ssim_r16``... of the test accelerations."""
    return [f"ssim_r{a:g}" for a in runspec.test_accelerations(params)]


def method_row(label: str, runs: Sequence[Result], params: dict[str, Any], splits: Sequence[str] = ("total",)
               ) -> dict[str, Any]:
    """One table row: mean over seeds of SSIM (per split and per test acceleration), PSNR, NMSE and R_eff,
    with the seed count and the standard deviation over seeds of SSIM-total."""
    files = [r["files"] for r in runs]
    total = seed_summary(files, "ssim", at_acceleration(None))
    row: dict[str, Any] = {"method": label, "seeds": total["seeds"], "ssim_total": total["mean"],
                           "ssim_total_sd": total["sd"]}
    for split in splits:
        if split != "total":
            row[f"ssim_{split}"] = _mean_or_nan(files, "ssim", at_acceleration(None, split))
    for a, col in zip(runspec.test_accelerations(params), acceleration_columns(params), strict=True):
        row[col] = seed_summary(files, "ssim", at_acceleration(a))["mean"]
    row["psnr"] = seed_summary(files, "psnr", at_acceleration(None))["mean"]
    row["nmse"] = seed_summary(files, "nmse", at_acceleration(None))["mean"]
    row["r_eff"] = seed_summary(files, "r_eff", at_acceleration(None))["mean"]
    return row


def _mean_or_nan(files: Sequence[Sequence[Mapping[str, Any]]], metric: str, keep: Any) -> float:
    try:
        return seed_summary(files, metric, keep)["mean"]
    except ValueError:  # no file of that split
        return math.nan


def paired(a: Sequence[Result], b: Sequence[Result], acceleration: float | None = None, split: str = "total",
           metric: str = "ssim") -> dict[str, float]:
    """:func:`moero.eval.stats.paired_difference` of two results (per seed) on the test grid."""
    return paired_difference([r["files"] for r in a], [r["files"] for r in b], metric,
                             at_acceleration(acceleration, split))


def compared(name: str, a: Sequence[Result], b: Sequence[Result], paper: float | None, metric: str = "ssim",
             acceleration: float | None = None, split: str = "total", reason: str | None = None,
             margin: float | None = None) -> Comparison:
    """One claim to judge (:func:`moero.book.show.judged_rows`): ``a - b`` per seed and test subject on the
    test grid (:func:`moero.eval.stats.subject_differences`) against the paper's effect (0 with an
    equivalence ``margin``: a parity claim)."""
    keep = at_acceleration(acceleration, split)
    if not any(keep(f) for f in a[0]["files"]):  # e.g. a real tree without pathology cases: nothing to compare
        return Comparison(name, np.zeros((len(a), 0)), None if paper is None or not math.isfinite(paper) else
                          float(paper), margin=margin, reason=reason or f"no {split} test files")
    diffs, _ = subject_differences([r["files"] for r in a], [r["files"] for r in b], metric, keep)
    return Comparison(name, diffs, None if paper is None or not math.isfinite(paper) else float(paper),
                      margin=margin, reason=reason)


def change_between(runs_late: Sequence[Result], runs_early: Sequence[Result]) -> list[Result]:
    """Per seed, the files' ``late - early`` (the same files and masks): a run's gain between two budgets,
    as a result whose files :func:`compared` can pair with another run's gain."""
    out = []
    for late, early in zip(runs_late, runs_early, strict=True):
        before = {(f["file"], f.get("kind"), f.get("acceleration")): f for f in early["files"]}
        out.append({"files": [{**f, **{m: f[m] - before[f["file"], f.get("kind"), f.get("acceleration")][m]
                                       for m in ("ssim", "psnr", "nmse")}} for f in late["files"]]})
    return out


def margin_rows(label: str, runs: Sequence[Result], refs: Mapping[str, Result], params: dict[str, Any],
                targets: Mapping[str, float]) -> list[dict[str, Any]]:
    """SSIM-total margin of ``runs`` over each reference at every test acceleration: paired mean, its SE,
    the target and whether the margin clears it by the book's rule (mean - 2 SE >= target)."""
    rows = []
    for ref_name, target in targets.items():
        for a in runspec.test_accelerations(params):
            d = paired(runs, [refs[ref_name]], a)
            rows.append({"model": label, "reference": ref_name, "acceleration": a, "seeds": d["seeds"],
                         "files": d["files"], "margin": d["mean"], "margin_se": d["se"], "target": target,
                         "meets_target": bool(d["mean"] >= target),
                         "beyond_2se": bool(d["mean"] - 2 * d["se"] >= target)})
    return rows


def routing_rows(spec_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model and label: the best cascade's NMI of each seed summarised over seeds (mean, min), its ARI,
    the NMI a k-means on the test histograms reaches, and the first seed's route counts."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in spec_rows:
        key = (r["model"], r["seed"], r["label"])
        if key not in best or r["nmi"] > best[key]["nmi"]:
            best[key] = dict(r)
    out: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for (model, _, label), r in best.items():
        out.setdefault((model, label), []).append(r)
    rows = []
    for (model, label), rs in out.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        rows.append({"model": model, "label": label, "seeds": len(rs),
                     "nmi_mean": float(np.mean([r["nmi"] for r in rs])), "nmi_min": min(r["nmi"] for r in rs),
                     "ari_mean": float(np.mean([r["ari"] for r in rs])),
                     "nmi_kmeans_on_test": float(np.mean([r["nmi_kmeans_on_test"] for r in rs])),
                     "route_counts_first_seed": rs[0]["route_counts"], "classes": rs[0]["classes"]})
    return rows


def parameter_count(name: str, preset: str) -> int:
    """Trainable parameters of registry model ``name`` at ``preset``."""
    model = build_model(name, preset)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_examples(data_root: str | Path, subjects: int = 0) -> dict[str, int]:
    """Files, subjects and examples (slice x frame) of the training split (of its first ``subjects`` subjects)."""
    rows = [r for r in read_manifest(Path(data_root)) if r["split"] == "train"]
    if subjects:  # the choice of moero.book.runspec.small_set
        chosen = runspec.chosen_subjects(rows, subjects)
        rows = [r for r in rows if r["subject"] in chosen]
    return {"files": len(rows), "subjects": len({r["subject"] for r in rows}),
            "examples": sum(int(r["slices"]) * int(r["frames"]) for r in rows)}


def epochs_of(params: dict[str, Any], budget: int, examples: int) -> float:
    """``budget`` in epochs of a training set of ``examples`` examples (steps x batch / examples when the
    budgets are steps; the budget itself when they are epochs)."""
    if params.get("budget_unit", "steps") == "epochs":
        return float(budget)
    if examples < 1:
        raise ValueError(f"training set of {examples} examples: cannot express a budget in epochs")
    return int(budget) * int(params.get("train", {}).get("batch_size", 1)) / examples


def budget_label(params: dict[str, Any], budget: int, examples: int) -> str:
    """``"250 steps (0.51 epochs)"`` (or ``"12 epochs"``): a budget as the tables and figures state it."""
    if params.get("budget_unit", "steps") == "epochs":
        return f"{int(budget)} epochs"
    return f"{int(budget)} steps ({epochs_of(params, budget, examples):.2g} epochs)"


def training_wall_time(folders: Sequence[Path]) -> float:
    """Seconds the training segments of these runs took (steps / iterations per second, summed)."""
    total = 0.0
    for folder in folders:
        for seg in logs.read_segments(folder):
            if seg.get("iterations_per_s"):
                total += seg["steps_this_run"] / seg["iterations_per_s"]
    return total


def r_eff_by_acceleration(result: Result, params: dict[str, Any]) -> dict[float, float]:
    """Mean measured R_eff (centre frame, ACS included) of the test grid at each nominal acceleration."""
    out = {}
    for a in runspec.test_accelerations(params):
        rows = [r["r_eff"] for r in result["files"] if float(r["acceleration"]) == a]
        out[a] = sum(rows) / len(rows) if rows else math.nan
    return out


def setting_text(profile: str, device: str, params: dict[str, Any], names: Sequence[str], data_root: str | Path,
                 references: Result, folders: Sequence[Path], seeds: int, extra: str = "") -> str:
    """The chapter's "Setting" statement, computed: profile, device, model preset and parameters, steps,
    batch, training examples, matrix, R_eff per nominal acceleration, seeds and training time (summed over
    runs, which may train ``workers`` at a time)."""
    train = params.get("train", {})
    preset = str(train.get("preset", "tiny"))
    counts = ", ".join(f"{n} {parameter_count(n, preset):,}" for n in names)
    data = training_examples(data_root)
    shape = "x".join(str(n) for n in train.get("image_shape") or ()) or "native"
    reff = ", ".join(f"R={a:g}: {v:.1f}" for a, v in r_eff_by_acceleration(references, params).items())
    wall = training_wall_time(folders)
    budgets = ", ".join(budget_label(params, b, data["examples"]) for b in sorted(params.get("budgets", [0])))
    return (f"Profile {profile!r} on {device}. Model preset {preset!r} (trainable parameters: {counts}). "
            f"Budgets {budgets} of batch "
            f"{int(train.get('batch_size', 1))}, learning rate {train.get('lr')} ({train.get('schedule', 'step')}); "
            f"training set: {data['examples']:,} examples (slice x frame) from {data['files']} files of "
            f"{data['subjects']} subjects; matrix {shape} (whole field of view), trained at accelerations "
            f"{train.get('accelerations')}; test: every test file at R = "
            f"{', '.join(f'{a:g}' for a in runspec.test_accelerations(params))} (measured R_eff {reff}); "
            f"{seeds} seeds per headline run; training time of these runs {wall / 60:.1f} min, summed over the runs "
            f"({int(params.get('workers', 1))} trained at a time). {extra}").strip()


def late_gain_rows(params: dict[str, Any], profile: str, name: str, data_root: str | Path,
                   device: str = "cpu") -> list[list[dict[str, Any]]]:
    """Per seed, per validation file: SSIM at the last ``curve_budgets`` snapshot minus the middle one
    (the same files and masks at both, so the difference is paired)."""
    budgets = sorted(int(b) for b in params["curve_budgets"])
    mid, end = budgets[len(budgets) // 2], budgets[-1]
    out = []
    for folder in run_folders(params, profile, name):
        before = {f["file"]: f["ssim"] for f in
                  evaluation.evaluate_checkpoint(folder, mid, params, data_root, splits=("val",),
                                                  device=device)["files"]}
        after = evaluation.evaluate_checkpoint(folder, end, params, data_root, splits=("val",), device=device)["files"]
        out.append([{"file": f["file"], "subject": f.get("subject", ""), "ssim": f["ssim"] - before[f["file"]]}
                    for f in after])
    return out
