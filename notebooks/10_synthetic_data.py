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
# # The embedded synthetic CMR dataset
#
# The paper trains on CMRxRecon2025: 1,384 multi-coil k-space volumes from Siemens, GE and UIH
# scanners at several centres, in cine, mapping, LGE, T1w/T2w and black-blood contrasts. Those data
# cannot be downloaded on a fresh machine, so `moero.synthetic` writes a dataset with **the same
# layout, keys, file format and axis order**, and one reader (`moero.data.load_cmrxrecon`) serves
# both. Pass `data_root=` to any chapter to use the real tree instead.
#
# Each file is simulated with the multi-coil forward model (reference eq. (1), mask all ones):
#
# $$ y_c = \mathcal{F}\,(S_c\, x) + n_c, \qquad n \sim \mathcal{CN}(0, \Psi), $$
#
# where $x$ is a complex image rendered from an analytic anatomy (torso, fat, lungs, liver, spine,
# aorta, beating left and right ventricles, papillary muscles, atria in long-axis views), with
# tissue signals computed from $(\mathrm{PD}, T_1, T_2)$ at 1.5 T or 3 T for each sequence; $S_c$
# are loop-coil sensitivities of a 12-30 element array (never normalised, so the image carries the
# array's shading); $\Psi$ correlates the coils' noise. The array is then compressed to 10 virtual
# coils by an SVD, as the real data were. To avoid the *inverse crime*, $x$ and $S_c x$ are rendered
# at twice the matrix resolution with sharp tissue edges and only the central k-space is kept.
#
# Axis order: MATLAB stores `kspace` as $(n_x, n_y, n_c, n_z, n_t)$ (readout, phase encode, coils,
# slices, frames); h5py reads the reversed $(n_t, n_z, n_c, n_y, n_x)$; the package uses
# $(T, Z, C, H{=}\text{readout}, W{=}\text{phase})$, i.e. h5py's order with the last two axes swapped.
# The readout $H$ is 2x oversampled: the body fills its central half.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %%
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch

from moero.book.run import start_run
from moero.data.dataset import SliceDataset
from moero.data.readers import load_cmrxrecon, read_manifest
from moero.data.sampler import BalancedSampler
from moero.data.synthetic import array_coil_maps
from moero.physics.fft import ifft2c
from moero.physics.sense import rss, zero_filled

run = start_run("10_synthetic_data", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
P = run.params
root = run.dataset_root()
rows = read_manifest(root)
print(root, len(rows), "files")

# %% [markdown]
# ## Composition
#
# Subjects are split by subject (never by file): `train`, `val` and `test-total` from the known
# centres; the pathology cases (scar, hypertrophy, dilated ventricle) are shared between training
# and the held-out `rare` test; every subject of the held-out centre is `fresh` (unseen hardware).

# %%
counts = Counter((r["centre"], r["vendor"], r["modality"], r["split"]) for r in rows)
table_rows = [
    {"centre": c, "vendor": v, "modality": m, "split": s, "files": n}
    for (c, v, m, s), n in sorted(counts.items())
]
run.table(table_rows, "composition", caption="Files by centre, vendor, modality and split (from manifest.csv)")

# %%
subjects = {}
for r in rows:
    subjects[r["subject"]] = r
summary = [
    {"split": s, "subjects": sum(1 for r in subjects.values() if r["split"] == s),
     "files": sum(1 for r in rows if r["split"] == s),
     "pathology cases": sum(1 for r in subjects.values() if r["split"] == s and r["pathology"] != "none")}
    for s in ("train", "val", "test-total", "rare", "fresh")
]
run.table(summary, "splits", caption="Subjects and files per split")


# %% [markdown]
# ## One subject per vendor and contrast
#
# Magnitude RSS images $\sqrt{\sum_c |\mathcal{F}^{-1} y_c|^2}$ of the middle slice (cine at
# end-systole, the first frame otherwise), cropped to the central half of the oversampled readout.
# Readout runs horizontally. Note the bright blood of bSSFP cine, the nulled myocardium of LGE (a
# scar, where present, lights up), the inversion-recovery contrast of the first T1-mapping frame and
# the suppressed blood of T2w and black-blood images.

# %%
def rss_image(row, frame=None):
    vol = load_cmrxrecon(root / row["file"])
    t = vol.shape[0] // 2 if frame is None and row["name"].startswith("cine") else (frame or 0)
    img = rss(ifft2c(vol.kspace[t, vol.shape[1] // 2]))
    h = img.shape[0]
    return img[h // 4 : h - h // 4].T  # drop the readout oversampling; readout horizontal


names = ["cine_sax", "cine_lax", "T1map", "T2map", "lge_sax", "T1w", "T2w", "blackblood"]
vendors = sorted({r["vendor"] for r in rows})
fig, axes = plt.subplots(len(vendors), len(names), figsize=(2.1 * len(names), 1.9 * len(vendors)), squeeze=False)
for i, vendor in enumerate(vendors):
    for j, name in enumerate(names):
        ax = axes[i, j]
        ax.set_xticks([])
        ax.set_yticks([])
        match = [r for r in rows if r["vendor"] == vendor and r["name"].startswith(name)]
        if match:
            row = match[0]
            ax.imshow(rss_image(row), cmap="gray")
            tag = "" if row["pathology"] == "none" else f" ({row['pathology']})"
            ax.set_title(f"{row['name']}{tag}", fontsize=7)
        else:
            ax.axis("off")
        if j == 0:
            ax.set_ylabel(vendor.replace("_", "\n", 1), fontsize=7)
fig.suptitle("Synthetic CMRxRecon: one subject per vendor (rows) and contrast (columns)")
fig.tight_layout()
run.figure(fig, "vendors_contrasts", caption="RSS magnitude images, one subject per vendor and contrast")
plt.show()

# %% [markdown]
# ## The beating heart
#
# Cine frames cover one cardiac cycle: the endocardial contour contracts while the epicardium
# follows so that the myocardial area is conserved (the wall thickens in systole).

# %%
cine = next(r for r in rows if r["name"] == "cine_sax")
vol = load_cmrxrecon(root / cine["file"])
frames = [0, vol.shape[0] // 4, vol.shape[0] // 2]
fig, axes = plt.subplots(1, len(frames), figsize=(3.2 * len(frames), 3))
for ax, t in zip(axes, frames, strict=True):
    ax.imshow(rss_image(cine, frame=t), cmap="gray")
    ax.set_title(f"frame {t} of {vol.shape[0]}")
    ax.axis("off")
fig.suptitle(f"{cine['vendor']} {cine['subject'].split('/')[-1]}: diastole to systole")
run.figure(fig, "cine_frames", caption="Cine frames from end-diastole to end-systole")
plt.show()

# %% [markdown]
# ## Coil shading
#
# Left: magnitudes of four elements of the receive array before compression, $|S_c|$, on the
# file's grid (readout horizontal, full oversampled field of view). Right: their root sum of squares
# $\sqrt{\sum_c |S_c|^2}$, which is far from uniform: surface coils see the chest wall brightly and
# the heart dimly. We keep this shading in the data (the maps are not RSS-normalised), as in real
# scans; reconstruction methods must cope with it.

# %%
first = rows[0]
maps = array_coil_maps(first["vendor"], first["readout"], first["phase"], seed=0, subject_index=0)
fig, axes = plt.subplots(1, 5, figsize=(17, 3))
for ax, c in zip(axes[:4], np.linspace(0, maps.shape[0] - 1, 4).astype(int), strict=True):
    im = ax.imshow(maps[c].abs().T, cmap="viridis")
    ax.set_title(f"|S_{c}| of {maps.shape[0]}")
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.03)
im = axes[4].imshow(rss(maps, dim=0).T, cmap="magma")
axes[4].set_title("RSS of all elements")
axes[4].axis("off")
fig.colorbar(im, ax=axes[4], fraction=0.03)
fig.suptitle(f"{first['vendor']}: array coil sensitivities (not normalised)")
run.figure(fig, "coil_shading", caption="Array coil maps and their RSS: realistic shading is kept")
plt.show()

# %% [markdown]
# After SVD compression the 10 virtual coils are ordered by energy; their images are shown below,
# with the log-magnitude k-space of the strongest one (readout vertical, phase encode horizontal;
# the 2x readout oversampling shows as a k-space that is smooth along $k_x$).

# %%
vol = load_cmrxrecon(root / first["file"])
coil_images = ifft2c(vol.kspace[0, 0])
fig, axes = plt.subplots(1, 6, figsize=(17, 3))
for c, ax in enumerate(axes[:5]):
    ax.imshow(coil_images[2 * c].abs().T, cmap="gray")
    ax.set_title(f"virtual coil {2 * c}")
    ax.axis("off")
im = axes[5].imshow(torch.log10(vol.kspace[0, 0, 0].abs() + 1e-12), cmap="gray", aspect="auto")
axes[5].set_title("log10 |k-space|, coil 0")
axes[5].set_xlabel("phase encode (W)")
axes[5].set_ylabel("readout (H)")
fig.colorbar(im, ax=axes[5], fraction=0.04)
run.figure(fig, "virtual_coils_kspace", caption="Compressed coil images and k-space of one file")
plt.show()

# %% [markdown]
# ## Training examples and balanced sampling
#
# `SliceDataset` reads one slice and a window of adjacent frames lazily, draws a mask with a seed
# made from $(\text{seed}, \text{epoch}, \text{index})$ and returns the masked k-space and the RSS
# target of the centre frame. `BalancedSampler` repeats file $i$ $w_i$ times per epoch, eq. (10):
#
# $$ w_i = \operatorname{round}\Big(\operatorname{clip}_{[1,8]} \prod_{r} \big[ m\,\big(\tfrac{N/G_r}{n_{r,g_r(i)}} - 1\big) + 1 \big]\Big),\quad m = 0.7, $$
#
# over the rules $r \in \{\text{group (modality and view)}, \text{modality}, \text{centre}\}$.

# %%
from moero.physics.masks import MaskSampler

ds = SliceDataset(root, split="train", frames=5, mask_sampler=MaskSampler(), seed=0)
n = min(P["loader_examples"], len(ds))
picked = np.random.default_rng(0).choice(len(ds), n, replace=False)
examples = [ds[int(i)] for i in picked]
draws = Counter((e["meta"]["mask_kind"], e["meta"]["acceleration"]) for e in examples)
run.table([{"mask": k, "acceleration": a, "examples": c} for (k, a), c in sorted(draws.items())], "mask_draws",
          caption=f"Masks drawn for {n} training examples")

ex = examples[0]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
axes[0].imshow(ex["mask"][2].T, cmap="gray", aspect="auto")
axes[0].set_title(f"mask {ex['meta']['mask_kind']} R={ex['meta']['acceleration']}")
axes[1].imshow(zero_filled(ex["masked_kspace"][2]).T, cmap="gray")
axes[1].set_title("zero-filled centre frame")
axes[2].imshow(ex["target"].T, cmap="gray")
axes[2].set_title("target (RSS, fully sampled)")
for ax in axes:
    ax.set_xlabel("readout (H)")
fig.suptitle(ex["meta"]["file"], fontsize=8)
run.figure(fig, "example", caption="One training example: mask, zero-filled input, target")
plt.show()

# %%
sampler = BalancedSampler(ds, seed=0)
per_group = {}
for rec, w in zip(ds.file_records(), sampler.weights, strict=True):
    key = (rec["modality"], rec["view"], rec["centre"])
    per_group.setdefault(key, []).append(w)
run.table(
    [{"modality": m, "view": v, "centre": c, "files": len(ws), "weight w_i": ws[0]}
     for (m, v, c), ws in sorted(per_group.items())],
    "balance_weights", caption="Eq. (10) draw counts per file of the training split",
)

# %%
run.finish()
