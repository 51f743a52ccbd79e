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
# # VQ codebooks: tokens that describe an image
#
# VQ-Prompt {cite}`li2025branch` places a **vector quantiser** {cite}`oord2017vqvae` at the bottleneck of
# every cascade's U-Net of PromptMR+ {cite}`xin2024rethinking`. Each feature vector $z_p$ at bottleneck pixel $p$ is replaced by its nearest
# codebook row, {eq}`eq-quantisation`:
#
# $$ k^*(p) = \arg\min_k \lVert z_p - e_k \rVert_2^2, \qquad z_q = z + \mathrm{sg}(e_{k^*} - z), $$
#
# where $\mathrm{sg}$ stops gradients, so the backward pass sees the identity (straight-through).
# The encoder is pulled toward its codes by the commitment loss {eq}`eq-vq-objective`,
# $\beta\,\mathrm{mean}\,(\mathrm{sg}(e) - z)^2$ with $\beta = 1$, and the codebook follows the
# inputs by exponential moving averages (decay $\gamma = 0.99$) of cluster sizes $N_k$ and sums $m_k$:
#
# $$\begin{aligned}
# N_k &\leftarrow \gamma N_k + (1-\gamma)\, n_k, & m_k &\leftarrow \gamma m_k + (1-\gamma) \sum_{p: k^*(p)=k} z_p, \\
# e_k &= m_k / \tilde N_k, & \tilde N_k &= \frac{N_k + \epsilon}{N + K\epsilon}\, N .
# \end{aligned}$$
#
# The tokens matter twice in the paper: the decoded codes are fused back into the U-Net as a prompt,
# and the **token histogram** of {eq}`eq-token-histogram`,
#
# $$ h[k] = \frac{1}{H' W'} \#\{p : k^*(p) = k\}, $$
#
# averaged over adjacent frames (and coils for the coil-map network), is the feature on which Moero
# routes each sample to an expert ({doc}`05_histogram_routing`). A routing feature is only useful if it separates the
# kinds of images the experts should specialise on, such as contrasts and vendors.
#
# Training a reconstruction network takes longer than this chapter may, so here the quantiser sees
# **image patches** instead of bottleneck features: $4\times4$ magnitude patches of fully sampled
# images of the synthetic CMRxRecon-layout dataset, each patch a 16-dimensional vector. The same
# `moero.models.vq.VectorQuantizer` class serves both.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from moero.book.run import start_run
from moero.book.show import admonition
from moero.data.readers import read_kspace_window, read_manifest
from moero.models.vq import (
    VectorQuantizer,
    code_perplexity,
    image_patches,
    patches_to_image,
    token_histogram,
    train_codebook,
)
from moero.physics.fft import ifft2c
from moero.physics.sense import rss

run = start_run("04_vq_codebooks", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
P = run.params
root = run.dataset_root()
rows = read_manifest(root)
print(f"{len(rows)} files in the synthetic set of the {run.profile.name} profile")

# %% [markdown]
# Where the quantiser sits in a cascade of VQ-Prompt, drawn from the `paper` preset's configuration:

# %% tags=["hide-input"]
from moero.book import diagrams  # noqa: E402
from moero.models.registry import model_config  # noqa: E402

display(run.figure(diagrams.vq_prompt_diagram(model_config("vq-prompt", "paper", checkpoint=False)),
                   "vq_prompt_architecture",
                   caption="The prompt U-Net of one VQ-Prompt cascade (paper preset): the bottleneck features are "
                           "quantised, decoded and fused back; their token histogram (eq. (8)) is Moero's routing "
                           "feature."))

# %% [markdown]
# ## Images
#
# From each of `num_files` files spread over the manifest we take up to `frames_per_file` frames of
# the first slice, reconstruct the fully sampled root-sum-of-squares image, crop the 2x oversampled
# readout to its central half, scale by the 99th percentile and resize to a square matrix.

# %%
pick = np.unique(np.linspace(0, len(rows) - 1, min(P["num_files"], len(rows))).round().astype(int))
images, labels = [], []
for i in pick:
    row = rows[i]
    n_frames = int(row.get("frames") or 1)
    frames = sorted({int(t) for t in np.linspace(0, n_frames - 1, min(P["frames_per_file"], n_frames))})
    kspace = read_kspace_window(root / row["file"], 0, frames)  # (F, C, H, W)
    img = rss(ifft2c(kspace), dim=1)
    h = img.shape[-2]
    img = img[:, h // 4 : h // 4 + h // 2]
    img = img / torch.quantile(img.flatten(1), 0.99, dim=1)[:, None, None]
    img = F.interpolate(img[:, None], size=(P["image_size"],) * 2, mode="bilinear", align_corners=False)[:, 0]
    images.append(img.clamp(0, 1.5))
    labels += [{"contrast": row["modality"], "vendor": row["vendor"], "file": row["file"]}] * len(frames)
images = torch.cat(images)
contrasts = np.array([lab["contrast"] for lab in labels])
vendors = np.array([lab["vendor"] for lab in labels])
names, counts = np.unique(contrasts, return_counts=True)
print(f"{len(images)} images of {tuple(images.shape[1:])} pixels; contrasts: "
      + ", ".join(f"{n} {c}" for n, c in zip(names.tolist(), counts.tolist(), strict=True)))

fig, axes = plt.subplots(1, min(6, len(images)), figsize=(2.2 * min(6, len(images)), 2.6))
for ax, j in zip(np.atleast_1d(axes), np.linspace(0, len(images) - 1, min(6, len(images))).astype(int), strict=True):
    ax.imshow(images[j], cmap="gray", vmin=0, vmax=1.2)
    ax.set_title(f"{contrasts[j]}\n{vendors[j].split('_')[0]}", fontsize=9)
    ax.axis("off")
fig.suptitle("Input images (magnitude, normalised)")
display(run.figure(fig, "images", caption="Examples of the fully sampled synthetic images the codebook is trained on."))

# %% [markdown]
# ## Training with and without dead-code restart
#
# Both quantisers start from the same random codebook ($e_k \sim \mathcal N(0, I)$) while the
# patches live in $[0, 1.5]^{16}$: most codes start far from every input, are never chosen, and the
# EMA never moves them. This is the classic **codebook collapse**. The authors' code has no remedy;
# ours re-seeds a code from recent inputs once it has gone unused for `restart_after` updates.
# We follow the number of distinct codes used per batch, the fraction of dead codes, and the
# perplexity $\exp(-\sum_k p_k \log p_k)$ of the usage distribution: the effective number of codes
# in use.

# %%
patches = image_patches(images, P["patch"])  # (N, patch^2, H', W')
histories, quantizers = {}, {}
for name, restart in (("no restart", None), ("restart", P["restart_after"])):
    vq = VectorQuantizer(P["num_codes"], P["patch"] ** 2, restart_after=restart, auto_update=False, seed=0,
                         dead_after=P["restart_after"])
    histories[name] = train_codebook(vq, patches, steps=P["steps"], batch_size=P["batch_size"], seed=0)
    quantizers[name] = vq.eval()

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for color, (name, hist) in zip(("tab:blue", "tab:orange"), histories.items(), strict=True):
    steps = [h["step"] for h in hist]
    axes[0].plot(steps, [h["used_codes"] for h in hist], color=color, label=name)
    axes[1].plot(steps, [h["dead_fraction"] for h in hist], color=color, label=name)
    axes[2].plot(steps, [h["perplexity"] for h in hist], color=color, label=f"{name} (EMA usage)")
    axes[2].plot(steps, [h["batch_perplexity"] for h in hist], ":", color=color, alpha=0.6, label=f"{name} (batch)")
axes[0].set(xlabel="update step", ylabel="distinct codes in batch", title="Codebook usage")
axes[1].set(xlabel="update step", ylabel="fraction", title="Dead codes", ylim=(-0.02, 1.02))
axes[2].set(xlabel="update step", ylabel="perplexity", title=f"Perplexity (K = {P['num_codes']})")
for ax in axes:
    ax.legend(fontsize=9)
fig.tight_layout()
display(run.figure(fig, "usage", caption="Codebook usage, dead-code fraction and perplexity over training, "
                   "with and without dead-code restart."))

# %% [markdown]
# ## Nearest-code reconstructions
#
# Replacing every patch by its code and folding the patches back shows what the tokens keep. The
# collapsed codebook can only paint a few grey levels; the restarted one keeps the anatomy.

# %%
def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(a.max() ** 2 / F.mse_loss(a, b)))


show = np.linspace(0, len(images) - 1, 3).astype(int)
fig, axes = plt.subplots(len(show), 3, figsize=(7.5, 2.6 * len(show)))
summary = []
with torch.no_grad():
    recon = {name: patches_to_image(vq(patches).quantized, P["patch"]) for name, vq in quantizers.items()}
for r, j in enumerate(show):
    axes[r, 0].imshow(images[j], cmap="gray", vmin=0, vmax=1.2)
    axes[r, 0].set_title(f"original ({contrasts[j]})", fontsize=9)
    for c, name in enumerate(quantizers, start=1):
        axes[r, c].imshow(recon[name][j], cmap="gray", vmin=0, vmax=1.2)
        axes[r, c].set_title(f"{name}: {psnr(images[j], recon[name][j]):.1f} dB", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
display(run.figure(fig, "reconstructions", caption="Images rebuilt from their nearest codes (PSNR in dB)."))

for name, vq in quantizers.items():
    summary.append({
        "codebook": name,
        "final perplexity": vq.perplexity,
        "dead fraction": vq.dead_fraction,
        "codes used (all images)": int(vq(patches).indices.unique().numel()),
        "PSNR all images (dB)": psnr(images, recon[name]),
    })
run.table(summary, "codebook_summary", caption="Codebooks after training.")
# the reading below states these orderings: fail the build if this run contradicts them
by_name = {row["codebook"]: row for row in summary}
assert by_name["restart"]["final perplexity"] > by_name["no restart"]["final perplexity"], by_name
assert by_name["restart"]["dead fraction"] <= by_name["no restart"]["dead fraction"], by_name

# %% [markdown]
# The codebook of the restarted quantiser, each code drawn as a $4\times4$ patch, sorted by usage:

# %%
vq = quantizers["restart"]
order = torch.argsort(vq.usage, descending=True)
n_side = int(np.ceil(np.sqrt(P["num_codes"])))
tiles = torch.zeros(n_side * n_side, P["patch"] ** 2)
tiles[: P["num_codes"]] = vq.codebook[order]
mosaic = patches_to_image(tiles.t().reshape(1, P["patch"] ** 2, n_side, n_side), P["patch"])[0]
fig, ax = plt.subplots(figsize=(4.5, 4.5))
im = ax.imshow(mosaic, cmap="gray")
ax.set_title("Codebook (most used first, row-major)")
ax.axis("off")
fig.colorbar(im, ax=ax, fraction=0.046)
display(run.figure(fig, "codebook", caption="The learned codes as patches, sorted by EMA usage."))

# %% [markdown]
# ## Token histograms per contrast and vendor
#
# Each image becomes its token histogram $h \in \Delta^{K-1}$ ({eq}`eq-token-histogram`). A 2-D PCA of the histograms,
# coloured by contrast and by vendor, shows whether the tokens carry the information Moero routes
# on. The silhouette score (cosine distance, the metric BranchNav's k-means uses) summarises how well
# each labelling separates: $+1$ perfectly separated clusters, $0$ overlapping.

# %%
with torch.no_grad():
    hists = token_histogram(vq(patches).indices, P["num_codes"]).numpy()
coords = PCA(n_components=2, random_state=0).fit_transform(hists)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
for ax, values, title in ((axes[0], contrasts, "contrast"), (axes[1], vendors, "vendor")):
    for k, value in enumerate(np.unique(values)):
        sel = values == value
        ax.scatter(coords[sel, 0], coords[sel, 1], s=18, color=plt.cm.tab10(k % 10), label=value, alpha=0.8)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=f"Token histograms coloured by {title}")
    ax.legend(fontsize=9, loc="best")
fig.tight_layout()
display(run.figure(fig, "histogram_pca", caption="PCA of per-image token histograms, coloured by contrast and by vendor."))

scores = []
for title, values in (("contrast", contrasts), ("vendor", vendors)):
    n_groups = len(np.unique(values))
    score = silhouette_score(hists, values, metric="cosine") if 1 < n_groups < len(values) else float("nan")
    scores.append({"labelling": title, "groups": n_groups, "silhouette (cosine)": float(score)})
run.table(scores, "silhouette", caption="How well the token histograms separate contrasts and vendors.")

# %% tags=["hide-input"]
contrast_silhouette = scores[0]["silhouette (cosine)"]
if contrast_silhouette > 0.25:
    separation = "separate the contrasts: their histograms form distinct clusters"
elif contrast_silhouette > 0:
    separation = "separate the contrasts only partly: their clusters overlap"
else:
    separation = ("do not separate the contrasts on their own: an image's histogram is on average as close to "
                  "other contrasts' as to its own")
display(admonition(f"Contrast silhouette {contrast_silhouette:+.2f}: the raw patch-token histograms {separation}.",
                   title="What the silhouette says"))

# %% [markdown]
# Mean histogram per contrast (codes sorted by overall usage): where the rows differ, a histogram
# carries its contrast; where they look alike, it does not.

# %%
groups = np.unique(contrasts)
mean_hist = np.stack([hists[contrasts == g].mean(0) for g in groups])
col_order = np.argsort(-hists.mean(0))
fig, ax = plt.subplots(figsize=(10, 0.5 * len(groups) + 1.5))
im = ax.imshow(mean_hist[:, col_order], aspect="auto", cmap="viridis")
ax.set_yticks(range(len(groups)), groups)
ax.set(xlabel="code (sorted by overall usage)", title="Mean token histogram per contrast")
fig.colorbar(im, ax=ax, label="token frequency")
fig.tight_layout()
display(run.figure(fig, "histograms_per_contrast", caption="Mean token histogram of each contrast."))

perplexities = code_perplexity(torch.from_numpy(hists)).numpy()
run.table(
    [{"contrast": g, "images": int((contrasts == g).sum()), "mean histogram perplexity":
      float(perplexities[contrasts == g].mean())} for g in groups],
    "per_contrast", caption="Images and effective number of tokens per contrast.",
)

# %% [markdown]
# **Reading the results.** Without restart the codebook collapses onto the few codes that happened
# to start near the data: perplexity stays near its handful of used codes, almost every code is
# dead, and the nearest-code images are coarse. With restart, dead codes are re-seeded from recent
# patches; usage and perplexity climb within a few restart periods and the reconstructions keep the
# anatomy (table above). This is why `moero.models.vq` offers restart and reports usage, where the
# authors' code has neither.
#
# How well the histograms of *raw patch* tokens separate contrasts is the silhouette above. Patch tokens see only local intensity; the
# bottleneck features of a trained U-Net, which the paper quantises and Moero routes on, summarise a
# $16\times$ larger context after several cascades of training. In `moero.models` the same quantiser
# sits at each cascade's bottleneck (`PromptMR(preset(..., vq_prompt=True))`) and its histograms are
# returned as `out.histograms`; chapter 5 tests how well those route.

# %% tags=["remove-cell"]
run.finish()
