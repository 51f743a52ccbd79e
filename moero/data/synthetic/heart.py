"""The 3-D heart: chambers, walls, valves, great vessels and pathology, posed at a point of the cycle.

The LV is a truncated prolate ellipsoid (widest a third of the way from the mitral plane to the apex)
inside a myocardial one whose volume is conserved through the cycle (so the wall thickens as the cavity
shrinks), with coronary arteries in the grooves' fat; the RV is a
thin-walled ellipsoid cut into a crescent by the septum, with its outflow tract to the pulmonary
valve; both atria sit beyond the mitral and (more apical) tricuspid planes, with the left atrial
appendage and the pulmonary veins, the SVC and IVC. The aortic root continues the LVOT into the
ascending aorta and the arch; the pulmonary trunk divides behind it. Papillary muscles, trabeculae,
valve leaflets (open in diastole, closed in systole), epicardial fat in the grooves, the pericardium,
and scars in a coronary territory complete it. Shapes are implicit functions (see ``render``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from moero.data.synthetic.contrast import AORTA, BODY, FAT, LV, MYO, PAP, PERICARDIUM, RV, SCAR
from moero.data.synthetic.motion import breathing_shift, torsion_angle, wall_offset
from moero.data.synthetic.planning import base_centre, heart_axes
from moero.data.synthetic.render import Canvas, Implicit, capsule, ellipsoid, halfspace, intersect, unit

UP = np.array([0.0, 0.0, 1.0])
LV_WIDEST = 0.3  # fraction of the LV's length from the mitral plane where the cavity is widest
# centre angle (radians from S towards T around the LV axis) and base-to-apex extent of each territory
TERRITORIES = {"LAD": (-1.2, 0.3, 1.0), "RCA": (1.25, 0.0, 0.75), "LCx": (2.7, 0.0, 0.75)}


def heart_pose(anat: dict[str, Any], c: float, resp_mm: float) -> dict[str, Any]:
    """Geometry (world mm) of the heart at contraction ``c`` (0 end-diastole, 1 end-systole), breathing
    displacement ``resp_mm``: the apex stays, the base descends towards it, the cavity narrows."""
    ax = heart_axes(anat)
    L, S, T, A = ax["L"], ax["S"], ax["T"], ax["A"]
    shift = breathing_shift(resp_mm, 0.7)
    len0 = anat["long_axis"]
    apex = base_centre(anat) + shift + len0 * L
    length = len0 * (1 - anat["long_shortening"] * c)
    b = apex - length * L
    r0 = anat["r_endo"]
    r = r0 * (1 - anat["radial_shortening"] * c)
    d = wall_offset(r0, len0, anat["wall"], r, length)
    frame = np.stack([L, S, T])
    p: dict[str, Any] = {"L": L, "S": S, "T": T, "A": A, "frame": frame, "B": b, "apex": apex, "len": length,
                         "len0": len0, "r": r, "r0": r0, "d": d, "c": c,
                         "lv_c": b + LV_WIDEST * length * L}
    rvs = anat["rv_scale"]
    # RV: an ellipsoid that reaches past the LV axis only a little, so the LV (painted over it) leaves a
    # crescent of thickness t at the septum whose horns taper around the anterior and inferior walls
    big_r = r0 + anat["wall"]
    t = (12 + 7 * rvs) * (1 - 0.6 * anat["radial_shortening"] * c)
    semi_s = (1.3 * big_r + t) / 2
    off = semi_s - 0.3 * big_r
    semi_t = (big_r + 0.4 * t) / math.sqrt(1 - (off / semi_s) ** 2)
    p["rv_c"] = b + 0.28 * length * L + off * S
    p["rv_semi"] = (0.47 * length, semi_s, semi_t)
    p["tv"] = b + 0.07 * length * L + (r + d + 13) * S
    # the RV inflow (below the tricuspid valve) is wider than the crescent further down
    p["inflow_c"] = p["tv"] + 0.16 * length * L - 4 * S
    p["inflow_semi"] = (0.2 * length, 17 * rvs * (1 - 0.4 * anat["radial_shortening"] * c), 22 * rvs)
    grow = 1 + 0.12 * c  # the atria fill in systole
    la = anat["la_r"] * grow
    p["la_c"] = b - (la + 1) * L - 0.25 * r * A - 4 * A
    p["la_semi"] = (la, 1.15 * la, 0.95 * la)
    ra = anat["ra_r"] * grow
    p["ra_c"] = p["tv"] - (ra + 1) * L + 6 * S
    p["ra_semi"] = (ra, 0.95 * ra, 1.05 * ra)
    # aorto-mitral continuity: the aortic valve above the anteroseptal edge of the base, the mitral
    # orifice behind it; the root and ascending aorta run in the plane of L and A (the 3-chamber plane)
    asc = np.dot(UP - 0.4 * L, L) * L + np.dot(UP - 0.4 * L, A) * A
    asc = asc / np.linalg.norm(asc)
    p["av"] = b - 6 * L + (0.62 * r0 + 4) * A
    p["sinus"] = p["av"] + 12 * asc
    p["mv"] = b - 0.25 * r * A
    # the ascending aorta's top and the arch do not move with the base
    av_rest = base_centre(anat) - 6 * L + (0.62 * r0 + 4) * A
    p["aa_top"] = av_rest + 60 * asc + shift * 0.3
    p["pv"] = p["av"] + np.array([17.0, -13.0, 15.0])
    p["pa_bif"] = p["pv"] + np.array([6.0, 32.0, 24.0])
    return p


def _ell(p: dict[str, Any], centre: np.ndarray, semi: tuple[float, float, float]) -> Implicit:
    return ellipsoid(centre, p["frame"], semi)


def _trabeculated_cavity(anat: dict[str, Any], p: dict[str, Any]) -> Implicit:
    """The LV cavity (half-ellipsoid, u >= 0) with a corrugated endocardium towards the apex (trabeculae)."""
    b, L, S, T = (p[k] for k in ("B", "L", "S", "T"))
    length, r = p["len"], p["r"]
    amp = anat["trabeculae"] * (1 - 0.7 * p["c"])
    freqs, phases = anat["trab_freq"], anat["trab_phase"]
    tors = anat["torsion"] * p["c"]
    semi_l = (1 - LV_WIDEST) * length

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dx, dy, dz = x - float(b[0]), y - float(b[1]), z - float(b[2])
        u = dx * float(L[0]) + dy * float(L[1]) + dz * float(L[2])
        us = dx * float(S[0]) + dy * float(S[1]) + dz * float(S[2])
        ut = dx * float(T[0]) + dy * float(T[1]) + dz * float(T[2])
        ang = torch.atan2(ut, us) - tors * (u / length - 0.35)
        mod = sum(torch.cos(float(k) * ang + float(ph)) for k, ph in zip(freqs, phases, strict=True)) / len(freqs)
        where = ((u / length - 0.3) / 0.3).clamp(0, 1)
        rr = r * (1 + amp * mod * where)
        uc = u - LV_WIDEST * length  # the cavity is widest a third of the way down, narrower at the annulus
        g = (uc / semi_l) ** 2 + (us * us + ut * ut) / (rr * rr) - 1
        grad = torch.sqrt((uc / semi_l**2) ** 2 + (us * us + ut * ut) / rr**4)
        return torch.maximum(g / (2 * grad + 1e-4), -u - 3)  # open into the atrium and the LVOT

    return f


def _scar(anat: dict[str, Any], p: dict[str, Any]) -> tuple[Implicit, np.ndarray, float]:
    """The scar: a sector of the myocardium in a coronary territory, from the endocardium outwards."""
    b, L, S, T = (p[k] for k in ("B", "L", "S", "T"))
    length, r, d = p["len"], p["r"], p["d"]
    centre_ang, u0, u1 = TERRITORIES[anat["scar_territory"]]
    centre_ang += anat["scar_angle"]
    width, depth = anat["scar_width"], anat["scar_transmural"]
    tors = anat["torsion"] * p["c"]
    outer = _ell(p, p["lv_c"], ((1 - LV_WIDEST) * length + depth * 0.55 * d, r + depth * d, r + depth * d))

    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dx, dy, dz = x - float(b[0]), y - float(b[1]), z - float(b[2])
        u = dx * float(L[0]) + dy * float(L[1]) + dz * float(L[2])
        us = dx * float(S[0]) + dy * float(S[1]) + dz * float(S[2])
        ut = dx * float(T[0]) + dy * float(T[1]) + dz * float(T[2])
        rad = torch.sqrt(us * us + ut * ut) + 1e-6
        ang = torch.remainder(torch.atan2(ut, us) - tors * (u / length - 0.35) - centre_ang + math.pi,
                              2 * math.pi) - math.pi
        sector = (ang.abs() - width / 2) * rad
        along = torch.maximum(u0 * length - u, u - u1 * length - 3)
        return torch.maximum(torch.maximum(outer(x, y, z), sector), along)

    return f, b + 0.5 * length * L, length + r + d


def _paint_coronaries(cv: Canvas, p: dict[str, Any]) -> None:
    """The coronary arteries in their fat: the RCA and LCx around the AV grooves, the LAD down the
    anterior interventricular groove to the apex."""
    b, L, S, T, length = p["B"], p["L"], p["S"], p["T"], p["len"]
    big_r = p["r"] + p["d"]

    def around(u: float, radius: float, ang: float) -> np.ndarray:
        return b + u * L + radius * (math.cos(ang) * S + math.sin(ang) * T)

    paths = [[around(2.0, big_r + 9, a) for a in np.linspace(-1.2, 1.7, 5)],  # RCA (right AV groove)
             [around(2.0, big_r + 3, a) for a in np.linspace(-2.0, -3.1, 3)],  # LCx (left AV groove)
             [around(u * length, (big_r + 2) * math.sqrt(max(1 - u * u, 0.05)), -1.75)
              for u in (0.05, 0.35, 0.65, 0.9)]]  # LAD
    for path in paths:
        for p0, p1 in zip(path[:-1], path[1:], strict=True):
            half = 0.5 * float(np.linalg.norm(p1 - p0))
            cv.paint(AORTA, capsule(p0, p1, 1.8, 1.6), 0.5 * (p0 + p1), half + 2)


def _leaflet(hinge: np.ndarray, direction: np.ndarray, across: np.ndarray, length: float, width: float) -> Implicit:
    """A thin valve leaflet from ``hinge`` along ``direction``, ``width`` wide along ``across``."""
    direction = unit(direction)
    across = unit(across - np.dot(across, direction) * direction)
    frame = np.stack([direction, across, np.cross(direction, across)])
    return ellipsoid(hinge + 0.5 * length * direction, frame, (0.5 * length, width, 0.9))


def paint_heart(cv: Canvas, anat: dict[str, Any], c: float, resp_mm: float, pathology: str) -> None:
    """Paint the heart, its vessels and its fat at contraction ``c`` onto ``cv``."""
    p = heart_pose(anat, c, resp_mm)
    b, L, S, T, A = (p[k] for k in ("B", "L", "S", "T", "A"))
    length, r, d = p["len"], p["r"], p["d"]
    fat = anat["epi_fat"]
    lv_c = p["lv_c"]
    lv_out_semi = ((1 - LV_WIDEST) * length + 0.55 * d, r + d, r + d)
    rv_semi = p["rv_semi"]
    rv_out = tuple(s + 3.0 for s in rv_semi)
    la_c, la_semi, ra_c, ra_semi = p["la_c"], p["la_semi"], p["ra_c"], p["ra_semi"]

    # pericardium, then epicardial fat: the chambers' outer surfaces grown; fat in the AV grooves
    bodies = [(lv_c, lv_out_semi, 0.35), (p["rv_c"], rv_out, 0.7), (la_c, la_semi, 0.3), (ra_c, ra_semi, 0.3)]
    for label, extra in ((PERICARDIUM, 1.4), (FAT, 0.0)):
        for k, (centre, semi, share) in enumerate(bodies):
            grow = share * fat + extra + 0.5
            shape = _ell(p, centre, tuple(s + grow for s in semi))
            if k == 0:  # the LV's shell stops at the mitral plane
                shape = intersect(shape, halfspace(-L, b - 3 * L))
            cv.paint(label, shape, centre, max(semi) + grow)
    groove = b + 3 * L
    cv.paint(FAT, _ell(p, groove, (4 + fat, r + d + 3 + fat, r + d + 3 + fat)), groove, r + d + 8 + fat)
    for ang in (-1.75, 1.6):  # anterior and inferior interventricular grooves
        groove_iv = b + 0.55 * length * L + (r + d + 2) * (math.cos(ang) * S + math.sin(ang) * T)
        cv.paint(FAT, _ell(p, groove_iv, (0.35 * length, 3 + fat, 3 + fat)), groove_iv, 0.35 * length + 8)
    _paint_coronaries(cv, p)
    pad = p["rv_c"] + 0.25 * length * L + rv_out[1] * S
    cv.paint(FAT, _ell(p, pad, (14, 2 + fat, 14)), pad, 16)

    # great vessels: ascending aorta and arch (with a wall), pulmonary trunk and arteries, caval and pulmonary veins
    sinus, top = p["sinus"], p["aa_top"]
    arch = top + np.array([22.0, 32.0, 14.0])
    desc = np.array([anat["aorta_x"], anat["aorta_y"], top[2] - 4.0])
    segments = [(p["av"], sinus, 12.0, 15.0), (sinus, top, 14.0, 13.0), (top, arch, 13.0, 12.0),
                (arch, desc, 12.0, 11.5)]
    for label, extra in ((BODY, 2.0), (AORTA, 0.0)):
        for p0, p1, r0_, r1_ in segments:
            mid, half = 0.5 * (p0 + p1), 0.5 * float(np.linalg.norm(p1 - p0))
            cv.paint(label, capsule(p0, p1, r0_ + extra, r1_ + extra), mid, half + max(r0_, r1_) + extra)
    pv, bif = p["pv"], p["pa_bif"]
    pa = [(pv, bif, 13.0, 12.0), (bif, bif + np.array([44.0, 20.0, -4.0]), 10.0, 8.0),
          (bif, bif + np.array([-78.0, 8.0, -8.0]), 10.0, 8.0)]
    for p0, p1, r0_, r1_ in pa:
        mid, half = 0.5 * (p0 + p1), 0.5 * float(np.linalg.norm(p1 - p0))
        cv.paint(RV, capsule(p0, p1, r0_, r1_), mid, half + r0_)
    svc0, svc1 = ra_c + 0.8 * ra_semi[0] * UP, ra_c + np.array([4.0, 4.0, 95.0])
    ivc0, ivc1 = ra_c - 0.6 * ra_semi[0] * UP + np.array([4.0, 8.0, 0.0]), np.array([ra_c[0] + 8, 25.0, -170.0])
    for p0, p1, rad in ((svc0, svc1, 9.0), (ivc0, ivc1, 11.0)):
        mid, half = 0.5 * (p0 + p1), 0.5 * float(np.linalg.norm(p1 - p0))
        cv.paint(RV, capsule(p0, p1, rad), mid, half + rad)
    for sx in (1.0, -1.0):
        for sz in (1.0, -1.0):
            p0 = la_c + np.array([sx * 0.7 * la_semi[1], 10.0, sz * 9.0])
            p1 = la_c + np.array([sx * 1.9 * la_semi[1], 28.0, sz * 16.0])
            cv.paint(LV, capsule(p0, p1, 6.5, 5.5), 0.5 * (p0 + p1), 30.0)

    # atria with thin walls; the left atrial appendage
    laa = la_c - 0.8 * la_semi[2] * T - 0.35 * la_semi[1] * S + 8 * L
    for label, grow in ((MYO, 2.0), (LV, 0.0)):
        cv.paint(label, _ell(p, la_c, tuple(s + grow for s in la_semi)), la_c, max(la_semi) + grow)
        cv.paint(label, ellipsoid(laa, np.stack([unit(-T + 0.3 * L), S, np.cross(unit(-T + 0.3 * L), S)]),
                                  (10 + grow, 6 + grow, 7 + grow)), laa, 12 + grow)
    for label, grow in ((MYO, 2.0), (RV, 0.0)):
        cv.paint(label, _ell(p, ra_c, tuple(s + grow for s in ra_semi)), ra_c, max(ra_semi) + grow)

    # RV: thin free wall, cavity cut by the tricuspid plane, outflow tract to the pulmonary valve
    rv_c = p["rv_c"]
    tricuspid = halfspace(-L, b + 0.07 * length * L)
    inflow_c, inflow_semi = p["inflow_c"], p["inflow_semi"]
    above = halfspace(-L, b + (0.07 * length - 3) * L)
    cv.paint(MYO, intersect(_ell(p, rv_c, rv_out), above), rv_c, max(rv_out))
    cv.paint(MYO, intersect(_ell(p, inflow_c, tuple(s + 3 for s in inflow_semi)), above), inflow_c, 30)
    rvot0 = rv_c - 0.2 * length * L - 0.55 * rv_semi[2] * T
    for label, rad in ((MYO, 15.0), (RV, 12.0)):
        cv.paint(label, capsule(rvot0, pv, rad, rad - 1), 0.5 * (rvot0 + pv), 0.5 * float(np.linalg.norm(pv - rvot0))
                 + rad)
    cv.paint(RV, intersect(_ell(p, rv_c, rv_semi), tricuspid), rv_c, max(rv_semi))
    cv.paint(RV, intersect(_ell(p, inflow_c, inflow_semi), tricuspid), inflow_c, 27)

    # LV: myocardium (thinner at the apex), LVOT into the aortic root, trabeculated cavity, papillary muscles
    cv.paint(MYO, intersect(_ell(p, lv_c, lv_out_semi), halfspace(-L, b - 3 * L)), b + 0.5 * length * L,
             length + r + d)
    lvot0 = b + 12 * L + 0.3 * r * A
    cv.paint(LV, capsule(lvot0, p["av"], 0.42 * p["r0"], 0.45 * p["r0"]), 0.5 * (lvot0 + p["av"]), 30.0)
    cv.paint(AORTA, ellipsoid(sinus, np.stack([L, S, T]), (12.0, 15.0, 15.0)), sinus, 16.0)
    cv.paint(LV, _trabeculated_cavity(anat, p), b + 0.5 * length * L, length + r)
    for k, ang0 in enumerate(anat["pap_angles"]):
        u = 0.55 * length
        ang = ang0 + torsion_angle(anat["torsion"], c, 0.55)
        centre = b + u * L + 0.72 * r * (math.cos(ang) * S + math.sin(ang) * T)  # rising from the wall
        rp = 0.2 * p["r0"] * (1 + 0.4 * c) * (1.0 if k == 0 else 0.9)
        cv.paint(PAP, _ell(p, centre, (0.2 * length, rp, rp)), centre, 0.2 * length + rp)
    if pathology == "scar":
        scar, centre, radius = _scar(anat, p)
        cv.paint(SCAR, intersect(scar, lambda x, y, z: -_trabeculated_cavity(anat, p)(x, y, z)), centre, radius)

    # valves: mitral and tricuspid leaflets open towards the apex in diastole, closed across in systole;
    # the aortic cusps close in diastole
    closed = c > 0.4  # ejection and isovolumic phases: atrioventricular valves closed
    across = np.cross(L, A)
    for sign in (1.0, -1.0):
        hinge = p["mv"] + sign * 0.6 * r * A
        direction = -sign * A - 0.15 * L if closed else L - 0.25 * sign * A
        cv.paint(PERICARDIUM, _leaflet(hinge, direction, across, 0.6 * r if sign > 0 else 0.45 * r, 0.7 * r),
                 hinge, 0.7 * r + 2)
        hinge = p["tv"] + sign * 13 * S
        direction = -sign * S - 0.15 * L if closed else L - 0.25 * sign * S
        cv.paint(PERICARDIUM, _leaflet(hinge, direction, T, 12.0, 11.0), hinge, 14.0)
    if not closed:
        axis = unit(p["av"] - lvot0)
        cv.paint(PERICARDIUM, ellipsoid(p["av"], np.stack([axis, *_perp(axis)]), (0.9, 11.0, 11.0)), p["av"], 12.0)


def _perp(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``axis`` to an orthonormal frame."""
    helper = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.array([0, 1.0, 0])
    a = unit(np.cross(axis, helper))
    return a, np.cross(axis, a)
