"""Checks that the synthetic views are views: SAX against 4-chamber similarity, cine blood-to-myocardium contrast.

``view_similarity`` is the normalised cross-correlation (Pearson, over the readout's central half) of
a subject's cine short-axis centre slice with its 4-chamber image, both end-diastolic RSS magnitudes
(real views are different planes through one body: low); ``blood_myocardium_ratio`` fits the
RSS image inside the LV's epicardium as blood plus myocardium (coverage maps rendered from the anatomy
and low-passed as the image was) and returns the blood's intensity over the myocardium's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from moero.data.readers import load_cmrxrecon, read_manifest
from moero.data.synthetic.acquisition import centre_crop_kspace, centred_ifft, pixel_axis, simulate_file
from moero.data.synthetic.anatomy import render_image, subject_anatomy
from moero.data.synthetic.contrast import LV, MYO, NUM_LABELS, PAP, SCAR
from moero.data.synthetic.planning import slice_position, view_plane
from moero.data.synthetic.protocol import SIZES, VENDORS, FileSpec, pixel_size_mm, plan_dataset
from moero.physics.fft import ifft2c


def rss_image(kspace: torch.Tensor) -> torch.Tensor:
    """RSS magnitude ``(H, W)`` of one slice's coil k-space ``(C, H, W)``."""
    return ifft2c(kspace).abs().pow(2).sum(0).sqrt()


def ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised cross-correlation (Pearson) of two same-shape images over the readout's central half."""
    h = a.shape[0]
    a, b = (x[h // 4 : h - h // 4].flatten().double() for x in (a, b))
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def _ed_image(spec: FileSpec, seed: int, render_factor: int, slice_index: int) -> torch.Tensor:
    k = simulate_file(dataclasses.replace(spec, frames=1), seed, render_factor)
    return rss_image(k[0, slice_index])


def view_similarity(size: str, seed: int = 0, root: str | Path | None = None) -> list[float]:
    """NCC of cine SAX (centre slice) and 4-chamber end-diastolic RSS images of every subject of ``size``
    with a 4-chamber cine: read from the tree at ``root`` when given, else simulated (first frame only)."""
    out = []
    if root is not None:
        rows = read_manifest(root)
        for row in rows:
            if row["name"] != "cine_lax_4ch":
                continue
            sax_row = next(r for r in rows if r["subject"] == row["subject"] and r["name"] == "cine_sax")
            sax = load_cmrxrecon(Path(root) / sax_row["file"]).kspace
            lax = load_cmrxrecon(Path(root) / row["file"]).kspace
            out.append(ncc(rss_image(sax[0, sax.shape[1] // 2]), rss_image(lax[0, 0])))
        return out
    specs = plan_dataset(size, seed)
    factor = SIZES[size].render_factor
    for spec in specs:
        if spec.name != "cine_lax_4ch":
            continue
        sax = next(s for s in specs if s.subject_index == spec.subject_index and s.name == "cine_sax")
        out.append(ncc(_ed_image(sax, seed, factor, sax.slices // 2), _ed_image(spec, seed, factor, 0)))
    return out


def tissue_masks(spec: FileSpec, seed: int, slice_index: int, render_factor: int = 2,
                 contraction: float = 0.0) -> dict[str, torch.Tensor]:
    """Coverage ``(readout, phase)`` of the LV blood pool and of the myocardium (papillary muscles and scar
    included) in one slice of ``spec`` at end-diastole, rendered at ``render_factor`` times the matrix and
    low-passed to the file's matrix exactly as the images are (the k-space crop)."""
    anat = subject_anatomy(seed, spec.subject_index, spec.pathology)
    nx, ny, f = spec.readout, spec.phase, render_factor
    pixel = pixel_size_mm(VENDORS[spec.vendor], nx)
    plane = view_plane(anat, spec.view, slice_position(spec.view, slice_index, spec.slices))
    xs, ys = pixel_axis(f * nx, pixel / f), pixel_axis(f * ny, pixel / f)
    out = {}
    for name, labels in (("blood", (LV,)), ("myocardium", (MYO, PAP, SCAR))):
        values = np.zeros(NUM_LABELS, np.float32)
        values[list(labels)] = 1.0
        fine = render_image(anat, plane, contraction, 0.0, spec.pathology, values, xs, ys)
        low = centred_ifft(centre_crop_kspace(fine.to(torch.complex64), nx, ny)) / f
        out[name] = low.real
    return out


def blood_myocardium_ratio(spec: FileSpec, seed: int = 0, render_factor: int = 2,
                           kspace: torch.Tensor | None = None) -> float:
    """LV blood pool over myocardium intensity in the centre slice of a cine SAX file at end-diastole: the
    least-squares fit ``image = a blood + b myocardium`` over the pixels inside the LV's epicardium (the
    coverage maps low-passed as the image was, so partial volume is accounted for at any matrix)."""
    z = spec.slices // 2
    image = rss_image(kspace[0, z]) if kspace is not None else _ed_image(spec, seed, render_factor, z)
    cov = tissue_masks(spec, seed, z, render_factor)
    inside = (cov["blood"] + cov["myocardium"]) > 0.9
    if int(inside.sum()) < 4:
        return float("nan")
    design = torch.stack([cov["blood"][inside], cov["myocardium"][inside]], 1).double()
    fit = torch.linalg.lstsq(design, image[inside].double()[:, None]).solution[:, 0]
    return float(fit[0] / fit[1]) if float(fit[1]) > 0 else float("nan")
