"""Augmentation layer: DualSpace-CMR, joint image/maps geometry, k-space noise and rigid
motion, the pipeline.

Each name below lives in the module named in its import; import from there inside the package.
"""
from __future__ import annotations

from moero.augment.base import (
    RandomTransform,
    Transform,
    bernoulli,
    check_probability,
    draw_seed,
    uniform,
)
from moero.augment.geometry import (
    Affine,
    Elastic,
    Flip,
    RandomElastic,
    RandomFlip,
    RandomRot90,
    RandomRotation,
    RandomScaling,
    RandomShift,
    Rot90,
    Shift,
    transform_image_and_maps,
)
from moero.augment.kspace import (
    DEFAULT_NOISE_SIGMAS,
    ORDERINGS,
    KspaceNoise,
    RandomKspaceNoise,
    RandomRigidMotion,
    RigidMotion,
    add_kspace_noise,
    check_complex,
    check_motion_range,
    check_sigma,
    kspace_snr_db,
    shot_of_line,
    signal_level,
    simulate_rigid_motion,
)
from moero.augment.pipeline import (
    AugmentPlan,
    DualSpaceAugment,
    RatioSchedule,
    default_geometric,
    estimate_maps_from_full,
    preview_artefacts,
)

__all__ = [
    "check_probability",
    "bernoulli",
    "uniform",
    "draw_seed",
    "Transform",
    "RandomTransform",
    "Flip",
    "Shift",
    "Rot90",
    "Affine",
    "Elastic",
    "RandomFlip",
    "RandomShift",
    "RandomRot90",
    "RandomRotation",
    "RandomScaling",
    "RandomElastic",
    "transform_image_and_maps",
    "DEFAULT_NOISE_SIGMAS",
    "ORDERINGS",
    "check_complex",
    "check_sigma",
    "check_motion_range",
    "signal_level",
    "add_kspace_noise",
    "KspaceNoise",
    "RandomKspaceNoise",
    "shot_of_line",
    "simulate_rigid_motion",
    "RigidMotion",
    "RandomRigidMotion",
    "kspace_snr_db",
    "RatioSchedule",
    "AugmentPlan",
    "DualSpaceAugment",
    "estimate_maps_from_full",
    "default_geometric",
    "preview_artefacts",
]
