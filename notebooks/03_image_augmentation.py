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
# # Image-domain augmentation: image and coil maps move together
#
# The image half of DualSpace-CMR {cite}`li2025branch` transforms the anatomy *and* the coil
# sensitivities, then goes back to k-space through the forward model {eq}`eq-forward-model` so that the
# network sees multi-coil data that a scanner could have acquired:
#
# $$\begin{aligned}
# x &= A^H y = \sum_c \bar S_c\, F^{-1} y_c, & (x', S') &= T(x, S), \\
# S'_c &\leftarrow \frac{S'_c}{\sqrt{\sum_{c'} |S'_{c'}|^2 + \epsilon}}, & y' &= F S' x',
# \end{aligned}$$
#
# then $y'$ is undersampled by the example's mask and the k-space artefacts of the previous chapter
# follow ({doc}`02_kspace_augmentation`). The transforms $T$ (`moero.augment.geometry`) are flips, integer shifts, 90-degree rotations
# (only 180 degrees on non-square matrices, where a quarter turn would swap readout and phase
# encode), arbitrary rotations, isotropic and anisotropic scaling, and elastic deformation (a white
# displacement field smoothed by a Gaussian of width `sigma`, scaled to a peak of `alpha` pixels).
# Complex data are interpolated as real and imaginary parts (bilinear, reflection padding). The
# training target is the RSS of the clean $y'$: the geometry reaches the target, the artefacts never.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from moero.augment.geometry import (
    Affine,
    Elastic,
    Flip,
    RandomElastic,
    RandomRotation,
    RandomScaling,
    Rot90,
    Shift,
)
from moero.augment.pipeline import DualSpaceAugment, estimate_maps_from_full
from moero.book.run import start_run
from moero.data.dataset import SliceDataset
from moero.data.readers import load_cmrxrecon, read_manifest
from moero.physics.fft import ifft2c
from moero.physics.masks import MaskSampler
from moero.physics.sense import normalize_maps, rss, sense_adjoint, sense_forward, zero_filled

run = start_run("03_image_augmentation", profile=profile, params=params, results_dir=results_dir,
                data_root=data_root)
P = run.params

root = run.dataset_root()
cine = next(r for r in read_manifest(root) if r["modality"] == "Cine")
volume = load_cmrxrecon(root / cine["file"])
kspace = volume.kspace[: P["frames"], volume.kspace.shape[1] // 2]  # (F, C, H, W)
maps = estimate_maps_from_full(kspace)
image = sense_adjoint(kspace, maps)
print(f"{cine['file']}: (F, C, H, W) = {tuple(kspace.shape)}")

# %% [markdown]
# ## Each transform on the image and the maps
#
# Columns: the combined image $|x'|$ (centre frame), the magnitude and the phase of one coil map
# after renormalisation. The maps follow the anatomy, so the coil shading stays attached to the
# body, as it would if the patient (with the receive array on the chest) had been placed that way.

# %%
h, w = image.shape[-2:]
transforms = {
    "original": [],
    "flip (W)": [Flip(("W",))],
    "shift (5, -4) px": [Shift(5, -4)],
    "rot90 x2" if h != w else "rot90": [Rot90(2 if h != w else 1)],
    "rotation 20 deg": [Affine(angle=20.0)],
    "scale (1.15, 0.9)": [Affine(scale_h=1.15, scale_w=0.9)],
    "elastic (4 px, 6 px)": [Elastic(alpha=4.0, sigma=6.0, seed=1)],
}
coil = 0
fig, axes = plt.subplots(3, len(transforms), figsize=(1.9 * len(transforms), 6.6))
for j, (name, ts) in enumerate(transforms.items()):
    x2, s2 = image, maps
    for t in ts:
        x2, s2 = t.apply(x2, s2)
    s2 = normalize_maps(s2)
    axes[0, j].imshow(x2[x2.shape[0] // 2].abs().numpy(), cmap="gray")
    axes[0, j].set_title(name, fontsize=9)
    axes[1, j].imshow(s2[coil].abs().numpy(), cmap="viridis", vmin=0, vmax=1)
    axes[2, j].imshow(s2[coil].angle().numpy(), cmap="twilight", vmin=-torch.pi, vmax=torch.pi)
    for ax in axes[:, j]:
        ax.axis("off")
axes[0, 0].text(-0.15, 0.5, "$|x'|$", transform=axes[0, 0].transAxes, rotation=90, va="center")
axes[1, 0].text(-0.15, 0.5, f"$|S'_{coil}|$", transform=axes[1, 0].transAxes, rotation=90, va="center")
axes[2, 0].text(-0.15, 0.5, f"$\\arg S'_{coil}$", transform=axes[2, 0].transAxes, rotation=90, va="center")
fig.tight_layout()
display(run.figure(fig, "transforms", caption="Each image-domain transform on the image and one coil map"))

# %% [markdown]
# ## Consistency: the re-expanded k-space is the forward model of the transformed scan
#
# With every transform drawn at once (rotation, anisotropic scaling, elastic deformation), we compare
# the augmented k-space $y'$ with its projection $F S' x'$ onto the range of the new SENSE operator,
# for the returned maps $S'$ and the image $x' = A'^H y'$. The pipeline transforms the raw coil images
# (the target is the RSS of the transformed coil images, {doc}`../book/conventions`) and the maps each on
# their own grid, so $y'$ is close to that range but not inside it: interpolating a product $S_c x$
# is not the product of the interpolated $S_c$ and $x$. The relative difference printed below says
# how close.

# %%
augment = DualSpaceAugment.without_artefacts(
    geometric={"rotation": RandomRotation(20.0, p=1.0), "scaling": RandomScaling((0.9, 1.1), p=1.0),
               "elastic": RandomElastic((2.0, 4.0), sigma=8.0, p=1.0)},
    schedule=1.0,
)
mask = torch.ones(kspace.shape[0], h, w, dtype=torch.bool)
example = {"kspace": kspace, "mask": mask, "target": rss(ifft2c(kspace[kspace.shape[0] // 2])), "maps": maps}
out = augment(example, torch.Generator().manual_seed(0))
reexpanded = sense_forward(sense_adjoint(out["kspace"], out["maps"]), out["maps"])
err = ((reexpanded - out["kspace"]).abs().max() / out["kspace"].abs().max()).item()
print(f"max |F S' x' - y'| / max |y'| = {err:.2e}")
# what the text above claims: near the range (a few per cent of the peak), not exactly in it
assert 0 < err < 0.1, f"re-projection error {err:.2e} contradicts the text above"
print("drawn: " + ", ".join(f"{k} = {float(v):.3g}" for k, v in out["augment_params"].items()
                            if k.startswith(("rotation.angle", "scaling", "elastic.alpha"))))

# %% [markdown]
# ## Augmented training examples at several ratios
#
# The dataset (`moero.data.dataset.SliceDataset`) hands every example to the augmentation with its own
# generator seeded by (seed, epoch, index). The augmentation ratio is the probability that an
# example is augmented at all; each transform then fires with its own probability (defaults in
# `moero.augment.default_geometric`, noise and motion included). Rows: ratio; for each example the
# target (top) and the zero-filled input the network sees (bottom).

# %%
n = P["examples"]
ratios = P["ratios"]
fig, axes = plt.subplots(2 * len(ratios), n, figsize=(1.8 * n, 3.4 * len(ratios)), squeeze=False)
for i, ratio in enumerate(ratios):
    dataset = SliceDataset(root, frames=P["frames"], mask_sampler=MaskSampler(), modalities=("Cine",),
                           augment=DualSpaceAugment(schedule=ratio), seed=0)
    for j in range(n):
        ex = dataset[j]
        applied = ex["augment_params"]["applied"]
        axes[2 * i, j].imshow(ex["target"].numpy(), cmap="gray")
        axes[2 * i, j].set_title(f"ratio {ratio:g}: {'augmented' if applied else 'as is'}", fontsize=9)
        axes[2 * i + 1, j].imshow(zero_filled(ex["masked_kspace"][ex["masked_kspace"].shape[0] // 2]).numpy(),
                                  cmap="gray")
        axes[2 * i + 1, j].set_title(f"{ex['meta']['mask_kind']} R={ex['meta']['acceleration']}", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
display(run.figure(fig, "examples_by_ratio", caption="Training examples (target, zero-filled input) at several ratios"))

# %% tags=["remove-cell"]
run.finish()
