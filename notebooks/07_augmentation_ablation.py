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
# chapter 6 (trained there, or here if that chapter has not run) at the first snapshot (the paper's
# 12 epochs) by the official protocol, then sweeps $p$ on a small subset of the training subjects and
# on the full training set.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]

import matplotlib.pyplot as plt
import torch
from IPython.display import display

from moero.book import experiments as E
from moero.book import paper
from moero.book.run import start_run
from moero.train.trainer import make_augment

run = start_run("07_augmentation_ablation", profile=profile, params=params, results_dir=results_dir,
                data_root=data_root)
P = run.params
torch.set_num_threads(P["threads"])
root = run.dataset_root()
catalogue = E.catalogue(P)
nproc = E.resolve_nproc(P["nproc"])
budget = min(P["budgets"])  # the paper's 12 epochs
unit = P["budget_unit"]


def ensure(name: str):
    return E.ensure_run(catalogue[name], P, run.profile.name, data_root=root, dataset_size=run.profile.dataset,
                        nproc=nproc)


def test_metrics(name: str) -> dict:
    return E.evaluate_checkpoint(ensure(name), budget, P, root, device=run.device)["splits"]["total"]


# %% [markdown]
# ## Tab. 1: baseline, + k-space augmentation, + image augmentation

# %%
TAB1 = [("promptmr", "baseline"), ("kspace-aug", "+ k-space aug"), ("image-aug", "+ image aug")]
paper_rows = {r["method"]: r for r in paper.TABLE1}
ours = {name: test_metrics(name) for name, _ in TAB1}
rows = []
for name, method in TAB1:
    m, ref = ours[name], paper_rows[method]
    rows.append({"method": method, "ssim": m["ssim"], "psnr": m["psnr"], "nmse": m["nmse"], "files": m["files"],
                 "r_eff": m["r_eff"],
                 "paper_ssim": ref["ssim"], "paper_psnr": ref["psnr"], "paper_nmse": ref["nmse"]})
run.table(rows, "table1", caption=f"Tab. 1 counterpart: test metrics after {budget} {unit} (paper: 12 epochs)")
display(E.show_result(run.results_dir, "table1"))

# %%
base = ours["promptmr"]
display(E.admonition(
    f"Here: {P['train']['preset']!r} preset, {budget} {unit}, crops {P['train'].get('image_shape') or 'native'}, "
    f"{rows[0]['files']} test files of the {'given' if run.data_root else 'synthetic'} data, augmentation ratio "
    f"{P['augment_probability']}; paper: 12-cascade PromptMR+, 12 epochs, CMRxRecon2025.", title="Setting"))
verdicts = []
for (_name, method), row in zip(TAB1[1:], rows[1:], strict=True):
    ref = paper_rows[method]
    verdicts.append(E.compare_row(f"{method}, SSIM vs baseline", row["ssim"] - base["ssim"],
                                  ref["ssim"] - paper_rows["baseline"]["ssim"]))
    verdicts.append(E.compare_row(f"{method}, PSNR (dB) vs baseline", row["psnr"] - base["psnr"],
                                  ref["psnr"] - paper_rows["baseline"]["psnr"]))
display(run.table(verdicts, "verdicts", caption="Does the sign of each of the paper's differences hold here?"))

# %% [markdown]
# ## The augmentation ratio, on a small and on the full training set
#
# The same k-space augmentation at ratios $p$ from the profile, trained on `small_subjects` training
# subjects (spread over centres) and on all of them; $p = 0$ is the unaugmented baseline of each.

# %%
sweep = []
for small in (True, False):
    for ratio in P["ratios"]:
        name = E.ratio_experiment(P, ratio, small)
        m = test_metrics(name)
        # the ratio is the probability of at least one artefact: measured on 2000 draws of the same augmentation
        measured = make_augment("kspace", float(ratio)).artefact_fraction((3, 4, 64, 64), draws=2000) if ratio else 0.0
        sweep.append({"dataset": "small" if small else "full", "ratio": float(ratio), "measured_fraction": measured,
                      "run": name, "ssim": m["ssim"], "psnr": m["psnr"], "nmse": m["nmse"], "r_eff": m["r_eff"]})
display(run.table(sweep, "ratio_sweep", caption="Test SSIM / PSNR / NMSE against the k-space augmentation ratio; "
                  "measured_fraction: share of 2000 drawn examples that got at least one artefact"))
fig, ax = plt.subplots(figsize=(6, 4))
for ds in ("small", "full"):
    pts = [(r["ratio"], r["ssim"]) for r in sweep if r["dataset"] == ds]
    ax.plot(*zip(*pts, strict=True), marker="o", label=f"{ds} training set")
ax.set(xlabel="augmentation ratio $p$", ylabel="test SSIM (official protocol)",
       title="k-space augmentation ratio sweep")
ax.legend()
fig.tight_layout()
display(E.publish_figure(run, fig, "ratio_sweep", caption="Test SSIM against the k-space augmentation ratio, small and full set"))

# %%
best_rows = []
for ds in ("small", "full"):
    pts = sorted((r["ratio"], r["ssim"]) for r in sweep if r["dataset"] == ds)
    best = max(pts, key=lambda t: t[1])
    best_rows.append({"dataset": ds, "best_ratio": best[0], "ssim_at_best": best[1],
                      "ssim_gain_at_best": best[1] - pts[0][1], "highest_ratio": pts[-1][0],
                      "ssim_gain_at_highest": pts[-1][1] - pts[0][1]})
display(run.table(best_rows, "best_ratio", caption="Best augmentation ratio per training set (gains over ratio 0)"))
small_gain = max(r["ssim"] for r in sweep if r["dataset"] == "small") - next(
    r["ssim"] for r in sweep if r["dataset"] == "small" and r["ratio"] == 0.0)
full_gain = max(r["ssim"] for r in sweep if r["dataset"] == "full") - next(
    r["ssim"] for r in sweep if r["dataset"] == "full" and r["ratio"] == 0.0)
word = E.verdict(small_gain - full_gain, 1.0)  # one seed per ratio here
display(E.admonition(
    f"The paper's finding (k-space augmentation helps the small set more than the large one): {word}. "
    f"Best gain {small_gain:+.4f} (small) vs {full_gain:+.4f} (full).",
    title="Verdict", kind="tip" if word == "holds" else "warning"))

# %%
src = E.results_source("07_augmentation_ablation", run)
display(E.show_source(src, run, "table1"))

# %% tags=["remove-cell"]
run.finish()
