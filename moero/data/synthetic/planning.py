"""Planning as on a scanner: the heart's axes and the image planes (short axis stack, 2/3/4-chamber views).

World coordinates (mm): x towards the patient's left, y posterior, z superior; the torso's axis is
the z axis. The LV long axis ``L`` runs from the mitral plane's centre to the apex (left, anterior and
inferior); ``S`` points from the LV axis to the RV (right-anterior, the septum), ``T = L x S`` to the
inferior wall, and ``A`` (between ``S`` and ``-T``) to the aortic valve. Short-axis planes are
perpendicular to ``L`` from base to apex (planned once, at end-diastole: the base moves through
them); the 4-chamber plane holds ``L`` and ``S`` (both ventricles and both atria), the 2-chamber plane
``L`` and ``T`` (anterior and inferior walls, LV and LA only), the 3-chamber plane ``L`` and ``A``
(LVOT and aortic root). The readout runs along the plane's horizontal direction, towards the patient's
left, so the body fills the central half of the 2x oversampled readout; the phase-encode direction
points from the apex towards the base in the 4- and 3-chamber views and towards the inferior wall in
the 2-chamber and short-axis views (displayed with the readout horizontal: apex up, anterior wall up).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from moero.data.synthetic.render import Z_AXIS, Plane, unit

VIEWS = ("sax", "lax_2ch", "lax_3ch", "lax_4ch")


def heart_axes(anat: dict[str, Any]) -> dict[str, np.ndarray]:
    """Unit vectors ``L`` (base to apex), ``S`` (to the RV), ``T`` (to the inferior wall), ``A`` (to the
    aortic valve) of a subject's heart at rest."""
    az, el = anat["axis_azimuth"], anat["axis_elevation"]
    # the apex points to the left (+x) and anteriorly (-y) at azimuth az, inferiorly (-z) at elevation el
    long_axis = np.array([math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), -math.sin(el)])
    raw = np.array([-1.0, -0.6, 0.2])  # the RV lies to the right of and in front of the LV
    s = unit(raw - np.dot(raw, long_axis) * long_axis)
    t = np.cross(long_axis, s)
    roll = anat["axis_roll"]
    s, t = math.cos(roll) * s + math.sin(roll) * t, -math.sin(roll) * s + math.cos(roll) * t
    a = unit(s - t)  # anteroseptal: the LVOT and aortic valve
    return {"L": long_axis, "S": s, "T": t, "A": a}


def base_centre(anat: dict[str, Any]) -> np.ndarray:
    """Centre of the mitral plane at end-diastole (world mm, breathing at rest)."""
    return np.array([anat["heart_x"], anat["heart_y"], 0.0])


def slice_position(view: str, z: int, slices: int) -> float:
    """Base (0) to apex (1) position of slice ``z``: SAX stacks span 0.1-0.9; long-axis views are central."""
    return 0.1 + 0.8 * (z + 0.5) / slices if view == "sax" else 0.5


def _in_plane_axes(normal: np.ndarray, down: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Readout: the plane's horizontal direction towards the patient's left; phase: along ``down``."""
    horiz = np.cross(Z_AXIS, normal)
    e_r = unit(horiz) if np.linalg.norm(horiz) > 0.1 else unit(np.array([1.0, 0, 0]) - normal[0] * normal)
    if e_r[0] < 0:
        e_r = -e_r
    e_p = np.cross(normal, e_r)
    if np.dot(e_p, down) < 0:
        e_p = -e_p
    return e_r, e_p


def view_plane(anat: dict[str, Any], view: str, slice_pos: float = 0.5) -> Plane:
    """The image plane of ``view`` (``sax`` at ``slice_pos`` from base to apex), centred as on a scanner:
    the readout on the torso's axis, the phase encode on the heart (plus the subject's offset)."""
    ax = heart_axes(anat)
    lax, b0, length = ax["L"], base_centre(anat), anat["long_axis"]
    if view == "sax":
        normal, down = lax, ax["T"]
        point = b0 + slice_pos * length * lax
    elif view.startswith("lax"):
        span = {"lax_4ch": ax["S"], "lax_2ch": ax["T"], "lax_3ch": ax["A"]}[view]
        # 4- and 3-chamber: apex up (the atria below); 2-chamber: anterior wall up, inferior wall down
        normal, down = unit(np.cross(lax, span)), (ax["T"] if view == "lax_2ch" else -lax)
        point = b0 + 0.15 * length * lax  # the whole heart: atria above the valve planes, the apex below
    else:
        raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")
    e_r, e_p = _in_plane_axes(normal, down)
    # readout centred on the torso's axis (x = y = 0), phase encode on the heart
    centre = point - np.dot(point, e_r) * e_r + anat["shift_x"] * e_r + anat["shift_y"] * e_p
    return Plane(centre, e_r, e_p)


def axial_plane(z: float = 0.0) -> Plane:
    """A transverse (axial) localiser plane at height ``z``: readout to the left, phase posterior."""
    return Plane(np.array([0.0, 0.0, z]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))


def coronal_plane(y: float = 0.0) -> Plane:
    """A coronal localiser plane at depth ``y``: readout to the left, phase inferior (head up)."""
    return Plane(np.array([0.0, y, 0.0]), np.array([1.0, 0, 0]), np.array([0, 0, -1.0]))


def sagittal_plane(x: float = 0.0) -> Plane:
    """A sagittal localiser plane at ``x``: readout posterior, phase inferior (head up)."""
    return Plane(np.array([x, 0.0, 0.0]), np.array([0, 1.0, 0]), np.array([0, 0, -1.0]))


def plane_trace(plane: Plane, extent: tuple[float, float], on: Plane, on_extent: tuple[float, float]
                ) -> np.ndarray | None:
    """Where ``plane`` (its FOV: half-extents ``extent`` mm along readout and phase) cuts ``on`` (half-extents
    ``on_extent``): the segment's two end points in ``on``'s (readout, phase) mm, or None if they miss."""
    direction = np.cross(plane.normal, on.normal)
    if np.linalg.norm(direction) < 1e-6:
        return None
    direction = unit(direction)
    # the point of both planes closest to on's centre
    m = np.stack([plane.normal, on.normal, direction])
    rhs = np.array([np.dot(plane.normal, plane.centre), np.dot(on.normal, on.centre), np.dot(direction, on.centre)])
    point = np.linalg.solve(m, rhs)
    lo, hi = -np.inf, np.inf
    for pl, ext in ((plane, extent), (on, on_extent)):
        for axis, half in ((pl.e_r, ext[0]), (pl.e_p, ext[1])):
            rate, offset = float(np.dot(direction, axis)), float(np.dot(point - pl.centre, axis))
            if abs(rate) < 1e-9:
                if abs(offset) > half:
                    return None
                continue
            t0, t1 = sorted(((-half - offset) / rate, (half - offset) / rate))
            lo, hi = max(lo, t0), min(hi, t1)
    if lo >= hi:
        return None
    ends = [point + t * direction - on.centre for t in (lo, hi)]
    return np.array([[np.dot(e, on.e_r), np.dot(e, on.e_p)] for e in ends])
