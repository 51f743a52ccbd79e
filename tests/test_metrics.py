"""Metrics against scikit-image, the SSIM loss, and the official CMRxRecon2025 protocol on hand-built volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from moero.eval.metrics import (
    SSIMLoss,
    center_crop,
    central_slices,
    cmrxrecon_score,
    matlab_round,
    nmse,
    normalize_percentile,
    official_group_scores,
    protocol_crop_size,
    psnr,
    score_images,
    score_volume,
    scored_region,
    select_protocol_images,
    selected_frames,
    split_aggregates,
    ssim,
)
from moero.physics.phantom import shepp_logan


def _pairs():
    rng = np.random.default_rng(0)
    a = rng.random((3, 33, 47))
    yield "random", a, a + 0.2 * rng.standard_normal(a.shape)
    ph = shepp_logan(64, 52).abs().numpy().astype(np.float64)
    yield "phantom", ph[None], (ph + 0.05 * rng.standard_normal(ph.shape) + 0.1 * np.roll(ph, 2, axis=1))[None]


@pytest.mark.parametrize("name", ["random", "phantom"])
def test_ssim_psnr_nmse_equal_scikit_image(name):
    _, gt, pred = next(p for p in _pairs() if p[0] == name)
    for data_range in (None, 2.5):
        got_ssim = ssim(torch.tensor(gt), torch.tensor(pred), data_range)
        got_psnr = psnr(torch.tensor(gt), torch.tensor(pred), data_range)
        got_nmse = nmse(torch.tensor(gt), torch.tensor(pred))
        for i in range(gt.shape[0]):
            rng = gt[i].max() if data_range is None else data_range
            assert abs(float(got_ssim[i]) - structural_similarity(gt[i], pred[i], data_range=rng)) < 1e-4
            assert abs(float(got_psnr[i]) - peak_signal_noise_ratio(gt[i], pred[i], data_range=rng)) < 1e-4
            want = np.sum((gt[i] - pred[i]) ** 2) / np.sum(gt[i] ** 2)
            assert abs(float(got_nmse[i]) - want) < 1e-8


def test_ssim_float32_input_and_per_image_range_match_scikit_image():
    rng = np.random.default_rng(3)
    gt = rng.random((2, 20, 30)).astype(np.float32)
    pred = (gt + 0.3 * rng.random(gt.shape)).astype(np.float32)
    ranges = torch.tensor([1.0, 3.0])
    got = ssim(torch.from_numpy(gt), torch.from_numpy(pred), ranges)
    for i in range(2):
        want = structural_similarity(gt[i], pred[i], data_range=float(ranges[i]))
        assert abs(float(got[i]) - want) < 1e-4


def test_ssim_loss_uniform_equals_one_minus_ssim_and_has_gradients():
    rng = np.random.default_rng(1)
    gt = torch.tensor(rng.random((2, 24, 24)), dtype=torch.float32)
    pred = (gt + 0.1 * torch.tensor(rng.standard_normal((2, 24, 24)), dtype=torch.float32)).requires_grad_()
    loss = SSIMLoss()(pred, gt, torch.tensor([1.0, 1.0]))
    want = 1 - ssim(gt, pred.detach(), 1.0).mean()
    assert abs(loss.item() - float(want)) < 1e-5
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    gauss = SSIMLoss(window="gaussian")(pred, gt)
    assert 0 < gauss.item() < 1 and abs(gauss.item() - loss.item()) > 1e-6
    assert float(SSIMLoss()(gt, gt)) == pytest.approx(0.0, abs=1e-6)


def test_ssim_loss_gaussian_window_equals_scikit_image_gaussian_weights():
    """The Gaussian window (sigma 1.5, Wang et al. 2004) is scikit-image's ``gaussian_weights=True``: with its
    11-tap width (truncate 3.5) the loss is exactly ``1 - structural_similarity`` with ``sigma=1.5``."""
    rng = np.random.default_rng(2)
    ph = shepp_logan(64, 52).abs().numpy().astype(np.float64)
    gt = np.stack([ph, rng.random((64, 52))])
    pred = gt + 0.05 * rng.standard_normal(gt.shape) + 0.1 * np.roll(gt, 2, axis=-1)
    loss = SSIMLoss(win_size=11, window="gaussian")(torch.tensor(pred), torch.tensor(gt))
    want = [structural_similarity(gt[i], pred[i], data_range=gt[i].max(), gaussian_weights=True, sigma=1.5)
            for i in range(2)]
    assert abs(loss.item() - (1 - float(np.mean(want)))) < 1e-8
    # the 7x7 Gaussian loss is the same law truncated: close to, but not, the uniform-window loss
    seven = SSIMLoss(window="gaussian")(torch.tensor(pred), torch.tensor(gt)).item()
    assert seven != pytest.approx(SSIMLoss()(torch.tensor(pred), torch.tensor(gt)).item(), abs=1e-4)


def test_bad_inputs_name_the_parameter():
    x = torch.rand(8, 8)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=0.0)
    with pytest.raises(ValueError, match="differ"):
        psnr(x, torch.rand(8, 9))
    with pytest.raises(ValueError, match="window"):
        SSIMLoss(window="box")
    with pytest.raises(ValueError, match="win_size"):
        SSIMLoss(win_size=6)
    with pytest.raises(ValueError, match="smaller"):
        ssim(torch.rand(5, 5), torch.rand(5, 5), 1.0)


def test_protocol_selection_rules():
    assert central_slices(1) == [0] and central_slices(2) == [0, 1]
    assert central_slices(3) == [0, 1]  # MATLAB round(1.5) = 2 -> slices 1:2 (1-based)
    assert central_slices(10) == [3, 4] and central_slices(11) == [4, 5]
    assert selected_frames("Cine", 12) == [0, 1, 2]
    assert selected_frames("LGE", 2) == [0, 1]
    assert selected_frames("Mapping", 9) == list(range(9))
    assert selected_frames("T1rho", 4) == [0, 1, 2, 3]  # run4Ranking_2025.m: isMapping || isT1rho -> all frames
    assert central_slices(6, "T1rho") == [1, 2] and central_slices(5, "LGE") == [1, 2]  # every modality
    assert selected_frames("BlackBlood", 1) == [0] and selected_frames("T2w", 3) == [0]
    assert matlab_round(2.5) == 3 and matlab_round(3.5) == 4 and matlab_round(-2.5) == -3
    # nx = H = readout (2x oversampled), ny = W = phase encoding
    assert protocol_crop_size(512, 246) == (171, 123)
    assert protocol_crop_size(7, 5) == (2, 3)  # round(7/3) = 2, round(2.5) = 3 (half away from zero)


def test_center_crop_keeps_the_fft_centre():
    x = torch.arange(7 * 6).reshape(7, 6)
    c = center_crop(x, (3, 2))
    # start = n//2 - c//2: rows 3-1 = 2..4, columns 3-1 = 2..3
    assert torch.equal(c, x[2:5, 2:4])
    c = center_crop(x, (2, 3))  # rows 3-1 = 2..3, columns 3-1 = 2..4
    assert torch.equal(c, x[2:4, 2:5])
    with pytest.raises(ValueError, match="crop size"):
        center_crop(x, (8, 2))


def test_protocol_selects_frames_and_slices_of_a_hand_built_volume():
    # value = 100 * frame + slice: the selection can be read off the images
    t, z, h, w = 5, 6, 9, 8
    vol = (100 * torch.arange(t).view(t, 1, 1, 1) + torch.arange(z).view(1, z, 1, 1)).float().expand(t, z, h, w)
    cine = select_protocol_images(vol, "Cine")[:, 0, 0].tolist()
    assert cine == [1, 2, 101, 102, 201, 202]  # frames 0-2; MATLAB slices round(6/2)-1 : round(6/2) = 2:3
    mapping = select_protocol_images(vol, "Mapping")[:, 0, 0].tolist()
    assert mapping == [f * 100 + s for f in range(5) for s in (1, 2)]
    lge = select_protocol_images(vol, "LGE")[:, 0, 0].tolist()
    assert lge == [f * 100 + s for f in range(3) for s in (1, 2)]
    t1rho = select_protocol_images(vol, "T1rho")[:, 0, 0].tolist()
    assert t1rho == [f * 100 + s for f in range(5) for s in (1, 2)]
    bb = select_protocol_images(vol[:1, :2], "BlackBlood")[:, 0, 0].tolist()
    assert bb == [0, 1]
    assert select_protocol_images(vol[0], "T1w").shape == (2, h, w)  # (Z, H, W) without time


def test_score_volume_crops_normalises_and_ignores_unselected_images():
    gen = torch.Generator().manual_seed(0)
    t, z, h, w = 4, 5, 30, 28
    gt = torch.rand(t, z, h, w, generator=gen) + 0.5
    pred = gt.clone()
    # damage outside the scored region: frame 3 (cine scores 0-2), slice 0 and the border
    pred[3] += 5
    pred[:, 0] += 5
    ch, cw = protocol_crop_size(h, w)
    top, left = h // 2 - ch // 2, w // 2 - cw // 2
    border = torch.ones(h, w, dtype=torch.bool)
    border[top : top + ch, left : left + cw] = False
    pred[:, :, border] = 0
    perfect = score_volume(gt, 3.0 * pred, "Cine")  # a global scale vanishes by the percentile normalisation
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["nmse"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["psnr"] > 100 and perfect["images"] == 6  # float rounding of the scale only
    mapping = score_volume(gt, pred, "Mapping")  # now frame 3 counts
    assert mapping["ssim"] < 0.999 and mapping["images"] == 8


def test_score_images_use_normalised_target_max_as_data_range():
    gen = torch.Generator().manual_seed(1)
    gt = torch.rand(1, 1, 36, 30, generator=gen)
    pred = gt + 0.05 * torch.randn(gt.shape, generator=gen)
    got = score_volume(gt, pred, "BlackBlood")
    size = protocol_crop_size(36, 30)
    g = normalize_percentile(center_crop(gt[0, 0], size)).numpy()
    p = normalize_percentile(center_crop(pred[0, 0], size)).numpy()
    assert got["ssim"] == pytest.approx(structural_similarity(g, p, data_range=g.max()), abs=1e-4)
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=g.max()), abs=1e-4)
    assert np.percentile(g, 99.5) == pytest.approx(1.0)


def test_cmrxrecon_score_means_per_file_then_per_group_and_splits():
    gen = torch.Generator().manual_seed(2)
    items = []
    for i, (centre, vendor, split) in enumerate(
        [("C1", "V1", "test"), ("C1", "V1", "rare"), ("C2", "V2", "fresh"), ("C2", "V2", "test")]
    ):
        gt = torch.rand(3, 2, 24, 21, generator=gen) + 0.2
        pred = gt + (0.02 * (i + 1)) * torch.randn(gt.shape, generator=gen)
        items.append({"file": f"f{i}.mat", "modality": "Cine", "centre": centre, "vendor": vendor, "split": split,
                      "target": gt, "prediction": pred})
    out = cmrxrecon_score(items)
    files = out["files"]
    assert [f["file"] for f in files] == ["f0.mat", "f1.mat", "f2.mat", "f3.mat"]
    assert files[0]["ssim"] > files[3]["ssim"]  # more noise, lower SSIM
    g1 = next(g for g in out["groups"] if g["centre"] == "C1")
    assert g1["ssim"] == pytest.approx((files[0]["ssim"] + files[1]["ssim"]) / 2) and g1["files"] == 2
    assert out["overall"][0]["psnr"] == pytest.approx(sum(f["psnr"] for f in files) / 4)
    splits = split_aggregates(files)
    assert splits["total"]["files"] == 4 and splits["rare"]["files"] == 1 and splits["fresh"]["files"] == 1
    assert splits["rare"]["ssim"] == pytest.approx(files[1]["ssim"])
    assert splits["fresh"]["nmse"] == pytest.approx(files[2]["nmse"])
    empty = split_aggregates(files[:1])
    assert empty["rare"]["files"] == 0 and math.isnan(empty["rare"]["ssim"])
    with pytest.raises(ValueError, match="modality"):
        cmrxrecon_score([{"file": "x", "target": gt, "prediction": gt}])


def _run4ranking_2025_selection(filetype: str, sz: int, t: int) -> tuple[list[int], list[int]]:
    """A literal transcription of the selection rules of run4Ranking_2025.m (1-based, MATLAB round and
    case-sensitive ``contains``); returns (sliceToUse, timeFrameToUse)."""
    def contains(text: str, pattern: str) -> bool:
        return pattern in text

    def matlab_round_half_away(x: float) -> int:
        return int(np.sign(x) * np.floor(abs(x) + 0.5))

    isBlackBlood = contains(filetype, "blackblood") or contains(filetype, "T1w") or contains(filetype, "T2w")  # noqa: N806
    if isBlackBlood:
        t = 1
    isMapping = any(contains(filetype, k) for k in ("T1map", "T2map", "T2smap", "T1mappost"))  # noqa: N806
    isT1rho = contains(filetype, "T1rho")  # noqa: N806
    if sz < 3:
        sliceToUse = list(range(1, sz + 1))  # noqa: N806
    else:
        center = matlab_round_half_away(sz / 2)
        sliceToUse = list(range(center - 1, center + 1))  # noqa: N806
    if isBlackBlood or t == 1:
        timeFrameToUse = [1]  # noqa: N806
    elif isMapping or isT1rho:
        timeFrameToUse = list(range(1, t + 1))  # noqa: N806
    else:
        timeFrameToUse = list(range(1, min(3, t) + 1))  # noqa: N806
    return sliceToUse, timeFrameToUse


@pytest.mark.parametrize(("filetype", "modality"), [("LGE", "LGE"), ("T1rho", "T1rho"), ("cine_sax", "Cine"),
                                                    ("T1map", "Mapping"), ("T2w", "T2w")])
@pytest.mark.parametrize("sz", [1, 2, 5, 6, 9])
def test_protocol_equals_a_transcription_of_run4ranking_2025(filetype, modality, sz):
    gen = torch.Generator().manual_seed(sz)
    t = 7
    gt = torch.rand(t, sz, 24, 20, generator=gen) + 0.2
    pred = gt + 0.05 * torch.randn(gt.shape, generator=gen)
    if modality == "T2w":
        gt, pred = gt[0], pred[0]  # (Z, H, W): no time axis
    got = score_volume(gt, pred, modality)
    slices, frames = _run4ranking_2025_selection(filetype, sz, t)
    vol_gt, vol_pred = (v if v.ndim == 4 else v.unsqueeze(0) for v in (gt, pred))
    pick = [(f - 1, s - 1) for f in frames for s in slices]  # MATLAB indices -> 0-based
    sel_gt = torch.stack([vol_gt[f, s] for f, s in pick])
    sel_pred = torch.stack([vol_pred[f, s] for f, s in pick])
    want = {k: float(v.mean()) for k, v in score_images(sel_gt, sel_pred).items()}
    assert got["images"] == len(pick)
    for key in ("ssim", "psnr", "nmse"):
        assert got[key] == pytest.approx(want[key], rel=1e-12)


def test_evaluation_py_order_moves_the_reference_of_4d_files_only():
    gen = torch.Generator().manual_seed(6)
    gt = torch.rand(3, 2, 30, 24, generator=gen) + 0.2
    pred = gt + 0.1 * torch.randn(gt.shape, generator=gen)
    ours, official = score_volume(gt, pred, "Cine"), score_volume(gt, pred, "Cine", evaluation_py_order=True)
    sel_gt, sel_pred = select_protocol_images(gt, "Cine"), select_protocol_images(pred, "Cine")
    swapped = {k: float(v.mean()) for k, v in score_images(sel_pred, sel_gt).items()}
    assert official["nmse"] == pytest.approx(swapped["nmse"]) and official["psnr"] == pytest.approx(swapped["psnr"])
    assert official["nmse"] != pytest.approx(ours["nmse"])
    single = score_volume(gt[0], pred[0], "T1w")  # a 3-D file: the ground truth sets the range either way
    assert score_volume(gt[0], pred[0], "T1w", evaluation_py_order=True) == single


def test_official_group_scores_adjust_for_missing_files_and_count_diseases():
    rows = [{"centre": "C1", "vendor": "V", "ssim": 0.8, "psnr": 30.0, "nmse": 0.1, "diseases": ["HCM", "Old MI"]},
            {"centre": "C1", "vendor": "V", "ssim": 0.6, "psnr": 20.0, "nmse": 0.3, "diseases": ["HCM"]},
            {"centre": "C2", "vendor": "V", "ssim": 0.9, "psnr": 40.0, "nmse": 0.2, "diseases": []}]
    groups = official_group_scores(rows, expected={("C1", "V"): 4})
    c1 = next(g for g in groups if g["centre"] == "C1")
    assert c1["ssim"] == pytest.approx(1.4 / 4) and c1["psnr"] == pytest.approx(50.0 / 4)
    assert c1["nmse"] == pytest.approx(0.2 * (2 - 2 / 4))
    c2 = next(g for g in groups if g["centre"] == "C2")
    assert c2["ssim"] == pytest.approx(0.9) and c2["nmse"] == pytest.approx(0.2)  # nothing missing
    diseases = {g["disease"]: g for g in official_group_scores(rows, ("disease",))}
    assert set(diseases) == {"HCM", "Old_MI"} and diseases["HCM"]["files"] == 2
    assert diseases["Old_MI"]["psnr"] == pytest.approx(30.0)
    with pytest.raises(ValueError, match="expected"):
        official_group_scores(rows, expected={("C1", "V"): 1})


def test_pathology_column_marks_rare_files():
    rows = [{"ssim": 0.5, "psnr": 1.0, "nmse": 0.1, "pathology": "scar"},
            {"ssim": 0.9, "psnr": 2.0, "nmse": 0.2, "pathology": "none"}]
    assert split_aggregates(rows)["rare"]["ssim"] == 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_metrics_on_gpu_equal_cpu():
    gen = torch.Generator().manual_seed(4)
    gt, pred = torch.rand(2, 32, 32, generator=gen), torch.rand(2, 32, 32, generator=gen)
    assert torch.allclose(ssim(gt.cuda(), pred.cuda(), 1.0).cpu(), ssim(gt, pred, 1.0), atol=1e-10)
    assert torch.allclose(psnr(gt.cuda(), pred.cuda(), 1.0).cpu(), psnr(gt, pred, 1.0), atol=1e-10)


def _run4ranking_2025_crop(img: np.ndarray, nx_ny: tuple[int, int]) -> np.ndarray:
    """A literal transcription of the scored region of run4Ranking_2025.m on a stored image (readout 2x
    oversampled): ``crop(img, round(nx/3), round(ny/2))`` with crop.m's 1-based indices
    ``floor(n/2) + 1 + ceil(-c/2) : floor(n/2) + ceil(c/2)``."""
    def matlab_round_half_away(x: float) -> int:
        return int(np.sign(x) * np.floor(abs(x) + 0.5))

    nx, ny = nx_ny
    cx, cy = matlab_round_half_away(nx / 3), matlab_round_half_away(ny / 2)
    rows = range(math.floor(nx / 2) + 1 + math.ceil(-cx / 2), math.floor(nx / 2) + math.ceil(cx / 2) + 1)
    cols = range(math.floor(ny / 2) + 1 + math.ceil(-cy / 2), math.floor(ny / 2) + math.ceil(cy / 2) + 1)
    return img[np.ix_([r - 1 for r in rows], [c - 1 for c in cols])]


@pytest.mark.parametrize(("stored", "shape"), [((80, 38), (40, 40)), ((128, 77), (64, 64)), ((96, 64), (96, 64)),
                                               ((90, 51), (64, 80))])
def test_scored_region_is_the_official_one_after_image_shape(stored, shape):
    """Images cropped / padded to ``image_shape`` for batching (as SliceDataset does, centred on n // 2) and
    scored with their file's stored matrix equal the official scores of the stored images; without the
    matrix the region would be 1/3 of the already de-oversampled readout (issue 24)."""
    from moero.data.dataset import _crop_or_pad

    gen = torch.Generator().manual_seed(stored[0])
    gt = torch.rand(2, *stored, generator=gen, dtype=torch.float64) + 0.2
    pred = gt + 0.05 * torch.randn(gt.shape, generator=gen, dtype=torch.float64)
    official_gt = torch.stack([torch.from_numpy(_run4ranking_2025_crop(g.numpy(), stored)) for g in gt])
    official_pred = torch.stack([torch.from_numpy(_run4ranking_2025_crop(p.numpy(), stored)) for p in pred])
    want = score_images(official_gt, official_pred, crop=False)
    small_gt, small_pred = _crop_or_pad(gt, shape), _crop_or_pad(pred, shape)
    got = score_images(small_gt, small_pred, matrix=stored)
    for key in ("ssim", "psnr", "nmse"):
        assert torch.allclose(got[key], want[key], rtol=1e-12), key
    per_image = score_images(small_gt, small_pred, matrix=[stored, stored])
    assert torch.equal(per_image["ssim"], got["ssim"])
    assert scored_region(shape, stored) == official_gt.shape[-2:]
    if tuple(shape) != tuple(stored):
        assert not torch.allclose(score_images(small_gt, small_pred)["ssim"], want["ssim"])
    else:
        assert torch.equal(score_images(gt, pred)["ssim"], got["ssim"])  # at the stored matrix: as before


def test_scored_region_per_image_matrices_and_clipping():
    gen = torch.Generator().manual_seed(3)
    gt = torch.rand(3, 40, 40, generator=gen, dtype=torch.float64) + 0.2
    pred = gt + 0.05 * torch.randn(gt.shape, generator=gen, dtype=torch.float64)
    mixed = score_images(gt, pred, matrix=[(80, 38), (60, 30), (80, 38)])
    for i, m in enumerate([(80, 38), (60, 30), (80, 38)]):
        alone = score_images(gt[i : i + 1], pred[i : i + 1], matrix=m)
        assert mixed["ssim"][i] == alone["ssim"][0] and mixed["nmse"][i] == alone["nmse"][0]
    assert scored_region((40, 40), (200, 100)) == (40, 40)  # larger than the image: clipped
    with pytest.raises(ValueError, match="pairs"):
        score_images(gt, pred, matrix=[(80, 38)] * 2)
