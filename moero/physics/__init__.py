"""Physics layer: the centred orthonormal FFT, SENSE operators (eq. (1)), coil maps, sampling masks, phantoms,
CG-SENSE.

Each name below lives in the module named in its import; import from there inside the package.
"""
from __future__ import annotations

from moero.physics.coils import (
    calibration_region,
    espirit_maps,
    estimate_maps_lowres,
)
from moero.physics.fft import (
    centre_crop,
    centred_slice,
    fft2c,
    ifft2c,
)
from moero.physics.masks import (
    ACCELERATIONS,
    ACS_LINES,
    ACS_REFERENCE_PE,
    GOLDEN_ANGLE_DEG,
    KINDS,
    MaskSampler,
    acs_width,
    effective_acceleration,
    effective_acs,
    make_mask,
    matched_spokes,
    point_spread,
)
from moero.physics.phantom import (
    coil_maps,
    shepp_logan,
)
from moero.physics.recon import (
    cg_sense,
)
from moero.physics.sense import (
    apply_mask,
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
    "centred_slice",
    "centre_crop",
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
    "ACS_LINES",
    "ACS_REFERENCE_PE",
    "acs_width",
    "matched_spokes",
    "make_mask",
    "effective_acs",
    "effective_acceleration",
    "point_spread",
    "MaskSampler",
    "shepp_logan",
    "coil_maps",
]
