"""Evaluation layer: scikit-image-exact metrics, the official CMRxRecon2025 protocol, expert specialisation and
result tables.

Each name below lives in the module named in its import; import from there inside the package.
"""
from __future__ import annotations

from moero.eval.evaluate import (
    TEST_SPLITS,
    ZeroFilled,
    evaluate,
    protocol_indices,
    write_tables,
)
from moero.eval.metrics import (
    ALL_FRAME_MODALITIES,
    ALL_SLICE_MODALITIES,
    SINGLE_IMAGE_MODALITIES,
    SSIMLoss,
    center_crop,
    central_slices,
    cmrxrecon_score,
    group_means,
    matlab_round,
    nmse,
    normalize_percentile,
    protocol_crop_size,
    psnr,
    score_images,
    score_volume,
    select_protocol_images,
    selected_frames,
    split_aggregates,
    ssim,
    ssim_map,
)
from moero.eval.specialisation import (
    contingency,
    expert_usage,
    fit_sensitivity_codebook,
    sensitivity_histograms,
    specialisation,
    trace_routing,
    usage_over_training,
)
from moero.eval.tables import (
    Table,
)

__all__ = [
    "ssim",
    "psnr",
    "nmse",
    "SSIMLoss",
    "ssim_map",
    "matlab_round",
    "central_slices",
    "selected_frames",
    "protocol_crop_size",
    "center_crop",
    "normalize_percentile",
    "score_images",
    "select_protocol_images",
    "score_volume",
    "cmrxrecon_score",
    "split_aggregates",
    "group_means",
    "SINGLE_IMAGE_MODALITIES",
    "ALL_FRAME_MODALITIES",
    "ALL_SLICE_MODALITIES",
    "Table",
    "TEST_SPLITS",
    "ZeroFilled",
    "protocol_indices",
    "evaluate",
    "write_tables",
    "expert_usage",
    "usage_over_training",
    "contingency",
    "specialisation",
    "trace_routing",
    "fit_sensitivity_codebook",
    "sensitivity_histograms",
]
