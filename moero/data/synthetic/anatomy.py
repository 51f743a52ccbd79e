"""The 3-D anatomy of a synthetic subject: its parameters, the chest and abdomen, and one rendered plane.

One body per subject (mm, world axes of ``planning``): a torso with subcutaneous fat and, in some
subjects, breast tissue; ribs (flat hoops descending anteriorly), sternum, a vertebral column with
marrow, discs and the spinal canal; lungs with vessels fanning out from the hila; the mediastinum;
the descending aorta; below the diaphragm's domes the liver (right, higher) with hepatic veins, the
stomach with an air-fluid level and the spleen (left). The heart (``heart``) sits on the diaphragm
with its long axis pointing left, anterior and inferior. A smooth per-subject deformation bends it all.
Breathing moves the diaphragm and the abdomen (and the heart, less) along the body's axis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from moero.data.synthetic.contrast import (
    AIR,
    AORTA,
    BODY,
    BONE,
    BREAST,
    CSF,
    FAT,
    FLUID,
    LIVER,
    LUNG,
    MARROW,
    SPLEEN,
    TEXTURE,
    VESSEL,
)
from moero.data.synthetic.heart import TERRITORIES, paint_heart
from moero.data.synthetic.motion import breathing_shift
from moero.data.synthetic.render import (
    Canvas,
    Coords,
    Implicit,
    Plane,
    capsule,
    cylinder_z,
    ellipsoid,
    halfspace,
    intersect,
    warp,
)

EYE = np.eye(3)


def subject_anatomy(seed: int, subject_index: int, pathology: str) -> dict[str, Any]:
    """Per-subject geometry (mm, radians) and physiology, shared by all of a subject's files."""
    rng = np.random.default_rng([seed, subject_index, 1])
    a: dict[str, Any] = {
        "body_a": rng.uniform(135, 160),  # torso half-width (left-right)
        "body_b": rng.uniform(95, 118),  # torso half-depth (antero-posterior)
        "body_power": rng.uniform(2.1, 2.6),  # > 2: a flatter, squarer chest than an ellipse
        "subcut": rng.uniform(5, 20),  # subcutaneous fat thickness
        "breast": float(rng.uniform() < 0.35) * rng.uniform(35, 60),  # breast radius, 0 = none
        "shift_x": rng.normal(0, 6),  # offset of the field of view (readout, phase encode)
        "shift_y": rng.normal(0, 8),
        "heart_x": 4 + rng.normal(0, 5),  # centre of the mitral plane (z = 0)
        "heart_y": -14 + rng.normal(0, 4),
        "axis_azimuth": math.radians(rng.uniform(32, 50)),  # long axis: left towards anterior
        "axis_elevation": math.radians(rng.uniform(28, 42)),  # long axis: below the horizontal
        "axis_roll": rng.uniform(-0.15, 0.15),  # RV position about the long axis
        "r_endo": rng.uniform(22, 28),  # end-diastolic LV cavity radius at the base
        "wall": rng.uniform(7, 10),
        "ef": rng.uniform(0.5, 0.7),
        "long_axis": rng.uniform(78, 95),  # end-diastolic LV length, mitral plane to apex
        "long_shortening": rng.uniform(0.1, 0.15),  # base-to-apex motion as a fraction of the length
        "torsion": math.radians(rng.uniform(10, 20)),  # apex-to-base twist at end-systole
        "rv_scale": rng.uniform(0.9, 1.12),
        "la_r": rng.uniform(17, 21),
        "ra_r": rng.uniform(17, 21),
        "epi_fat": rng.uniform(1.5, 5.0),
        "trabeculae": rng.uniform(0.015, 0.035),  # relative amplitude of the endocardial corrugation
        "trab_freq": rng.integers(9, 23, size=4),
        "trab_phase": rng.uniform(0, 2 * math.pi, size=4),
        "pap_angles": (rng.uniform(-2.5, -2.1), rng.uniform(1.9, 2.3)),  # anterolateral, posteromedial
        "lung_vessels": rng.uniform(0, 1, size=(24, 4)),
        "liver_vessels": rng.uniform(0, 1, size=(4, 3)),
        "stomach_fill": rng.uniform(0.2, 0.8),  # fraction of the stomach filled with fluid (rest: air)
        "rib_spacing": rng.uniform(27, 33),
        "rib_phase": rng.uniform(0, 1),
        "dome_right": rng.uniform(-38, -22),  # top of the right (liver) and left hemidiaphragm, z mm
        "dome_left": rng.uniform(-62, -48),
        "warp": rng.normal(0, 1, size=(3, 4, 3)),  # smooth per-subject deformation of the whole body
        "breathing": float(rng.uniform() < 0.3) * rng.uniform(3, 7),
        "resp_phase": rng.uniform(0, 2 * math.pi),
        "scar_territory": ("LAD", "RCA", "LCx")[int(rng.integers(0, 3))],
        "scar_angle": rng.uniform(-0.3, 0.3),
        "scar_width": rng.uniform(0.9, 1.6),
        "scar_transmural": rng.uniform(0.5, 1.0),
    }
    assert a["scar_territory"] in TERRITORIES
    vy = a["body_b"] - 0.6 * a["subcut"] - 42  # vertebral body centre
    a["spine_y"] = vy
    a["aorta_x"], a["aorta_y"] = 21.0, vy - 21.0
    if pathology == "dilated":
        a["r_endo"] *= 1.3
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


def _rotz(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _ribs(anat: dict[str, Any], radial: float, vertical: float) -> Implicit:
    """Flat rib hoops (cross-section semi-axes ``radial`` x ``vertical``) along the chest wall, one every
    ``rib_spacing`` mm, descending anteriorly; none over the sternum (costal cartilage)."""
    ar = anat["body_a"] - anat["subcut"] - 12
    br = anat["body_b"] - 0.6 * anat["subcut"] - 10
    spacing, phase = anat["rib_spacing"], anat["rib_phase"]

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        u, v = x / ar, y / br
        rho = torch.sqrt(u * u + v * v + 1e-9)
        rad = torch.sqrt(x * x + y * y) / rho
        dr = (rho - 1) * rad
        ang = torch.atan2(v, u)
        zc = z - 24 * torch.sin(ang) - phase * spacing
        dz = torch.remainder(zc + spacing / 2, spacing) - spacing / 2
        tube = (torch.sqrt((dr / radial) ** 2 + (dz / vertical) ** 2) - 1) * radial
        front = (0.3 - (torch.remainder(ang + math.pi / 2 + math.pi, 2 * math.pi) - math.pi).abs()) * rad
        return torch.maximum(tube, front)

    return f


def _inner(anat: dict[str, Any], inset: float) -> Implicit:
    """The chest cavity inside the ribs, ``inset`` mm inside the muscle layer."""
    sub = anat["subcut"]
    return cylinder_z(0.0, 0.0, anat["body_a"] - sub - inset, anat["body_b"] - 0.6 * sub - inset,
                      anat["body_power"])


def paint_chest(cv: Canvas, anat: dict[str, Any]) -> None:
    """The parts that do not move: torso, fat, breasts, ribs, sternum, spine, lungs, mediastinum, vessels."""
    ba, bb, pw, sub = anat["body_a"], anat["body_b"], anat["body_power"], anat["subcut"]
    cv.paint(FAT, cylinder_z(0, 0, ba, bb, pw))
    if anat["breast"] > 0:  # breast tissue: a fat mound with fibroglandular tissue, anterior
        r = anat["breast"]
        for side in (1, -1):
            c = np.array([side * 0.5 * ba, -bb + 0.35 * r, -35.0])
            cv.paint(FAT, ellipsoid(c, _rotz(side * 0.35), (1.5 * r, 0.75 * r, 1.3 * r)), c, 1.5 * r)
            cb = c + np.array([0, -0.15 * r, 0])
            cv.paint(BREAST, ellipsoid(cb, _rotz(side * 0.35), (0.8 * r, 0.35 * r, 0.75 * r)), cb, 0.8 * r)
    cv.paint(BODY, cylinder_z(0, 0, ba - sub, bb - 0.6 * sub, pw))
    cv.paint(BONE, _ribs(anat, 4.0, 7.5))
    cv.paint(MARROW, _ribs(anat, 2.2, 5.0))
    sy = -(bb - 0.6 * sub - 9)
    span = intersect(halfspace(np.array([0, 0, 1.0]), np.array([0, 0, 110.0])),
                     halfspace(np.array([0, 0, -1.0]), np.array([0, 0, -95.0])))
    cv.paint(BONE, intersect(cylinder_z(0, sy, 15, 6.5), span))
    cv.paint(MARROW, intersect(cylinder_z(0, sy, 12, 4), span))
    # lungs inside the rib cage, the mediastinum between them
    inner = _inner(anat, 16)
    lungs = ((np.array([-0.5 * ba, 0.12 * bb, 30.0]), (0.4 * ba, 0.8 * bb, 175.0)),
             (np.array([0.55 * ba, 0.16 * bb, 30.0]), (0.37 * ba, 0.76 * bb, 175.0)))
    for centre, semi in lungs:
        cv.paint(LUNG, intersect(ellipsoid(centre, EYE, semi), inner), centre, 175.0)
    cv.paint(BODY, cylinder_z(2, 8, 30, 0.86 * bb))
    thymus = np.array([0.0, -bb + sub + 32, 55.0])
    cv.paint(FAT, ellipsoid(thymus, EYE, (26, 12, 45)), thymus, 45)
    vy = anat["spine_y"]
    cv.paint(BONE, cylinder_z(0, vy, 19, 16))
    cv.paint(MARROW, cylinder_z(0, vy, 16.5, 13.5))
    ph = anat["rib_phase"] * anat["rib_spacing"] + anat["rib_spacing"] / 2

    def discs(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dz = torch.remainder(z - ph + 15, 30.0) - 15
        return dz.abs() - 3.5

    cv.paint(BODY, intersect(cylinder_z(0, vy, 18, 15), discs))
    cv.paint(BONE, cylinder_z(0, vy + 28, 15, 10))
    cv.paint(BONE, cylinder_z(0, vy + 44, 5, 11))
    cv.paint(CSF, cylinder_z(0, vy + 23, 7, 6.5))
    for k, (du, dv, dw, rr) in enumerate(anat["lung_vessels"]):
        centre, semi = lungs[k % 2]
        side = -1.0 if k % 2 == 0 else 1.0
        hilum = centre + np.array([-side * 0.55 * semi[0], -0.1 * semi[1], -20.0])
        direction = np.array([side * (0.3 + du), 1.6 * (dv - 0.5), 2.0 * (dw - 0.5)])
        direction /= np.linalg.norm(direction / np.array(semi))
        tip = centre + 0.85 * direction
        mid, half = 0.5 * (hilum + tip), 0.5 * float(np.linalg.norm(tip - hilum))
        cv.paint(VESSEL, capsule(hilum, tip, 3.0 + 2.5 * rr, 1.0), mid, half + 6)
    # oesophagus and the descending aorta in front of the spine
    cv.paint(BODY, capsule(np.array([-6.0, vy - 24, 150.0]), np.array([-2.0, vy - 26, -150.0]), 8.0),
             np.array([-4.0, vy - 25, 0.0]), 160.0)
    top = np.array([anat["aorta_x"], anat["aorta_y"], 70.0])
    bottom = np.array([anat["aorta_x"], anat["aorta_y"], -250.0])
    cv.paint(BODY, capsule(top, bottom, 13.5), 0.5 * (top + bottom), 175.0)
    cv.paint(AORTA, capsule(top, bottom, 11.5), 0.5 * (top + bottom), 175.0)


def paint_abdomen(cv: Canvas, anat: dict[str, Any], resp_mm: float) -> None:
    """Below the diaphragm's domes, moving with breathing: liver and hepatic veins, stomach, spleen."""
    ba, bb = anat["body_a"], anat["body_b"]
    shift = breathing_shift(resp_mm)
    inner = _inner(anat, 10)
    zr, zl = anat["dome_right"], anat["dome_left"]
    liver = np.array([-0.3 * ba, 0.1 * bb, zr - 150]) + shift
    cv.paint(LIVER, intersect(ellipsoid(liver, EYE, (0.72 * ba, 0.95 * bb, 150)), inner), liver, 160)
    ivc = np.array([-10.0, 25.0, zr - 20]) + shift
    for du, dv, rr in anat["liver_vessels"]:
        tip = ivc + np.array([-40 - 60 * du, -50 * dv, -20 - 30 * rr])
        cv.paint(VESSEL, capsule(ivc, tip, 5.5, 2.5), 0.5 * (ivc + tip), 60)
    left = np.array([0.42 * ba, 0.1 * bb, zl - 120]) + shift
    cv.paint(BODY, intersect(ellipsoid(left, EYE, (0.5 * ba, 0.85 * bb, 120)), inner), left, 130)
    stomach = np.array([0.38 * ba, -0.1 * bb, zl - 48]) + shift
    semi = (44.0, 36.0, 46.0)
    cv.paint(BODY, ellipsoid(stomach, _rotz(0.4), tuple(s + 3 for s in semi)), stomach, 50)
    cv.paint(FLUID, ellipsoid(stomach, _rotz(0.4), semi), stomach, 47)
    level = stomach[1] + (1 - 2 * anat["stomach_fill"]) * semi[1]  # supine: the air rises anteriorly (-y)
    cv.paint(AIR, intersect(ellipsoid(stomach, _rotz(0.4), semi), halfspace(np.array([0, 1.0, 0]),
                                                                           np.array([0, level, 0]))), stomach, 47)
    spleen = np.array([0.66 * ba, 0.5 * bb, zl - 42]) + shift
    cv.paint(SPLEEN, intersect(ellipsoid(spleen, _rotz(-0.6), (22, 45, 48)), inner), spleen, 50)


def plane_coords(anat: dict[str, Any], plane: Plane, xs: torch.Tensor, ys: torch.Tensor) -> Coords:
    """World coordinates of a plane's grid, deformed by the subject's smooth warp."""
    return warp(anat["warp"], plane.world(xs, ys))


def render_image(anat: dict[str, Any], plane: Plane, contraction: float, resp_mm: float, pathology: str,
                 values: np.ndarray, xs: torch.Tensor, ys: torch.Tensor,
                 texture: torch.Tensor | None = None) -> torch.Tensor:
    """Real image (float32 ``(len(xs), len(ys))``) of one frame on ``plane``: tissue ``values`` (per label)
    painted with partial-volume coverage (``xs``: readout mm, ``ys``: phase mm about the plane's centre)."""
    coords = plane_coords(anat, plane, xs, ys)
    tex = texture if texture is not None else torch.zeros(coords[0].shape)
    cv = Canvas(coords, plane, xs, ys, torch.as_tensor(values, dtype=torch.float32), tex,
                torch.from_numpy(TEXTURE), margin=12.0)
    paint_chest(cv, anat)
    paint_abdomen(cv, anat, resp_mm)
    paint_heart(cv, anat, contraction, resp_mm, pathology)
    return cv.image
