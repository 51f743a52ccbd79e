# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data augmentation ablation (the paper's Tab. 1)
#
# DualSpace-CMR ({doc}`02_kspace_augmentation`, {doc}`03_image_augmentation`) augments in two spaces. **k-space**: complex white Gaussian
# noise relative to the scan's own signal level ({eq}`eq-thermal-noise`), and multi-shot rigid motion, which
# multiplies the lines of shot $j$ by $e^{-2\pi i (k_x \Delta x_j / N_x + k_y \Delta y_j / N_y)}$
# ({eq}`eq-motion-phase`, {eq}`eq-motion-kspace`). **Image space**:
# the SENSE-combined image and its coil maps are transformed jointly and re-expanded,
# $y' = F S' x'$, before undersampling. Each example is augmented with probability $p$, the
# *augmentation ratio*.
#
# The paper {cite}`li2025branch` found that on the large benchmark both augmentations *lower* SSIM, PSNR and NMSE after
# 12 epochs (Tab. 1), while on a small dataset k-space motion + noise helped; and that the ratio
# decides: too low gives no gain, too high distorts training. This chapter evaluates the models of
# chapter 6 (trained there, or here if that chapter has not run) over several training seeds by the
# official protocol, then sweeps $p$ on a training set small enough to overfit.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from moero.book import evaluation, experiments, gallery, logs, paper, runspec, show
from moero.book import results as R
from moero.book.run import start_run
from moero.eval.stats import Comparison
from moero.train.trainer import make_augment

run = start_run("07_augmentation_ablation", profile=profile, params=params, results_dir=results_dir,
                data_root=data_root)
P = run.params
torch.set_num_threads(P["threads"])
root = run.dataset_root()
catalogue = runspec.catalogue(P)
nproc = runspec.resolve_nproc(P["nproc"])
unit = P["budget_unit"]
EXAMPLES = R.training_examples(root)["examples"]  # budgets are stated in epochs of this training set too


def when(budget: int) -> str:
    """A budget as the tables and captions state it: steps and epochs of the training set."""
    return R.budget_label(P, budget, EXAMPLES)


AXIS = unit if unit == "epochs" else f"{unit} (1 epoch = {R.epochs_of(P, 1, EXAMPLES) ** -1:.0f} {unit})"
last = max(P["budgets"])
SEEDS = runspec.seeds(P)
METHODS = {"promptmr": "baseline", "kspace-aug": "+ k-space aug", "image-aug": "+ image aug"}
TAB1 = [(name, METHODS[name]) for name in ("promptmr", *runspec.augmented_names(P))]
experiments.prepare(P, run.profile.name, root, run.profile.dataset, nproc=nproc, workers=P["workers"], device=str(run.device))
refs = R.reference_results(P, run.profile.name, root, run.profile.dataset, device=str(run.device))

# %% [markdown]
# ## Published results
#
# When the results of a heavier profile are committed with the book (`book/results/<profile>/`), they are
# this chapter's main results: the box names the profile, commit, date and scale that produced them, and
# a warning follows when this chapter's code or the package's science layers have changed since. Their
# verdicts follow the rules of the whole book ({doc}`../book/conventions`).

# %% tags=["hide-input"]
display(show.show_published("07_augmentation_ablation", run, ['table1_paper', 'ratio_sweep', 'verdicts']))

# %% [markdown]
# ## This build's run
#
# Everything below is computed by this build's own run, at the scale its Setting box states. When
# published results are shown above, this run is the check that the current code still points the same
# way: the last table of the chapter sets its verdicts beside the published ones.

# %% tags=["hide-input"]
folders = [f for name, _ in TAB1 for f in R.run_folders(P, run.profile.name, name)]
small_set = R.training_examples(root, subjects=int(P["small_subjects"]))
display(show.admonition(run.statement("setting", R.setting_text(
    run.profile.name, str(run.device), P, ["promptmr"], root, refs["zero-filled"], folders, len(SEEDS),
    extra=f"Tab. 1 is read after {when(last)} (the paper: 12 epochs). Augmentation ratio p = "
          f"{P['augment_probability']}. Ratio sweep: {small_set['subjects']} training subject(s), "
          f"{small_set['files']} files, {small_set['examples']} examples, {max(P['small_budgets'])} {unit}, "
          f"{len(runspec.seeds(P, small=True))} seed(s) per ratio.")), title="Setting"))

# %% [markdown]
# ### Tab. 1: baseline, + k-space augmentation, + image augmentation
#
# Mean over seeds on the test grid (every test file at every test acceleration), next to the references
# and the paper's numbers ({numref}`tab-07_augmentation_ablation-table1_paper`), and in detail
# ({numref}`tab-07_augmentation_ablation-table1_detail`); {numref}`fig-07_augmentation_ablation-reconstruction_gallery`
# shows the reconstructions.

# %%
paper_rows = {r["method"]: r for r in paper.TABLE1}
ours = {name: R.seed_results(P, run.profile.name, name, last, root) for name, _ in TAB1}
rows = [R.method_row("zero-filled", [refs["zero-filled"]], P),
        R.method_row(f"CG-SENSE (lambda {refs['CG-SENSE']['lam']:g})", [refs["CG-SENSE"]], P)]
for name, method in TAB1:
    ref = paper_rows[method]
    rows.append({**R.method_row(method, ours[name], P), "paper_ssim": ref["ssim"], "paper_psnr": ref["psnr"],
                 "paper_nmse": ref["nmse"]})
# the full table on disk; on the page one table beside the paper and one with the detail, each fits the column
run.table(rows, "table1", caption=f"Tab. 1 counterpart: test metrics after {when(last)}, mean over {len(SEEDS)} seeds")
display(run.table(rows, "table1_paper", columns=["method", "seeds", "ssim_total", "psnr", "nmse", "paper_ssim",
                                                 "paper_psnr", "paper_nmse"],
                  caption=f"Tab. 1 counterpart: test SSIM, PSNR and NMSE after {when(last)}, mean over {len(SEEDS)} "
                          "seeds, beside the paper's (12 epochs, one run)"))
display(run.table(rows, "table1_detail", columns=["method", "ssim_total_sd", *R.acceleration_columns(P), "r_eff"],
                  caption="Tab. 1 counterpart in detail: the spread of test SSIM over seeds, SSIM at each test "
                          "acceleration and the realised acceleration R_eff"))

# %% [markdown]
# What augmentation changes in an image: the same test images reconstructed by the baseline and by its
# augmented variants (first seed, last budget), under the evaluation grid's masks, with the references.

# %% tags=["hide-input"]
aug_gallery = gallery.trained_gallery(P, run.profile.name, root, dict(TAB1), last, refs, device=run.device)
display(run.figure(gallery.plot_gallery(aug_gallery), "reconstruction_gallery",
         caption=f"Test images reconstructed by the baseline and its augmented variants after {when(last)} "
                 "(evaluation masks at each test acceleration; first seed), with |error| x5 and per-image "
                 "SSIM"))

# %% [markdown]
# Each verdict pairs the runs seed by seed and the test images subject by subject, and reads "holds" or
# "contradicts" only when the difference's interval, Holm-corrected over the chapter's comparisons,
# excludes 0 (the rule of {doc}`../book/conventions`); with fewer than 5 seeds it is not testable.
# The Holm correction runs over every comparison of the chapter, so the verdict table comes at its end,
# after the small-set comparison of the ratio sweep.

# %%
comparisons, claims = [], {}
for name, method in TAB1[1:]:
    ref = paper_rows[method]
    for metric, col in (("ssim", "SSIM"), ("psnr", "PSNR (dB)")):
        comparisons.append(R.compared(f"{method}, {col} vs baseline", ours[name], ours["promptmr"],
                                      ref[metric] - paper_rows["baseline"][metric], metric=metric))
    claims[f"{method}, SSIM vs baseline"] = f"{name}-full"

# %% [markdown]
# ### The augmentation ratio on a small training set
#
# The paper's claim is about data-poor training: k-space augmentation should help where the network would
# otherwise overfit. The sweep trains on `small_subjects` training subject(s) at ratios $p$ (the share of
# examples that get at least one artefact, measured below on 2000 draws). First, does the unaugmented run
# overfit, i.e. does its validation loss ($1 -$ validation SSIM) turn up while its training loss keeps
# falling, and does the test split agree? The box below the figure answers from the runs.

# %% tags=["hide-input"]
ratios = [float(r) for r in P["ratios"]]
small_budgets = sorted(int(b) for b in P["small_budgets"])
SMALL_AXIS = unit if unit == "epochs" else \
    f"{unit} (1 epoch of the small set = {R.epochs_of(P, 1, small_set['examples']) ** -1:.0f} {unit})"
sweep_dirs = {r: R.run_folders(P, run.profile.name, runspec.ratio_experiment(P, r, True), small=True) for r in ratios}
val = {r: np.array([[v for _, v in evaluation.validation_curve(d, P, root, run.device, budgets=small_budgets)]
                    for d in dirs]) for r, dirs in sweep_dirs.items()}
fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
for r in ratios:
    steps, loss = zip(*logs.learning_curves(sweep_dirs[r][0], smooth=P.get("curve_smooth", 5))["loss"], strict=True)
    ax_loss.plot(steps, loss, label=f"p = {r:g}")
    ax_val.plot(small_budgets, 1 - val[r].mean(0), marker="o", label=f"p = {r:g}")
ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss (small set)")
ax_val.set(xlabel=SMALL_AXIS, ylabel="validation loss (1 - SSIM)", title="Validation loss (small set)")
ax_loss.legend(fontsize=8)
fig.tight_layout()
display(run.figure(fig, "small_set_curves", caption="Small training set: training and validation loss "
               "per augmentation ratio"))
base_curve = 1 - val[0.0].mean(0)
lowest = int(np.argmin(base_curve))
overfits = lowest < len(small_budgets) - 1 and base_curve[-1] > base_curve[lowest]
train_curve = [v for _, v in logs.learning_curves(sweep_dirs[0.0][0], smooth=P.get("curve_smooth", 5))["loss"]]
test_stop, test_last = (R.method_row("p = 0", [evaluation.evaluate_checkpoint(d, b, P, root, device=run.device)
                                                for d in sweep_dirs[0.0]], P)["ssim_total"]
                         for b in (small_budgets[lowest], small_budgets[-1]))
confirmed = overfits and test_last < test_stop
display(show.reading(run,
    (f"Without augmentation the validation loss is lowest after {small_budgets[lowest]} {unit} "
     f"({base_curve[lowest]:.4f}) and rises to {base_curve[-1]:.4f} by {small_budgets[-1]} {unit}" if overfits else
     f"Without augmentation the validation loss reaches {base_curve[-1]:.4f} by {small_budgets[-1]} {unit} without "
     "rising on the way")
    + f", while the training loss goes from {train_curve[len(train_curve) // 4]:.4f} (a quarter of the way) to "
      f"{train_curve[-1]:.4f}. On test, SSIM-total is {test_stop:.4f} at the validation-best snapshot and "
      f"{test_last:.4f} at the last one: "
    + ("the test split confirms the overfitting." if confirmed else
       ("the test split does not confirm it, so the validation split (one mask per file) is too small to time early "
        "stopping reliably at this scale." if overfits else "no overfitting at this budget.")),
    title="Overfitting", kind="note" if confirmed else "warning"))

# %% [markdown]
# The ratio is chosen on validation, and so is each run's stopping point: the snapshot with the best
# validation SSIM (early stopping, which is what a small training set calls for). The test SSIM is shown
# at that snapshot and at the last one.

# %%
sweep, small_tests = [], {}
for r in ratios:
    measured = make_augment("kspace", r).artefact_fraction((3, 4, 64, 64), draws=2000) if r else 0.0
    stop = small_budgets[int(val[r].mean(0).argmax())]
    small_tests[r] = [evaluation.evaluate_checkpoint(d, stop, P, root, device=run.device) for d in sweep_dirs[r]]
    at_stop = R.method_row(f"p = {r:g}", small_tests[r], P)
    at_last = R.method_row(f"p = {r:g}", [evaluation.evaluate_checkpoint(d, small_budgets[-1], P, root, device=run.device)
                                          for d in sweep_dirs[r]], P)
    sweep.append({"ratio": r, "measured_fraction": measured, "seeds": at_stop["seeds"],
                  "val_ssim_best": float(val[r].mean(0).max()), "best_at": stop,
                  "val_ssim_last": float(val[r].mean(0)[-1]), "test_ssim_at_best": at_stop["ssim_total"],
                  **{f"{c}_at_best": at_stop[c] for c in R.acceleration_columns(P)},
                  "test_ssim_last": at_last["ssim_total"]})
display(run.table(sweep, "ratio_sweep", caption="Small training set: validation SSIM (best and last snapshot) and "
                  "test SSIM at the validation-best snapshot and at the last one, against the k-space augmentation "
                  "ratio"))

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(ratios, [s["val_ssim_best"] for s in sweep], "o-", label="validation, best snapshot")
ax.plot(ratios, [s["val_ssim_last"] for s in sweep], "s--", label="validation, last snapshot")
ax.plot(ratios, [s["test_ssim_at_best"] for s in sweep], "^-", label="test, validation-best snapshot")
ax.plot(ratios, [s["test_ssim_last"] for s in sweep], "v--", label="test, last snapshot")
ax.set(xlabel="augmentation ratio $p$", ylabel="SSIM (official protocol)", title="k-space augmentation ratio, small set")
ax.legend(fontsize=8)
fig.tight_layout()
display(run.figure(fig, "ratio_sweep", caption="SSIM against the k-space augmentation ratio on the small "
               "training set"))

# %% tags=["hide-input"]
# the ratio is chosen on validation among the augmented runs (p > 0) and judged on test against p = 0, so
# that the small-set claim is measured even when no ratio beats p = 0 on validation
nonzero = [r for r in ratios if r > 0]
none = next(s for s in sweep if s["ratio"] == 0.0)
chosen = max((s for s in sweep if s["ratio"] > 0), key=lambda s: s["val_ssim_best"], default=none)
# the paper: k-space augmentation helps a small training set (sign +); too low a ratio gives less, too high
# distorts: the validation-chosen ratio against the lowest non-zero and the highest ratio swept, each judged on
# test at its validation-best snapshot (the paper gives the directions only)
SMALL_SET = "k-space aug (validation-chosen ratio) vs none, small set, SSIM-total"
TOO_LOW = "validation-chosen ratio vs the lowest non-zero ratio, small set, SSIM-total"
TOO_HIGH = "validation-chosen ratio vs the highest ratio, small set, SSIM-total"
for label, other, key in ((SMALL_SET, 0.0, "kspace-aug-small"), (TOO_LOW, min(nonzero, default=0.0), "ratio-too-low"),
                          (TOO_HIGH, max(nonzero, default=0.0), "ratio-too-high")):
    if chosen["ratio"] == other:  # nothing to compare: no number shown
        why = "the sweep has no non-zero ratio" if not nonzero else \
            f"the chosen ratio is the {'lowest' if key == 'ratio-too-low' else 'highest'} non-zero one swept"
        comparisons.append(Comparison(label, np.zeros((len(small_tests[other]), 0)), +1.0, reason=why))
    else:
        comparisons.append(R.compared(label, small_tests[chosen["ratio"]], small_tests[other], +1.0))
    claims[label] = key
judged = show.judged_rows(comparisons, direction_only=[SMALL_SET, TOO_LOW, TOO_HIGH], claims=claims)
untested = {f"{name}-full": f"the {run.profile.name} profile trains no run with {METHODS[name].removeprefix('+ ')}"
            for name in METHODS if name != "promptmr" and name not in dict(TAB1)}
display(run.table(judged + show.untested_rows(untested), "verdicts", caption="Every comparison of this chapter: our "
                  "difference with its 95 % interval, the paper's, and the verdict (Holm-corrected over the chapter)"))
# the reading quotes the verdict rows (subjects as the unit, the interval the verdict judges)
small_row = next(r for r in judged if r["comparison"] == SMALL_SET)
full_row = next((r for r in judged if r["claim"] == "kspace-aug-full"), None)
word = small_row["verdict"]


def effect(row: dict) -> str:
    """A verdict row's effect with its seeds, subjects and verdict, as the reading states it."""
    return f"{show.effect_text(row)} ({row['seeds']} seed(s), {row['subjects']} subjects; {row['verdict']})"


display(show.reading(run,
    f"Ratio chosen on validation for the small set among p > 0: p = {chosen['ratio']:g} (validation SSIM "
    f"{chosen['val_ssim_best']:.4f}; without augmentation {none['val_ssim_best']:.4f}). On test, each at its "
    f"validation-best snapshot, p = {chosen['ratio']:g} minus p = 0: {effect(small_row)}"
    + (f"; on the full set, p = {P['augment_probability']} minus p = 0: {effect(full_row)}" if full_row else "")
    + f". The paper's finding that k-space augmentation helps a small training set: {word}.",
    title="Verdict", kind="tip" if word == "holds" else "warning"))

# %%
src = show.results_source("07_augmentation_ablation", run)
display(show.sign_check(src, run))

# %% tags=["remove-cell"]
run.finish()
