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
# # k-space augmentation: thermal noise and rigid motion
#
# DualSpace-CMR corrupts the *acquired* data the way a scanner does (reference section 4). Both
# artefacts live in `moero.augment`; this chapter shows them on a synthetic cine slice (the
# profile's embedded CMRxRecon-layout data, `moero.data`) and on a real Siemens scan (`gre.dat`,
# two channels, from the twixtools source distribution).
#
# **Thermal noise.** Complex circular white Gaussian noise is added to every k-space sample,
# $$\tilde y = y + \sigma\, L(y)\, u(y)\, z,\qquad z \sim \mathcal{CN}(0, 1),\qquad L(y) = \sqrt{\tfrac{1}{N}\textstyle\sum |y|^2},$$
# so the added noise alone has a k-space SNR of $-20\log_{10}\sigma$ dB whatever the scan's
# intensity scale ($u(y)$, the unit phase of the largest sample, leaves the law of the noise
# unchanged). The k-space is then renormalised to its original level,
# $y_\text{aug} = \tilde y\, L(y) / L(\tilde y)$, so that $\mathrm{aug}(c\,y) = c\,\mathrm{aug}(y)$.
# The noise levels $\sigma$ are an *assumption*: the paper's radiologist-calibrated values are not
# public.
#
# **Rigid motion.** Phase-encode lines are acquired in shots (interleaved: line $w$ in shot
# $w \bmod S$; segmented: contiguous blocks). Shot $j$ sees the object moved by
# $(\Delta x_j, \Delta y_j)$, two uniform draws within the motion range, which multiplies its lines by
# $$e^{-i 2\pi (k_x \Delta x_j / N_x + k_y \Delta y_j / N_y)}.$$
# Magnitudes are unchanged; a zero range is the identity; the shot holding the k-space centre is
# kept still (the reference position).

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from moero.augment.kspace import kspace_snr_db
from moero.augment.pipeline import preview_artefacts
from moero.book.run import start_run
from moero.data.readers import load_cmrxrecon, read_manifest

run = start_run("02_kspace_augmentation", profile=profile, params=params, results_dir=results_dir,
                data_root=data_root)
P = run.params

root = run.dataset_root()
cine = next(r for r in read_manifest(root) if r["modality"] == "Cine")
volume = load_cmrxrecon(root / cine["file"])
synthetic = volume.kspace[:, volume.kspace.shape[1] // 2]  # (T, C, H, W): the middle slice
print(f"synthetic cine slice {cine['file']}: (T, C, H, W) = {tuple(synthetic.shape)}")

scans = {"synthetic cine": synthetic}
if P["gre"]:
    from moero.data.twix import RawDataUnavailable, example_gre_dat, read_twix

    try:
        gre = read_twix(example_gre_dat(), remove_os=True).kspace[0, 0]  # (C, H, W)
        scans["real gre.dat"] = gre
        print(f"real gre.dat: (C, H, W) = {tuple(gre.shape)}")
    except (RawDataUnavailable, ImportError) as err:
        print(f"gre.dat is not available here ({err}); the real-scan panels are left out")


# %% [markdown]
# ## Interactive: sigma, motion range and shots
#
# In Jupyter the sliders redraw the k-space (log magnitude, coil RSS), the image (RSS) and the
# difference to the clean image at once; the static book shows the first position. All the work is
# `moero.augment.preview_artefacts`; the widget only plots.

# %%
def show(preview, axes, title=""):
    """k-space, image and difference of one preview on three axes."""
    axes[0].imshow(preview["log_kspace"].numpy(), cmap="gray")
    axes[0].set_title(f"{title}\nlog10 |k| (coil RSS)", fontsize=8)
    axes[1].imshow(preview["image"].numpy(), cmap="gray")
    axes[1].set_title("image (RSS)", fontsize=8)
    diff = preview["difference"].numpy()
    vmax = float(np.abs(diff).max()) or 1.0
    im = axes[2].imshow(diff, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    axes[2].set_title("difference to clean", fontsize=8)
    plt.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_xlabel("W (phase encode)", fontsize=7)
        ax.set_ylabel("H (readout)", fontsize=7)
        ax.tick_params(labelsize=6)


def redraw(scan, sigma, max_shift, shots):
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    show(preview_artefacts(scans[scan], sigma, max_shift, shots), axes,
         f"{scan}: sigma={sigma:g}, range={max_shift:g} px, {shots} shots")
    plt.show()


controls = {
    "scan": widgets.Dropdown(options=list(scans), description="scan"),
    "sigma": widgets.FloatSlider(value=0.1, min=0.0, max=0.5, step=0.01, description="sigma"),
    "max_shift": widgets.FloatSlider(value=2.0, min=0.0, max=8.0, step=0.25, description="range (px)"),
    "shots": widgets.IntSlider(value=8, min=1, max=32, description="shots"),
}
# The figure of the current slider values is drawn as ordinary cell output; moving a slider in a
# live kernel redraws into `live` below the controls. Headless runs (papermill) never route output
# through an Output widget, which can stall the notebook client.
live = widgets.Output()


def on_change(_change=None):
    with live:
        live.clear_output(wait=True)
        redraw(**{name: w.value for name, w in controls.items()})


for w in controls.values():
    w.observe(on_change, names="value")
display(widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), live]))
redraw(**{name: w.value for name, w in controls.items()})

# %% [markdown]
# ## Thermal noise over the sigma grid
#
# One row per scan, one column per $\sigma$: the added noise is white, so it spreads evenly over the
# image while the k-space periphery, where the signal is weakest, fills up first.

# %%
for name, scan in scans.items():
    sigmas = P["sigmas"]
    fig, axes = plt.subplots(3, len(sigmas), figsize=(2.6 * len(sigmas), 7.5), squeeze=False)
    for j, sigma in enumerate(sigmas):
        show(preview_artefacts(scan, sigma=sigma, seed=j), axes[:, j], f"sigma = {sigma:g}")
    fig.suptitle(f"{name}: thermal noise", fontsize=10)
    fig.tight_layout()
    run.figure(fig, f"noise_{name.split()[-1].replace('.', '_')}", caption=f"Thermal noise on the {name} scan")
    plt.show()

# %% [markdown]
# **SNR drop per sigma.** The k-space SNR is $20\log_{10}(L(y)/\sigma_0)$ with $\sigma_0$ the RMS of
# the four k-space corners (mostly thermal noise). The drop depends on the scan's own noise: a scan
# that is already noisy loses less.

# %%
rows = []
for name, scan in scans.items():
    before = kspace_snr_db(scan)
    for sigma in P["sigmas"]:
        after = kspace_snr_db(preview_artefacts(scan, sigma=sigma)["kspace"])
        rows.append({"scan": name, "sigma": sigma, "added noise SNR (dB)": round(-20 * np.log10(sigma), 2),
                     "SNR before (dB)": round(before, 2), "SNR after (dB)": round(after, 2),
                     "SNR drop (dB)": round(before - after, 2)})
run.table(rows, "snr_drop", caption="k-space SNR drop per noise level sigma")

# %% [markdown]
# ## Rigid motion over range and shots
#
# Columns: motion range; rows: shot count (interleaved ordering). One shot moves the whole
# acquisition at once: a pure translation, no artefact but a displaced image. Several shots give
# the coherent ghosts along the phase-encode direction that motion produces in multi-shot CMR.

# %%
for name, scan in scans.items():
    ranges, shots = P["motion_ranges"], P["shots"]
    fig, axes = plt.subplots(len(shots), len(ranges), figsize=(2.4 * len(ranges), 2.5 * len(shots)), squeeze=False)
    for i, n in enumerate(shots):
        for j, r in enumerate(ranges):
            img = preview_artefacts(scan, max_shift=r, shots=n, seed=i)["image"]
            axes[i, j].imshow(img.numpy(), cmap="gray")
            axes[i, j].set_title(f"range {r:g} px, {n} shot{'s' * (n > 1)}", fontsize=8)
            axes[i, j].axis("off")
    fig.suptitle(f"{name}: rigid motion (RSS images)", fontsize=10)
    fig.tight_layout()
    run.figure(fig, f"motion_{name.split()[-1].replace('.', '_')}", caption=f"Rigid motion on the {name} scan")
    plt.show()

# %%
run.finish()
