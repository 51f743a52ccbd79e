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
# # The forward model, the CMRxRecon2025 masks and a classical reconstruction
#
# Every method in the paper, the unrolled network included, is built on the multi-coil SENSE
# model {eq}`eq-forward-model`:
#
# $$ y = M F S x + n, \qquad A = M F S, \qquad A^H y = \sum_c \overline{S_c}\, F^{-1} y_c , $$
#
# where $x$ is the image of one frame, $S_c$ the sensitivity map of coil $c$, $F$ the centred,
# orthonormal 2-D Fourier transform (`ifftshift -> fft2 -> fftshift`), $M$ the sampling mask and
# $n$ noise. In `moero`, tensors are `complex64` with the coil axis right before the two spatial
# axes `(..., C, H, W)`; $H$ is the readout (fully sampled), $W$ the phase encode (undersampled).
#
# This chapter shows the model on a synthetic cine slice and on a real Siemens scan, the two
# coil-map estimates, the three CMRxRecon2025 sampling patterns with their point-spread functions,
# and what a classical reconstruction (CG-SENSE) achieves against zero filling.

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

from moero import physics  # the physics layer: SENSE, coil maps, CG-SENSE, masks
from moero.book.run import start_run
from moero.data import twix as raw
from moero.data.readers import load_cmrxrecon, read_manifest
from moero.eval import metrics
from moero.physics import masks
from moero.physics.fft import ifft2c

run = start_run("01_forward_model", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
P = run.params
P

# %% [markdown]
# ## A synthetic cine slice
#
# We read the first cine file of the dataset (the profile's synthetic CMRxRecon-layout tree unless a
# real one is given) and keep its middle slice. The coil images $F^{-1} y_c$ each see the heart
# through their own sensitivity; their root-sum-of-squares (RSS) is the reference image that the
# challenge scores against.

# %%
root = run.dataset_root()
row = next(r for r in read_manifest(root) if r["modality"] == "Cine")
volume = load_cmrxrecon(root / row["file"])
T, Z, C, H, W = volume.shape
frames = min(P["frames"], T)
kspace = volume.kspace[:frames, Z // 2]  # (T, C, H, W)
coil_images = ifft2c(kspace)
reference = physics.rss(coil_images)  # (T, H, W)
print(f"{row['file']}: (T, Z, C, H, W) = {volume.shape}; using slice {Z // 2}, frames 0..{frames - 1}")

fig, axes = plt.subplots(1, 5, figsize=(15, 3.6))
axes[0].imshow(reference[0], cmap="gray")
axes[0].set_title("RSS, frame 0")
for ax, c in zip(axes[1:], np.linspace(0, C - 1, 4).round().astype(int), strict=True):
    ax.imshow(coil_images[0, c].abs(), cmap="gray")
    ax.set_title(f"|coil {c} image|")
for ax in axes:
    ax.set_xlabel("phase encode W")
    ax.set_ylabel("readout H")
fig.tight_layout()
display(run.figure(fig, "synthetic_coils", caption="Synthetic cine slice: RSS image and single-coil magnitudes."))

# %% [markdown]
# ## Coil maps: low resolution and ESPIRiT
#
# Both estimates use only the fully sampled calibration region (ACS) at the k-space centre, as a
# reconstruction from undersampled data must.
#
# * **Low resolution**: the Hann-windowed ACS transformed to images, divided by their RSS.
# * **ESPIRiT** {cite}`uecker2014espirit`: the calibration matrix of all $k \times k$ ACS patches is
#   decomposed by SVD; its dominant right singular vectors span the signal subspace. Transformed to
#   image space they give at each pixel a $C \times C$ matrix whose eigenvector of eigenvalue
#   $\approx 1$ is the vector of sensitivities there; pixels without such an eigenvalue (no signal)
#   are cropped to zero. The phase is taken relative to coil 0.
#
# Both are normalised as the forward model {eq}`eq-forward-model` assumes: $S_c / \sqrt{\sum_c |S_c|^2 + \epsilon}$. A
# good map explains every coil image as $S_c \cdot (S^H y)$; the table gives the relative residual
# inside the object.

# %%
acs = max(masks.acs_width(W, P["acs"]), P["espirit_kernel"] + 2)  # ACS scaled with the matrix (20 at 246)
maps_low = physics.estimate_maps_lowres(kspace[:1], acs)[0]
maps_esp = physics.espirit_maps(kspace[:1], acs, kernel=P["espirit_kernel"])[0]
support = reference[0] > 0.1 * reference[0].max()


def coil_residual(maps: torch.Tensor, k: torch.Tensor, where: torch.Tensor) -> float:
    """Relative energy of the coil images that ``maps`` leaves unexplained inside ``where``."""
    coils = ifft2c(k)
    residual = (coils - maps * physics.sense_adjoint(k, maps))[:, where]
    return float((residual.norm() / coils[:, where].norm()) ** 2)


show = np.linspace(0, C - 1, 4).round().astype(int)
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for row_axes, (name, maps) in zip(axes, [("low-res", maps_low), ("ESPIRiT", maps_esp)], strict=True):
    for ax, c in zip(row_axes, show, strict=True):
        im = ax.imshow(maps[c].abs(), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{name}: |S_{c}|")
        ax.axis("off")
fig.colorbar(im, ax=axes, shrink=0.8, label="|S_c| (normalised)")
display(run.figure(fig, "coil_maps", caption=f"Coil-map magnitudes from a {acs}-line ACS: low resolution vs ESPIRiT."))

run.table(
    [
        {"maps": "low resolution", "coil residual inside object": coil_residual(maps_low, kspace[0], support)},
        {"maps": "ESPIRiT", "coil residual inside object": coil_residual(maps_esp, kspace[0], support)},
    ],
    "coil_map_residual",
    caption="How well each map set explains the coil images: ||y_c - S_c S^H y||^2 / ||y||^2 inside the object.",
)

# %% [markdown]
# ## The same model on a real scan
#
# `gre.dat` is a 2-channel gradient-echo phantom scan from a Siemens Skyra at 2.9 T, shipped with
# the source distribution of `twixtools` 0.24 (MIT licence). `moero.data.twix.example_gre_dat` downloads
# that source distribution once and caches the file outside the repository; `moero.data.twix.read_twix`
# returns its k-space in our axis order. With two coils and real noise, ESPIRiT needs a higher
# subspace threshold (0.05) than the noiseless default, or noise enters the kernels.

# %%
try:
    scan = raw.read_twix(raw.example_gre_dat(), remove_os=True)
except (ImportError, raw.RawDataUnavailable) as err:  # optional extra missing or no network: say so
    scan = None
    print(f"real-data section skipped: {err}")

if scan is not None:
    gre = scan.kspace[0, 0]  # (C, H, W)
    gre_coils = ifft2c(gre)
    gre_maps = physics.espirit_maps(gre, 24, kernel=6, threshold=0.05)
    combined = physics.sense_adjoint(gre, gre_maps)  # S^H y: the optimal coil combination
    print(f"gre.dat: {scan.header['model']} at {scan.header['field_strength_T']:.2f} T, k-space {tuple(scan.kspace.shape)}")
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.4))
    panels = [
        (physics.rss(gre_coils), "RSS", "gray"),
        (combined.abs(), "|S^H y| (ESPIRiT)", "gray"),
        (torch.angle(combined), "phase of S^H y", "twilight"),
        (gre_maps[0].abs(), "|S_0|", "viridis"),
        (gre_maps[1].abs(), "|S_1|", "viridis"),
    ]
    for ax, (img, title, cmap) in zip(axes, panels, strict=True):
        im = ax.imshow(img, cmap=cmap)
        ax.set_title(title)
        ax.axis("off")
        fig.colorbar(im, ax=ax, shrink=0.75)
    display(run.figure(fig, "gre_dat", caption="Real 2-coil Siemens scan (twixtools' gre.dat): RSS, ESPIRiT combination, maps."))

# %% [markdown]
# ## The CMRxRecon2025 sampling masks
#
# The challenge {cite}`cmrxrecon2025` undersamples with three patterns, all varying over frames
# except Uniform:
#
# * **Uniform**: every $R$-th phase-encode line plus the ACS block.
# * **kt-Gaussian**: $\mathrm{round}(W/R)$ lines per frame drawn with probability
#   $\propto 0.1 + \frac{a}{1-a} e^{-p^2/s^2}$ ($a = 0.2$, $s = W/5$, $p$ the distance from the centre),
#   a repeated draw moved to the nearest free line of the frame, then the ACS added.
# * **kt-Radial**: $\lfloor 180 / (0.6 R) \rfloor$ spokes over $180^\circ$, rotated by the golden
#   angle $137.5^\circ$ every frame, cut to the image, plus a $20 \times 20$ ACS square.
#
# As in the challenge files, $R$ sets the line or spoke count and the ACS comes on top, so the
# sampled fraction exceeds $1/R$; `exact=True` counts the ACS in instead. The gallery uses a
# CMRxRecon cine matrix in the full profiles.

# %%
mask_shape = (P["frames"], *P["mask_shape"])
gallery = {(kind, r): masks.make_mask(kind, mask_shape, r, acs=20, seed=0) for kind in masks.KINDS for r in P["accelerations"]}
n_rows, n_cols = len(gallery), P["frames"]
# ~1.7 in per panel and 14 pt labels: at the page's width the labels read at about 9 pt
fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.7 * n_cols + 1, 1.5 * n_rows), squeeze=False, layout="constrained")
for row_axes, ((kind, r), m) in zip(axes, gallery.items(), strict=True):
    for t, ax in enumerate(row_axes):
        # antialiased: at print size several lines share a pixel, shown as grey rather than moire
        ax.imshow(m[t].float(), cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        if t == 0:
            ax.set_ylabel(f"{kind}\nR={r}", fontsize=14)
        if row_axes is axes[0]:
            ax.set_title(f"frame {t}", fontsize=14)
fig.suptitle(f"Sampling masks (H x W = {mask_shape[1]} x {mask_shape[2]}; white = sampled; x = phase encode)")
display(run.figure(fig, "mask_gallery", caption="The three CMRxRecon2025 mask kinds at several accelerations over frames."))

# %% [markdown]
# **Point-spread functions.** Zero filling convolves the image with the PSF $|F^{-1} M|$ (scaled to
# a unit central peak). Uniform sampling gives $R$ coherent replicas (fold-over), the kt kinds spread
# the aliasing into low, noise-like side lobes, which is what learned and compressed-sensing
# reconstructions exploit. Line masks are constant along the readout, so their PSF is a single row
# (top: its profile along $W$); kt-Radial's is two-dimensional (bottom: log-PSF image). The table
# gives the sampled fraction (official and `exact=True`) and the largest side lobe.

# %%
n_acc = len(P["accelerations"])
fig, axes = plt.subplots(2, n_acc, figsize=(3.6 * n_acc + 1, 6.5), squeeze=False, layout="constrained")
rows = []
h0, w0 = mask_shape[1] // 2, mask_shape[2] // 2
offsets = np.arange(mask_shape[2]) - w0
for (kind, r), m in gallery.items():
    col = P["accelerations"].index(r)
    psf = masks.point_spread(m[0])
    if kind == "kt_radial":  # a 2-D pattern: show the log-PSF image
        im = axes[1, col].imshow(torch.log10(psf.clamp_min(1e-4)), vmin=-4, vmax=0, cmap="magma", aspect="auto")
        axes[1, col].set_title(f"kt_radial, R={r}: log10 PSF", fontsize=9)
        axes[1, col].set_xticks([])
        axes[1, col].set_yticks([])
    else:  # line masks: the PSF lives on the centre row (constant along the readout)
        axes[0, col].semilogy(offsets, psf[h0].clamp_min(1e-4), lw=0.8, label=kind)
        axes[0, col].set_title(f"line masks, R={r}", fontsize=9)
        axes[0, col].set_xlabel("pixel offset along W")
        axes[0, col].set_ylim(1e-3, 1.5)
        axes[0, col].legend(fontsize=7)
    side = psf.clone()
    side[h0, w0] = 0
    exact = masks.make_mask(kind, mask_shape, r, acs=20, seed=0, exact=True)
    rows.append({
        "kind": kind, "R": r,
        "fraction (official)": float(m.double().mean()), "1/R": 1 / r,
        "fraction (exact=True)": float(exact.double().mean()),
        "largest side lobe": float(side.max()),
    })
axes[0, 0].set_ylabel("PSF (centre row)")
fig.colorbar(im, ax=axes[1, :], shrink=0.8, label="log10 PSF")
display(run.figure(fig, "mask_psf", caption="Point-spread functions of frame 0: centre-row profiles of the line masks, log-PSF images of kt-Radial."))
run.table(rows, "mask_fractions", caption="Sampled fraction (official construction and exact=True) and largest PSF side lobe.")

# %% [markdown]
# ## Zero filling vs CG-SENSE, as the acceleration grows
#
# CG-SENSE {cite}`pruessmann2001advances` solves the Tikhonov-regularised normal equations
# $(A^H A + \lambda I)\,x = A^H y$ by conjugate gradients, one system per frame. The zero-filled image
# is the RSS of $F^{-1} M y$. The data and masks are those the networks see: whole cine series at
# the dataset's matrix (never cropped), one mask per series as the challenge draws it (kt kinds
# change over frames), ACS width scaled with the phase-encode matrix (20 lines at 246, `acs_width`),
# kt-radial spoke count scaled likewise (`matched_spokes`: the official count at 512 x 246, fewer
# spokes on a smaller matrix of the same FOV, which the official count would barely undersample),
# and the realised acceleration $R_\text{eff} = HW / |M|$ of each frame reported next to the nominal
# $R$. The coil maps are the low-resolution estimate from the fully sampled centre of the
# *time-averaged undersampled* series (kt patterns fill the centre over frames; uniform only has its
# ACS): with an ACS of a few lines on these matrices, ESPIRiT's kernels are too small. Each
# series is scaled by the maximum of its zero-filled image, so that $\lambda$ is relative to the
# data. $\lambda$ is chosen per mask kind and $R$ on the **validation** subjects (best mean SSIM),
# then applied to the **test** subjects, whose scores are reported. Metrics follow the official
# CMRxRecon2025 protocol of `moero.eval.metrics` ({doc}`../book/conventions`): centre crop
# $\mathrm{round}(H/3) \times \mathrm{round}(W/2)$, each image divided by its own 99.5th percentile,
# SSIM (7x7 uniform window) and PSNR as scikit-image computes them, averaged over frames and files.

# %%
def cine_series(split: str, count: int) -> list[tuple[str, torch.Tensor]]:
    """Middle-slice k-space ``(T, C, H, W)`` (first ``frames`` frames) of ``count`` cine files of ``split``."""
    rows = [r for r in read_manifest(root) if r["modality"] == "Cine" and r.get("split") == split]
    out = []
    for r in rows[:count]:
        vol = load_cmrxrecon(root / r["file"])
        out.append((r["file"], vol.kspace[: min(P["frames"], vol.shape[0]), vol.shape[1] // 2]))
    return out


def reconstruct(k: torch.Tensor, kind: str, r: float, seed: int, lams: list[float]) -> dict:
    """Zero-filled and CG-SENSE (one image per lambda) of a series under its whole-series mask."""
    t, c, h, w = k.shape
    sampler = masks.MaskSampler(kinds=(kind,), accelerations=(r,), acs=P["acs"])
    mask, info = sampler.sample((t, h, w), seed)
    under = physics.apply_mask(k, mask)
    zf = physics.zero_filled(under)
    scale = float(zf.max())
    under, zf = under / scale, zf / scale
    union = mask.any(dim=0)
    average = under.sum(dim=0) / mask.sum(dim=0).clamp_min(1)[None]  # time-averaged k-space
    maps = physics.estimate_maps_lowres(average, union)  # its fully sampled centre, Hann-windowed
    cg = {lam: physics.rss(maps * physics.cg_sense(under, maps, mask, iters=P["cg_iters"], lam=lam).unsqueeze(-3))
          for lam in lams}
    r_eff = masks.effective_acceleration(mask)
    return {"zf": zf, "cg": cg, "reference": physics.rss(ifft2c(k)) / scale, "r_eff": float(r_eff.mean()),
            "acs": info["acs"]}


def mean_ssim(reference: torch.Tensor, image: torch.Tensor) -> tuple[float, float]:
    score = metrics.score_images(reference, image)  # official protocol: crop, normalise, score
    return float(score["ssim"].mean()), float(score["psnr"].mean())


val_series = cine_series("val", P["val_files"])
test_series = cine_series("test-total", P["test_files"])
print(f"validation: {[f for f, _ in val_series]}\ntest: {[f for f, _ in test_series]}")
results, examples = [], {}
for kind in masks.KINDS:
    for r in P["accelerations"]:
        # lambda on validation: best mean SSIM over the validation series
        val_scores = {lam: [] for lam in P["cg_lams"]}
        for i, (_, k) in enumerate(val_series):
            rec = reconstruct(k, kind, r, seed=1000 + i, lams=P["cg_lams"])
            for lam, img in rec["cg"].items():
                val_scores[lam].append(mean_ssim(rec["reference"], img)[0])
        best = max(P["cg_lams"], key=lambda lam: float(np.mean(val_scores[lam])))
        zf_s, cg_s, r_effs = [], [], []
        for i, (_, k) in enumerate(test_series):
            rec = reconstruct(k, kind, r, seed=i, lams=[best])
            zf_s.append(mean_ssim(rec["reference"], rec["zf"]))
            cg_s.append(mean_ssim(rec["reference"], rec["cg"][best]))
            r_effs.append(rec["r_eff"])
            if i == 0:
                examples[(kind, r)] = (rec["reference"][0], rec["zf"][0], rec["cg"][best][0])
        results.append({
            "kind": kind, "R": r, "R_eff": float(np.mean(r_effs)), "ACS": rec["acs"],
            "lambda (val)": best,
            "SSIM zero-filled": float(np.mean([s for s, _ in zf_s])),
            "SSIM CG-SENSE": float(np.mean([s for s, _ in cg_s])),
            "PSNR zero-filled": float(np.mean([p for _, p in zf_s])),
            "PSNR CG-SENSE": float(np.mean([p for _, p in cg_s])),
        })
run.table(results, "zf_vs_cgsense",
          caption=f"Test subjects: zero-filled vs CG-SENSE ({P['cg_iters']} iterations, lambda chosen on validation "
                  f"from {P['cg_lams']}); R_eff = realised acceleration (ACS included), mean over frames.")

# %%
fig, axes = plt.subplots(1, len(masks.KINDS), figsize=(4.6 * len(masks.KINDS), 3.6), squeeze=False, sharey=True)
for ax, kind in zip(axes[0], masks.KINDS, strict=True):
    rows_k = [row for row in results if row["kind"] == kind]
    ax.plot([row["R"] for row in rows_k], [row["SSIM zero-filled"] for row in rows_k], "o-", label="zero-filled")
    ax.plot([row["R"] for row in rows_k], [row["SSIM CG-SENSE"] for row in rows_k], "s-", label="CG-SENSE")
    for row in rows_k:
        ax.annotate(f"{row['R_eff']:.1f}", (row["R"], row["SSIM zero-filled"]), fontsize=7,
                    textcoords="offset points", xytext=(0, -11), ha="center")
    ax.set_title(kind)
    ax.set_xlabel("nominal R (labels: R_eff)")
    ax.grid(alpha=0.3)
axes[0, 0].set_ylabel("SSIM (official protocol)")
axes[0, 0].legend()
fig.tight_layout()
display(run.figure(fig, "ssim_vs_r", caption="SSIM of zero filling and CG-SENSE (lambda chosen on validation) against R."))
for kind in masks.KINDS:
    rows_k = [row for row in results if row["kind"] == kind]
    falls = all(a["SSIM zero-filled"] > b["SSIM zero-filled"] for a, b in zip(rows_k[:-1], rows_k[1:], strict=True))
    beats = all(row["SSIM CG-SENSE"] > row["SSIM zero-filled"] for row in rows_k)
    print(f"{kind}: zero-filled SSIM falls monotonically with R: {falls}; CG-SENSE beats zero filling at every R: {beats}")

# %%
r_show = P["accelerations"][-1]
fig, axes = plt.subplots(len(masks.KINDS), 5, figsize=(15, 3.3 * len(masks.KINDS)), squeeze=False)
for row_axes, kind in zip(axes, masks.KINDS, strict=True):
    ref0, zf0, cg0 = examples[(kind, r_show)]
    h = ref0.shape[0]
    ref0, zf0, cg0 = (x[h // 4 : h - h // 4] for x in (ref0, zf0, cg0))  # drop the readout oversampling
    vmax = float(ref0.max())
    panels = [
        (ref0, "reference (RSS)", "gray", (0, vmax)),
        (zf0, f"zero-filled, {kind} R={r_show}", "gray", (0, vmax)),
        (cg0, "CG-SENSE", "gray", (0, vmax)),
        ((zf0 - ref0).abs(), "|error| zero-filled", "inferno", (0, 0.3 * vmax)),
        ((cg0 - ref0).abs(), "|error| CG-SENSE", "inferno", (0, 0.3 * vmax)),
    ]
    for ax, (img, title, cmap, (lo, hi)) in zip(row_axes, panels, strict=True):
        im = ax.imshow(img.T, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=row_axes[-1], shrink=0.8)
fig.tight_layout()
display(run.figure(fig, "zf_vs_cgsense", caption=f"Frame 0 of a test subject at R={r_show}: zero-filled and CG-SENSE images and errors."))

# %% [markdown]
# How to read this. With the ACS at about 8 % of the phase-encode lines and whole-image series, the
# nominal $R$ is close to what is realised for the kt kinds ($R_\text{eff}$ above; the official
# construction adds the ACS on top, so uniform and kt-Gaussian saturate near $W/20$), and zero
# filling degrades as $R$ grows: aliasing (uniform), incoherent artefacts (kt-Gaussian) or streaks
# and blur (kt-Radial). CG-SENSE uses the coil sensitivities to unfold that aliasing; with
# $\lambda$ tuned on validation subjects it trades noise amplification (g-factor) for residual
# aliasing. The learned, unrolled reconstructions of the later chapters start from exactly these
# operators, $A^H y$, $A^H A x$ and the coil maps, and learn the regulariser that CG-SENSE lacks.

# %% [markdown]
# ## The network these steps are unrolled into
#
# PromptMR+ {cite}`xin2024rethinking` repeats the step below in a chain of cascades: a sensitivity
# network estimates the coil maps $S$ from the calibration lines, each cascade applies data
# consistency and a prompt U-Net denoiser, and the root sum of squares of the centre frame is the
# output. The figure is drawn from the `paper` preset's own configuration (`moero.models.promptmr.preset`).

# %% tags=["hide-input"]
from moero.book import diagrams  # noqa: E402
from moero.models.promptmr import preset as model_preset  # noqa: E402

display(run.figure(diagrams.promptmr_diagram(model_preset("paper")), "promptmr_architecture",
                   caption="PromptMR+ as the paper preset builds it: the sensitivity net on the ACS, the unrolled "
                           "cascades (data consistency, prompt U-Net; widths in channels) and the output RSS."))

# %% [markdown]
# ## One cascade of eq. (2)
#
# The unrolled networks of the later chapters repeat one step {eq}`eq-unrolled-cascade`,
#
# $$ x_{k+1} = x_k - \eta_k \left(A^H A x_k - A^H y\right) - D_k(\dots), $$
#
# starting from $x_0 = A^H y$ (`moero.models.promptmr.unroll`). The first two terms are physics: a
# gradient step on $\tfrac12 \lVert A x - y \rVert^2$ with the learnable step $\eta_k$ (initialised
# to 1), built from the operators of this chapter: `physics.sense_adjoint` is $A^H$ and
# `physics.sense_normal` is $A^H A$. The third, the learned denoiser $D_k$ on the adaptive input
# $[x_k, A^H A x_k, s_k, A^H y, A^H A x_k - A^H y]$, is what chapter 06 trains; it is left out here
# ($D_k = 0$), so the step below is exactly what data consistency contributes, on three frames of the
# cine series under a kt-Gaussian mask at $R = 4$ (coil maps as in the CG-SENSE section above).

# %% tags=["hide-input"]
from moero.models.promptmr import Cascade, preset

series = kspace[:3]  # (F, C, H, W): three frames, as the tiny preset's cascades take
step_mask, _ = masks.MaskSampler(kinds=("kt_gaussian",), accelerations=(4,), acs=P["acs"]).sample(series.shape[:1] + series.shape[2:], 0)
y = physics.apply_mask(series, step_mask)
scale = float(physics.zero_filled(y).max())
y, series = y / scale, series / scale
step_maps = physics.estimate_maps_lowres(y.sum(dim=0) / step_mask.sum(dim=0).clamp_min(1)[None], step_mask.any(dim=0))

# %%
atb = physics.sense_adjoint(y, step_maps, step_mask)  # A^H y
x_k = atb  # x_0 = A^H y: where the cascades start
dc = physics.sense_normal(x_k, step_maps, step_mask) - atb  # A^H A x_k - A^H y
eta = 1.0  # the cascade's learnable step at its initial value
x_next = x_k - eta * dc  # - D_k(...): the learned term, 0 here

# %% tags=["hide-input"]
# the package's own cascade with its denoiser switched off computes the same x_{k+1}
cascade = Cascade(preset("tiny"), index=0)
cascade.denoise = lambda buffers, history: (torch.zeros_like(buffers), [], None)
with torch.no_grad():
    out = cascade(x_k[None], x_k[None], atb[None], y[None], step_mask[None, :, None].float(),
                  step_maps.expand(series.shape[0], -1, -1, -1)[None])
print(f"moero.models.promptmr.Cascade with D_k = 0: max |difference| to the step above = "
      f"{float((out.image[0] - x_next).abs().max()):.1e}")

truth = physics.sense_adjoint(series, step_maps)  # the fully sampled image, combined with the same maps


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


run.table(
    [{"image": name, "||x - x_full|| / ||x_full||": relative(x, truth),
      "||A x - y|| / ||y||": relative(physics.apply_mask(physics.sense_forward(x, step_maps), step_mask), y)}
     for name, x in [("x_0 = A^H y", x_k), ("x_1 (D = 0)", x_next)]],
    "cascade_step", caption="One gradient step of eq. (2) without the denoiser: error to the fully sampled "
                            "image and data residual, before and after.")

h = x_k.shape[-2]
crop = slice(h // 4, h - h // 4)  # drop the readout oversampling
vmax = float(truth[0].abs().max())
panels = [(x_k[0], "$|x_k|$, $x_0 = A^H y$", vmax),
          (eta * dc[0], r"$|\eta (A^H A x_k - A^H y)|$ (own scale)", float((eta * dc[0])[crop].abs().max())),
          (x_next[0], "$|x_{k+1}|$ ($D_k = 0$)", vmax), (truth[0], "fully sampled", vmax)]
fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
for ax, (img, title, top) in zip(axes, panels, strict=True):
    ax.imshow(img[crop].abs().T, cmap="gray", vmin=0, vmax=top)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
fig.tight_layout()
display(run.figure(fig, "cascade_step", caption="Frame 0 of one cascade of eq. (2) on the synthetic cine slice (kt-Gaussian, "
                                                "R = 4): the start x_0 = A^H y, the data-consistency term, and x_1 without D."))

# %% tags=["remove-cell"]
run.finish()
