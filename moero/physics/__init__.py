"""Physics layer: the centred orthonormal FFT, SENSE operators (eq. (1)), coil maps, sampling masks, phantoms,
CG-SENSE.

Each name below lives in the module named in its import; import from there inside the package.
"""
from __future__ import annotations

from moero.physics.fft import (
    fft2c,
    ifft2c,
)
from moero.physics.masks import (
    ACCELERATIONS,
    GOLDEN_ANGLE_DEG,
    KINDS,
    MaskSampler,
    effective_acs,
    make_mask,
    point_spread,
)
from moero.physics.phantom import (
    coil_maps,
    shepp_logan,
)
from moero.physics.sense import (
    apply_mask,
    calibration_region,
    cg_sense,
    espirit_maps,
    estimate_maps_lowres,
    normalize_maps,
    rss,
    sense_adjoint,
    sense_forward,
    sense_normal,
    zero_filled,
)

__all__ = [
    "fft2c",
    "ifft2c",
    "apply_mask",
    "sense_forward",
    "sense_adjoint",
    "sense_normal",
    "rss",
    "zero_filled",
    "normalize_maps",
    "calibration_region",
    "estimate_maps_lowres",
    "espirit_maps",
    "cg_sense",
    "KINDS",
    "ACCELERATIONS",
    "GOLDEN_ANGLE_DEG",
    "make_mask",
    "effective_acs",
    "point_spread",
    "MaskSampler",
    "shepp_logan",
    "coil_maps",
]
