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
# DualSpace-CMR {cite}`li2025branch` corrupts the *acquired* data the way a scanner does. Both
# artefacts live in `moero.augment`; this chapter shows them on a synthetic cine slice (the
# profile's embedded CMRxRecon-layout data, `moero.data`) and on a real Siemens scan (`gre.dat`,
# two channels, from the twixtools source distribution).
#
# **Thermal noise** ({eq}`eq-thermal-noise`). Complex circular white Gaussian noise is added to every k-space sample,
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
# ({eq}`eq-motion-phase`, {eq}`eq-motion-kspace`)
# $$e^{-i 2\pi (k_x \Delta x_j / N_x + k_y \Delta y_j / N_y)}.$$
# Magnitudes are unchanged; a zero range is the identity; the shot holding the k-space centre is
# kept still (the reference position).

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]
import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import Image, Pretty, display

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
# One figure: the k-space (log magnitude, coil RSS), the image (RSS), and the change each artefact
# makes to the clean image, motion and noise in separate panels with their own colour scales
# (motion ghosts are far stronger than the noise and would hide it on a shared scale). Below it, the
# readouts: the k-space SNR of the added noise alone ($-20\log_{10}\sigma$), the SNR before and after
# with the drop in dB, and the RMS displacement of the shots,
# $\sqrt{\tfrac{1}{S}\sum_j (\Delta x_j^2 + \Delta y_j^2)}$. In a live Jupyter kernel the sliders redraw
# this figure and these numbers in place; the static book shows the initial values. All the work is
# `moero.augment.preview_artefacts`; the widget only plots.
#
# ```{note}
# The sliders need a live Python kernel; this page shows them at their initial position. To move
# them, launch the chapter on Binder (the rocket button at the top of this page), or run it
# locally: `make setup`, `.venv/bin/python -m pip install jupyterlab`, `.venv/bin/jupyter lab
# notebooks/`, then right-click `02_kspace_augmentation.py` and choose *Open With > Jupytext Notebook*.
# ```

# %%
PANELS = {
    "log_kspace": ("log10 |k| (coil RSS)", "gray"),
    "image": ("image (RSS)", "gray"),
    "difference_motion": ("motion: moved - clean (% of peak)", "RdBu_r"),
    "difference_noise": ("noise: noisy - moved (% of peak)", "RdBu_r"),
}


def panel(preview, key):
    """A panel's image: differences in percent of the clean image's peak, so their scales read directly."""
    data = preview[key]
    if PANELS[key][1] != "gray":
        data = data * (100 / float(preview["image_clean"].max() or 1.0))
    return data.numpy()


def show(preview, axes, title="", panels=tuple(PANELS)):
    """The ``panels`` of one preview on ``axes``; each difference panel has its own symmetric scale.

    Returns the image artists by panel, so that a live figure can swap their data in place."""
    artists = {}
    for ax, key in zip(axes, panels, strict=True):
        label, cmap = PANELS[key]
        artists[key] = ax.imshow(panel(preview, key), cmap=cmap)
        if cmap != "gray":
            plt.colorbar(artists[key], ax=ax, fraction=0.046).ax.tick_params(labelsize=6)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("W (phase encode)", fontsize=7)
        ax.set_ylabel("H (readout)", fontsize=7)
        ax.tick_params(labelsize=6)
    set_scales(preview, artists)
    if title:
        axes[0].set_title(f"{title}\n{axes[0].get_title()}", fontsize=8)
    return artists


def set_scales(preview, artists):
    """Grey panels span their data; difference panels are symmetric about 0, each on its own scale."""
    for key, artist in artists.items():
        data = panel(preview, key)
        if PANELS[key][1] == "gray":
            artist.set_clim(float(data.min()), float(data.max()))
        else:
            vmax = float(abs(data).max()) or 1.0
            artist.set_clim(-vmax, vmax)


def readout(preview, shots):
    """The numbers a researcher reads off the sliders (see ``preview_artefacts``)."""
    return (f"added-noise SNR: {preview['snr_added_db']:.1f} dB | "
            f"k-space SNR: {preview['snr_clean_db']:.1f} -> {preview['snr_db']:.1f} dB "
            f"(drop {preview['snr_drop_db']:.2f} dB) | "
            f"motion RMS displacement: {preview['rms_shift_px']:.2f} px over {shots} shots")


class LiveFigure:
    """One figure for the sliders: built once per scan, then only its image data, scales and title change
    (rebuilding subplots, colour bars and the layout at every move would cost more than the preview)."""

    def __init__(self):
        self.scan, self.fig, self.artists = None, None, {}

    def png(self, scan, preview, title):
        if scan != self.scan:
            self.fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.4))
            self.artists = show(preview, axes, title)
            self.fig.tight_layout()
            plt.close(self.fig)  # shown through the display handle below, never by the inline backend
            self.scan = scan
        for key, artist in self.artists.items():
            artist.set_data(panel(preview, key))
        set_scales(preview, self.artists)
        ax = self.fig.axes[0]
        ax.set_title(f"{title}\n{PANELS['log_kspace'][0]}", fontsize=8)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=80)
        return buf.getvalue()


live_figure = LiveFigure()


def draw(scan, sigma, max_shift, shots):
    """The figure (as a PNG) and the readout of one slider position."""
    preview = preview_artefacts(scans[scan], sigma, max_shift, shots)
    png = live_figure.png(scan, preview, f"{scan}: sigma={sigma:g}, range={max_shift:g} px, {shots} shots")
    return Image(data=png, format="png"), Pretty(readout(preview, shots))


controls = {
    "scan": widgets.Dropdown(options=list(scans), description="scan"),
    "sigma": widgets.FloatSlider(value=0.1, min=0.0, max=0.5, step=0.01, description="sigma"),
    "max_shift": widgets.FloatSlider(value=2.0, min=0.0, max=8.0, step=0.25, description="range (px)"),
    "shots": widgets.IntSlider(value=8, min=1, max=32, description="shots"),
}
# The figure and the readout are ordinary display outputs with a display id (what the static book
# shows); a slider move replaces them in place with an `update_display_data` message. No Output
# widget: nbclient stalled on one once in a headless (papermill) run.
display(widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:])]))
figure, numbers = draw(**{name: w.value for name, w in controls.items()})

# %% tags=["remove-input"] mystnb={"figure": {"name": "fig-02_kspace_augmentation-live", "caption": "The sliders' preview at their starting values: log k-space (coil RSS), the image, and what motion and then noise change (per cent of the image's peak). In Jupyter it follows the sliders."}}
figure_handle = display(figure, display_id=True)

# %% tags=["remove-input"]
readout_handle = display(numbers, display_id=True)


def on_change(_change=None):
    figure, numbers = draw(**{name: w.value for name, w in controls.items()})
    figure_handle.update(figure)
    readout_handle.update(numbers)


for w in controls.values():
    w.observe(on_change, names="value")

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
        show(preview_artefacts(scan, sigma=sigma, seed=j), axes[:, j], f"sigma = {sigma:g}",
             panels=("log_kspace", "image", "difference_noise"))
    fig.suptitle(f"{name}: thermal noise", fontsize=10)
    fig.tight_layout()
    display(run.figure(fig, f"noise_{name.split()[-1].replace('.', '_')}", caption=f"Thermal noise on the {name} scan"))

# %% [markdown]
# **SNR drop per sigma.** The k-space SNR is $20\log_{10}(L(y)/\sigma_0)$ with $\sigma_0$ the RMS of
# the four k-space corners (mostly thermal noise). The drop depends on the scan's own noise: a scan
# that is already noisy loses less.

# %%
rows = []
for name, scan in scans.items():
    for sigma in P["sigmas"]:
        p = preview_artefacts(scan, sigma=sigma)
        rows.append({"scan": name, "sigma": sigma, "added noise SNR (dB)": round(p["snr_added_db"], 2),
                     "SNR before (dB)": round(p["snr_clean_db"], 2), "SNR after (dB)": round(p["snr_db"], 2),
                     "SNR drop (dB)": round(p["snr_drop_db"], 2)})
run.table(rows, "snr_drop", caption="k-space SNR drop per noise level sigma")

# %% [markdown]
# ## Rigid motion over range and shots
#
# Columns: motion range; rows: shot count (interleaved ordering). With one shot the whole
# acquisition is the shot that holds the k-space centre, which is kept still (the reference
# position): nothing moves, the readout shows an RMS displacement of 0. Several shots give
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
    display(run.figure(fig, f"motion_{name.split()[-1].replace('.', '_')}", caption=f"Rigid motion on the {name} scan"))

# %% tags=["remove-cell"]
run.finish()
