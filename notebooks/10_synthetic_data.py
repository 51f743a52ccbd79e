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
# The paper trains on CMRxRecon2025 {cite}`cmrxrecon2025`: 1,384 multi-coil k-space volumes from Siemens, GE and UIH
# scanners at several centres, in cine, mapping, LGE, T1w/T2w and black-blood contrasts. Those data
# cannot be downloaded on a fresh machine, so `moero.data.synthetic` writes a dataset with **the same
# layout, keys, file format and axis order**, and one reader (`moero.data.load_cmrxrecon`) serves
# both. Pass `data_root=` to any chapter to use the real tree instead.
#
# Each file is simulated with the multi-coil forward model {eq}`eq-forward-model` (mask all ones):
#
# $$ y_c = \mathcal{F}\,(S_c\, x) + n_c, \qquad n \sim \mathcal{CN}(0, \Psi), $$
#
# where $x$ is a complex image sampled from **one 3-D body per subject**, planned as on a scanner:
# a torso with subcutaneous fat and, in some subjects, breast tissue; ribs, sternum and a vertebral
# column with marrow and discs; lungs with vessels fanning out from the hila; the mediastinum and
# descending aorta; under the diaphragm's domes the liver (right, higher), stomach and spleen; and a
# heart whose long axis points left, anterior and inferior: an LV shaped as a truncated prolate
# ellipsoid inside a myocardial wall, the RV crescent wrapping the septum with its outflow tract to the
# pulmonary trunk, both atria with the appendage and the caval and pulmonary veins, the mitral and
# (more apical) tricuspid planes with their leaflets, the LVOT, aortic root and ascending aorta, arch,
# papillary muscles, trabeculae, epicardial fat and the pericardium. Short-axis stacks are planes
# perpendicular to the LV long axis from base to apex; 2-, 3- and 4-chamber planes contain the long
# axis at their standard orientations, so chest wall, lungs, liver dome and spine change between
# views. The heart beats in 3-D (ejection fraction 50-70 %, the base descending towards the apex,
# the wall thickening at constant myocardial volume, torsion); some subjects breathe, moving the
# diaphragm and the heart along the body's axis. Tissue signals come from $(\mathrm{PD}, T_1, T_2)$ at 1.5, 3
# or 5 T for each sequence (bSSFP cine with inflow-bright blood and, at 5 T, off-resonance bands,
# MOLLI-like $T_1$ and $T_2$-prep mapping series, LGE with scars in a coronary territory, T1w,
# T2w, black blood). $S_c$ are loop-coil sensitivities of a 12-48 element array placed around the chest
# in 3-D (never normalised, so the image carries the array's shading); $\Psi$ correlates the coils' noise. The array is then
# compressed to 10 virtual coils by an SVD, as the real data were. To avoid the *inverse crime*,
# every edge is drawn with its partial-volume coverage at twice the matrix resolution and only the
# central k-space is kept. The `gpu` size uses CMRxRecon2025-like matrices (e.g. 512 x 246, readout
# 2x oversampled); `cpu` and `smoke` generate smaller matrices of the **same field of view** (never
# a crop of the image).
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

# %% tags=["hide-input"]
import dataclasses
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from moero.book.run import start_run
from moero.data import synthetic
from moero.data.dataset import SliceDataset, r_eff_summary
from moero.data.readers import load_cmrxrecon, read_manifest
from moero.data.sampler import BalancedSampler
from moero.data.synthetic import array_coil_maps, checks
from moero.physics.fft import ifft2c
from moero.physics.sense import rss, zero_filled

run = start_run("10_synthetic_data", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
P = run.params
root = run.dataset_root()
rows = read_manifest(root)
print(len(rows), "files in the synthetic set of the", run.profile.name, "profile")

# %% [markdown]
# ## Composition
#
# Subjects are split by subject (never by file): `train`, `val` and `test-total` from the known
# centres (a minority of their subjects have a pathology and are trained on); the `rare` test
# holds pathology cases (scar, hypertrophy, dilated ventricle) from a centre never seen in training,
# as in the paper; every subject of the held-out `fresh` centre is unseen hardware and protocol (a
# 5 T system with a 48-loop ring array, another matrix, FOV and SNR, free breathing and partly
# saturated fat).

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
# ~1.5 in per panel and 14 pt labels: at the page's width the labels read at about 9 pt
fig, axes = plt.subplots(len(vendors), len(names), figsize=(1.5 * len(names), 1.55 * len(vendors)), squeeze=False)
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
            ax.set_title(f"{row['name']}{tag}", fontsize=13 if not tag else 11)
        else:
            ax.axis("off")
        if j == 0:
            ax.set_ylabel(vendor.replace("_", "\n", 1), fontsize=13)
fig.suptitle("Synthetic CMRxRecon: one subject per vendor (rows) and contrast (columns)")
fig.tight_layout()
display(run.figure(fig, "vendors_contrasts", caption="RSS magnitude images, one subject per vendor and contrast"))

# %% [markdown]
# ## The beating heart
#
# Cine frames cover one cardiac cycle: systole to end-systole at 35 % of the RR interval, rapid
# filling, diastasis and the atrial kick. The cavity narrows and the base descends towards the apex
# while the epicardium follows so that the myocardial volume is conserved (the wall thickens in
# systole); the short-axis planes stay where they were planned at end-diastole, so the base moves
# through them. Here at the dataset's own matrix; the gallery below repeats it at the `gpu` matrix.

# %%
cine = next(r for r in rows if r["name"] == "cine_sax")
vol = load_cmrxrecon(root / cine["file"])
frames = [0, round(0.35 * vol.shape[0]), vol.shape[0] // 2]
fig, axes = plt.subplots(1, len(frames), figsize=(3.2 * len(frames), 3))
for ax, t in zip(axes, frames, strict=True):
    ax.imshow(rss_image(cine, frame=t), cmap="gray")
    ax.set_title(f"frame {t} of {vol.shape[0]}")
    ax.axis("off")
fig.suptitle(f"{cine['vendor']} {cine['subject'].split('/')[-1]}: diastole to systole")
display(run.figure(fig, "cine_frames", caption="Cine frames from end-diastole to end-systole"))

# %% [markdown]
# ## Planned views through one body
#
# Every view is a plane through the same 3-D subject. Top row: orthogonal localisers (transverse,
# coronal, sagittal through the heart) with the planned planes drawn on them (the short-axis stack in
# yellow, 2-, 3- and 4-chamber in cyan, magenta and lime), the mid short axis with the three long-axis
# planes through the LV axis, and the 4-chamber view with the short-axis stack perpendicular to the
# long axis. These panels are the anatomy as rendered (before coils, noise and the k-space crop).
# Below: the simulated files' RSS images of two subjects, short axis at base, mid and apex and the
# 2-, 3- and 4-chamber views, at end-diastole (ED) and end-systole (ES). Short axis is displayed with
# the anterior wall up and the RV on the left; 4- and 3-chamber with the apex up; 2-chamber with the
# anterior wall up.

# %%
plan_subjects = [s for s in synthetic.plan_dataset(P["gallery_size"], 0) if s.name == "cine_sax"][:2]
anat = synthetic.subject_anatomy(0, plan_subjects[0].subject_index, plan_subjects[0].pathology)
planned = {f"SAX {k}": synthetic.view_plane(anat, "sax", synthetic.slice_position("sax", z, 3))
           for z, k in enumerate(("base", "mid", "apex"))}
planned |= {v.replace("lax_", "").replace("ch", "-chamber"): synthetic.view_plane(anat, v)
            for v in ("lax_2ch", "lax_3ch", "lax_4ch")}

# %% tags=["hide-input"]
COLOURS = {"SAX": "yellow", "2-chamber": "cyan", "3-chamber": "magenta", "4-chamber": "lime"}
LOCAL_PIXEL, LOCAL_N = 1.6, 240  # localisers: 384 mm square at 1.6 mm
local_axis = synthetic.pixel_axis(LOCAL_N, LOCAL_PIXEL)
local_half = (LOCAL_PIXEL * LOCAL_N / 2,) * 2
view_half = (190.0, 180.0)  # a file's field of view, about 380 x 360 mm
cine_values = synthetic.tissue_signal("cine", 0, 12, 1.5)


def draw_localiser(ax, plane, title, planes):
    """The anatomy on ``plane`` (rendered, end-diastole) with the traces of ``planes`` on it."""
    img = synthetic.render_image(anat, plane, 0.0, 0.0, "none", cine_values, local_axis, local_axis)
    ext = (-local_half[0], local_half[0], local_half[1], -local_half[1])
    ax.imshow(img.T, cmap="gray", extent=ext)
    for name, other in planes.items():
        seg = synthetic.plane_trace(other, view_half, plane, local_half)
        if seg is not None:
            ax.plot(seg[:, 0], seg[:, 1], color=COLOURS[name.split()[0]], lw=1.2)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


# %%
lv_centre = synthetic.base_centre(anat) + 0.5 * anat["long_axis"] * synthetic.heart_axes(anat)["L"]
localisers = {"transverse": synthetic.axial_plane(float(lv_centre[2])),
              "coronal": synthetic.coronal_plane(float(lv_centre[1])),
              "sagittal": synthetic.sagittal_plane(float(lv_centre[0]))}
fig, axes = plt.subplots(1, 5, figsize=(17, 3.8))
for ax, (name, plane) in zip(axes[:3], localisers.items(), strict=True):
    draw_localiser(ax, plane, f"{name} localiser", planned)
draw_localiser(axes[3], planned["SAX mid"], "mid short axis: 2/3/4-chamber planes",
               {k: v for k, v in planned.items() if not k.startswith("SAX")})
draw_localiser(axes[4], planned["4-chamber"], "4-chamber: short-axis stack",
               {k: v for k, v in planned.items() if k.startswith("SAX")})
fig.suptitle(f"Planning on one 3-D body ({plan_subjects[0].vendor} {plan_subjects[0].subject})", fontsize=9)
fig.tight_layout()
display(run.figure(fig, "planning", caption="Localisers with the planned short-axis stack and long-axis planes"))

# %% tags=["hide-input"]
VIEW_SPECS = [("SAX base", "sax", 0), ("SAX mid", "sax", 1), ("SAX apex", "sax", 2), ("2-chamber", "lax_2ch", 0),
              ("3-chamber", "lax_3ch", 0), ("4-chamber", "lax_4ch", 0)]


def show_panel(ax, img, title):
    ax.imshow(img.T, cmap="gray", vmin=0, vmax=float(torch.quantile(img.flatten(), 0.995)))
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def view_series(spec, view):
    """RSS images ``(T=3, Z, H/2, W)`` of ``spec``'s subject in ``view``: ED, ES (33 %) and late diastole."""
    sub = dataclasses.replace(spec, name=f"cine_{view}", view=view, frames=3, slices=3 if view == "sax" else 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        k = synthetic.simulate_file(sub, seed=0, render_factor=synthetic.SIZES[P["gallery_size"]].render_factor)
    finally:
        torch.set_num_threads(threads)
    img = rss(ifft2c(k), dim=2)
    h = img.shape[-2]
    return img[..., h // 4 : h - h // 4, :]


# %%
fig, axes = plt.subplots(2 * len(plan_subjects), len(VIEW_SPECS), figsize=(2.5 * len(VIEW_SPECS),
                                                                            2.6 * 2 * len(plan_subjects)))
for i, spec in enumerate(plan_subjects):
    series = {"sax": view_series(spec, "sax")} | {v: view_series(spec, v) for v in ("lax_2ch", "lax_3ch", "lax_4ch")}
    for j, (label, view, z) in enumerate(VIEW_SPECS):
        for phase, t in (("ED", 0), ("ES", 1)):
            img = series[view][t, z]
            show_panel(axes[2 * i + t, j], img, f"{label} {phase}")
        axes[2 * i, 0].set_ylabel(f"{spec.vendor}\n{spec.subject} ED", fontsize=7)
        axes[2 * i + 1, 0].set_ylabel("ES", fontsize=7)
fig.suptitle(f"Cine views of two subjects, {P['gallery_size']} matrices (RSS of the simulated files)", fontsize=9)
fig.tight_layout()
display(run.figure(fig, "gallery_views", caption="Short axis base/mid/apex and 2/3/4-chamber views at ED and ES"))

# %% [markdown]
# **Are the views different views?** The normalised cross-correlation of each subject's cine short
# axis (centre slice) with its 4-chamber image, both at end-diastole, over the readout's central half:
# a generator that paints one cross-section with different hearts scores near 1 (the previous version
# scored 0.91 on the `cpu` set); different planes through one body score low. And the bSSFP contrast:
# the median intensity of the LV blood pool over the myocardium's (masks from the anatomy; undefined
# where the wall is thinner than a pixel).

# %%
similarity = checks.view_similarity("", root=root)
ratios = [checks.blood_myocardium_ratio(s) for s in plan_subjects]
run.table([{"subject": f"#{k}", "NCC SAX vs 4ch": round(v, 3)} for k, v in enumerate(similarity)]
          + [{"subject": "median", "NCC SAX vs 4ch": round(float(np.median(similarity)), 3) if similarity else None}],
          "view_similarity", caption=f"SAX (centre slice) vs 4-chamber NCC of the {root.name} files")
defined = [round(r, 2) for r in ratios if not np.isnan(r)]
print("cine blood / myocardium, end-diastole, gallery subjects:",
      defined if defined else f"undefined at the {P['gallery_size']} matrix (the wall is thinner than a pixel)")


# %% [markdown]
# ## Gallery at the `gpu` matrix
#
# The same generator at the `gpu` size's CMRxRecon2025-like matrices (the `smoke` profile draws it at
# its own size to stay fast). Each panel is one simulated file (middle slice; readout oversampling
# removed; readout horizontal, anterior up), so this is also what the networks see at test time on
# the larger sizes. Rows: vendors (the last two are the fresh centre's unseen 5 T system and the
# rare-pathology centre); columns: contrasts.

# %%
gallery_size = P["gallery_size"]
gallery_specs = synthetic.plan_dataset(gallery_size, 0)
render_factor = synthetic.SIZES[gallery_size].render_factor
CONTRASTS = [("Cine", "cine_sax", "cine", "sax"), ("Cine", "cine_lax_4ch", "cine", "lax_4ch"),
             ("Mapping", "T1map", "T1map", "sax"), ("Mapping", "T2map", "T2map", "sax"),
             ("LGE", "lge_sax", "lge", "sax"), ("T1w", "T1w", "T1w", "sax"), ("T2w", "T2w", "T2w", "sax"),
             ("BlackBlood", "blackblood", "blackblood", "sax")]


def simulate_rss(spec, frames=None):
    """RSS images ``(T, H/2, W)`` of the middle slice of ``spec`` (one slice, ``frames`` frames)."""
    spec = dataclasses.replace(spec, slices=1, frames=frames or spec.frames)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the generator runs: one thread, no oversubscription on shared cores
    try:
        k = synthetic.simulate_file(spec, seed=0, render_factor=render_factor)[:, 0]
    finally:
        torch.set_num_threads(threads)
    img = rss(ifft2c(k))
    h = img.shape[-2]
    return img[:, h // 4 : h - h // 4]


def as_contrast(spec, modality, name, contrast, view, frames=1):
    """The subject of ``spec`` in another contrast/view (one frame: cine at end-diastole, mapping's first)."""
    return dataclasses.replace(spec, modality=modality, name=name, contrast=contrast, view=view, frames=frames,
                               has_time_axis=contrast in ("cine", "T1map", "T2map"),
                               pathology="scar" if contrast == "lge" else spec.pathology)


def show(ax, img, title):
    ax.imshow(img.T, cmap="gray", vmin=0, vmax=float(torch.quantile(img.flatten(), 0.995)))
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


gallery_vendors = list(dict.fromkeys(s.vendor for s in gallery_specs))
fig, axes = plt.subplots(len(gallery_vendors), len(CONTRASTS),
                         figsize=(2.2 * len(CONTRASTS), 2.0 * len(gallery_vendors)), squeeze=False)
for i, vendor in enumerate(gallery_vendors):
    base = next(s for s in gallery_specs if s.vendor == vendor and s.name == "cine_sax")
    for j, (modality, name, contrast, view) in enumerate(CONTRASTS):
        spec = as_contrast(base, modality, name, contrast, view)
        img = simulate_rss(spec)[0]
        show(axes[i, j], img, f"{name} {tuple(img.shape)}" if i == 0 else name)
        if j == 0:
            axes[i, j].set_ylabel(f"{base.centre}\n{vendor}", fontsize=6)
fig.suptitle(f"One subject per vendor (rows) and contrast (columns), {gallery_size} matrices "
             "(LGE drawn with a scar)", fontsize=9)
fig.tight_layout()
display(run.figure(fig, "gallery_vendor_contrast", caption=f"Synthetic CMR at the {gallery_size} matrix: vendor x contrast"))

# %% [markdown]
# **A cardiac cycle and a four-chamber view.** Top: a short-axis cine from end-diastole (frame 0) to
# end-systole and back; bottom: the four-chamber long axis of the same subject, where the mitral and
# tricuspid planes descend towards the apex in systole. The last column is
# $|\text{end-systole} - \text{end-diastole}|$.

# %%
cine_spec = next(s for s in gallery_specs if s.name == "cine_sax" and s.split == "train")
t_count = min(cine_spec.frames, 8)  # 8 frames over the RR interval keep the figure fast at the gpu matrix
strips = {"SAX": simulate_rss(cine_spec, frames=t_count),
          "LAX 4ch": simulate_rss(as_contrast(cine_spec, "Cine", "cine_lax_4ch", "cine", "lax_4ch", frames=t_count))}
es = round(0.35 * t_count)
shown = sorted({0, es // 2, es, (es + t_count) // 2, t_count - 1})
fig, axes = plt.subplots(2, len(shown) + 1, figsize=(2.6 * (len(shown) + 1), 5.4), squeeze=False)
change = {}
for row_axes, (label, series) in zip(axes, strips.items(), strict=True):
    for ax, t in zip(row_axes, shown, strict=False):
        show(ax, series[t], f"{label} frame {t}{' (ED)' if t == 0 else ' (ES)' if t == es else ''}")
    diff = (series[es] - series[0]).abs()
    row_axes[-1].imshow(diff.T, cmap="inferno")
    row_axes[-1].set_title(f"{label}: |ES - ED|", fontsize=7)
    row_axes[-1].axis("off")
    change[label] = float(diff.norm() / series[0].norm())
fig.suptitle(f"{cine_spec.vendor} {cine_spec.subject}: cine from end-diastole to end-systole ({gallery_size} matrix)",
             fontsize=9)
fig.tight_layout()
display(run.figure(fig, "gallery_cine_lax", caption="Short-axis cine strip ED -> ES and the four-chamber long axis"))
print("relative change end-systole vs end-diastole:", {k: round(v, 3) for k, v in change.items()})

# %% [markdown]
# **Mapping series.** MOLLI-like $T_1$ mapping (inversion times from 100 to 3100 ms: tissues cross
# zero at different times, so the magnitude contrast changes frame by frame) and $T_2$-prep mapping
# (preparation 0, 35 and 55 ms: fluid and fat hold their signal, myocardium loses it).

# %%
map_base = next(s for s in gallery_specs if s.split == "train")
series = {
    "T1map": simulate_rss(as_contrast(map_base, "Mapping", "T1map", "T1map", "sax",
                                      frames=synthetic.SIZES[gallery_size].frames["T1map"])),
    "T2map": simulate_rss(as_contrast(map_base, "Mapping", "T2map", "T2map", "sax",
                                      frames=synthetic.SIZES[gallery_size].frames["T2map"])),
}
n_cols = max(v.shape[0] for v in series.values())
fig, axes = plt.subplots(2, n_cols, figsize=(2.0 * n_cols, 4.4), squeeze=False)
for row_axes, (name, imgs) in zip(axes, series.items(), strict=True):
    times = synthetic.T1MAP_TI if name == "T1map" else synthetic.T2MAP_TE
    vmax = float(torch.quantile(imgs.flatten(), 0.995))
    for t, ax in enumerate(row_axes):
        ax.axis("off")
        if t < imgs.shape[0]:
            ax.imshow(imgs[t].T, cmap="gray", vmin=0, vmax=vmax)
            label = f"TI {times[t]:.0f} ms" if name == "T1map" else f"T2prep {times[t]:.0f} ms"
            ax.set_title(label if imgs.shape[0] == len(times) else f"{name} frame {t}", fontsize=7)
fig.suptitle(f"Mapping series ({gallery_size} matrix, shared grey scale per row)", fontsize=9)
fig.tight_layout()
display(run.figure(fig, "gallery_mapping", caption="T1 (MOLLI-like) and T2-prep mapping series"))

# %% [markdown]
# **Fresh centre beside a training centre.** The same anatomy generator, but another scanner and
# protocol: 5 T tissue values, a 48-loop ring array (other coil shading), a coarser matrix over a
# smaller FOV, lower SNR, free breathing and partly saturated fat, against a 3 T training scanner.

# %%
fresh_spec = next(s for s in gallery_specs if s.split == "fresh" and s.name == "cine_sax")
train_spec = next(s for s in gallery_specs if s.split == "train" and s.name == "cine_sax")
# three frames over the RR interval: frame 0 is end-diastole, frame 1 (33 %) end-systole
pair = {f"training: {train_spec.centre} {train_spec.vendor}": simulate_rss(train_spec, frames=3),
        f"fresh: {fresh_spec.centre} {fresh_spec.vendor}": simulate_rss(fresh_spec, frames=3)}
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), squeeze=False)
for k, (label, imgs) in enumerate(pair.items()):
    show(axes[0, 2 * k], imgs[0], f"{label}\nED, {tuple(imgs.shape[-2:])}")
    show(axes[0, 2 * k + 1], imgs[1], "ES")
fig.tight_layout()
display(run.figure(fig, "gallery_fresh_vs_train", caption="A fresh-centre subject (unseen hardware and protocol) beside a training one"))

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
# a real tree's vendors (UIH_30T_umr780, ...) are not in the synthetic table: show a synthetic one's array
coil_vendor = first["vendor"] if first["vendor"] in synthetic.VENDORS else next(iter(synthetic.VENDORS))
maps = array_coil_maps(coil_vendor, first["readout"], first["phase"], seed=0, subject_index=0)
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
fig.suptitle(f"{coil_vendor}: array coil sensitivities (not normalised)")
display(run.figure(fig, "coil_shading", caption="Array coil maps and their RSS: realistic shading is kept"))

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
display(run.figure(fig, "virtual_coils_kspace", caption="Compressed coil images and k-space of one file"))

# %% [markdown]
# ## Training examples and balanced sampling
#
# `SliceDataset` reads one slice and a window of adjacent frames lazily (cine windows wrap around
# the cycle), indexes ONE whole-series mask drawn per (file, slice, epoch) with it (so a repeated
# frame carries an identical mask, and a static file one 2-D mask), and returns the masked k-space,
# the RSS target of the centre frame and its realised acceleration $R_\text{eff}$ (ACS included;
# the ACS is 20 lines at 246 phase encodes, scaled with the matrix). `BalancedSampler` repeats file $i$ $w_i$ times per epoch, {eq}`eq-sample-balancing`:
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
run.table(r_eff_summary([e["meta"] for e in examples]), "mask_draws",
          caption=f"Masks drawn for {n} training examples: nominal R and the realised R_eff of the centre frame")

ex = examples[0]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
axes[0].imshow(ex["mask"][2].T, cmap="gray", aspect="auto")
axes[0].set_title(f"mask {ex['meta']['mask_kind']} R={ex['meta']['acceleration']} "
                  f"(R_eff {ex['meta']['r_eff']:.1f})")
axes[1].imshow(zero_filled(ex["masked_kspace"][2]).T, cmap="gray")
axes[1].set_title("zero-filled centre frame")
axes[2].imshow(ex["target"].T, cmap="gray")
axes[2].set_title("target (RSS, fully sampled)")
for ax in axes:
    ax.set_xlabel("readout (H)")
fig.suptitle(ex["meta"]["file"], fontsize=8)
display(run.figure(fig, "example", caption="One training example: mask, zero-filled input, target"))

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

# %% tags=["remove-cell"]
run.finish()
