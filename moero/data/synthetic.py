"""The embedded synthetic multi-vendor CMR dataset in the CMRxRecon2025 layout (reference section 6).

Real CMRxRecon2025 data cannot be downloaded on a fresh machine, so this generator writes files with
the same layout, keys, MATLAB v7.3 format and axis order, so that one reader serves both.

Model, per file (``y = M F S x + n``, reference eq. (1), with ``M`` = all ones here):

* **Anatomy** (mm, analytic ellipses): torso with a subcutaneous fat rim, lungs, liver, spine,
  descending aorta; LV blood pool, myocardium, RV, papillary muscles, atria in long-axis views.
  The heart beats: the endocardial radius contracts with ``c(phi) = (1 - cos 2 pi phi) / 2`` and the
  epicardial contour follows so that the myocardial area is conserved (wall thickening). Optional
  breathing shifts heart and liver. Smooth tissue texture and a smooth background phase.
* **Contrast** from tissue ``(PD, T1, T2)`` at 1.5 T or 3 T: cine bSSFP, T1 mapping (MOLLI-like
  Look-Locker inversion times), T2 mapping (T2-prep times), LGE (inversion recovery nulling the
  post-contrast myocardium, scar bright), and T1w, T2w, black-blood without a time axis.
* **Vendor**: field strength, an array of 12-30 coils with loop-coil shading (not RSS-normalised),
  correlated coil noise at the vendor's SNR, SVD coil compression to 10 virtual coils, readout 2x
  oversampled, some odd phase-encode sizes, an intensity scale.
* **No inverse crime**: each image is rendered at ``render_factor`` times the resolution (hard tissue
  edges), transformed, and its k-space centre cropped to the file's matrix.

Output: ``MultiCoil/<Modality>/TrainingSet/FullSample/<Center>/<Vendor>/<Pnnn>/<name>.mat`` with key
``kspace`` (MATLAB ``(nx, ny, nc, nz, nt)``; no ``nt`` for LGE/T1w/T2w/black-blood), plus
``manifest.csv``. The same ``(profile, seed)`` gives identical arrays.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moero.data.matfile import write_mat73
from moero.data.readers import MANIFEST_NAME
from moero.physics.fft import ifft2c

__all__ = [
    "GENERATOR_VERSION",
    "Vendor",
    "VENDORS",
    "DatasetSize",
    "SIZES",
    "FileSpec",
    "plan_dataset",
    "simulate_file",
    "array_coil_maps",
    "generate",
    "code_hash",
    "STAMP_NAME",
    "ensure_synthetic",
]

GENERATOR_VERSION = "1"
NUM_VIRTUAL_COILS = 10

# ---------------------------------------------------------------------------------------------
# tissues

AIR, BODY, FAT, LUNG, LIVER, SPINE, AORTA, LV, MYO, RV, PAP, SCAR = range(12)
NUM_LABELS = 12
BLOOD_LABELS = (AORTA, LV, RV)
LABEL_NAMES = ("air", "body", "fat", "lung", "liver", "spine", "aorta", "lv", "myo", "rv", "pap", "scar")

# (PD, T1 ms, T2 ms) per label at 1.5 T and 3 T (literature-typical native values)
_TISSUE = {
    1.5: {AIR: (0.0, 1000, 1), BODY: (0.75, 1000, 35), FAT: (0.9, 260, 80), LUNG: (0.08, 1200, 30),
          LIVER: (0.75, 580, 45), SPINE: (0.6, 550, 60), AORTA: (0.95, 1550, 250), LV: (0.95, 1550, 250),
          MYO: (0.8, 1000, 50), RV: (0.95, 1550, 250), PAP: (0.8, 1000, 50), SCAR: (0.8, 1150, 62)},
    3.0: {AIR: (0.0, 1000, 1), BODY: (0.75, 1400, 32), FAT: (0.9, 380, 70), LUNG: (0.08, 1400, 25),
          LIVER: (0.75, 800, 35), SPINE: (0.6, 700, 50), AORTA: (0.95, 1900, 200), LV: (0.95, 1900, 200),
          MYO: (0.8, 1200, 45), RV: (0.95, 1900, 200), PAP: (0.8, 1200, 45), SCAR: (0.8, 1400, 56)},
}
# post-contrast T1 (ms) for LGE, about 10-15 minutes after gadolinium
_T1_POST = {AIR: 1000, BODY: 550, FAT: 250, LUNG: 600, LIVER: 400, SPINE: 300, AORTA: 330, LV: 330,
            MYO: 450, RV: 330, PAP: 450, SCAR: 230}
_TEXTURE = np.array([0, 0.12, 0.08, 0.5, 0.1, 0.15, 0.03, 0.03, 0.06, 0.03, 0.06, 0.08], dtype=np.float32)

# MOLLI 5(3)3-like inversion times (ms) and T2-prep durations (ms)
T1MAP_TI = (100.0, 180.0, 260.0, 1100.0, 1180.0, 1260.0, 2100.0, 2180.0, 3100.0)
T2MAP_TE = (0.0, 35.0, 55.0)


def tissue_signal(contrast: str, frame: int, num_frames: int, field_t: float) -> np.ndarray:
    """Signal of every label (float, may be negative for inversion recovery) for one frame."""
    tis = _TISSUE[field_t]
    pd = np.array([tis[i][0] for i in range(NUM_LABELS)])
    t1 = np.array([tis[i][1] for i in range(NUM_LABELS)], dtype=np.float64)
    t2 = np.array([tis[i][2] for i in range(NUM_LABELS)], dtype=np.float64)
    blood = np.zeros(NUM_LABELS, bool)
    blood[list(BLOOD_LABELS)] = True
    if contrast == "cine":  # balanced SSFP steady state, flip 50 degrees
        alpha = math.radians(50)
        s = pd * math.sin(alpha) / ((t1 / t2 + 1) - math.cos(alpha) * (t1 / t2 - 1))
        return s * 3.0
    if contrast == "T1map":  # Look-Locker: S = PD (A - B exp(-TI / T1*)), T1* = 0.85 T1
        ti = T1MAP_TI[frame] if num_frames == len(T1MAP_TI) else np.linspace(100, 3100, num_frames)[frame]
        return pd * (1.0 - 1.9 * np.exp(-ti / (0.85 * t1)))
    if contrast == "T2map":  # T2-prep, then a bSSFP readout
        te = T2MAP_TE[frame] if num_frames == len(T2MAP_TE) else np.linspace(0, 55, num_frames)[frame]
        return pd * np.exp(-te / t2) * (1 - np.exp(-2500 / t1))
    if contrast == "lge":  # phase-sensitive inversion recovery, TI nulls the myocardium
        t1p = np.array([_T1_POST[i] for i in range(NUM_LABELS)], dtype=np.float64)
        ti = math.log(2) * _T1_POST[MYO]
        return pd * (1 - 2 * np.exp(-ti / t1p))
    if contrast == "T1w":  # T1-weighted turbo spin echo, TR 700 ms, TE 10 ms
        return pd * (1 - np.exp(-700 / t1)) * np.exp(-10 / t2)
    if contrast == "T2w":  # double-IR black-blood T2-weighted, TE 75 ms
        return pd * (1 - np.exp(-2000 / t1)) * np.exp(-75 / t2) * np.where(blood, 0.05, 1.0)
    if contrast == "blackblood":  # double-IR proton-density weighted TSE
        return pd * (1 - np.exp(-1800 / t1)) * np.exp(-20 / t2) * np.where(blood, 0.03, 1.0)
    raise ValueError(f"unknown contrast {contrast!r}")


# ---------------------------------------------------------------------------------------------
# vendors, centres, dataset sizes


@dataclass(frozen=True)
class Vendor:
    """A scanner profile: folder name, field, receive array, matrix shape, noise, scale."""

    name: str
    field_t: float
    array_coils: int
    readout_factor: float  # readout size relative to the dataset size's base readout
    pe_ratio: float  # phase-encode size / (readout / 2)
    odd_pe: bool
    snr: float
    scale: float  # intensity scale of the stored k-space
    noise_corr: float  # strength of inter-coil noise correlation


VENDORS: dict[str, Vendor] = {
    v.name: v
    for v in (
        Vendor("Siemens_30T_Vida", 3.0, 30, 1.0, 0.86, False, 28.0, 1.0e-3, 0.25),
        Vendor("Siemens_15T_Avanti", 1.5, 18, 0.9, 0.92, True, 18.0, 8.0e-4, 0.2),
        Vendor("UIH_30T_umr880", 3.0, 24, 1.12, 0.84, True, 24.0, 3.0e-2, 0.3),
        Vendor("UIH_15T_umr670", 1.5, 12, 0.95, 0.95, True, 15.0, 2.0e-2, 0.15),
        Vendor("GE_15T_Signa", 1.5, 16, 1.05, 0.9, False, 16.0, 5.0e-3, 0.2),
        Vendor("GE_30T_Premier", 3.0, 28, 1.2, 0.82, True, 22.0, 6.0e-3, 0.3),
    )
}


@dataclass(frozen=True)
class DatasetSize:
    """How much to generate: centres and their vendors, subjects, matrices, frames, slices."""

    name: str
    centres: dict[str, tuple[str, ...]]
    fresh: tuple[str, ...]  # centres held out entirely ("fresh", unseen at training)
    subjects_per_vendor: int
    base_readout: int  # oversampled readout size for readout_factor 1
    frames: dict[str, int] = field(default_factory=lambda: {"cine": 12, "T1map": 9, "T2map": 3})
    slices: dict[str, int] = field(default_factory=lambda: {"cine_sax": 2, "mapping": 1, "lge": 3, "static": 2})
    render_factor: int = 2  # images are rendered at this multiple of the matrix (no inverse crime)
    rare_fraction: float = 0.2


_ALL_CENTRES = {
    "Center001": ("Siemens_30T_Vida", "Siemens_15T_Avanti"),
    "Center002": ("UIH_30T_umr880", "UIH_15T_umr670"),
    "Center003": ("GE_15T_Signa",),
    "Center004": ("GE_30T_Premier",),
}

SIZES: dict[str, DatasetSize] = {
    # seconds: 9 subjects, small matrices, fewer frames (cine 6, T1map 5)
    "smoke": DatasetSize(
        "smoke",
        {"Center001": ("Siemens_30T_Vida",), "Center002": ("UIH_15T_umr670",), "Center003": ("GE_15T_Signa",)},
        ("Center003",),
        3,
        88,
        {"cine": 6, "T1map": 5, "T2map": 3},
        {"cine_sax": 2, "mapping": 1, "lge": 2, "static": 1},
    ),
    # about a minute on 2 cores: 30 subjects over 4 centres and 6 vendors
    "cpu": DatasetSize("cpu", _ALL_CENTRES, ("Center004",), 5, 144),
    # one GPU machine: 120 subjects, larger matrices, more slices
    "gpu": DatasetSize(
        "gpu", _ALL_CENTRES, ("Center004",), 20, 224, slices={"cine_sax": 4, "mapping": 3, "lge": 5, "static": 3}
    ),
}

MODALITY_FOLDERS = ("Cine", "Mapping", "LGE", "T1w", "T2w", "BlackBlood")
PATHOLOGIES = ("scar", "hypertrophy", "dilated")


@dataclass(frozen=True)
class FileSpec:
    """One file to simulate: who, what, how big."""

    subject_index: int
    subject: str  # Pnnn
    centre: str
    vendor: str
    modality: str  # folder: Cine, Mapping, LGE, T1w, T2w, BlackBlood
    name: str  # file stem: cine_sax, cine_lax_4ch, T1map, ...
    contrast: str  # cine, T1map, T2map, lge, T1w, T2w, blackblood
    view: str  # sax, lax_2ch, lax_3ch, lax_4ch
    frames: int
    slices: int
    readout: int
    phase: int
    pathology: str
    split: str
    has_time_axis: bool

    @property
    def relpath(self) -> str:
        return (
            f"MultiCoil/{self.modality}/TrainingSet/FullSample/{self.centre}/{self.vendor}/{self.subject}/{self.name}.mat"
        )


def _matrix(vendor: Vendor, size: DatasetSize) -> tuple[int, int]:
    nx = 2 * round(size.base_readout * vendor.readout_factor / 2)  # even: 2x oversampled readout
    ny = round(nx / 2 * vendor.pe_ratio)
    if (ny % 2 == 1) != vendor.odd_pe:
        ny += 1
    return nx, ny


def _split_subjects(subjects: list[dict[str, Any]], fresh: tuple[str, ...], rng: np.random.Generator) -> None:
    """train / val / test-total / rare / fresh, by subject (never by file)."""
    known = [s for s in subjects if s["centre"] not in fresh]
    for s in subjects:
        if s["centre"] in fresh:
            s["split"] = "fresh"
    sick = [s for s in known if s["pathology"] != "none"]
    for i, s in enumerate(sick):  # half the pathology cases are trained on, half are the "rare" test
        s["split"] = "rare" if i % 2 == 0 else "train"
    healthy = [s for s in known if s["pathology"] == "none"]
    order = rng.permutation(len(healthy))
    n = len(healthy)
    n_val = max(1, round(0.1 * n)) if n >= 3 else 0
    n_test = max(1, round(0.2 * n)) if n >= 3 else 0
    for rank, j in enumerate(order):
        healthy[j]["split"] = "val" if rank < n_val else "test-total" if rank < n_val + n_test else "train"


def plan_dataset(size: DatasetSize | str, seed: int = 0) -> list[FileSpec]:
    """Every file of a dataset size, deterministic in ``seed``; subjects, pathologies and splits drawn here."""
    size = SIZES[size] if isinstance(size, str) else size
    rng = np.random.default_rng([seed, 7])
    subjects = []
    for centre, vendors in size.centres.items():
        for vname in vendors:
            for p in range(size.subjects_per_vendor):
                subjects.append({"centre": centre, "vendor": vname, "subject": f"P{p + 1:03d}", "pathology": "none"})
    n_rare = max(1, round(size.rare_fraction * len(subjects)))
    for k, j in enumerate(sorted(rng.choice(len(subjects), n_rare, replace=False))):
        subjects[j]["pathology"] = PATHOLOGIES[k % len(PATHOLOGIES)]
    _split_subjects(subjects, size.fresh, rng)

    specs: list[FileSpec] = []
    for k, s in enumerate(subjects):
        vendor = VENDORS[s["vendor"]]
        nx, ny = _matrix(vendor, size)
        files = [("Cine", "cine_sax", "cine", "sax")]
        group = k % 4
        if group == 0:
            ch = (4, 2, 3)[(k // 4) % 3]
            files.append(("Cine", f"cine_lax_{ch}ch", "cine", f"lax_{ch}ch"))
        elif group == 1:
            files += [("Mapping", "T1map", "T1map", "sax"), ("Mapping", "T2map", "T2map", "sax")]
        elif group == 2 or s["pathology"] == "scar":
            files.append(("LGE", "lge_sax", "lge", "sax"))
        if group == 3:
            files += [("T1w", "T1w", "T1w", "sax"), ("T2w", "T2w", "T2w", "sax"),
                      ("BlackBlood", "blackblood", "blackblood", "sax")]
        if s["pathology"] == "scar" and not any(f[2] == "lge" for f in files):
            files.append(("LGE", "lge_sax", "lge", "sax"))
        for modality, name, contrast, view in files:
            timed = contrast in ("cine", "T1map", "T2map")
            frames = size.frames[contrast] if timed else 1
            if view.startswith("lax"):
                slices = 1
            elif contrast == "cine":
                slices = size.slices["cine_sax"]
            elif contrast in ("T1map", "T2map"):
                slices = size.slices["mapping"]
            elif contrast == "lge":
                slices = size.slices["lge"]
            else:
                slices = size.slices["static"]
            specs.append(FileSpec(k, s["subject"], s["centre"], s["vendor"], modality, name, contrast, view,
                                  frames, slices, nx, ny, s["pathology"], s["split"], timed))
    return specs


# ---------------------------------------------------------------------------------------------
# anatomy


def _subject_anatomy(seed: int, subject_index: int, pathology: str) -> dict[str, float]:
    """Per-subject geometry (mm), shared by all of a subject's files."""
    rng = np.random.default_rng([seed, subject_index, 1])
    a = {
        "body_scale": rng.uniform(0.9, 1.08),
        "heart_x": 22 + rng.normal(0, 4),
        "heart_y": -22 + rng.normal(0, 4),
        "heart_rot": rng.uniform(-0.3, 0.3),
        "r_endo": rng.uniform(24, 29),
        "wall": rng.uniform(8, 10),
        "ef": rng.uniform(0.28, 0.36),  # fractional shortening of the endocardial radius
        "long_axis": rng.uniform(44, 52),
        "rv_scale": rng.uniform(0.9, 1.1),
        "breathing": float(rng.uniform() < 0.3) * rng.uniform(3, 7),
        "resp_phase": rng.uniform(0, 2 * math.pi),
        "scar_angle": rng.uniform(-math.pi, math.pi),
        "scar_width": rng.uniform(0.9, 1.6),
        "scar_transmural": rng.uniform(0.5, 1.0),
    }
    if pathology == "dilated":
        a["r_endo"] *= 1.35
        a["wall"] *= 0.7
        a["ef"] = rng.uniform(0.08, 0.14)
    elif pathology == "hypertrophy":
        a["r_endo"] *= 0.85
        a["wall"] *= 1.8
    return a


def _ellipse(x: torch.Tensor, y: torch.Tensor, cx: float, cy: float, a: float, b: float, theta: float = 0.0):
    """``((u/a)^2 + (v/b)^2)`` in the ellipse's frame (<= 1 inside) and the frame coordinates (u, v)."""
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = x - cx, y - cy
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / a) ** 2 + (v / b) ** 2, u, v


def _ring_offset(a: float, b: float, area: float) -> float:
    """``d`` with ``pi ((a + d)(b + d) - a b) = area``: the epicardium that conserves myocardial area."""
    return (-(a + b) + math.sqrt((a + b) ** 2 + 4 * area / math.pi)) / 2


def render_labels(
    anat: dict[str, float],
    view: str,
    slice_pos: float,
    contraction: float,
    resp: float,
    x: torch.Tensor,
    y: torch.Tensor,
    pathology: str,
) -> torch.Tensor:
    """Integer tissue labels on the grid ``(x=readout, y=phase)`` in mm for one frame.

    ``slice_pos`` in [0, 1] runs from base to apex (SAX); ``contraction`` in [0, 1] (0 end-diastole);
    ``resp`` is the breathing displacement factor in [-1, 1].
    """
    lab = torch.zeros(x.shape, dtype=torch.long)
    bs = anat["body_scale"]
    body, _, _ = _ellipse(x, y, 0, 0, 150 * bs, 102 * bs)
    lab[body <= 1] = BODY
    inner, _, _ = _ellipse(x, y, 0, 0, 150 * bs - 13, 102 * bs - 9)
    lab[(body <= 1) & (inner > 1)] = FAT
    shift_x, shift_y = 1.5 * resp * anat["breathing"] / 5, resp * anat["breathing"]
    for side in (1, -1):
        lung, _, _ = _ellipse(x, y, side * 72 * bs, -4, 52 * bs, 70 * bs, side * 0.15)
        lab[lung <= 1] = LUNG
    liver_size = max(0.0, (slice_pos - 0.3) / 0.7) if view == "sax" else 0.6
    if liver_size > 0:
        liver, _, _ = _ellipse(x, y, -62 + shift_x, 18 + 1.5 * shift_y, 85 * liver_size + 5, 65 * liver_size + 5)
        lab[liver <= 1] = LIVER
    spine, _, _ = _ellipse(x, y, 0, 80 * bs, 16, 14)
    lab[spine <= 1] = SPINE
    canal, _, _ = _ellipse(x, y, 0, 80 * bs + 13, 5, 5)
    lab[canal <= 1] = BODY
    aorta, _, _ = _ellipse(x, y, -17, 60 * bs, 11, 11)
    lab[aorta <= 1] = AORTA

    hx, hy, rot = anat["heart_x"] + shift_x, anat["heart_y"] + shift_y, anat["heart_rot"]
    r0, wall, ef = anat["r_endo"], anat["wall"], anat["ef"]
    if view == "sax":
        taper = 1 - 0.5 * slice_pos**2  # the LV narrows toward the apex
        a0 = b0 = r0 * taper
        a_e = b_e = a0 * (1 - ef * contraction)
        theta = rot
    else:
        a0, b0 = anat["long_axis"], r0
        a_e, b_e = a0 * (1 - 0.15 * contraction), b0 * (1 - ef * contraction)
        theta = rot + {"lax_2ch": 1.1, "lax_3ch": 0.8, "lax_4ch": 0.5}.get(view, 0.5)
    area = math.pi * ((a0 + wall) * (b0 + wall) - a0 * b0)
    d = _ring_offset(a_e, b_e, area)
    c, s = math.cos(theta), math.sin(theta)

    def at(u: float, v: float) -> tuple[float, float]:  # heart frame -> grid mm
        return hx + c * u - s * v, hy + s * u + c * v

    # right ventricle (thin wall, then blood), beside the septum
    rv_a, rv_b = 36 * anat["rv_scale"], 24 * anat["rv_scale"] * (1 - 0.4 * ef * contraction)
    if view == "sax" and slice_pos < 0.9:
        rx, ry = at(-(b_e + d + rv_b * 0.55), -6)
        rvw, _, _ = _ellipse(x, y, rx, ry, rv_a * (1 - 0.4 * slice_pos) + 3, rv_b + 3, theta + 1.4)
        lab[rvw <= 1] = MYO
        rvb, _, _ = _ellipse(x, y, rx, ry, rv_a * (1 - 0.4 * slice_pos), rv_b, theta + 1.4)
        lab[rvb <= 1] = RV
    elif view == "lax_4ch":
        rx, ry = at(-0.1 * a_e, b_e + d + 0.5 * rv_b + 4)
        rvw, _, _ = _ellipse(x, y, rx, ry, 0.85 * a_e + 3, 0.55 * rv_b + 3, theta)
        lab[rvw <= 1] = MYO
        rvb, _, _ = _ellipse(x, y, rx, ry, 0.85 * a_e, 0.55 * rv_b, theta)
        lab[rvb <= 1] = RV
    # left ventricle: myocardium ring, blood pool, papillary muscles, scar
    epi, _, _ = _ellipse(x, y, hx, hy, a_e + d, b_e + d, theta)
    endo, u, v = _ellipse(x, y, hx, hy, a_e, b_e, theta)
    myo = (epi <= 1) & (endo > 1)
    lab[myo] = MYO
    lab[endo <= 1] = LV
    if view == "sax" and slice_pos < 0.75:
        for ang in (0.7, 2.4):
            px, py = at(0.62 * a_e * math.cos(ang), 0.62 * b_e * math.sin(ang))
            pap, _, _ = _ellipse(x, y, px, py, 0.2 * a_e, 0.2 * a_e)
            lab[pap <= 1] = PAP
    if pathology == "scar":
        f = anat["scar_transmural"]
        mid, _, _ = _ellipse(x, y, hx, hy, a_e + f * d, b_e + f * d, theta)
        ang = torch.atan2(v, u)
        dang = torch.remainder(ang - anat["scar_angle"] + math.pi, 2 * math.pi) - math.pi
        lab[myo & (mid <= 1) & (dang.abs() <= anat["scar_width"] / 2)] = SCAR
    # atria and outflow tract open the base of long-axis views
    if view.startswith("lax"):
        lax_, lay_ = at(-(a_e + 16), 0)
        la, _, _ = _ellipse(x, y, lax_, lay_, 22, 20, theta)
        lab[la <= 1] = LV
        if view == "lax_4ch":
            rax, ray = at(-(a_e + 14), b_e + d + 0.5 * rv_b + 8)
            ra, _, _ = _ellipse(x, y, rax, ray, 20, 17, theta)
            lab[ra <= 1] = RV
        if view == "lax_3ch":
            ox, oy = at(-(a_e + 4), -(b_e + 6))
            ao, _, _ = _ellipse(x, y, ox, oy, 20, 9, theta - 0.6)
            lab[ao <= 1] = AORTA
    return lab


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], corr_px: float) -> torch.Tensor:
    """A real Gaussian random field of unit std with correlation length ``corr_px`` pixels."""
    noise = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    ky = torch.fft.fftfreq(shape[0]).view(-1, 1)
    kx = torch.fft.fftfreq(shape[1]).view(1, -1)
    filt = torch.exp(-((ky**2 + kx**2) * (math.pi * corr_px) ** 2) / 2)
    out = torch.fft.ifft2(torch.fft.fft2(noise) * filt).real
    return out / out.std().clamp_min(1e-6)


def _background_phase(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smooth second-order polynomial phase (radians) over the field of view."""
    xn, yn = x / 200.0, y / 200.0
    p = rng.normal(0, [0.6, 0.8, 0.8, 0.4, 0.4, 0.4])
    return p[0] + p[1] * xn + p[2] * yn + p[3] * xn**2 + p[4] * xn * yn + p[5] * yn**2


# ---------------------------------------------------------------------------------------------
# receive array


def _grid(nx: int, ny: int, pixel_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres (mm) of an ``(nx, ny)`` grid with centred FFT convention (index n//2 at 0)."""
    xs = (torch.arange(nx, dtype=torch.float32) - nx // 2) * pixel_mm
    ys = (torch.arange(ny, dtype=torch.float32) - ny // 2) * pixel_mm
    return torch.meshgrid(xs, ys, indexing="ij")


def _coil_positions(num: int, rng: np.random.Generator, body_scale: float) -> np.ndarray:
    """(num, 3) loop-coil centres (mm): anterior and posterior rows around the torso, two rows in z."""
    ang = np.concatenate([
        np.linspace(-0.85 * math.pi, -0.15 * math.pi, (num + 1) // 2),  # anterior (y < 0)
        np.linspace(0.2 * math.pi, 0.8 * math.pi, num // 2),  # posterior
    ])
    z = np.where(np.arange(num) % 2 == 0, -35.0, 35.0)
    px = (165 * body_scale + 10) * np.cos(ang) + rng.normal(0, 5, num)
    py = (115 * body_scale + 10) * np.sin(ang) + rng.normal(0, 5, num)
    return np.stack([px, py, z + rng.normal(0, 5, num)], axis=1)


def _sensitivities(pos: np.ndarray, phases: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Loop-coil receive fields: magnitude ``(rho^2 / (rho^2 + d^2))^1.5`` (rho = 90 mm), smooth phase."""
    rho2 = 90.0**2
    maps = []
    for (px, py, pz), ph in zip(pos, phases, strict=True):
        dx, dy = x - float(px), y - float(py)
        d2 = dx**2 + dy**2 + float(pz) ** 2
        mag = (rho2 / (rho2 + d2)) ** 1.5
        phase = float(ph) + 0.5 * torch.atan2(dy, dx) + 0.002 * (dx + dy)
        maps.append(torch.polar(mag, phase))
    return torch.stack(maps)


def array_coil_maps(vendor: str, readout: int, phase: int, seed: int = 0, subject_index: int = 0,
                    pixel_mm: float | None = None) -> torch.Tensor:
    """The array's (uncompressed, not RSS-normalised) coil maps ``(C_array, readout, phase)`` of a subject."""
    v = VENDORS[vendor]
    anat = _subject_anatomy(seed, subject_index, "none")
    rng = np.random.default_rng([seed, subject_index, 2])
    pos = _coil_positions(v.array_coils, rng, anat["body_scale"])
    phases = rng.uniform(-math.pi, math.pi, v.array_coils)
    pixel = pixel_mm or _pixel_mm(readout)
    x, y = _grid(readout, phase, pixel)
    return _sensitivities(pos, phases, x, y).to(torch.complex64)


def _pixel_mm(readout: int) -> float:
    return 320.0 / (readout / 2)  # 320 mm readout field of view before 2x oversampling


def _noise_covariance(pos: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Coil noise covariance: exponential correlation in coil distance, per-coil levels 0.8-1.25."""
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    corr = (1 - strength) * np.eye(len(pos)) + strength * np.exp(-dist / 120.0)
    level = rng.uniform(0.8, 1.25, len(pos))
    return corr * np.outer(level, level)


# ---------------------------------------------------------------------------------------------
# one file


def _centre_crop_kspace(images: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """``fft2c(images)`` cropped to its central ``(nx, ny)`` k-space points, without the shifts.

    The centred transform at frequency ``k`` equals the plain FFT at ``k mod N`` times
    ``exp(2 pi i (N//2) k / N)`` (the input's ``ifftshift``); gathering only the kept frequencies
    avoids two full-size shift copies of the high-resolution coil images.
    """
    big_x, big_y = images.shape[-2:]
    spec = torch.fft.fft2(images, norm="ortho")
    kx = torch.arange(nx) - nx // 2
    ky = torch.arange(ny) - ny // 2
    ph_x = torch.polar(torch.ones(nx), 2 * math.pi * (big_x // 2) * kx / big_x)
    ph_y = torch.polar(torch.ones(ny), 2 * math.pi * (big_y // 2) * ky / big_y)
    crop = spec[..., kx % big_x, :][..., ky % big_y]
    return crop * (ph_x[:, None] * ph_y[None, :]).to(crop.dtype)


def simulate_file(spec: FileSpec, seed: int = 0, render_factor: int = 2) -> torch.Tensor:
    """Fully sampled, coil-compressed k-space of one file: complex64 ``(T, Z, 10, readout, phase)``."""
    v = VENDORS[spec.vendor]
    anat = _subject_anatomy(seed, spec.subject_index, spec.pathology)
    coil_rng = np.random.default_rng([seed, spec.subject_index, 2])
    rng = np.random.default_rng([seed, spec.subject_index, zlib.crc32(spec.name.encode())])
    nx, ny, f = spec.readout, spec.phase, render_factor
    pixel = _pixel_mm(nx)
    x, y = _grid(f * nx, f * ny, pixel / f)
    pos = _coil_positions(v.array_coils, coil_rng, anat["body_scale"])
    maps = _sensitivities(pos, coil_rng.uniform(-math.pi, math.pi, v.array_coils), x, y)  # (Ca, fnx, fny)
    crop_scale = 1.0 / f  # orthonormal FFT: cropping f x f keeps image intensities when divided by f

    t_count, z_count = spec.frames, spec.slices
    out = torch.empty((t_count, z_count, v.array_coils, nx, ny), dtype=torch.complex64)
    for z in range(z_count):
        slice_pos = 0.1 + 0.8 * (z + 0.5) / z_count if spec.view == "sax" else 0.5
        texture = _smooth_field(rng, tuple(x.shape), corr_px=3.0 * f)
        tex_amp = torch.from_numpy(_TEXTURE)
        bg_phase = _background_phase(rng, x, y)
        jitter = rng.normal(0, 1, t_count)
        for t in range(t_count):
            if spec.contrast == "cine":
                phi = t / t_count
                contraction = 0.5 * (1 - math.cos(2 * math.pi * phi))
                resp = math.sin(2 * math.pi * phi * 0.25 + anat["resp_phase"])
            else:  # mapping frames are triggered in diastole; breathing misregistration only
                contraction = 0.02 * abs(jitter[t])
                resp = 0.3 * jitter[t] if spec.has_time_axis else 0.0
            lab = render_labels(anat, spec.view, slice_pos, contraction, resp, x, y, spec.pathology)
            sig = torch.from_numpy(tissue_signal(spec.contrast, t, t_count, v.field_t).astype(np.float32))
            mag = sig[lab] * (1 + tex_amp[lab] * texture)
            phase = bg_phase
            if spec.contrast == "cine":  # through-plane flow: a beating phase in the blood pools
                blood = (lab == LV) | (lab == RV) | (lab == AORTA)
                phase = phase + 0.6 * math.sin(2 * math.pi * t / t_count) * blood
            image = torch.polar(mag, phase)
            out[t, z] = _centre_crop_kspace((maps * image).to(torch.complex64), nx, ny) * crop_scale

    # correlated noise at the vendor's SNR (relative to a bright image level), then SVD compression
    ref = ifft2c(out[0, z_count // 2]).abs().pow(2).sum(0).sqrt()
    sigma = float(torch.quantile(ref.flatten(), 0.95)) / v.snr
    cov = _noise_covariance(pos, v.noise_corr, rng)
    chol = torch.from_numpy(np.linalg.cholesky(cov).astype(np.complex64))
    white = rng.standard_normal((2, v.array_coils, out[..., 0, :, :].numel())).astype(np.float32)
    white = torch.complex(torch.from_numpy(white[0]), torch.from_numpy(white[1])) * (sigma / math.sqrt(2))
    noise = (chol @ white).reshape(v.array_coils, t_count, z_count, nx, ny).permute(1, 2, 0, 3, 4)
    out = out + noise
    flat = out.permute(2, 0, 1, 3, 4).reshape(v.array_coils, -1)
    gram = (flat @ flat.conj().T).to(torch.complex128)
    _, vecs = torch.linalg.eigh(gram)
    basis = vecs[:, -NUM_VIRTUAL_COILS:].flip(-1)  # strongest virtual coil first
    basis = basis * torch.exp(-1j * torch.angle(basis[:1]))  # fix the eigenvectors' arbitrary phase
    compressed = (basis.conj().T.to(torch.complex64) @ flat).reshape(NUM_VIRTUAL_COILS, t_count, z_count, nx, ny)
    scale = v.scale * float(rng.uniform(0.7, 1.4))
    return (compressed.permute(1, 2, 0, 3, 4) * scale).contiguous()


# ---------------------------------------------------------------------------------------------
# the whole tree


MANIFEST_COLUMNS = ("file", "subject", "centre", "vendor", "field", "modality", "name", "view", "pathology", "split",
                    "frames", "slices", "coils", "readout", "phase")


def code_hash() -> str:
    """Hash of the generator's source: changing the code makes existing trees stale."""
    h = hashlib.sha256()
    for mod in ("synthetic.py", "matfile.py"):
        h.update((Path(__file__).parent / mod).read_bytes())
    return h.hexdigest()[:16]


def _resolve_size(profile: str | DatasetSize, overrides: dict[str, Any] | None) -> DatasetSize:
    if isinstance(profile, str):
        if profile not in SIZES:
            raise ValueError(f"unknown dataset profile {profile!r}; choose one of {sorted(SIZES)}")
        profile = SIZES[profile]
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(DatasetSize)}
        if unknown:
            raise ValueError(f"unknown DatasetSize fields in overrides: {sorted(unknown)}")
        profile = dataclasses.replace(profile, **overrides)
    return profile


def generate(root: str | Path, profile: str | DatasetSize = "smoke", seed: int = 0, progress: bool = True,
             overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write the dataset of ``profile`` (a name of :data:`SIZES` or a :class:`DatasetSize`) under ``root``.

    Returns the manifest rows (also written to ``root/manifest.csv``). Prefer
    :func:`moero.data.ensure_synthetic`, which skips the work when the tree is already there.
    """
    size = _resolve_size(profile, overrides)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    specs = plan_dataset(size, seed)
    rows = []
    iterator: Any = specs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(specs, desc=f"synthetic {size.name}", unit="file")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-file arrays: one thread is fastest and thread-count independent
    try:
        for spec in iterator:
            rows.append(_write_one(root, spec, seed, size.render_factor))
    finally:
        torch.set_num_threads(threads)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _write_one(root: Path, spec: FileSpec, seed: int, render_factor: int) -> dict[str, Any]:
    kspace = simulate_file(spec, seed, render_factor)
    array = kspace.numpy() if spec.has_time_axis else kspace[0].numpy()  # no time axis: MATLAB (nx,ny,nc,nz)
    write_mat73(root / spec.relpath, {"kspace": array})
    return {
        "file": spec.relpath, "subject": f"{spec.centre}/{spec.vendor}/{spec.subject}", "centre": spec.centre,
        "vendor": spec.vendor, "field": VENDORS[spec.vendor].field_t, "modality": spec.modality,
        "name": spec.name, "view": spec.view, "pathology": spec.pathology, "split": spec.split,
        "frames": spec.frames, "slices": spec.slices, "coils": NUM_VIRTUAL_COILS, "readout": spec.readout,
        "phase": spec.phase,
    }


# ---------------------------------------------------------------------------------------------
# command line: python -m moero generate-data


STAMP_NAME = "moero_synthetic.json"


def _stamp(profile: str, seed: int) -> dict[str, Any]:
    return {"profile": profile, "seed": int(seed), "generator": GENERATOR_VERSION, "code": code_hash()}


def ensure_synthetic(root: str | Path, profile: str = "smoke", seed: int = 0, progress: bool = True) -> Path:
    """Generate the ``profile``'s synthetic CMRxRecon-layout tree at ``root`` unless it is already there.

    A stamp file (profile, seed, generator version and code hash) decides: same stamp -> return at
    once; missing or different -> regenerate into a temporary sibling folder and swap it in. A
    non-empty ``root`` without our stamp is refused (it could be real data).
    """
    root = Path(root)
    want = _stamp(profile, seed)
    stamp_path = root / STAMP_NAME
    if stamp_path.is_file():
        try:
            have = json.loads(stamp_path.read_text())
        except ValueError:
            have = None
        if have == want and (root / MANIFEST_NAME).is_file():
            return root
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"root {root} is not empty and holds no {STAMP_NAME}: refusing to overwrite it")
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    generate(tmp, profile=profile, seed=seed, progress=progress)
    (tmp / STAMP_NAME).write_text(json.dumps(want, indent=2, sort_keys=True))
    if root.exists():
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
    return root
