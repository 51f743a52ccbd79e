"""Centred FFT, SENSE operators (eq. (1)), coil maps (ESPIRiT, low-resolution) and CG-SENSE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moero.physics.coils import calibration_region, espirit_maps, estimate_maps_lowres
from moero.physics.fft import fft2c, ifft2c
from moero.physics.masks import make_mask
from moero.physics.phantom import coil_maps, shepp_logan
from moero.physics.recon import cg_sense
from moero.physics.sense import (
    SenseOperator,
    apply_mask,
    normalize_maps,
    rss,
    sense_adjoint,
    sense_forward,
    sense_normal,
    zero_filled,
)

SIZES = [(16, 12), (15, 13), (16, 13), (33, 20)]


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))


def _inner(a: torch.Tensor, b: torch.Tensor) -> complex:
    return complex((a.conj().to(torch.complex128) * b.to(torch.complex128)).sum())


# ----------------------------------------------------------------------------------------------- FFT
@pytest.mark.parametrize("h,w", SIZES)
def test_fft2c_matches_numpy_and_inverts(h: int, w: int) -> None:
    x = _randn(3, h, w)
    shifted = np.fft.ifftshift(x.numpy(), axes=(-2, -1))
    expected = np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), expected, atol=1e-5)
    expected_inv = np.fft.fftshift(np.fft.ifft2(shifted, norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(ifft2c(x).numpy(), expected_inv, atol=1e-5)
    torch.testing.assert_close(ifft2c(fft2c(x)), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("h,w", SIZES)
def test_parseval(h: int, w: int) -> None:
    x = _randn(2, 4, h, w, seed=1)
    torch.testing.assert_close(fft2c(x).norm(), x.norm(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("h,w", SIZES)
def test_centred_delta_has_flat_real_spectrum(h: int, w: int) -> None:
    delta = torch.zeros(h, w, dtype=torch.complex64)
    delta[h // 2, w // 2] = 1
    spectrum = fft2c(delta)
    flat = torch.full((h, w), 1 / np.sqrt(h * w), dtype=torch.complex64)
    torch.testing.assert_close(spectrum, flat, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------ SENSE operators
@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_sense_matches_reference_composition(h: int, w: int, masked: bool) -> None:
    image, maps = _randn(2, h, w, seed=2), _randn(2, 4, h, w, seed=3)
    mask = (torch.rand(2, h, w, generator=torch.Generator().manual_seed(4)) > 0.5) if masked else None
    m = mask.unsqueeze(-3) if masked else 1
    expected = fft2c(maps * image.unsqueeze(-3)) * m
    torch.testing.assert_close(sense_forward(image, maps, mask), expected, atol=2e-5, rtol=1e-5)
    y = _randn(2, 4, h, w, seed=5)
    expected_adj = (maps.conj() * ifft2c(y * m)).sum(-3)
    torch.testing.assert_close(sense_adjoint(y, maps, mask), expected_adj, atol=2e-5, rtol=1e-5)
    normal = sense_adjoint(sense_forward(image, maps, mask), maps, mask)
    torch.testing.assert_close(sense_normal(image, maps, mask), normal, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(zero_filled(y, mask), rss(ifft2c(y * m)), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_sense_adjointness(h: int, w: int, masked: bool) -> None:
    x, maps, y = _randn(3, h, w, seed=6), _randn(3, 5, h, w, seed=7), _randn(3, 5, h, w, seed=8)
    mask = make_mask("kt_gaussian", (3, h, w), 2, acs=2, seed=0) if masked else None
    lhs = _inner(sense_forward(x, maps, mask), y)
    rhs = _inner(x, sense_adjoint(y, maps, mask))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    op = SenseOperator(maps, mask)  # the operator object is the same A, A^H and A^H A
    assert abs(_inner(op(x), y) - _inner(x, op.adjoint(y))) / abs(lhs) < 1e-5
    torch.testing.assert_close(op.normal(x), op.adjoint(op(x)), atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="maps must be a complex tensor"):
        SenseOperator(maps.abs(), mask)


def test_sense_broadcasts_shared_maps_over_frames() -> None:
    image, maps = _randn(4, 10, 9), _randn(3, 10, 9, seed=1)
    mask = make_mask("kt_radial", (4, 10, 9), 2, acs=4)
    k = sense_forward(image, maps, mask)
    assert k.shape == (4, 3, 10, 9)
    torch.testing.assert_close(k[2], sense_forward(image[2], maps, mask[2]))
    torch.testing.assert_close(sense_adjoint(k, maps, mask)[1], sense_adjoint(k[1], maps, mask[1]))


def test_sense_rejects_mismatched_shapes_naming_the_argument() -> None:
    image, maps = _randn(8, 6), _randn(2, 8, 6)
    with pytest.raises(ValueError, match="image spatial shape"):
        sense_forward(_randn(8, 5), maps)
    with pytest.raises(ValueError, match="maps"):
        sense_forward(image, _randn(8, 6))
    with pytest.raises(ValueError, match="kspace"):
        sense_adjoint(_randn(3, 8, 6), maps)
    with pytest.raises(ValueError, match="mask"):
        sense_forward(image, maps, torch.ones(8, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        apply_mask(_randn(2, 8, 6), torch.ones(3, 3, 8, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="kspace"):
        zero_filled(torch.ones(2, 8, 6))


# ------------------------------------------------------------------------------------------ coil maps
def _scan(h: int = 56, w: int = 45, coils: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = shepp_logan(h, w)
    maps = coil_maps(coils, h, w, seed=3, normalize=True)
    return image, maps, sense_forward(image, maps)


def test_normalize_maps_gives_unit_rss() -> None:
    maps = normalize_maps(coil_maps(4, 20, 17, seed=1))
    torch.testing.assert_close(rss(maps), torch.ones(20, 17), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="eps"):
        normalize_maps(maps, eps=-1.0)


def test_calibration_region_of_line_and_radial_masks() -> None:
    assert calibration_region(make_mask("uniform", (2, 40, 51), 4, acs=12)) == (40, 12)
    assert calibration_region(make_mask("kt_gaussian", (3, 40, 51), 4, acs=11, seed=1)) == (40, 11)
    radial = make_mask("kt_radial", (3, 40, 51), 8, acs=12)
    h, w = calibration_region(radial)  # dense spokes may fully sample a little more than the ACS square
    assert 12 <= h < 40 and 12 <= w < 51
    assert radial[:, 20 - h // 2 : 20 - h // 2 + h, 25 - w // 2 : 25 - w // 2 + w].all()
    with pytest.raises(ValueError, match="ACS"):
        calibration_region(torch.zeros(4, 4, dtype=torch.bool))


@pytest.mark.parametrize("acs", ["lines", "radial"])
def test_espirit_maps_reproduce_coil_images(acs: str) -> None:
    image, _, kspace = _scan()
    calib = 20 if acs == "lines" else make_mask("kt_radial", (1, 56, 45), 8, acs=20)
    maps = espirit_maps(kspace, calib)
    coils = ifft2c(kspace)
    combined = sense_adjoint(kspace, maps)  # S^H y
    support = image.abs() > 0.05
    residual = (coils - maps * combined)[:, support]
    assert (residual.norm() / coils[:, support].norm()) ** 2 < 1e-3
    # normalised (ref. section 1) inside the object, cropped to zero far outside it
    torch.testing.assert_close(rss(maps)[support], torch.ones(int(support.sum())), atol=1e-3, rtol=0)
    assert (rss(maps) == 0).any()
    # phase relative to the reference coil: coil 0 is real and non-negative
    assert maps[0].imag.abs().max() < 1e-5 and maps[0].real.min() >= 0


def test_lowres_maps_reproduce_coil_images_and_batch() -> None:
    image, _, kspace = _scan()
    batch = torch.stack([kspace, 2 * kspace])
    maps = estimate_maps_lowres(batch, 20)
    assert maps.shape == batch.shape
    coils = ifft2c(kspace)
    support = image.abs() > 0.05
    residual = (coils - maps[0] * sense_adjoint(kspace, maps[0]))[:, support]
    assert (residual.norm() / coils[:, support].norm()) ** 2 < 1e-2
    torch.testing.assert_close(maps[0], maps[1], atol=1e-5, rtol=0)  # scale-free


def test_espirit_batches_and_validates() -> None:
    _, _, kspace = _scan(40, 33, 4)
    maps = espirit_maps(torch.stack([kspace, kspace * 1j]), 16, kernel=5)
    assert maps.shape == (2, 4, 40, 33)
    torch.testing.assert_close(maps[0], maps[1], atol=1e-3, rtol=0)  # a global phase is referenced away
    with pytest.raises(ValueError, match="kernel"):
        espirit_maps(kspace, 4, kernel=6)
    with pytest.raises(ValueError, match="acs"):
        espirit_maps(kspace, 40)
    with pytest.raises(ValueError, match="ref_coil"):
        espirit_maps(kspace, 16, ref_coil=4)


# ------------------------------------------------------------------------------------------- CG-SENSE
def _nmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).norm() ** 2 / target.norm() ** 2)


@pytest.mark.parametrize("kind", ["uniform", "kt_gaussian"])
def test_cg_sense_beats_zero_filled_at_r4(kind: str) -> None:
    image, _, kspace = _scan()
    mask = make_mask(kind, (1, 56, 45), 4, acs=16, seed=0)[0]
    maps = espirit_maps(kspace, 16)
    target = image.abs()
    recon = cg_sense(kspace * mask, maps, mask, iters=20, lam=1e-4).abs()
    baseline = zero_filled(kspace, mask)
    assert _nmse(recon, target) < 0.5 * _nmse(baseline, target)


def test_cg_sense_is_batched_and_validates() -> None:
    image, maps, kspace = _scan(32, 29, 4)
    mask = make_mask("kt_gaussian", (2, 32, 29), 3, acs=8, seed=1)
    batch = torch.stack([kspace, 3 * kspace])
    out = cg_sense(batch, maps, mask, iters=6, lam=0.01)
    torch.testing.assert_close(out[1], cg_sense(3 * kspace, maps, mask[1], iters=6, lam=0.01), atol=1e-4, rtol=1e-4)
    assert cg_sense(batch, maps, mask, iters=0).abs().max() == 0
    # the residual of the normal equations shrinks with iterations
    rhs = sense_adjoint(kspace, maps, mask[0])

    def residual(x: torch.Tensor) -> float:
        return float((sense_normal(x, maps, mask[0]) - rhs).norm())

    assert residual(cg_sense(kspace, maps, mask[0], iters=10)) < 0.1 * residual(torch.zeros_like(rhs))
    with pytest.raises(ValueError, match="iters"):
        cg_sense(kspace, maps, mask, iters=-1)
    with pytest.raises(ValueError, match="lam"):
        cg_sense(kspace, maps, mask, iters=1, lam=-1.0)


def test_sense_operators_are_differentiable() -> None:
    # the unrolled networks backpropagate through A and A^H: in-place steps must keep autograd correct
    gen = torch.Generator().manual_seed(9)
    image = torch.randn(2, 4, 3, dtype=torch.complex128, generator=gen, requires_grad=True)
    maps = torch.randn(2, 4, 3, dtype=torch.complex128, generator=gen, requires_grad=True)
    kspace = torch.randn(2, 2, 4, 3, dtype=torch.complex128, generator=gen, requires_grad=True)
    mask = torch.rand(2, 4, 3, generator=gen) > 0.4
    for fn, inputs in (
        (lambda x, s: sense_forward(x, s, mask), (image, maps)),
        (lambda y, s: sense_adjoint(y, s, mask), (kspace, maps)),
        (lambda x, s: sense_normal(x, s, mask), (image, maps)),
    ):
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
