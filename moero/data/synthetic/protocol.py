"""Vendors, protocols and dataset sizes; which files a dataset holds (subjects, pathologies, splits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    banding: float = 0.0  # depth of bSSFP off-resonance bands in cine (0: none; high fields)


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
               loop_mm=65.0, fat=0.45, breathing=True, banding=0.6),
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
    val_subjects: int = 0  # healthy subjects held out for validation (0: 10 % of them, at least one)


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
    # about two minutes on 2 cores: 45 subjects over 5 centres and 8 vendors, matrices 1/4 of the gpu size;
    # 6 validation subjects, so that choices made on validation rest on more than a handful of files
    "cpu": DatasetSize("cpu", _ALL_CENTRES, ("Center004",), 6, 0.25, rare_subjects=3, val_subjects=6),
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


def pixel_size_mm(vendor: Vendor, readout: int) -> float:
    """Square pixel size: the readout FOV (without oversampling) over half the oversampled readout."""
    return vendor.fov_mm / (readout / 2)


def _split_subjects(subjects: list[dict[str, Any]], fresh: tuple[str, ...], rare: tuple[str, ...],
                    rng: np.random.Generator, val_subjects: int = 0) -> None:
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
    n_val = (val_subjects or max(1, round(0.1 * n))) if n >= 3 else 0
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
    _split_subjects(subjects, size.fresh, tuple(size.rare_centres), rng, size.val_subjects)

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

