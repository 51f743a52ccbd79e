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
# # Histogram routing: BranchNav step by step
#
# Moero {cite}`li2025branch` turns every cascade of PromptMR+ {cite}`xin2024rethinking` into $K$
# **experts**, full cascades that share one VQ-PromptBlock. Per sample exactly one expert per cascade
# runs, as in sparse mixtures of experts {cite}`shazeer2017moe,fedus2022switch`. The choice is made
# by a router, BranchNav, from the **token histogram** {eq}`eq-token-histogram`
# ({doc}`04_vq_codebooks`),
#
# $$ h[k] = \frac{1}{H'W'}\,\#\{p : k^*(p) = k\}, \qquad \textstyle\sum_k h[k] = 1, $$
#
# of the previous stage: the coil-map network's for cascade 0, cascade $k-1$'s for cascade $k$.
# BranchNav keeps route counts $n_j$ and decides, {eq}`eq-branchnav`:
#
# $$ r(h) = \begin{cases} \arg\min_j n_j & \text{if no centres yet, or } \max_j n_j / (\min_j n_j + 10^{-13}) > 3,\\[4pt]
#    \arg\max_j \dfrac{\langle h, c_j\rangle}{\lVert h\rVert\,\lVert c_j\rVert} & \text{otherwise,} \end{cases} $$
#
# where the centres $c_j$ come from **k-means with cosine similarity** (spherical k-means), fitted
# once on a buffer of histograms collected after a warm-up. This chapter follows that story on the
# synthetic CMRxRecon-layout data with the routing feature of cascade 0: the coil-map network's
# histogram. The network is untrained, so its codebook is fitted to the data by k-means first (a
# random codebook maps every feature to one code); everything else is the `moero.models.routing` code that
# training uses.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]
import copy

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from moero.book.run import start_run
from moero.data.dataset import SliceDataset
from moero.eval.specialisation import (
    contingency,
    expert_usage,
    fit_sensitivity_codebook,
    sensitivity_histograms,
    specialisation,
    trace_routing,
)
from moero.models.registry import build_model
from moero.models.routing import BranchNav, spherical_kmeans
from moero.physics.masks import MaskSampler

run = start_run("05_histogram_routing", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
P = run.params

# %% [markdown]
# The grid Moero builds, drawn from the `paper` preset of `moero-12x2` (chapter 6 draws the path a
# trained model takes for one test image):

# %% tags=["hide-input"]
from moero.book import diagrams  # noqa: E402
from moero.models.registry import model_config  # noqa: E402

display(run.figure(diagrams.moero_diagram(model_config("moero-12x2", "paper", checkpoint=False), 2),
                   "moero_architecture",
                   caption="Moero 12x2 (paper preset): 12 cascades of 2 experts each, one BranchNav per cascade "
                           "routing on the token histogram of the stage before it."))

# %% [markdown]
# ## Data and token histograms
#
# `num_examples` slices spread evenly over the training split, undersampled 4x (uniform lines, 20
# calibration lines) as in training. The coil-map network of a Moero model (`model` at preset `size`) sees
# each; its codebook is first fitted by k-means to the bottleneck features of the first
# `fit_examples` of them.

# %%
model = build_model(P["model"], P["size"], nav_kwargs={"warmup": 0})
K = model.num_experts
dataset = SliceDataset(run.dataset_root(), split="train", frames=model.config.frames,
                       mask_sampler=MaskSampler(kinds=("uniform",), accelerations=(4,), acs=20), seed=0)
pick = np.unique(np.linspace(0, len(dataset) - 1, min(P["num_examples"], len(dataset))).round().astype(int))
examples = [dataset[int(i)] for i in pick]
labels = {
    "contrast": [ex["meta"]["modality"] for ex in examples],
    "vendor": [ex["meta"]["vendor"] for ex in examples],
    "pathology": [ex["meta"]["pathology"] for ex in examples],
}
features = fit_sensitivity_codebook(model, examples[: P["fit_examples"]])
hists = sensitivity_histograms(model, examples)
print(f"{len(examples)} examples, {features} bottleneck features for the codebook, histograms {tuple(hists.shape)}")


# %%
def mean_histograms(names):
    keys = sorted(set(names))
    arr = np.stack([hists.numpy()[np.array(names) == k].mean(0) for k in keys])
    return keys, arr


fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, what in zip(axes, ("contrast", "vendor"), strict=True):
    keys, arr = mean_histograms(labels[what])
    im = ax.imshow(arr, aspect="auto", cmap="magma")
    ax.set_yticks(range(len(keys)), keys, fontsize=9)
    ax.set_xlabel("code k")
    ax.set_title(f"mean token histogram per {what}")
    fig.colorbar(im, ax=ax, label="h[k]")
fig.tight_layout()
display(run.figure(fig, "histograms", caption="Mean token histogram of the coil-map network per contrast and per "
                   "vendor. Rows that differ are what a router can separate."))

# %% [markdown]
# ## Spherical k-means on the histograms
#
# Rows and centres live on the unit sphere; each iteration assigns every histogram to the centre of
# highest cosine similarity and moves each centre to the normalised mean of its members. Eight
# seeded restarts (k-means++ starts from a `torch.Generator` seeded with 42), at most 100
# iterations, the best total similarity wins. How well do the $K$ clusters match the labels? The
# adjusted Rand index (ARI, 1 = the same partition, about 0 = independent) and the normalised
# mutual information (NMI, in [0, 1]) answer regardless of which cluster index goes with which label.

# %%
rows = []
for k in sorted({2, K, 4, len(set(labels["contrast"]))}):
    _, assigned, score = spherical_kmeans(hists, k, restarts=8, max_iter=100, seed=42)
    for row in specialisation(assigned, labels):
        rows.append({"clusters": k, **row})
run.table(rows, "kmeans_vs_labels", caption="Spherical k-means clusters of the histograms against the labels.")

# %% [markdown]
# ## BranchNav step by step
#
# We stream the histograms through one BranchNav in a shuffled order for `passes` passes, one
# sample per step (the paper trains with batch size 1). Its settings are scaled to this data:
# the buffer holds `buffer_size` histograms and fills only after a warm-up of `warmup` samples (the
# paper: 2048 histograms after about 8000 samples per rank, "no buffering in the first epoch").
# Every step records which rule of {eq}`eq-branchnav` decided.

# %%
order = torch.cat([torch.randperm(len(examples), generator=torch.Generator().manual_seed(p))
                   for p in range(P["passes"])])
nav = BranchNav(K, hists.shape[1], buffer_size=P["buffer_size"], warmup=P["warmup"], seed=42)
trace = trace_routing(nav, hists[order])
counts = np.array([r["counts"] for r in trace])
rules = np.array([r["rule"] for r in trace])
fit_step = next((r["step"] for r in trace if r["fitted"]), None)

fig, ax = plt.subplots(figsize=(10, 4))
for j in range(K):
    ax.plot(counts[:, j], label=f"expert {j}")
ax.axvline(P["warmup"], color="grey", ls="--", label="warm-up ends: buffering starts")
if fit_step is not None:
    ax.axvline(fit_step, color="black", ls=":", label="buffer full: k-means fitted")
over = [r["step"] for r in trace if r["overridden"]]
ax.scatter(over, counts[over, [trace[i]["route"] for i in over]], s=12, color="red", zorder=3, label="imbalance override")
ax.set_xlabel("training sample")
ax.set_ylabel("route count $n_j$")
ax.set_title("BranchNav route counts over training")
ax.legend(fontsize=9)
display(run.figure(fig, "route_counts", caption="Route counts over training: round robin before the centres exist, "
                   "nearest centre after the fit, and the least-used expert whenever max/min exceeds 3 (red)."))
run.table([{"rule": rule, "samples": int((rules == rule).sum()),
            "overrode the nearest centre": int(sum(r["overridden"] for r in trace if r["rule"] == rule))}
           for rule in ("least-used: no centres", "nearest centre", "least-used: imbalance")],
          "rules", caption="Which BranchNav rule routed how many training samples.")

# %% [markdown]
# ## Where each contrast and vendor ends up
#
# After training, evaluation routes by the centres alone (`eval_mode="nearest"`). The contingency
# tables count samples per label and expert; the scores measure how much the experts specialise.

# %%
nav.eval()
routes = nav(hists)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, what in zip(axes, ("contrast", "vendor"), strict=True):
    table, names = contingency(routes, labels[what], K)
    im = ax.imshow(table, cmap="Blues")
    ax.set_xticks(range(K), [f"expert {j}" for j in range(K)])
    ax.set_yticks(range(len(names)), names, fontsize=9)
    for (a, b), v in np.ndenumerate(table):
        ax.text(b, a, str(v), ha="center", va="center", fontsize=9)
    ax.set_title(f"{what} x expert")
    fig.colorbar(im, ax=ax, label="samples")
fig.tight_layout()
display(run.figure(fig, "experts_by_label", caption="Samples per contrast (left) and vendor (right) on each expert, "
                   "evaluation routing by the nearest centre."))
print("expert usage:", expert_usage(routes, K).round(3))
run.table(specialisation(routes, labels), "specialisation",
          caption="Specialisation of the experts: ARI and NMI between evaluation routes and labels.")

# %% [markdown]
# ### When the balance rule overrides the centres
#
# On a balanced stream the counts stay within the factor 3 and the override seldom fires. It does
# when the data drift: below, a copy of the trained navigator receives only samples that its centres
# send to one expert (say, a run of scans from a single vendor). Once $\max_j n_j / \min_j n_j > 3$,
# the least-used expert takes samples regardless of their histogram, which is how the paper keeps
# every expert trained, and also why an expert's data are not purely "its" kind.

# %%
skewed_nav = copy.deepcopy(nav)
top = int(torch.bincount(routes, minlength=K).argmax())
stream = hists[routes == top].repeat(max(1, 4 * len(examples) // max(int((routes == top).sum()), 1)), 1)
skewed = trace_routing(skewed_nav, stream)
skewed_counts = np.array([r["counts"] for r in skewed])
fig, ax = plt.subplots(figsize=(10, 3.5))
for j in range(K):
    ax.plot(skewed_counts[:, j], label=f"expert {j}")
over = [r["step"] for r in skewed if r["overridden"]]
ax.scatter(over, skewed_counts[over, [skewed[i]["route"] for i in over]], s=12, color="red", zorder=3, label="imbalance override")
ax.set_xlabel(f"sample of the skewed stream (all nearest to expert {top})")
ax.set_ylabel("route count $n_j$")
ax.set_title("A skewed stream: the balance rule takes over")
ax.legend(fontsize=9)
display(run.figure(fig, "skewed_stream", caption="Route counts when only samples of one expert arrive: after the ratio "
                   "passes 3, the least-used experts receive them (red: overridden routes)."))
print(f"{len(over)} of {len(skewed)} samples overridden")

# %% [markdown]
# ## `nearest` versus `paper` evaluation routing
#
# The authors keep the balance rule at evaluation and keep counting, so the expert a test sample
# gets can depend on what was evaluated before it. Their route counts are also neither saved in
# checkpoints nor synchronised across ranks: an evaluation after loading a checkpoint starts from
# $n_j = 0$, where one routed sample already makes $\max_j n_j / (\min_j n_j + 10^{-13})$ huge. We
# route the same evaluation set twice, in two different orders, from the same trained state, and
# compare each sample's expert. `nearest` is history-free by construction (and ours saves the
# counts, so the third row cannot happen with our checkpoints).

# %%
reverse = torch.arange(len(examples) - 1, -1, -1)
rows = []
for label, mode, reset in (("nearest", "nearest", False), ("paper, counts from training", "paper", False),
                           ("paper, counts lost at reload (authors' checkpoints)", "paper", True)):
    first, second = copy.deepcopy(nav), copy.deepcopy(nav)
    for n in (first, second):
        n.eval_mode = mode
        if reset:
            n.counts.zero_()
    forward = torch.cat([first(hists[i : i + 1]) for i in range(len(examples))])
    backward = torch.cat([second(hists[i : i + 1]) for i in reverse]).flip(0)
    rows.append({
        "evaluation": label,
        "same expert in both orders": float((forward == backward).float().mean()),
        "agreement with nearest centre": float((forward == routes).float().mean()),
        "route counts after evaluation": first.counts.tolist(),
    })
run.table(rows, "eval_modes", caption="Evaluation routing in two orders: `nearest` is deterministic and "
          "history-free; `paper` lets the balance rule and the running counts decide.")

# %% tags=["remove-cell"]
run.finish()
