"""Tissue properties and MR contrasts of the synthetic data: labels, ``(PD, T1, T2)``, signal equations."""

from __future__ import annotations

import math

import numpy as np

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
TEXTURE = np.array([0, 0.12, 0.08, 0.5, 0.1, 0.1, 0.12, 0.03, 0.03, 0.06, 0.03, 0.06, 0.08, 0.1, 0.08, 0.02,
                     0.2, 0.02, 0.03], dtype=np.float32)
FATTY = (FAT, MARROW)  # labels whose signal the vendor's fat appearance scales

# MOLLI 5(3)3-like inversion times (ms) and T2-prep durations (ms)
T1MAP_TI = (100.0, 180.0, 260.0, 1100.0, 1180.0, 1260.0, 2100.0, 2180.0, 3100.0)
T2MAP_TE = (0.0, 35.0, 55.0)
CINE_INFLOW = 1.25  # bSSFP inflow: blood entering the slice has not reached the steady state (brighter)


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
        return s * 3.0 * np.where(blood, CINE_INFLOW, 1.0)
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

