"""The embedded synthetic multi-vendor CMR dataset in the CMRxRecon2025 layout.

Real CMRxRecon2025 data cannot be downloaded on a fresh machine, so this generator writes files with
the same layout, keys, MATLAB v7.3 format and axis order, so that one reader serves both.

Model, per file (``y = M F S x + n``, reference eq. (1), with ``M`` = all ones here), by module:

* ``anatomy`` and ``heart``: **one 3-D body per subject** (mm, implicit shapes, smoothly deformed):
  torso with subcutaneous fat, breast tissue in some subjects, ribs, sternum, a vertebral column with
  marrow, discs and canal, lungs with vessels, mediastinum, descending aorta; under the diaphragm's
  domes the liver with hepatic veins, the stomach with an air-fluid level and the spleen; the heart
  with its long axis pointing left, anterior and inferior: the LV a truncated prolate ellipsoid in a
  myocardial wall, the RV crescent and outflow tract, both atria, mitral and tricuspid planes and
  leaflets, LVOT, aortic root, ascending aorta and arch, pulmonary trunk, caval and pulmonary veins,
  papillary muscles, trabeculae, epicardial fat, pericardium. Pathologies: scar (in a coronary
  territory), hypertrophy, dilated LV.
* ``planning``: short-axis stacks perpendicular to the LV long axis from base to apex, 2-, 3- and
  4-chamber planes through it at their standard orientations; ``render`` samples the body on a plane
  with each shape's analytic per-pixel coverage.
* ``motion``: a cardiac cycle (end-systole at 35 % of the RR interval, rapid filling, diastasis, atrial
  kick), EF 50-70 % (dilated 20-35 %) from radial and long-axis shortening (the base descends towards
  the fixed apex, the wall thickens at constant myocardial volume, torsion); breathing moves the
  diaphragm and the heart along the body's axis. Mapping frames are triggered in diastole.
* ``contrast``: tissue ``(PD, T1, T2)`` at 1.5, 3 or 5 T: bSSFP cine (bright, inflow-enhanced blood,
  bright fat; off-resonance bands at 5 T), MOLLI-like T1 and T2-prep mapping, LGE (inversion time
  nulling the post-contrast myocardium, scar bright), T1w, T2w, black blood.
* ``protocol``: vendors (field, receive array, matrix and FOV: the ``gpu`` size uses
  CMRxRecon2025-like matrices, readout 2x oversampled; ``cpu`` and ``smoke`` smaller matrices of the
  SAME field of view; SNR, noise correlation, fat appearance, breathing), centres, sizes, splits.
* ``acquisition``: 3-D loop-coil arrays, correlated noise, SVD compression to 10 virtual coils; **no
  inverse crime**: images rendered at ``render_factor`` times the matrix resolution, their k-space
  cropped to a slightly larger grid where the (band-limited) coil maps multiply them, then to the
  file's matrix. ``writer``: the tree, the manifest and the stamp; ``checks``: the view tests.

Output: ``MultiCoil/<Modality>/TrainingSet/FullSample/<Center>/<Vendor>/<Pnnn>/<name>.mat`` with key
``kspace`` (MATLAB ``(nx, ny, nc, nz, nt)``; no ``nt`` for LGE/T1w/T2w/black-blood), plus
``manifest.csv``. The same ``(size, seed)`` gives identical arrays.
"""

from __future__ import annotations

from moero.data.synthetic.acquisition import (
    COIL_BAND,
    NUM_VIRTUAL_COILS,
    array_coil_maps,
    centre_crop_kspace,
    centred_ifft,
    pixel_axis,
    pixel_grid,
    simulate_file,
)
from moero.data.synthetic.anatomy import render_image, subject_anatomy
from moero.data.synthetic.contrast import (
    AIR,
    AORTA,
    BLOOD_LABELS,
    BODY,
    BONE,
    BREAST,
    CSF,
    FAT,
    FLUID,
    LABEL_NAMES,
    LIVER,
    LUNG,
    LV,
    MARROW,
    MYO,
    NUM_LABELS,
    PAP,
    PERICARDIUM,
    RV,
    SCAR,
    SPINE,
    SPLEEN,
    T1MAP_TI,
    T2MAP_TE,
    VESSEL,
    tissue_signal,
)
from moero.data.synthetic.heart import TERRITORIES, heart_pose
from moero.data.synthetic.motion import cardiac_contraction, wall_offset
from moero.data.synthetic.planning import (
    VIEWS,
    axial_plane,
    base_centre,
    coronal_plane,
    heart_axes,
    plane_trace,
    sagittal_plane,
    slice_position,
    view_plane,
)
from moero.data.synthetic.protocol import (
    MODALITY_FOLDERS,
    PATHOLOGIES,
    SIZES,
    VENDORS,
    DatasetSize,
    FileSpec,
    Vendor,
    pixel_size_mm,
    plan_dataset,
    vendor_matrix,
)
from moero.data.synthetic.render import Plane
from moero.data.synthetic.writer import (
    GENERATOR_VERSION,
    MANIFEST_COLUMNS,
    STAMP_NAME,
    code_hash,
    ensure_synthetic,
    generate,
    remove_stale_folders,
)

__all__ = [
    "GENERATOR_VERSION",
    "Vendor",
    "VENDORS",
    "DatasetSize",
    "SIZES",
    "FileSpec",
    "plan_dataset",
    "simulate_file",
    "render_image",
    "array_coil_maps",
    "cardiac_contraction",
    "generate",
    "code_hash",
    "STAMP_NAME",
    "ensure_synthetic",
    # helpers of the gallery and the tests
    "COIL_BAND",
    "NUM_VIRTUAL_COILS",
    "centre_crop_kspace",
    "centred_ifft",
    "pixel_axis",
    "pixel_grid",
    "subject_anatomy",
    "TERRITORIES",
    "heart_pose",
    "AIR",
    "AORTA",
    "BLOOD_LABELS",
    "BODY",
    "BONE",
    "BREAST",
    "CSF",
    "FAT",
    "FLUID",
    "LABEL_NAMES",
    "LIVER",
    "LUNG",
    "LV",
    "MARROW",
    "MYO",
    "NUM_LABELS",
    "PAP",
    "PERICARDIUM",
    "RV",
    "SCAR",
    "SPINE",
    "SPLEEN",
    "T1MAP_TI",
    "T2MAP_TE",
    "VESSEL",
    "tissue_signal",
    "wall_offset",
    "VIEWS",
    "plane_trace",
    "axial_plane",
    "base_centre",
    "coronal_plane",
    "heart_axes",
    "sagittal_plane",
    "slice_position",
    "view_plane",
    "MODALITY_FOLDERS",
    "PATHOLOGIES",
    "pixel_size_mm",
    "vendor_matrix",
    "Plane",
    "MANIFEST_COLUMNS",
    "remove_stale_folders",
]
