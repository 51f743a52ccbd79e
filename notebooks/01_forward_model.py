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
# model (reference eq. (1)):
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

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from moero.book.run import start_run
from moero.data import twix as raw
from moero.data.readers import load_cmrxrecon, read_manifest
from moero.eval import metrics
from moero.physics import masks
from moero.physics import sense as physics
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
run.figure(fig, "synthetic_coils", caption="Synthetic cine slice: RSS image and single-coil magnitudes.")
plt.show()

# %% [markdown]
# ## Coil maps: low resolution and ESPIRiT
#
# Both estimates use only the fully sampled calibration region (ACS) at the k-space centre, as a
# reconstruction from undersampled data must.
#
# * **Low resolution**: the Hann-windowed ACS transformed to images, divided by their RSS.
# * **ESPIRiT** (Uecker et al. 2014): the calibration matrix of all $k \times k$ ACS patches is
#   decomposed by SVD; its dominant right singular vectors span the signal subspace. Transformed to
#   image space they give at each pixel a $C \times C$ matrix whose eigenvector of eigenvalue
#   $\approx 1$ is the vector of sensitivities there; pixels without such an eigenvalue (no signal)
#   are cropped to zero. The phase is taken relative to coil 0.
#
# Both are normalised as in reference section 1: $S_c / \sqrt{\sum_c |S_c|^2 + \epsilon}$. A
# good map explains every coil image as $S_c \cdot (S^H y)$; the table gives the relative residual
# inside the object.

# %%
acs = P["acs"]
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
run.figure(fig, "coil_maps", caption=f"Coil-map magnitudes from a {acs}-line ACS: low resolution vs ESPIRiT.")
plt.show()

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
# the source distribution of `twixtools` 0.24 (MIT licence). `moero.raw.example_gre_dat` downloads
# that source distribution once and caches the file outside the repository; `moero.raw.read_twix`
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
    run.figure(fig, "gre_dat", caption="Real 2-coil Siemens scan (twixtools' gre.dat): RSS, ESPIRiT combination, maps.")
    plt.show()

# %% [markdown]
# ## The CMRxRecon2025 sampling masks
#
# The challenge undersamples with three patterns (reference section 5), all varying over frames
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
fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 1, 2.2 * n_rows), squeeze=False, layout="constrained")
for row_axes, ((kind, r), m) in zip(axes, gallery.items(), strict=True):
    for t, ax in enumerate(row_axes):
        # antialiased: at print size several lines share a pixel, shown as grey rather than moire
        ax.imshow(m[t].float(), cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        if t == 0:
            ax.set_ylabel(f"{kind}\nR={r}", fontsize=9)
        if row_axes is axes[0]:
            ax.set_title(f"frame {t}", fontsize=10)
fig.suptitle(f"Sampling masks (H x W = {mask_shape[1]} x {mask_shape[2]}; white = sampled; x = phase encode)")
run.figure(fig, "mask_gallery", caption="The three CMRxRecon2025 mask kinds at several accelerations over frames.")
plt.show()

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
run.figure(fig, "mask_psf", caption="Point-spread functions of frame 0: centre-row profiles of the line masks, log-PSF images of kt-Radial.")
plt.show()
run.table(rows, "mask_fractions", caption="Sampled fraction (official construction and exact=True) and largest PSF side lobe.")

# %% [markdown]
# ## Zero filling vs CG-SENSE
#
# CG-SENSE solves the Tikhonov-regularised normal equations $(A^H A + \lambda I)\,x = A^H y$ by
# conjugate gradients, one system per frame, with ESPIRiT maps calibrated on the ACS of the
# *undersampled* data (frame 0; the coils do not move between frames). The zero-filled image is the
# RSS of $F^{-1} M y$. Metrics follow the official CMRxRecon2025 protocol of `moero.metrics`
# (reference section 7): centre crop $\mathrm{round}(H/3) \times \mathrm{round}(W/2)$, each image
# divided by its own 99.5th-percentile magnitude, SSIM (7x7 uniform window) and PSNR as scikit-image
# computes them with `data_range` = the normalised reference's maximum, and
# NMSE $= \|x_{ref} - \hat x\|^2 / \|x_{ref}\|^2$; averaged over frames. The reconstructed
# magnitude is $\mathrm{RSS}(S x)$, i.e. $|x|$ where the maps are non-zero.

# %%
results, examples = [], {}
for kind in masks.KINDS:
    # the ACS is the same at every R, and the coils do not move between frames: calibrate once per
    # kind, on frame 0 of the undersampled data, and share the maps over frames and accelerations
    first = masks.make_mask(kind, (1, H, W), P["accelerations"][0], acs=acs, seed=1)[0]
    maps = physics.espirit_maps(physics.apply_mask(kspace[0], first), first, kernel=P["espirit_kernel"])
    for r in P["accelerations"]:
        mask = masks.make_mask(kind, (frames, H, W), r, acs=acs, seed=1)
        under = physics.apply_mask(kspace, mask)
        zf = physics.zero_filled(under)
        cg = physics.rss(maps * physics.cg_sense(under, maps, mask, iters=P["cg_iters"], lam=P["cg_lam"]).unsqueeze(-3))
        examples[(kind, r)] = (zf[0], cg[0])
        for name, img in (("zero-filled", zf), ("CG-SENSE", cg)):
            score = metrics.score_images(reference, img)  # official protocol: crop, normalise, score
            results.append({
                "kind": kind, "R": r, "method": name,
                "SSIM": float(score["ssim"].mean()),
                "PSNR": float(score["psnr"].mean()),
                "NMSE": float(score["nmse"].mean()),
            })
run.table(results, "zf_vs_cgsense", caption=f"Zero-filled vs CG-SENSE ({P['cg_iters']} iterations, lambda={P['cg_lam']}), mean over {frames} frames.")

# %%
r_show = P["accelerations"][-1]
fig, axes = plt.subplots(len(masks.KINDS), 5, figsize=(15, 3.3 * len(masks.KINDS)), squeeze=False)
vmax = float(reference[0].max())
for row_axes, kind in zip(axes, masks.KINDS, strict=True):
    zf0, cg0 = examples[(kind, r_show)]
    panels = [
        (reference[0], "reference (RSS)", "gray", (0, vmax)),
        (zf0, f"zero-filled, {kind} R={r_show}", "gray", (0, vmax)),
        (cg0, "CG-SENSE", "gray", (0, vmax)),
        ((zf0 - reference[0]).abs(), "|error| zero-filled", "inferno", (0, 0.3 * vmax)),
        ((cg0 - reference[0]).abs(), "|error| CG-SENSE", "inferno", (0, 0.3 * vmax)),
    ]
    for ax, (img, title, cmap, (lo, hi)) in zip(row_axes, panels, strict=True):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=row_axes[-1], shrink=0.8)
fig.tight_layout()
run.figure(fig, "zf_vs_cgsense", caption=f"Frame 0 at R={r_show}: zero-filled and CG-SENSE images and their errors.")
plt.show()

# %% [markdown]
# How to read the table. CG-SENSE uses the coil sensitivities to unfold the aliasing that zero
# filling leaves, so its NMSE and PSNR are much better wherever the coils can separate the folded
# pixels, and the gap widens with the acceleration for kt-Radial, whose zero-filled images blur
# badly. Its SSIM, however, need not beat zero filling: CG-SENSE amplifies noise by the g-factor
# (more with more iterations and a smaller Tikhonov weight $\lambda$; early stopping acts as a
# regulariser), and on the small synthetic matrices the 20-line ACS is a large share of k-space, so
# the zero-filled image is a fair low-resolution image that SSIM's local statistics favour. The
# official construction also samples more than $1/R$ (the table above), which flatters zero
# filling at high $R$. The learned, unrolled reconstructions of the later chapters start from
# exactly these operators, $A^H y$, $A^H A x$ and the coil maps, and learn the regulariser that
# CG-SENSE lacks.

# %%
run.finish()
