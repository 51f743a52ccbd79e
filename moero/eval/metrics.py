"""Image quality metrics and the official CMRxRecon2025 scoring protocol.

Conventions (stated once; ``book/conventions.md`` explains them):

* :func:`ssim`, :func:`psnr`, :func:`nmse` compute what scikit-image's ``structural_similarity``,
  ``peak_signal_noise_ratio`` and ``normalized_root_mse(...)**2`` compute for one 2-D image, batched
  over leading axes, on CPU or GPU: a 7x7 *uniform* window, ``K1 = 0.01``, ``K2 = 0.03``, sample
  covariances (``use_sample_covariance=True``: ``N / (N - 1)`` with ``N = 49``), and the mean of the
  SSIM map over the pixels whose window lies inside the image (skimage crops ``(win - 1) // 2``
  pixels at each border), in float64. Argument order is ``(target, prediction)`` everywhere.
* ``data_range`` is a number or one value per image; ``None`` means the target's own maximum per
  image (the official protocol's choice after normalisation).
* :class:`SSIMLoss` is the differentiable training loss ``1 - SSIM`` (7x7 window, uniform or
  Gaussian), in the input's dtype.
* :func:`cmrxrecon_score` is the official CMRxRecon2025 protocol (``run4Ranking_2025.m`` of the
  challenge's MATLAB code, ``evaluation-2025/Evaluation.py`` and ``Val_Score2025.py``): magnitude
  images, the central two slices of every modality (LGE and T1rho included; all slices if fewer
  than 3; MATLAB rounding), frames by modality (every frame for Mapping and T1rho, one image for
  BlackBlood/T1w/T2w, else the first three), centre crop ``round(nx/3) x round(ny/2)`` where
  ``nx`` is the readout size (our ``H``) and ``ny`` the phase-encode size (our ``W``) *of the file as
  stored* (readout 2x oversampled: the region is 2/3 of the field of view by 1/2 of the phase FOV); an
  image cropped or padded for batching (``image_shape``) is scored on that same region, given the
  file's ``matrix`` (:func:`scored_region`), each 2-D image
  divided by its own 99.5th-percentile magnitude, PSNR/SSIM with ``data_range`` = the normalised
  target's maximum, NMSE ``||gt - pred||^2 / ||gt||^2``; mean per file, then per centre/vendor,
  and the official adjusted group means (:func:`official_group_scores`: per (Center, Manufacturer)
  and per disease). ``evaluation_py_order=True`` reproduces the argument order through which the
  official ``Val_Score2025.py`` calls ``Evaluation.calmetric`` (4-D files: the prediction's maximum
  sets the data range and ``||pred||^2`` the NMSE denominator); our tables use the target.
  :func:`split_aggregates` gives the total / rare / fresh columns of the paper's Tab. 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moero.physics.fft import centre_crop

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
    "scored_region",
    "center_crop",
    "normalize_percentile",
    "score_images",
    "select_protocol_images",
    "score_volume",
    "cmrxrecon_score",
    "split_aggregates",
    "group_means",
    "official_group_scores",
    "group_key_values",
    "SINGLE_IMAGE_MODALITIES",
    "ALL_FRAME_MODALITIES",
    "ALL_SLICE_MODALITIES",
]

K1, K2 = 0.01, 0.03
SINGLE_IMAGE_MODALITIES = frozenset({"blackblood", "t1w", "t2w"})  # no time axis: one image per slice
# every frame counts: run4Ranking_2025.m's ``isMapping || isT1rho``
ALL_FRAME_MODALITIES = frozenset({"mapping", "t1map", "t2map", "t2smap", "t1mappost", "t1rho"})
ALL_SLICE_MODALITIES: frozenset[str] = frozenset()  # none: the 2025 script takes the central two of every modality
CINE_LIKE_FRAMES = 3  # cine, LGE, flow, perfusion, ...: the first three frames


# ---------------------------------------------------------------------------- scikit-image metrics
def _as_images(target: torch.Tensor, prediction: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(target, torch.Tensor) or not isinstance(prediction, torch.Tensor):
        raise ValueError(f"{name}: target and prediction must be torch tensors")
    if target.shape != prediction.shape:
        raise ValueError(f"{name}: target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ")
    if target.ndim < 2:
        raise ValueError(f"{name}: images must be (..., H, W), got shape {tuple(target.shape)}")
    if target.is_complex() or prediction.is_complex():
        raise ValueError(f"{name}: images must be real (take the magnitude first)")
    return target, prediction


def _data_range(target: torch.Tensor, data_range: float | torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``data_range`` broadcast to the leading (per-image) shape of ``target``."""
    lead = target.shape[:-2]
    if data_range is None:
        rng = target.detach().to(dtype).amax(dim=(-2, -1))
    else:
        rng = torch.as_tensor(data_range, dtype=dtype, device=target.device)
        try:
            rng = rng.expand(lead) if rng.ndim <= len(lead) else rng.reshape(lead)
        except RuntimeError as err:
            raise ValueError(f"data_range of shape {tuple(rng.shape)} does not match images {tuple(lead)}") from err
    if bool((rng <= 0).any()):
        raise ValueError("data_range must be positive for every image")
    return rng


def _window(win_size: int, kind: str, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
    if kind == "uniform":
        w1 = torch.full((win_size,), 1.0 / win_size, dtype=dtype, device=device)
    elif kind == "gaussian":
        x = torch.arange(win_size, dtype=dtype, device=device) - (win_size - 1) / 2
        w1 = torch.exp(-(x**2) / (2 * sigma**2))
        w1 = w1 / w1.sum()
    else:
        raise ValueError(f"window must be 'uniform' or 'gaussian', got {kind!r}")
    return torch.outer(w1, w1).view(1, 1, win_size, win_size)


def ssim_map(
    target: torch.Tensor,
    prediction: torch.Tensor,
    data_range: torch.Tensor,
    win_size: int = 7,
    window: str = "uniform",
    sigma: float = 1.5,
) -> torch.Tensor:
    """SSIM map ``(..., H - win + 1, W - win + 1)`` over the pixels whose window lies inside the image.

    A "valid" convolution gives exactly skimage's map after its ``(win - 1) // 2`` border crop, so
    no padding mode matters. ``data_range`` has the leading shape of the images.
    """
    lead, (h, w) = target.shape[:-2], target.shape[-2:]
    if h < win_size or w < win_size:
        raise ValueError(f"images {h}x{w} are smaller than the {win_size}x{win_size} SSIM window")
    x = target.reshape(-1, 1, h, w)
    y = prediction.reshape(-1, 1, h, w)
    kernel = _window(win_size, window, sigma, x.dtype, x.device)
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y], dim=1).view(-1, 1, h, w), kernel)
    stats = stats.view(x.shape[0], 5, *stats.shape[-2:])
    ux, uy, uxx, uyy, uxy = stats.unbind(1)
    n = win_size * win_size
    cov_norm = n / (n - 1)  # skimage's use_sample_covariance=True (it keeps it for Gaussian weights too)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    r = data_range.reshape(-1, 1, 1).to(x.dtype)
    c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.view(*lead, *s.shape[-2:])


@torch.no_grad()
def ssim(
    target: torch.Tensor, prediction: torch.Tensor, data_range: float | torch.Tensor | None = None, win_size: int = 7
) -> torch.Tensor:
    """Per-image SSIM ``(...)`` of ``(..., H, W)`` images, as ``skimage.metrics.structural_similarity``."""
    target, prediction = _as_images(target, prediction, "ssim")
    x, y = target.double(), prediction.double()
    rng = _data_range(target, data_range, torch.float64)
    return ssim_map(x, y, rng, win_size).mean(dim=(-2, -1))


@torch.no_grad()
def psnr(
    target: torch.Tensor, prediction: torch.Tensor, data_range: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Per-image PSNR in dB, ``10 log10(data_range^2 / MSE)``, as ``skimage.metrics.peak_signal_noise_ratio``."""
    target, prediction = _as_images(target, prediction, "psnr")
    rng = _data_range(target, data_range, torch.float64)
    mse = (target.double() - prediction.double()).pow(2).mean(dim=(-2, -1))
    return 10 * torch.log10(rng**2 / mse)


@torch.no_grad()
def nmse(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Per-image ``||target - prediction||^2 / ||target||^2`` (complex images allowed)."""
    if target.shape != prediction.shape:
        raise ValueError(f"nmse: target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ")
    t, p = target.to(torch.complex128 if target.is_complex() else torch.float64), prediction.to(
        torch.complex128 if prediction.is_complex() else torch.float64
    )
    return (t - p).abs().pow(2).sum(dim=(-2, -1)) / t.abs().pow(2).sum(dim=(-2, -1))


class SSIMLoss(nn.Module):
    """Differentiable ``1 - mean SSIM`` (7x7 window, ``uniform`` as skimage or ``gaussian``).

    ``forward(prediction, target, data_range=None)``: images ``(B, H, W)`` or ``(B, 1, H, W)``;
    ``data_range`` per image (default: each target's maximum, detached).
    """

    def __init__(self, win_size: int = 7, window: str = "uniform", sigma: float = 1.5) -> None:
        super().__init__()
        _window(win_size, window, sigma, torch.float32, torch.device("cpu"))  # validate early
        self.win_size, self.window, self.sigma = win_size, window, sigma

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, data_range: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        target, prediction = _as_images(target, prediction, "SSIMLoss")
        rng = _data_range(target, data_range, prediction.dtype)
        smap = ssim_map(target, prediction, rng, self.win_size, self.window, self.sigma)
        return 1 - smap.mean()


# ---------------------------------------------------------------------------- official protocol
def matlab_round(x: float) -> int:
    """MATLAB's ``round`` (half away from zero), which the official scoring scripts use."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def _modality_key(modality: str | None) -> str:
    return str(modality or "").lower().replace("_", "").replace("-", "")


def central_slices(num_slices: int, modality: str | None = None) -> list[int]:
    """The official slice selection of ``run4Ranking_2025.m``, the same for every modality (LGE and T1rho
    included): all slices if fewer than 3, else the central two.

    MATLAB: ``(round(nz/2) - 1):round(nz/2)`` (1-based), i.e. 0-based ``round(nz/2) - 2`` and ``- 1``.
    ``modality`` is accepted for symmetry with :func:`selected_frames` and does not change the result.
    """
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    if num_slices < 3 or _modality_key(modality) in ALL_SLICE_MODALITIES:
        return list(range(num_slices))
    mid = matlab_round(num_slices / 2)
    return [mid - 2, mid - 1]


def selected_frames(modality: str, num_frames: int) -> list[int]:
    """Frames ``run4Ranking_2025.m`` scores: the single image of BlackBlood/T1w/T2w, every frame for
    Mapping (T1map/T2map/T2smap/T1mappost) and T1rho, else (cine, flow, LGE, perfusion, ...) the first 3
    (all if fewer)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    key = _modality_key(modality)
    if key in SINGLE_IMAGE_MODALITIES:
        return [0]
    if key in ALL_FRAME_MODALITIES:
        return list(range(num_frames))
    return list(range(min(CINE_LIKE_FRAMES, num_frames)))


def protocol_crop_size(h: int, w: int) -> tuple[int, int]:
    """``(round(nx/3), round(ny/2))`` with ``nx = H`` (readout, 2x oversampled) and ``ny = W`` (phase)."""
    return max(1, matlab_round(h / 3)), max(1, matlab_round(w / 2))


def scored_region(shape: Sequence[int], matrix: Sequence[int] | None = None) -> tuple[int, int]:
    """Size of the official scored region in images of ``shape`` ``(H, W)`` reconstructed from a file whose
    stored matrix is ``matrix`` ``(nx, ny)`` (readout 2x oversampled, phase encode; None: the images are at
    that matrix): ``protocol_crop_size(nx, ny)``. A centred crop or zero pad keeps index ``n // 2`` at the
    centre, so this region of the cropped image is the official region of the stored one, as long as it
    fits; where it does not (an image cropped below it) it is clipped to the image."""
    h, w = int(shape[-2]), int(shape[-1])
    nx, ny = (h, w) if matrix is None else (int(matrix[0]), int(matrix[1]))
    ch, cw = protocol_crop_size(nx, ny)
    return min(ch, h), min(cw, w)


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two axes to ``size`` around the FFT centre ``n // 2`` (start ``n // 2 - c // 2``).

    This is the official ``crop.m``: 1-based ``floor(n/2) + 1 + ceil(-c/2) : floor(n/2) + ceil(c/2)``.
    """
    return centre_crop(x, size)


def normalize_percentile(images: torch.Tensor, q: float = 99.5) -> torch.Tensor:
    """Divide each 2-D image by its own ``q``-th percentile magnitude (linear interpolation, as numpy)."""
    mag = images.abs().double() if images.is_complex() else images.double().abs()
    flat = mag.reshape(-1, mag.shape[-2] * mag.shape[-1])
    scale = torch.quantile(flat, q / 100.0, dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    return mag / scale.view(*mag.shape[:-2], 1, 1)


@torch.no_grad()
def score_images(target: torch.Tensor, prediction: torch.Tensor, crop: bool = True,
                 reference: str = "target",
                 matrix: Sequence[int] | Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """Per-image official metrics of magnitude images ``(N, H, W)``: crop, normalise, SSIM/PSNR/NMSE.

    ``matrix``: the stored ``(nx, ny)`` of the file the images come from (one pair, or one per image),
    which sets the scored region (:func:`scored_region`); None: the images are at their stored matrix.

    ``reference``: the image whose normalised maximum sets the data range and whose energy is the NMSE
    denominator, ``"target"`` (ours) or ``"prediction"`` (what ``Evaluation.calmetric`` does for 4-D
    files when ``Val_Score2025.py`` passes the ground truth first). Returns tensors ``(N,)`` under
    ``ssim``, ``psnr``, ``nmse``.
    """
    if reference not in ("target", "prediction"):
        raise ValueError(f"reference must be 'target' or 'prediction', got {reference!r}")
    if target.shape != prediction.shape:
        raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ")
    if crop and matrix is not None and len(matrix) and hasattr(matrix[0], "__len__"):
        per_image = [tuple(int(v) for v in m) for m in matrix]  # type: ignore[union-attr]
        if len(per_image) != target.shape[0]:
            raise ValueError(f"matrix: {len(per_image)} pairs for {target.shape[0]} images")
        if len(set(per_image)) > 1:  # regions differ: score each group of equal matrices
            out: dict[str, torch.Tensor] = {}
            for m in sorted(set(per_image)):
                idx = torch.tensor([i for i, q in enumerate(per_image) if q == m], device=target.device)
                part = score_images(target[idx], prediction[idx], True, reference, m)
                for k, v in part.items():
                    out.setdefault(k, torch.empty(target.shape[0], dtype=v.dtype, device=v.device))[idx] = v
            return out
        matrix = per_image[0]
    if crop:
        size = scored_region(target.shape, matrix)  # type: ignore[arg-type]
        target, prediction = center_crop(target, size), center_crop(prediction, size)
    gt, pred = normalize_percentile(target), normalize_percentile(prediction)
    if reference == "prediction":  # SSIM and the MSE are symmetric: only the range and the denominator move
        gt, pred = pred, gt
    rng = gt.amax(dim=(-2, -1))
    return {"ssim": ssim(gt, pred, rng), "psnr": psnr(gt, pred, rng), "nmse": nmse(gt, pred)}


def select_protocol_images(volume: torch.Tensor, modality: str) -> torch.Tensor:
    """The images of a magnitude volume ``(T, Z, H, W)`` (or ``(Z, H, W)`` without time) that count, ``(N, H, W)``.

    Order: frame-major, then slice. Complex volumes are reduced to their magnitude.
    """
    if volume.is_complex():
        volume = volume.abs()
    if volume.ndim == 3:
        volume = volume.unsqueeze(0)
    if volume.ndim != 4:
        raise ValueError(f"volume must be (T, Z, H, W) or (Z, H, W), got {tuple(volume.shape)}")
    frames = selected_frames(modality, volume.shape[0])
    slices = central_slices(volume.shape[1], modality)
    return volume[frames][:, slices].reshape(-1, *volume.shape[-2:])


def score_volume(target: torch.Tensor, prediction: torch.Tensor, modality: str,
                 evaluation_py_order: bool = False) -> dict[str, float]:
    """Official metrics of one file: the mean over its selected, cropped, normalised images.

    ``evaluation_py_order``: files that ``run4Ranking_2025.m`` saves as 4-D (more than one frame
    selected) take the prediction as the data-range / NMSE reference, as the official scripts end up
    doing (see the module doc); 3-D files keep the target.
    """
    if target.shape != prediction.shape:
        raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ")
    num_frames = 1 if target.ndim == 3 else target.shape[0]
    four_d = len(selected_frames(modality, num_frames)) > 1
    reference = "prediction" if evaluation_py_order and four_d else "target"
    scores = score_images(select_protocol_images(target, modality), select_protocol_images(prediction, modality),
                          reference=reference)
    out = {k: float(v.mean()) for k, v in scores.items()}
    out["images"] = int(scores["ssim"].numel())
    return out


def _mean_rows(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, float]:
    # a row without a metric (e.g. r_eff of a file read without masks) makes that mean NaN, not an error
    return {m: float(sum(float(r.get(m, math.nan)) for r in rows) / len(rows)) for m in metrics}


def cmrxrecon_score(
    volumes: Iterable[Mapping[str, Any]], group_keys: Sequence[str] = ("centre", "vendor"),
    evaluation_py_order: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Score volumes by the official CMRxRecon2025 protocol.

    Each item holds ``target`` and ``prediction`` (magnitude or complex, ``(T, Z, H, W)`` or
    ``(Z, H, W)``), ``modality`` and metadata (``file``, ``centre``, ``vendor``, ``split``,
    ``diseases``, ...). Returns ``{"files": one row per file, "groups": mean over files per (centre,
    vendor), "overall": [mean over all files], "official_groups": the adjusted means of
    ``Val_Score2025.py`` per (centre, vendor), "official_diseases": the same per disease}``; metric
    columns ``ssim``, ``psnr``, ``nmse``. ``evaluation_py_order``: see :func:`score_volume`.
    """
    files: list[dict[str, Any]] = []
    for i, item in enumerate(volumes):
        for key in ("target", "prediction", "modality"):
            if key not in item:
                raise ValueError(f"cmrxrecon_score: volume {i} ({item.get('file', '?')}) lacks key {key!r}")
        row = {k: v for k, v in item.items() if k not in ("target", "prediction")}
        row.update(score_volume(item["target"], item["prediction"], item["modality"], evaluation_py_order))
        files.append(row)
    if not files:
        raise ValueError("cmrxrecon_score: no volumes given")
    return {"files": files, **group_means(files, group_keys),
            "official_groups": official_group_scores(files, group_keys),
            "official_diseases": official_group_scores(files, ("disease",))}


def _diseases(row: Mapping[str, Any]) -> list[str]:
    """The patient's disease entries (``Disease1..4`` of the challenge sheet), spaces -> ``_``, commas
    stripped, as ``Val_Score2025.py`` (TaskR2) keys them."""
    value = row.get("diseases", row.get("disease"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    entries = [value] if isinstance(value, str) else list(value)
    return [str(e).strip().replace(" ", "_").replace(",", "") for e in entries if str(e).strip()]


def official_group_scores(
    file_rows: Sequence[Mapping[str, Any]],
    group_keys: Sequence[str] = ("centre", "vendor"),
    expected: Mapping[tuple[Any, ...], int] | None = None,
    metrics: Sequence[str] = ("ssim", "psnr", "nmse"),
) -> list[dict[str, Any]]:
    """The group scores of the official ``Val_Score2025.py``, one row per group (sorted).

    ``group_keys == ("disease",)`` groups by disease (TaskR2): a file counts once for each of its
    patient's diseases (:func:`_diseases`). Per group with ``n`` scored files of ``N`` expected
    (``expected[key]``, default ``n``): ``PSNR = sum / N`` and ``SSIM = sum / N`` (missing files count
    0), ``NMSE = mean * (2 - n / N)``. The scripts stop at the group level; a mean over groups, if
    wanted, is the caller's choice.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {key: [] for key in (expected or {})}
    for row in file_rows:
        for key in group_key_values(row, group_keys):
            groups.setdefault(key, []).append(row)
    out = []
    for key, rows in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        n = len(rows)
        total = n if expected is None else int(expected.get(key, n))
        if total < n:
            raise ValueError(f"official_group_scores: expected[{key!r}] = {total} < {n} scored files")
        row_out: dict[str, Any] = {**dict(zip(group_keys, key, strict=True)), "files": n, "expected": total}
        for m in metrics:
            values = [float(r[m]) for r in rows]
            if m == "nmse":  # a group whose files are all missing has no NMSE (the script would divide by 0)
                row_out[m] = sum(values) / n * (2 - n / total) if n else math.nan
            else:
                row_out[m] = sum(values) / max(total, 1)
        out.append(row_out)
    return out


def group_key_values(row: Mapping[str, Any], group_keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """The group keys a file row belongs to: one ``(centre, vendor, ...)`` tuple, or one per disease of its
    patient when grouping by ``("disease",)`` (TaskR2)."""
    if tuple(group_keys) == ("disease",):
        return [(d,) for d in _diseases(row)]
    return [tuple(row.get(k) for k in group_keys)]


def group_means(
    file_rows: Sequence[Mapping[str, Any]],
    group_keys: Sequence[str] = ("centre", "vendor"),
    metrics: Sequence[str] = ("ssim", "psnr", "nmse"),
) -> dict[str, list[dict[str, Any]]]:
    """Means of per-file rows per group (``groups``, sorted) and over all files (``overall``)."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in file_rows:
        groups.setdefault(tuple(row.get(k) for k in group_keys), []).append(row)
    group_rows = [
        {**dict(zip(group_keys, key, strict=True)), "files": len(rows), **_mean_rows(rows, metrics)}
        for key, rows in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0]))
    ]
    overall = [{"files": len(file_rows), **_mean_rows(file_rows, metrics)}] if file_rows else []
    return {"groups": group_rows, "overall": overall}


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() not in ("", "0", "false", "none", "no", "normal", "healthy", "nan")


def _is_rare(row: Mapping[str, Any]) -> bool:
    return row.get("split") == "rare" or _truthy(row.get("rare", "")) or _truthy(row.get("pathology", ""))


def _is_fresh(row: Mapping[str, Any]) -> bool:
    return row.get("split") == "fresh" or _truthy(row.get("fresh", ""))


DEFAULT_SPLITS: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "total": lambda row: True,
    "rare": _is_rare,
    "fresh": _is_fresh,
}


def split_aggregates(
    file_rows: Sequence[Mapping[str, Any]],
    splits: Mapping[str, Callable[[Mapping[str, Any]], bool]] | None = None,
    metrics: Sequence[str] = ("ssim", "psnr", "nmse"),
) -> dict[str, dict[str, float]]:
    """Mean per-file metrics over the paper's Tab. 2 splits: ``total`` (every file), ``rare``
    (pathology cases: ``split == "rare"`` or a non-empty ``pathology``/``rare`` field) and ``fresh``
    (unseen centres: ``split == "fresh"`` or a true ``fresh`` field). ``splits`` replaces the
    selectors. A split without files maps to NaN metrics and ``files = 0``.
    """
    out: dict[str, dict[str, float]] = {}
    for name, keep in (splits or DEFAULT_SPLITS).items():
        rows = [r for r in file_rows if keep(r)]
        out[name] = {"files": len(rows), **(_mean_rows(rows, metrics) if rows else dict.fromkeys(metrics, math.nan))}
    return out
