"""Data layer: MATLAB v7.3 and fastMRI readers, twix raw data, the manifest, the synthetic dataset, slice
datasets and the balanced sampler (eq. (10)).

Each name below lives in the module named in its import; import from there inside the package.
"""
from __future__ import annotations

from moero.data.dataset import (
    SliceDataset,
    adjacent_frames,
    example_seed,
)
from moero.data.matfile import (
    MATLAB_HEADER_TEXT,
    complex_from_h5,
    complex_to_h5,
    h5_to_package,
    package_to_h5,
    read_mat73_header,
    write_mat73,
)
from moero.data.readers import (
    FULL_KEYS,
    MANIFEST_NAME,
    DataError,
    Volume,
    kspace_key,
    load_cmrxrecon,
    load_fastmri,
    read_kspace_window,
    read_manifest,
    volume_shape,
)
from moero.data.sampler import (
    RULES,
    BalancedSampler,
    balance_weights,
)
from moero.data.synthetic import (
    GENERATOR_VERSION,
    SIZES,
    STAMP_NAME,
    VENDORS,
    DatasetSize,
    FileSpec,
    Vendor,
    array_coil_maps,
    code_hash,
    ensure_synthetic,
    generate,
    plan_dataset,
    simulate_file,
)
from moero.data.twix import (
    GRE_SHA256,
    RawDataUnavailable,
    TwixScan,
    cache_root,
    example_gre_dat,
    read_twix,
)

__all__ = [
    "MATLAB_HEADER_TEXT",
    "write_mat73",
    "read_mat73_header",
    "h5_to_package",
    "package_to_h5",
    "complex_from_h5",
    "complex_to_h5",
    "DataError",
    "Volume",
    "FULL_KEYS",
    "load_cmrxrecon",
    "load_fastmri",
    "kspace_key",
    "read_kspace_window",
    "volume_shape",
    "read_manifest",
    "MANIFEST_NAME",
    "TwixScan",
    "read_twix",
    "example_gre_dat",
    "cache_root",
    "RawDataUnavailable",
    "GRE_SHA256",
    "GENERATOR_VERSION",
    "Vendor",
    "VENDORS",
    "DatasetSize",
    "SIZES",
    "FileSpec",
    "plan_dataset",
    "simulate_file",
    "array_coil_maps",
    "generate",
    "code_hash",
    "STAMP_NAME",
    "ensure_synthetic",
    "SliceDataset",
    "example_seed",
    "adjacent_frames",
    "BalancedSampler",
    "balance_weights",
    "RULES",
]
