"""Motion of the synthetic subjects: the cardiac cycle and breathing, per frame of a file."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from moero.data.synthetic.protocol import FileSpec, Vendor


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

def file_frames(spec: FileSpec, anat: dict[str, Any], vendor: Vendor, jitter: np.ndarray) -> list[tuple[float, float]]:
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


def breathing_shift(resp_mm: float, factor: float = 1.0) -> np.ndarray:
    """World displacement (mm) of an organ moving ``factor`` times the diaphragm's breathing excursion:
    inferior (-z) and a little anterior (-y) with inspiration."""
    return factor * resp_mm * np.array([0.0, -0.15, -1.0])


def torsion_angle(torsion: float, c: float, u_frac: float) -> float:
    """Twist (radians, about the LV axis) at ``u_frac`` from base (0) to apex (1): the base and the apex
    rotate in opposite senses, in proportion to the contraction ``c``."""
    return torsion * c * (u_frac - 0.35)


def wall_offset(r0: float, len0: float, wall: float, r: float, length: float) -> float:
    """Epicardial offset ``d`` of the LV half-ellipsoid (cavity radius ``r``, length ``length``; apex wall
    0.55 ``d``) that conserves the myocardial volume of end-diastole (``r0``, ``len0``, ``wall``)."""
    volume = (r0 + wall) ** 2 * (len0 + 0.55 * wall) - r0**2 * len0
    d = wall
    for _ in range(8):  # Newton on (r + d)^2 (length + 0.55 d) - r^2 length = volume
        g = (r + d) ** 2 * (length + 0.55 * d) - r**2 * length - volume
        dg = 2 * (r + d) * (length + 0.55 * d) + 0.55 * (r + d) ** 2
        d -= g / dg
    return d
