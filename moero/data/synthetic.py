"""The embedded synthetic multi-vendor CMR dataset in the CMRxRecon2025 layout (reference section 6).

Real CMRxRecon2025 data cannot be downloaded on a fresh machine, so this generator writes files with
the same layout, keys, MATLAB v7.3 format and axis order, so that one reader serves both.

Model, per file (``y = M F S x + n``, reference eq. (1), with ``M`` = all ones here):

* **Anatomy** (mm, analytic implicit shapes in a smoothly deformed chest, a new shape per subject):
  torso with subcutaneous fat, breast tissue in some subjects, ribs, sternum, vertebral body with
  marrow and spinal canal, lungs with pulmonary vessels, liver with hepatic vessels, stomach with an
  air-fluid level, spleen, descending aorta, IVC; the heart inside pericardial fat and the
  pericardium, epicardial fat, a thin-walled RV crescent, the septum, an LV with a trabeculated
  endocardium and two papillary muscles. Views: short axis from base to apex (one slice per
  position) and 2-, 3- and 4-chamber long axis with the atria, mitral and tricuspid leaflets, the
  aortic root and outflow tract. Pathologies: scar, hypertrophy, dilated LV.
* **Motion**: a cardiac cycle (systole to end-systole at 35 % of the RR interval, rapid filling,
  diastasis, atrial kick) with an ejection fraction of 50-70 % (dilated: 20-35 %) from radial and
  long-axis shortening; the myocardial area is conserved, so the wall thickens; in long axis the
  valve planes descend towards the fixed apex. Breathing (on for some subjects and for the fresh
  centre's protocol) shifts heart, liver and diaphragm. Mapping frames are triggered in diastole and
  show their inversion-recovery (MOLLI) or T2-prep signal evolution.
* **Contrast** from tissue ``(PD, T1, T2)`` at 1.5, 3 or 5 T: bSSFP cine (bright blood and fat),
  MOLLI-like T1 mapping, T2-prep mapping, LGE (inversion time nulling the post-contrast myocardium,
  scar bright), and T1w, T2w, black-blood without a time axis.
* **Vendor / protocol**: field strength, receive array (anterior/posterior loop rows or a ring;
  12-48 coils, loop size), matrix and field of view (the ``gpu`` size uses CMRxRecon2025-like
  matrices, readout 2x oversampled, 150-250 phase-encode lines; ``cpu`` and ``smoke`` use smaller
  matrices of the SAME field of view), SNR, correlated coil noise, fat appearance, breathing; SVD
  compression to 10 virtual coils; an intensity scale.
* **Partial volume and no inverse crime**: every shape is drawn with its analytic per-pixel area
  coverage (first-order signed distance, a box filter of one render pixel) at ``render_factor``
  times the matrix resolution; the image's k-space is then cropped to a slightly larger grid where
  the (band-limited) coil maps multiply it, and the result is cropped to the file's matrix.

Output: ``MultiCoil/<Modality>/TrainingSet/FullSample/<Center>/<Vendor>/<Pnnn>/<name>.mat`` with key
``kspace`` (MATLAB ``(nx, ny, nc, nz, nt)``; no ``nt`` for LGE/T1w/T2w/black-blood), plus
``manifest.csv``. The same ``(size, seed)`` gives identical arrays.
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

__all__ = [
    "GENERATOR_VERSION",
    "Vendor",
    "VENDORS",
    "DatasetSize",
    "SIZES",
    "FileSpec",
    "plan_dataset",
    "simulate_file",
    "render_image",
    "array_coil_maps",
    "cardiac_contraction",
    "generate",
    "code_hash",
    "STAMP_NAME",
    "ensure_synthetic",
]

GENERATOR_VERSION = "2"
NUM_VIRTUAL_COILS = 10

# ---------------------------------------------------------------------------------------------
# tissues

(AIR, BODY, FAT, LUNG, LIVER, BONE, MARROW, AORTA, LV, MYO, RV, PAP, SCAR, PERICARDIUM, SPLEEN, FLUID,
 BREAST, CSF, VESSEL) = range(19)
NUM_LABELS = 19
SPINE = MARROW  # the vertebral body's signal is its marrow's
BLOOD_LABELS = (AORTA, LV, RV, VESSEL)
LABEL_NAMES = ("air", "muscle", "fat", "lung", "liver", "bone", "marrow", "aorta", "lv", "myo", "rv", "pap", "scar",
               "pericardium", "spleen", "fluid", "breast", "csf", "vessel")

# (PD, T1 ms, T2 ms) per label at 1.5 T and 3 T (literature-typical native values); 5 T extrapolated
_TISSUE = {
    1.5: {AIR: (0.0, 1000, 1), BODY: (0.75, 1000, 35), FAT: (0.95, 260, 80), LUNG: (0.1, 1200, 30),
          LIVER: (0.75, 580, 45), BONE: (0.05, 1000, 2), MARROW: (0.85, 370, 60), AORTA: (0.95, 1550, 250),
          LV: (0.95, 1550, 250), MYO: (0.8, 1000, 50), RV: (0.95, 1550, 250), PAP: (0.8, 1000, 50),
          SCAR: (0.8, 1150, 62), PERICARDIUM: (0.35, 800, 15), SPLEEN: (0.8, 1050, 60),
          FLUID: (0.98, 3000, 500), BREAST: (0.8, 1000, 55), CSF: (1.0, 4000, 1800), VESSEL: (0.95, 1550, 250)},
    3.0: {AIR: (0.0, 1000, 1), BODY: (0.75, 1400, 32), FAT: (0.95, 380, 70), LUNG: (0.1, 1400, 25),
          LIVER: (0.75, 810, 35), BONE: (0.05, 1200, 2), MARROW: (0.85, 480, 55), AORTA: (0.95, 1900, 200),
          LV: (0.95, 1900, 200), MYO: (0.8, 1200, 45), RV: (0.95, 1900, 200), PAP: (0.8, 1200, 45),
          SCAR: (0.8, 1400, 56), PERICARDIUM: (0.35, 1000, 13), SPLEEN: (0.8, 1330, 55),
          FLUID: (0.98, 3200, 400), BREAST: (0.8, 1400, 50), CSF: (1.0, 4300, 1500), VESSEL: (0.95, 1900, 200)},
}
_TISSUE[5.0] = {k: (pd, t1 * 1.12, t2 * 0.85) for k, (pd, t1, t2) in _TISSUE[3.0].items()}
# post-contrast T1 (ms) for LGE, about 10-15 minutes after gadolinium
_T1_POST = {AIR: 1000, BODY: 550, FAT: 250, LUNG: 600, LIVER: 400, BONE: 1000, MARROW: 300, AORTA: 330, LV: 330,
            MYO: 450, RV: 330, PAP: 450, SCAR: 230, PERICARDIUM: 400, SPLEEN: 350, FLUID: 1500, BREAST: 500,
            CSF: 3000, VESSEL: 330}
# relative amplitude of the smooth tissue texture per label
_TEXTURE = np.array([0, 0.12, 0.08, 0.5, 0.1, 0.1, 0.12, 0.03, 0.03, 0.06, 0.03, 0.06, 0.08, 0.1, 0.08, 0.02,
                     0.2, 0.02, 0.03], dtype=np.float32)
_FATTY = (FAT, MARROW)  # labels whose signal the vendor's fat appearance scales

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


def cardiac_contraction(phase: float, end_systole: float = 0.35) -> float:
    """Contraction ``c`` in [0, 1] (0 end-diastole, 1 end-systole) at a fraction ``phase`` of the RR interval.

    Systole rises as a half cosine to ``end_systole``; rapid filling then recovers 75 % of the stroke
    by 60 % of the cycle, diastasis relaxes slowly, and the atrial kick completes filling at 1.
    """
    p = phase % 1.0
    if p < end_systole:
        return 0.5 * (1 - math.cos(math.pi * p / end_systole))
    if p < 0.6:
        q = (p - end_systole) / (0.6 - end_systole)
        return 1 - 0.75 * 0.5 * (1 - math.cos(math.pi * q))
    if p < 0.82:
        return 0.25 - 0.07 * (p - 0.6) / 0.22
    q = (p - 0.82) / 0.18
    return 0.18 * 0.5 * (1 + math.cos(math.pi * q))


# ---------------------------------------------------------------------------------------------
# vendors, centres, dataset sizes


@dataclass(frozen=True)
class Vendor:
    """A scanner and protocol: folder name, field, receive array, matrix and FOV, noise, appearance."""

    name: str
    field_t: float
    array_coils: int
    matrix: tuple[int, int]  # (readout 2x oversampled, phase encode) at the gpu size (scale 1)
    fov_mm: float  # readout field of view without the oversampling; pixels are square
    snr: float
    scale: float  # intensity scale of the stored k-space
    noise_corr: float  # strength of inter-coil noise correlation
    layout: str = "ap"  # "ap": anterior and posterior loop rows; "ring": loops all around the chest
    loop_mm: float = 90.0  # loop radius: larger loops see deeper, with less shading
    fat: float = 1.0  # fat signal factor (off-resonance / partial fat saturation of the protocol)
    breathing: bool = False  # free breathing switched on for every subject of this protocol


VENDORS: dict[str, Vendor] = {
    v.name: v
    for v in (
        Vendor("Siemens_30T_Vida", 3.0, 30, (512, 246), 380.0, 28.0, 1.0e-3, 0.25),
        Vendor("Siemens_15T_Avanti", 1.5, 18, (448, 205), 360.0, 18.0, 8.0e-4, 0.2),
        Vendor("UIH_30T_umr880", 3.0, 24, (512, 231), 400.0, 24.0, 3.0e-2, 0.3, loop_mm=80.0),
        Vendor("UIH_15T_umr670", 1.5, 12, (416, 187), 380.0, 15.0, 2.0e-2, 0.15, loop_mm=110.0),
        Vendor("GE_15T_Signa", 1.5, 16, (480, 224), 380.0, 16.0, 5.0e-3, 0.2, fat=0.9),
        Vendor("GE_30T_Premier", 3.0, 28, (512, 240), 360.0, 22.0, 6.0e-3, 0.3, fat=0.85),
        # fresh centre: unseen 5 T hardware, a 48-loop ring array, coarser matrix and smaller FOV, low
        # SNR, free breathing and partly saturated fat
        Vendor("UIH_50T_umrjupiter", 5.0, 48, (384, 171), 340.0, 11.0, 4.0e-2, 0.35, layout="ring",
               loop_mm=65.0, fat=0.45, breathing=True),
        # centre of the rare pathology cases, never trained on
        Vendor("Siemens_15T_Sola", 1.5, 20, (448, 196), 370.0, 20.0, 9.0e-4, 0.2, loop_mm=100.0),
    )
}


@dataclass(frozen=True)
class DatasetSize:
    """How much to generate: centres and their vendors, subjects, matrices, frames, slices."""

    name: str
    centres: dict[str, tuple[str, ...]]
    fresh: tuple[str, ...]  # centres held out entirely ("fresh", unseen at training)
    subjects_per_vendor: int
    matrix_scale: float  # matrices are the vendors' (gpu) matrices times this, same field of view
    frames: dict[str, int] = field(default_factory=lambda: {"cine": 12, "T1map": 9, "T2map": 3})
    slices: dict[str, int] = field(default_factory=lambda: {"cine_sax": 3, "mapping": 1, "lge": 3, "static": 2})
    render_factor: int = 2  # images are rendered at this multiple of the matrix (no inverse crime)
    rare_fraction: float = 0.15  # pathology cases among the trained-on subjects
    rare_centres: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"Center005": ("Siemens_15T_Sola",)})
    rare_subjects: int = 2  # pathology subjects per vendor of a rare centre (all of them tested as "rare")


_ALL_CENTRES = {
    "Center001": ("Siemens_30T_Vida", "Siemens_15T_Avanti"),
    "Center002": ("UIH_30T_umr880", "UIH_15T_umr670"),
    "Center003": ("GE_15T_Signa", "GE_30T_Premier"),
    "Center004": ("UIH_50T_umrjupiter",),
}

SIZES: dict[str, DatasetSize] = {
    # seconds: 11 subjects, matrices 5/32 of the gpu size (same field of view), fewer frames
    "smoke": DatasetSize(
        "smoke",
        {"Center001": ("Siemens_30T_Vida",), "Center002": ("UIH_15T_umr670",), "Center004": ("UIH_50T_umrjupiter",)},
        ("Center004",),
        3,
        0.15625,
        {"cine": 6, "T1map": 5, "T2map": 3},
        {"cine_sax": 2, "mapping": 1, "lge": 2, "static": 1},
        rare_subjects=2,
    ),
    # about two minutes on 2 cores: 38 subjects over 5 centres and 8 vendors, matrices 1/4 of the gpu size
    "cpu": DatasetSize("cpu", _ALL_CENTRES, ("Center004",), 5, 0.25, rare_subjects=3),
    # CMRxRecon2025 matrices (e.g. 512 x 246): 150 subjects, more slices
    "gpu": DatasetSize(
        "gpu", _ALL_CENTRES, ("Center004",), 20, 1.0, slices={"cine_sax": 5, "mapping": 3, "lge": 5, "static": 3},
        rare_subjects=10,
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


def vendor_matrix(vendor: Vendor | str, scale: float) -> tuple[int, int]:
    """``(readout, phase)`` of a vendor at a matrix scale: the gpu matrix times ``scale``, the same FOV.

    The readout stays even (2x oversampled) and an odd phase-encode size stays odd.
    """
    v = VENDORS[vendor] if isinstance(vendor, str) else vendor
    nx = max(2 * round(v.matrix[0] * scale / 2), 16)
    ny = max(round(v.matrix[1] * scale), 8)
    if ny % 2 != v.matrix[1] % 2:
        ny += 1
    return nx, ny


def _pixel_mm(vendor: Vendor, readout: int) -> float:
    """Square pixel size: the readout FOV (without oversampling) over half the oversampled readout."""
    return vendor.fov_mm / (readout / 2)


def _split_subjects(subjects: list[dict[str, Any]], fresh: tuple[str, ...], rare: tuple[str, ...],
                    rng: np.random.Generator) -> None:
    """train / val / test-total / rare / fresh, by subject (never by file).

    Fresh centres are held out; rare centres hold only pathology cases, all tested as "rare" (never
    trained on, as in the paper); the pathology cases of the known centres are trained on.
    """
    for s in subjects:
        if s["centre"] in fresh:
            s["split"] = "fresh"
        elif s["centre"] in rare:
            s["split"] = "rare"
    known = [s for s in subjects if s["centre"] not in fresh and s["centre"] not in rare]
    for s in known:
        if s["pathology"] != "none":
            s["split"] = "train"
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
    trained = [j for j, s in enumerate(subjects) if s["centre"] not in size.fresh]
    n_sick = round(size.rare_fraction * len(trained))
    for k, j in enumerate(sorted(rng.choice(trained, n_sick, replace=False)) if n_sick else []):
        subjects[j]["pathology"] = PATHOLOGIES[k % len(PATHOLOGIES)]
    k = 0
    for centre, vendors in size.rare_centres.items():
        for vname in vendors:
            for p in range(size.rare_subjects):
                subjects.append({"centre": centre, "vendor": vname, "subject": f"P{p + 1:03d}",
                                 "pathology": PATHOLOGIES[k % len(PATHOLOGIES)]})
                k += 1
    _split_subjects(subjects, size.fresh, tuple(size.rare_centres), rng)

    specs: list[FileSpec] = []
    for k, s in enumerate(subjects):
        nx, ny = vendor_matrix(s["vendor"], size.matrix_scale)
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


def _subject_anatomy(seed: int, subject_index: int, pathology: str) -> dict[str, Any]:
    """Per-subject geometry (mm) and physiology, shared by all of a subject's files."""
    rng = np.random.default_rng([seed, subject_index, 1])
    a: dict[str, Any] = {
        "body_a": rng.uniform(135, 160),  # torso half-width (left-right)
        "body_b": rng.uniform(95, 118),  # torso half-depth (antero-posterior)
        "body_power": rng.uniform(2.1, 2.6),  # > 2: a flatter, squarer chest than an ellipse
        "subcut": rng.uniform(5, 20),  # subcutaneous fat thickness
        "breast": float(rng.uniform() < 0.35) * rng.uniform(35, 60),  # breast radius, 0 = none
        "shift_x": rng.normal(0, 6),  # position of the whole chest in the FOV
        "shift_y": rng.normal(0, 5),
        "heart_x": 20 + rng.normal(0, 5),  # LV centre relative to the chest centre (+x: patient left)
        "heart_y": -22 + rng.normal(0, 4),  # (-y: anterior)
        "heart_rot": rng.uniform(-0.35, 0.35),
        "r_endo": rng.uniform(21, 27),  # end-diastolic LV cavity radius at mid-ventricle
        "wall": rng.uniform(7, 10),
        "ef": rng.uniform(0.5, 0.7),
        "long_axis": rng.uniform(78, 95),  # end-diastolic LV length, mitral plane to apex
        "long_shortening": rng.uniform(0.1, 0.15),  # base-to-apex motion as a fraction of the length
        "rv_scale": rng.uniform(0.9, 1.12),
        "epi_fat": rng.uniform(1.5, 5.0),
        "trabeculae": rng.uniform(0.015, 0.035),  # relative amplitude of the endocardial corrugation
        "trab_freq": rng.integers(9, 23, size=4),
        "trab_phase": rng.uniform(0, 2 * math.pi, size=4),
        "pap_angles": (rng.uniform(-0.9, -0.4), rng.uniform(0.7, 1.2)),
        "lung_vessels": rng.uniform(0, 1, size=(28, 3)),
        "liver_vessels": rng.uniform(0, 1, size=(7, 3)),
        "stomach_fill": rng.uniform(0.2, 0.8),  # fraction of the stomach filled with fluid (rest: air)
        "ribs": int(rng.integers(7, 10)),
        "warp": rng.normal(0, 1, size=(2, 4, 3)),  # smooth per-subject deformation of the whole chest
        "breathing": float(rng.uniform() < 0.3) * rng.uniform(3, 7),
        "resp_phase": rng.uniform(0, 2 * math.pi),
        "scar_angle": rng.uniform(-math.pi, math.pi),
        "scar_width": rng.uniform(0.9, 1.6),
        "scar_transmural": rng.uniform(0.5, 1.0),
    }
    if pathology == "dilated":
        a["r_endo"] *= 1.35
        a["wall"] *= 0.75
        a["ef"] = rng.uniform(0.2, 0.35)
        a["long_axis"] *= 1.15
    elif pathology == "hypertrophy":
        a["r_endo"] *= 0.85
        a["wall"] *= 1.8
        a["ef"] = rng.uniform(0.6, 0.75)
    elif pathology == "scar":
        a["ef"] = rng.uniform(0.35, 0.5)
    # radial shortening s from EF = 1 - (1 - s)^2 (1 - long-axis shortening): volume ~ r^2 L
    a["radial_shortening"] = 1 - math.sqrt((1 - a["ef"]) / (1 - a["long_shortening"]))
    return a


class _Canvas:
    """A complex image on a grid (mm), painted shape by shape with partial-volume coverage.

    Each paint replaces ``alpha`` of the current value by the tissue's value, where ``alpha`` is the
    area fraction of the pixel inside the shape: ``clamp(0.5 - sd / h, 0, 1)`` with the first-order
    signed distance ``sd = f / |grad f|`` of the implicit function ``f`` (exact for straight edges).
    Work is limited to the shape's bounding box. Coordinates are the subject's deformed grid.
    """

    def __init__(self, xs: torch.Tensor, ys: torch.Tensor, warp_x: torch.Tensor, warp_y: torch.Tensor,
                 values: torch.Tensor, texture: torch.Tensor, tex_amp: torch.Tensor):
        self.xs, self.ys = xs, ys
        self.h = float(xs[1] - xs[0])
        self.X, self.Y = warp_x, warp_y  # (nx, ny) deformed coordinates of every pixel
        self.values, self.texture, self.tex_amp = values, texture, tex_amp
        self.image = torch.zeros(warp_x.shape, dtype=torch.float32)
        self.margin = float((warp_x - xs[:, None]).abs().max() + (warp_y - ys[None]).abs().max()) + 2 * self.h

    def _box(self, cx: float, cy: float, radius: float) -> tuple[slice, slice] | None:
        r = radius + self.margin
        x0, y0 = float(self.xs[0]), float(self.ys[0])
        i0, i1 = max(int((cx - r - x0) / self.h), 0), min(int((cx + r - x0) / self.h) + 2, len(self.xs))
        j0, j1 = max(int((cy - r - y0) / self.h), 0), min(int((cy + r - y0) / self.h) + 2, len(self.ys))
        if i0 >= i1 or j0 >= j1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def _blend(self, box: tuple[slice, slice], alpha: torch.Tensor, label: int) -> None:
        value = self.values[label] * (1 + self.tex_amp[label] * self.texture[box])
        region = self.image[box]
        self.image[box] = region + alpha * (value - region)

    def ellipse(self, label: int, cx: float, cy: float, a: float, b: float, theta: float = 0.0,
                power: float = 2.0, clip: tuple[float, float, float] | None = None,
                wobble: tuple[Any, Any, float] | None = None) -> None:
        """Paint a (super)ellipse; ``clip = (nx, ny, offset)`` keeps only ``nx u + ny v <= offset`` in
        the shape's frame; ``wobble = (freqs, phases, amplitude)`` corrugates its boundary (trabeculae)."""
        if a <= 0 or b <= 0:
            return
        box = self._box(cx, cy, max(a, b) * (1 + (wobble[2] if wobble else 0)))
        if box is None:
            return
        c, s = math.cos(theta), math.sin(theta)
        dx, dy = self.X[box] - cx, self.Y[box] - cy
        u, v = c * dx + s * dy, -s * dx + c * dy
        if power == 2.0:
            rho = torch.sqrt((u / a) ** 2 + (v / b) ** 2 + 1e-12)
        else:
            rho = ((u / a).abs() ** power + (v / b).abs() ** power + 1e-12) ** (1 / power)
        scale = math.sqrt(a * b)
        if wobble is not None:
            freqs, phases, amp = wobble
            ang = torch.atan2(v / b, u / a)
            mod = sum(torch.cos(float(f) * ang + float(p)) for f, p in zip(freqs, phases, strict=True))
            rho = rho / (1 + amp * mod / len(freqs))
        # signed distance ~ (rho - 1) * local radius: radius along the pixel's direction
        radius = torch.sqrt(u**2 + v**2) / rho
        sd = (rho - 1) * torch.minimum(radius, torch.full_like(radius, 2 * scale))
        alpha = (0.5 - sd / self.h).clamp(0, 1)
        if clip is not None:
            nxc, nyc, off = clip
            alpha = torch.minimum(alpha, (0.5 - (nxc * u + nyc * v - off) / self.h).clamp(0, 1))
        self._blend(box, alpha, label)

    def sector(self, label: int, cx: float, cy: float, a_in: float, b_in: float, a_out: float, b_out: float,
               theta: float, angle: float, width: float) -> None:
        """Paint the part of an elliptical ring between two concentric ellipses within ``angle +- width/2``."""
        box = self._box(cx, cy, max(a_out, b_out))
        if box is None:
            return
        c, s = math.cos(theta), math.sin(theta)
        dx, dy = self.X[box] - cx, self.Y[box] - cy
        u, v = c * dx + s * dy, -s * dx + c * dy
        r = torch.sqrt(u**2 + v**2) + 1e-9
        rho_out = torch.sqrt((u / a_out) ** 2 + (v / b_out) ** 2)
        rho_in = torch.sqrt((u / a_in) ** 2 + (v / b_in) ** 2)
        inside_out = (0.5 - (rho_out - 1) * r / rho_out / self.h).clamp(0, 1)
        outside_in = (0.5 + (rho_in - 1) * r / rho_in.clamp_min(1e-9) / self.h).clamp(0, 1)
        dang = torch.remainder(torch.atan2(v, u) - angle + math.pi, 2 * math.pi) - math.pi
        in_sector = (0.5 - (dang.abs() - width / 2) * r / self.h).clamp(0, 1)
        self._blend(box, torch.minimum(torch.minimum(inside_out, outside_in), in_sector), label)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], corr_px: float) -> torch.Tensor:
    """A real Gaussian random field of unit std with correlation length ``corr_px`` pixels."""
    noise = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    ky = torch.fft.fftfreq(shape[0]).view(-1, 1)
    kx = torch.fft.fftfreq(shape[1]).view(1, -1)
    filt = torch.exp(-((ky**2 + kx**2) * (math.pi * corr_px) ** 2) / 2)
    out = torch.fft.ifft2(torch.fft.fft2(noise) * filt).real
    return out / out.std().clamp_min(1e-6)


def _warp(anat: dict[str, Any], xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The subject's smooth deformation: deformed coordinates ``(X, Y)`` of the grid (a few mm, wavelengths
    of 15-40 cm), minus the chest's position in the FOV."""
    x, y = torch.meshgrid(xs, ys, indexing="ij")
    x = x - anat["shift_x"]
    y = y - anat["shift_y"]
    w = anat["warp"]
    out = []
    for axis in range(2):
        amp, kx, ky, ph = w[axis]
        disp = 0.0
        for j in range(3):
            disp = disp + 3.0 * amp[j] * torch.sin(2 * math.pi * (x * (0.4 + 0.3 * abs(kx[j])) / 400
                                                                   + y * (0.4 + 0.3 * abs(ky[j])) / 400) + ph[j])
        out.append(disp)
    return x + out[0], y + out[1]


def _paint_chest(cv: _Canvas, anat: dict[str, Any], view: str, slice_pos: float, resp_mm: float) -> None:
    """Everything but the heart: torso, fat, breast, bones, lungs and vessels, great vessels, abdomen."""
    ba, bb, pw = anat["body_a"], anat["body_b"], anat["body_power"]
    sub = anat["subcut"]
    cv.ellipse(FAT, 0, 0, ba, bb, power=pw)
    if anat["breast"] > 0:  # breast tissue: a fat mound with fibroglandular tissue, anterior
        r = anat["breast"]
        for side in (1, -1):
            cx, cy = side * 0.5 * ba, -bb + 0.35 * r
            cv.ellipse(FAT, cx, cy, 1.5 * r, 0.75 * r, side * 0.35)
            cv.ellipse(BREAST, cx, cy - 0.15 * r, 0.8 * r, 0.35 * r, side * 0.35,
                       wobble=([5, 7, 9], [0.3, 1.1, 2.0], 0.3))
    cv.ellipse(BODY, 0, 0, ba - sub, bb - 0.6 * sub, power=pw)
    # ribs (cortex + marrow) along the chest wall, sternum in front
    n = anat["ribs"]
    for k in range(n):
        ang = math.pi * (0.15 + 0.7 * k / max(n - 1, 1))
        for side in (1, -1):
            cx = side * (ba - sub - 12) * math.cos(ang)
            cy = -(bb - 0.6 * sub - 10) * math.sin(ang) * (1 if k % 2 else -1)
            cv.ellipse(BONE, cx, cy, 6.5, 4.5, ang)
            cv.ellipse(MARROW, cx, cy, 4.0, 2.2, ang)
    cv.ellipse(BONE, 0, -(bb - 0.6 * sub - 9), 15, 6.5)
    cv.ellipse(MARROW, 0, -(bb - 0.6 * sub - 9), 12, 4)
    # vertebral body, posterior elements, spinal canal
    vy = bb - 0.6 * sub - 42
    cv.ellipse(BONE, 0, vy, 19, 16)
    cv.ellipse(MARROW, 0, vy, 16.5, 13.5)
    cv.ellipse(BONE, 0, vy + 26, 14, 9)
    cv.ellipse(CSF, 0, vy + 22, 6.5, 6)
    # lungs with pulmonary vessels; the diaphragm (liver) rises into them towards the apex
    for side in (1, -1):
        # the heart (patient left, +x) leaves less room for the left lung
        lung_a, lung_b = (0.30 if side > 0 else 0.36) * ba, 0.72 * bb
        lx, ly = side * (0.6 if side > 0 else 0.52) * ba, 0.12 * bb
        cv.ellipse(LUNG, lx, ly, lung_a, lung_b, side * 0.12, power=2.3)
        for k in range(14):
            ru, rv, rr = anat["lung_vessels"][k + (7 if side > 0 else 0)]
            ang = 2 * math.pi * ru
            rad = 0.8 * math.sqrt(rv)
            cv.ellipse(VESSEL, lx + rad * lung_a * math.cos(ang), ly + rad * lung_b * math.sin(ang),
                       1.5 + 2.5 * rr, 1.5 + 2.5 * rr)
    # descending aorta left-anterior of the spine; azygos/IVC on the right
    cv.ellipse(AORTA, 22, vy - 22, 12, 12)
    below = max(0.0, (slice_pos - 0.25) / 0.75) if view == "sax" else 0.7
    if below > 0:  # liver (right, inferior) with hepatic veins; IVC at its medial edge
        lcx, lcy = -0.45 * ba, 0.15 * bb + resp_mm
        cv.ellipse(LIVER, lcx, lcy, (0.35 * below + 0.18) * ba, (0.4 * below + 0.2) * bb, 0.3)
        for k in range(7):
            ru, rv, rr = anat["liver_vessels"][k]
            cv.ellipse(VESSEL, lcx + 0.5 * below * ba * (ru - 0.5), lcy + 0.5 * below * bb * (rv - 0.5),
                       2 + 3 * rr, 2 + 3 * rr)
        cv.ellipse(VESSEL, -0.12 * ba, vy - 18 + resp_mm, 11 * below + 3, 9 * below + 3)
    if view == "sax" and slice_pos > 0.5 or view == "lax_2ch":  # stomach (air over fluid) and spleen, left
        grow = min(1.0, (slice_pos - 0.5) / 0.4) if view == "sax" else 0.7
        scx, scy, sa, sb = 0.5 * ba, 0.3 * bb + resp_mm, 32 * grow + 8, 26 * grow + 6
        cv.ellipse(BODY, scx, scy, sa + 3, sb + 3)
        cv.ellipse(FLUID, scx, scy, sa, sb)
        level = (1 - 2 * anat["stomach_fill"]) * sb  # supine: air rises anteriorly (-y)
        cv.ellipse(AIR, scx, scy, sa, sb, clip=(0.0, 1.0, level - sb))
        cv.ellipse(SPLEEN, 0.72 * ba, 0.55 * bb + resp_mm, 24 * grow + 6, 16 * grow + 5, -0.6)


def _paint_heart(cv: _Canvas, anat: dict[str, Any], view: str, slice_pos: float, c: float, resp_mm: float,
                 pathology: str) -> None:
    """The heart at contraction ``c`` (0 end-diastole, 1 end-systole) in a short- or long-axis view."""
    hx, hy = anat["heart_x"], anat["heart_y"] + resp_mm
    s_rad, s_long = anat["radial_shortening"], anat["long_shortening"]
    wall, fat = anat["wall"], anat["epi_fat"]
    trab = (anat["trab_freq"], anat["trab_phase"], anat["trabeculae"] * (1 - 0.7 * c))
    if view == "sax":
        theta = anat["heart_rot"]
        taper = math.sqrt(max(1 - (0.95 * slice_pos) ** 2.2, 0.04))  # the LV narrows towards the apex
        r0 = anat["r_endo"] * taper
        r = r0 * (1 - s_rad * c)
        area = math.pi * ((r0 + wall * (1 + 0.3 * slice_pos)) ** 2 - r0**2)
        d = _ring_offset(r, r, area)  # wall thickening: the myocardial area is conserved
        ct, st = math.cos(theta), math.sin(theta)

        def at(u: float, v: float) -> tuple[float, float]:
            return hx + ct * u - st * v, hy + st * u + ct * v

        rv_on = slice_pos < 0.85
        # RV: an ellipse behind the LV (painted over it), so that a crescent wraps the septum
        rv_b = 13 * anat["rv_scale"] * (1 - 0.5 * slice_pos) * (1 - 0.5 * s_rad * c)
        rv_a = (1.2 * (r0 + wall) + 6) * anat["rv_scale"] * (1 - 0.35 * slice_pos)
        rv_u = 0.55 * (r + d) + rv_b
        rx, ry = at(-(0.45 * (r + d) + 0.5 * rv_b), -5)
        # pericardium and epicardial fat follow each ventricle; a fat pad in the anterior AV groove
        shells = [(hx, hy, r + d, r + d, theta)]
        if rv_on:
            shells.append((rx, ry, rv_u + 3.0, rv_a + 3.0, theta + 0.2))
        for label, grow in ((PERICARDIUM, fat + 1.4), (FAT, fat)):
            for cx_, cy_, a_, b_, th_ in shells:
                cv.ellipse(label, cx_, cy_, a_ + grow, b_ + grow, th_)
        if rv_on:
            cv.ellipse(FAT, *at(-(r + d) * 0.8, -(r + d) * 0.75), 3 + fat, 2 + 0.6 * fat, theta + 0.8)
        if rv_on:  # thin-walled RV, cut into a crescent by the septum (the LV painted over it)
            cv.ellipse(MYO, rx, ry, rv_u + 3.0, rv_a + 3.0, theta + 0.2)
            cv.ellipse(RV, rx, ry, rv_u, rv_a, theta + 0.2)
        cv.ellipse(MYO, hx, hy, r + d, r + d, theta)
        cv.ellipse(LV, hx, hy, r, r, theta, wobble=trab if slice_pos < 0.8 else None)
        if slice_pos < 0.75:  # two papillary muscles, thickening in systole
            for ang in anat["pap_angles"]:
                px, py = at(0.58 * r * math.cos(ang + math.pi / 2), 0.58 * r * math.sin(ang + math.pi / 2))
                rp = 0.2 * r0 * (1 + 0.4 * c)
                cv.ellipse(PAP, px, py, rp, 0.8 * rp, ang)
        if pathology == "scar":
            f = anat["scar_transmural"]
            cv.sector(SCAR, hx, hy, r, r, r + f * d, r + f * d, theta, anat["scar_angle"], anat["scar_width"])
        return

    # long axis: u from the base (u < 0: atria) to the apex; the apex stays, the base descends
    # the apex points anteriorly (-y) and to the patient's left (+x)
    theta = anat["heart_rot"] - {"lax_2ch": 0.95, "lax_3ch": 0.75, "lax_4ch": 0.6}[view]
    ct, st = math.cos(theta), math.sin(theta)
    length0 = anat["long_axis"]
    length = length0 * (1 - s_long * c)
    r0 = anat["r_endo"]
    r = r0 * (1 - s_rad * c)
    apex_u = 0.55 * length0

    def at(u: float, v: float) -> tuple[float, float]:
        return hx + ct * u - st * v, hy + st * u + ct * v

    base_u = apex_u - length  # mitral plane
    a_e = length / 2
    area = math.pi * ((length0 / 2 + wall) * (r0 + wall) - length0 / 2 * r0)
    d = _ring_offset(a_e, r, area)
    lv_cx, lv_cy = at(base_u + a_e, 0)
    la_a, la_b = 21 * (1 + 0.12 * c), 19 * (1 + 0.12 * c)  # atria fill in systole
    # chambers: (blood label, centre, semi-axes, angle, wall thickness, clip); walls are myocardium
    la = at(base_u - 0.85 * la_a, -4 if view == "lax_4ch" else 0)
    chambers: list[tuple[int, tuple[float, float], float, float, float, float, Any]] = [
        (LV, la, la_a, la_b, theta, 2.0, None)]
    rv_off = -(r + d + 14 * anat["rv_scale"])  # the right heart lies anterior-right of the septum (-v)
    if view == "lax_4ch":
        ra = at(base_u - 0.7 * la_a + 0.1 * length, rv_off - 4)
        chambers.append((RV, ra, 0.9 * la_a, 0.9 * la_b, theta, 2.0, None))
        rv_b = 13 * anat["rv_scale"] * (1 - 0.4 * s_rad * c)
        chambers.append((RV, at(base_u + 0.48 * length, rv_off + 2), 0.45 * length, rv_b, theta - 0.05, 3.5, None))
    if view == "lax_2ch":  # left atrial appendage
        chambers.append((LV, at(base_u - 6, -(la_b + 4)), 9, 5, theta + 0.8, 1.5, None))
    if view == "lax_3ch":  # right ventricular outflow in front, aortic root and outflow tract
        chambers.append((RV, at(base_u + 0.35 * length, -(r + d + 12)), 0.35 * length, 8, theta - 0.1, 3.0, None))
        chambers.append((AORTA, at(base_u - 14, -(0.55 * r + 10)), 24, 12, theta - 0.7, 2.5, None))
    lv_shell = (MYO, (lv_cx, lv_cy), a_e + 0.6 * d, r + d, theta, 0.0, (-1.0, 0.0, a_e + 1.5))
    # pericardium and epicardial fat follow the chambers (a union of grown shells), fat in the AV grooves
    for label, grow in ((PERICARDIUM, fat + 1.4), (FAT, fat)):
        for _, centre, sa, sb, th, w, _ in chambers:
            cv.ellipse(label, *centre, sa + w + grow, sb + w + grow, th)
        cv.ellipse(label, *lv_shell[1], lv_shell[2] + grow, lv_shell[3] + grow, theta)
    for side in (1, -1):
        cv.ellipse(FAT, *at(base_u, side * (r + d + 3)), 6 + fat, 4 + fat, theta)
    for blood, centre, sa, sb, th, w, clip in chambers:
        cv.ellipse(BODY if blood == AORTA else MYO, *centre, sa + w, sb + w, th, clip=clip)
        cv.ellipse(blood, *centre, sa, sb, th, clip=clip)
    # LV myocardium (thin at the apex) and cavity, truncated at the mitral plane
    cv.ellipse(MYO, lv_cx, lv_cy, a_e + 0.6 * d, r + d, theta, clip=(-1.0, 0.0, a_e + 1.5))
    cv.ellipse(LV, lv_cx, lv_cy, a_e, r, theta, clip=(-1.0, 0.0, a_e + 2.0), wobble=trab)
    if view != "lax_3ch":  # a papillary muscle rising from the free wall
        cv.ellipse(PAP, *at(base_u + 0.62 * length, -0.62 * r), 0.18 * length, 0.22 * r0 * (1 + 0.4 * c), theta + 0.15)
    if pathology == "scar":
        f = anat["scar_transmural"]
        cv.sector(SCAR, lv_cx, lv_cy, a_e, r, a_e + f * 0.6 * d, r + f * d, theta, anat["scar_angle"],
                  anat["scar_width"])
    # valve leaflets: closed (across the orifice) in systole, open (towards the apex) in diastole
    opening = 1 - min(c * 1.6, 1.0)
    for side in (1, -1):
        hinge = at(base_u, side * r)
        direction = theta if opening > 0.5 else theta - side * math.pi / 2 * 0.9
        lx, ly = hinge[0] + 0.45 * r * math.cos(direction), hinge[1] + 0.45 * r * math.sin(direction)
        cv.ellipse(PERICARDIUM, lx, ly, 0.5 * r, 1.0, direction)
    if view == "lax_4ch":  # tricuspid leaflets at the (more apical) tricuspid annulus
        tu = base_u + 6
        for side in (-1, 1):
            hinge = at(tu, rv_off + 2 + side * 11)
            direction = theta if opening > 0.5 else theta - side * math.pi / 2 * 0.9
            cv.ellipse(PERICARDIUM, hinge[0] + 5 * math.cos(direction), hinge[1] + 5 * math.sin(direction),
                       5, 0.9, direction)


def _ring_offset(a: float, b: float, area: float) -> float:
    """``d`` with ``pi ((a + d)(b + d) - a b) = area``: the epicardium that conserves myocardial area."""
    return (-(a + b) + math.sqrt((a + b) ** 2 + 4 * area / math.pi)) / 2


def _slice_position(spec: FileSpec, z: int) -> float:
    """Base (0) to apex (1) position of slice ``z``: SAX stacks span 0.1-0.9; long-axis views are central."""
    return 0.1 + 0.8 * (z + 0.5) / spec.slices if spec.view == "sax" else 0.5


def render_image(anat: dict[str, Any], view: str, slice_pos: float, contraction: float, resp_mm: float,
                 pathology: str, values: np.ndarray, xs: torch.Tensor, ys: torch.Tensor,
                 texture: torch.Tensor | None = None) -> torch.Tensor:
    """Real image (float32 ``(len(xs), len(ys))``) of one frame: tissue ``values`` (per label) painted with
    partial-volume coverage on the subject's deformed grid (``xs``: readout mm, ``ys``: phase mm)."""
    wx, wy = _warp(anat, xs, ys)
    tex = texture if texture is not None else torch.zeros(wx.shape)
    cv = _Canvas(xs, ys, wx, wy, torch.as_tensor(values, dtype=torch.float32), tex, torch.from_numpy(_TEXTURE))
    _paint_chest(cv, anat, view, slice_pos, resp_mm)
    _paint_heart(cv, anat, view, slice_pos, contraction, resp_mm, pathology)
    return cv.image


def _background_phase(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smooth second-order polynomial phase (radians) over the field of view."""
    xn, yn = x / 200.0, y / 200.0
    p = rng.normal(0, [0.6, 0.8, 0.8, 0.4, 0.4, 0.4])
    return p[0] + p[1] * xn + p[2] * yn + p[3] * xn**2 + p[4] * xn * yn + p[5] * yn**2


# ---------------------------------------------------------------------------------------------
# receive array


def _axis(n: int, pixel_mm: float) -> torch.Tensor:
    """Pixel centres (mm) along one axis with the centred FFT convention (index n//2 at 0)."""
    return (torch.arange(n, dtype=torch.float32) - n // 2) * pixel_mm


def _grid(nx: int, ny: int, pixel_x: float, pixel_y: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres (mm) of an ``(nx, ny)`` grid with centred FFT convention (index n//2 at 0)."""
    return torch.meshgrid(_axis(nx, pixel_x), _axis(ny, pixel_y or pixel_x), indexing="ij")


def _coil_positions(vendor: Vendor, rng: np.random.Generator, anat: dict[str, Any]) -> np.ndarray:
    """(num, 3) loop-coil centres (mm): anterior and posterior rows ("ap") or a ring, two rows in z."""
    num = vendor.array_coils
    if vendor.layout == "ring":
        ang = np.linspace(-math.pi, math.pi, num, endpoint=False) + 0.5 * (np.arange(num) % 2) * 2 * math.pi / num
    else:
        ang = np.concatenate([
            np.linspace(-0.85 * math.pi, -0.15 * math.pi, (num + 1) // 2),  # anterior (y < 0)
            np.linspace(0.2 * math.pi, 0.8 * math.pi, num // 2),  # posterior
        ])
    z = np.where(np.arange(num) % 2 == 0, -35.0, 35.0)
    px = (anat["body_a"] + 12) * np.cos(ang) + anat["shift_x"] + rng.normal(0, 5, num)
    py = (anat["body_b"] + 12) * np.sin(ang) + anat["shift_y"] + rng.normal(0, 5, num)
    return np.stack([px, py, z + rng.normal(0, 5, num)], axis=1)


def _sensitivities(pos: np.ndarray, phases: np.ndarray, x: torch.Tensor, y: torch.Tensor,
                   loop_mm: float = 90.0) -> torch.Tensor:
    """Loop-coil receive fields: magnitude ``(rho^2 / (rho^2 + d^2))^1.5`` (rho = loop radius), smooth phase."""
    rho2 = loop_mm**2
    px = torch.as_tensor(pos[:, 0], dtype=torch.float32)[:, None, None]
    py = torch.as_tensor(pos[:, 1], dtype=torch.float32)[:, None, None]
    pz = torch.as_tensor(pos[:, 2], dtype=torch.float32)[:, None, None]
    ph = torch.as_tensor(phases, dtype=torch.float32)[:, None, None]
    dx, dy = x[None] - px, y[None] - py
    mag = (rho2 / (rho2 + dx**2 + dy**2 + pz**2)) ** 1.5
    phase = ph + 0.5 * torch.atan2(dy, dx) + 0.002 * (dx + dy)
    return torch.polar(mag, phase)


def array_coil_maps(vendor: str, readout: int, phase: int, seed: int = 0, subject_index: int = 0,
                    pixel_mm: float | None = None) -> torch.Tensor:
    """The array's (uncompressed, not RSS-normalised) coil maps ``(C_array, readout, phase)`` of a subject."""
    v = VENDORS[vendor]
    anat = _subject_anatomy(seed, subject_index, "none")
    rng = np.random.default_rng([seed, subject_index, 2])
    pos = _coil_positions(v, rng, anat)
    phases = rng.uniform(-math.pi, math.pi, v.array_coils)
    pixel = pixel_mm or _pixel_mm(v, readout)
    x, y = _grid(readout, phase, pixel)
    return _sensitivities(pos, phases, x, y, v.loop_mm).to(torch.complex64)


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


def _centred_ifft(kspace: torch.Tensor) -> torch.Tensor:
    """``ifft2c`` (orthonormal, centred) of the last two axes."""
    k = torch.fft.ifftshift(kspace, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=(-2, -1))


COIL_BAND = 12  # k-space points the coil maps' spectra may spread an image's spectrum by (smooth maps)


def _file_frames(spec: FileSpec, anat: dict[str, Any], vendor: Vendor, jitter: np.ndarray) -> list[tuple[float, float]]:
    """``(contraction, breathing displacement in mm)`` of every frame of a file."""
    amp = max(anat["breathing"], 6.0 if vendor.breathing else 0.0)
    out = []
    for t in range(spec.frames):
        if spec.contrast == "cine":  # frames over one RR interval; about 4 heartbeats per breath
            c = cardiac_contraction(t / spec.frames)
            resp = amp * math.sin(2 * math.pi * 0.25 * t / spec.frames + anat["resp_phase"])
        else:  # mapping and static images are triggered in mid-diastole; breathing misregistration only
            c = 0.2
            resp = 0.35 * amp * float(jitter[t]) if spec.has_time_axis else 0.0
        out.append((c, resp))
    return out


def simulate_file(spec: FileSpec, seed: int = 0, render_factor: int = 2) -> torch.Tensor:
    """Fully sampled, coil-compressed k-space of one file: complex64 ``(T, Z, 10, readout, phase)``."""
    v = VENDORS[spec.vendor]
    anat = _subject_anatomy(seed, spec.subject_index, spec.pathology)
    coil_rng = np.random.default_rng([seed, spec.subject_index, 2])
    rng = np.random.default_rng([seed, spec.subject_index, zlib.crc32(spec.name.encode())])
    nx, ny, f = spec.readout, spec.phase, render_factor
    pixel = _pixel_mm(v, nx)
    xs, ys = _axis(f * nx, pixel / f), _axis(f * ny, pixel / f)
    # coil grid: the matrix plus a band on each side, same FOV; the band-limited image times the maps
    cx_n, cy_n = nx + 2 * COIL_BAND, ny + 2 * COIL_BAND
    gx, gy = _grid(cx_n, cy_n, nx * pixel / cx_n, ny * pixel / cy_n)
    pos = _coil_positions(v, coil_rng, anat)
    maps = _sensitivities(pos, coil_rng.uniform(-math.pi, math.pi, v.array_coils), gx, gy, v.loop_mm)
    bg_x, bg_y = _grid(cx_n, cy_n, nx * pixel / cx_n, ny * pixel / cy_n)
    scale_render = math.sqrt((cx_n * cy_n) / (f * nx * f * ny))  # ortho crop: keep image intensities
    scale_coil = math.sqrt((nx * ny) / (cx_n * cy_n))

    t_count, z_count = spec.frames, spec.slices
    out = torch.empty((t_count, z_count, v.array_coils, nx, ny), dtype=torch.complex64)
    jitter = rng.normal(0, 1, t_count)
    motion = _file_frames(spec, anat, v, jitter)
    signals = []
    for t in range(t_count):
        sig = tissue_signal(spec.contrast, t, t_count, v.field_t).astype(np.float32)
        sig[list(_FATTY)] *= v.fat
        signals.append(sig)
    for z in range(z_count):
        slice_pos = _slice_position(spec, z)
        texture = _smooth_field(rng, (f * nx, f * ny), corr_px=3.0 * f)
        bg_phase = torch.polar(torch.ones(cx_n, cy_n), _background_phase(rng, bg_x, bg_y))
        for t in range(t_count):
            c, resp = motion[t]
            image = render_image(anat, spec.view, slice_pos, c, resp, spec.pathology, signals[t], xs, ys, texture)
            low = _centred_ifft(_centre_crop_kspace(image.to(torch.complex64), cx_n, cy_n)) * scale_render
            coil_images = maps * (low * bg_phase)
            out[t, z] = _centre_crop_kspace(coil_images.to(torch.complex64), nx, ny) * scale_coil

    # correlated noise at the vendor's SNR (relative to a bright image level), then SVD compression
    ref = _centred_ifft(out[0, z_count // 2]).abs().pow(2).sum(0).sqrt()
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
            raise ValueError(f"unknown dataset size {profile!r}; choose one of {sorted(SIZES)}")
        profile = SIZES[profile]
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(DatasetSize)}
        if unknown:
            raise ValueError(f"unknown DatasetSize fields in overrides: {sorted(unknown)}")
        profile = dataclasses.replace(profile, **overrides)
    return profile


def generate(root: str | Path, size: str | DatasetSize = "smoke", seed: int = 0, progress: bool = True,
             overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write the dataset of ``size`` (a name of :data:`SIZES` or a :class:`DatasetSize`) under ``root``.

    Returns the manifest rows (also written to ``root/manifest.csv``). Prefer
    :func:`moero.data.synthetic.ensure_synthetic`, which skips the work when the tree is already there.
    """
    size = _resolve_size(size, overrides)
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


def _stamp(size: str, seed: int) -> dict[str, Any]:
    return {"size": size, "seed": int(seed), "generator": GENERATOR_VERSION, "code": code_hash()}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _inventory(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``root`` but the stamp."""
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": _file_sha256(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != STAMP_NAME}


def _damaged(root: Path, files: dict[str, Any], verify: bool) -> str | None:
    """Why the tree at ``root`` does not match the stamp's ``files`` (sizes; hashes when ``verify``), or None."""
    for name, entry in files.items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{path} has {path.stat().st_size} bytes, the stamp says {entry.get('size')}"
        if verify and _file_sha256(path) != entry.get("sha256"):
            return f"{path} does not match its SHA-256 in {root / STAMP_NAME}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_folders(root: Path) -> list[Path]:
    """Remove ``<root>.tmp-<pid>`` / ``<root>.old-<pid>`` folders left by generator processes that died."""
    removed = []
    for path in root.parent.glob(f"{root.name}.*-*"):
        kind, _, pid = path.name[len(root.name) + 1:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def ensure_synthetic(root: str | Path, size: str = "smoke", seed: int = 0, progress: bool = True,
                     verify: bool = False) -> Path:
    """Generate the synthetic CMRxRecon-layout tree of ``size`` at ``root`` unless it is already there.

    A stamp file (size, seed, generator version, code hash, and every file's size and SHA-256)
    decides: same stamp and every file of the size it records (and, with ``verify``, of the SHA-256
    it records) -> return at once; otherwise regenerate into a temporary sibling folder and swap it
    in. A non-empty ``root`` without our stamp is refused (it could be real data). Temporary folders
    of generator processes that died are removed first.
    """
    root = Path(root)
    if root.parent.is_dir():
        remove_stale_folders(root)
    want = _stamp(size, seed)
    stamp_path = root / STAMP_NAME
    if stamp_path.is_file():
        try:
            have = json.loads(stamp_path.read_text())
        except ValueError:
            have = None
        if (isinstance(have, dict) and {k: have.get(k) for k in want} == want and (root / MANIFEST_NAME).is_file()
                and isinstance(have.get("files"), dict)):
            damage = _damaged(root, have["files"], verify)
            if damage is None:
                return root
            import sys

            print(f"synthetic data {root}: {damage}; regenerating it", file=sys.stderr)
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"root {root} is not empty and holds no {STAMP_NAME}: refusing to overwrite it")
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    generate(tmp, size=size, seed=seed, progress=progress)
    (tmp / STAMP_NAME).write_text(json.dumps({**want, "files": _inventory(tmp)}, indent=2, sort_keys=True))
    if root.exists():
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
    return root
