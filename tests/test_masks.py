"""CMRxRecon2025 masks (reference section 5): official counts, exact fractions, ACS, randomness, errors."""

from __future__ import annotations

import math

import pytest
import torch

from moero.physics.masks import (
    ACCELERATIONS,
    GOLDEN_ANGLE_DEG,
    KINDS,
    MaskSampler,
    effective_acs,
    make_mask,
    point_spread,
)

SHAPE = (4, 64, 246)  # frames, readout, phase encode (246: a CMRxRecon cine matrix)


def _columns(mask: torch.Tensor) -> torch.Tensor:
    """``(T, W)`` sampled columns of a line mask, after checking every row of a frame is the same."""
    assert torch.equal(mask, mask[:, :1].expand_as(mask))
    return mask[:, 0]


@pytest.mark.parametrize("acceleration", ACCELERATIONS)
def test_kt_gaussian_draws_round_w_over_r_distinct_lines_per_frame(acceleration: int) -> None:
    for w in (246, 247):
        mask = make_mask("kt_gaussian", (6, 8, w), acceleration, acs=0, seed=acceleration)
        counts = _columns(mask).sum(dim=1)
        assert counts.tolist() == [round(w / acceleration)] * 6


@pytest.mark.parametrize("acceleration", ACCELERATIONS)
def test_uniform_takes_every_rth_line_through_the_centre(acceleration: int) -> None:
    w = 247
    cols = _columns(make_mask("uniform", (2, 8, w), acceleration, acs=0))
    assert torch.equal(cols[0], cols[1])
    sampled = torch.nonzero(cols[0]).flatten()
    assert cols[0, w // 2]
    assert torch.all(sampled.diff() == acceleration)
    assert sampled[0] < acceleration and sampled[-1] >= w - acceleration  # spans the whole matrix


def _spoke_angles(frame_mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Angles (degrees mod 180) of spokes crossing a ring, one per cluster of sampled ring pixels."""
    h, w = frame_mask.shape
    rows, cols = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    # 1.5 px wide: a Bresenham spoke steps at most sqrt(2) px in radius, so it always hits the ring
    ring = (torch.sqrt(rows.double() ** 2 + cols.double() ** 2) - radius).abs() < 0.75
    hit = ring & frame_mask
    angles = torch.rad2deg(torch.atan2(rows[hit].double(), cols[hit].double())) % 180
    angles, _ = angles.sort()
    gaps = angles.diff()
    starts = torch.cat([torch.tensor([True]), gaps > 1.0])
    clusters = torch.cumsum(starts, 0) - 1
    centres = torch.zeros(int(clusters.max()) + 1, dtype=torch.float64).index_add_(0, clusters, angles)
    centres /= torch.bincount(clusters).double()
    # a cluster split across 0/180 degrees is one spoke
    if centres.numel() > 1 and angles[0] < 0.5 and angles[-1] > 179.5:
        centres = centres[1:]
    return centres


@pytest.mark.parametrize("acceleration", [8, 12, 24])
def test_kt_radial_draws_official_spokes_rotated_by_golden_angle(acceleration: int) -> None:
    num = math.floor(180 / (0.6 * acceleration))
    mask = make_mask("kt_radial", (3, 301, 299), acceleration, acs=0)
    for frame in range(3):
        found = _spoke_angles(mask[frame], radius=120.0)
        assert found.numel() == num
        expected = (torch.arange(num, dtype=torch.float64) * 180 / num + frame * GOLDEN_ANGLE_DEG) % 180
        # every found spoke sits on an expected angle (atan of the pixel grid: within half a degree)
        diff = (found[:, None] - expected[None, :]).abs()
        diff = torch.minimum(diff, 180 - diff)
        assert diff.min(dim=1).values.max() < 0.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [SHAPE, (3, 65, 247)])
def test_exact_fraction_is_one_over_r_with_acs_counted(kind: str, shape: tuple[int, int, int]) -> None:
    for acceleration in ACCELERATIONS:
        mask = make_mask(kind, shape, acceleration, acs=20, seed=0, exact=True)
        fraction = mask.double().mean(dim=(1, 2)) * acceleration
        assert torch.all((fraction - 1).abs() < 0.05), (kind, acceleration, fraction)


def test_official_masks_sample_more_than_the_nominal_fraction() -> None:
    # the ACS comes on top of the R-determined lines (ref. section 5), so line masks exceed 1/R
    for kind in ("uniform", "kt_gaussian"):
        mask = make_mask(kind, SHAPE, 8, acs=20, seed=0)
        assert torch.all(mask.double().mean(dim=(1, 2)) > 1 / 8 * 1.1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("exact", [False, True])
def test_full_acs_in_every_frame(kind: str, exact: bool) -> None:
    shape = t, h, w = (4, 128, 246)
    for acceleration in (4, 24):
        mask = make_mask(kind, shape, acceleration, acs=20, seed=1, exact=exact)
        acs = effective_acs(kind, shape, acceleration, acs=20, exact=exact)
        if not exact or kind == "kt_radial" or acceleration == 4:
            assert acs == 20  # radial: isqrt(128 * 246 / 24 / 2) = 25 >= 20
        else:  # round(246 / 24) = 10 lines: the ACS takes at most half of them
            assert acs == 5
        rows = slice(h // 2 - acs // 2, h // 2 - acs // 2 + acs) if kind == "kt_radial" else slice(None)
        cols = slice(w // 2 - acs // 2, w // 2 - acs // 2 + acs)
        assert mask[:, rows, cols].all()


def test_exact_shrinks_the_acs_to_a_budget_too_small_for_it() -> None:
    shape = (2, 32, 64)
    acs = effective_acs("kt_gaussian", shape, 16, acs=20, exact=True)
    assert acs == round(64 / 16) // 2
    mask = make_mask("kt_gaussian", shape, 16, acs=20, seed=0, exact=True)
    assert _columns(mask).sum(dim=1).tolist() == [2 * acs, 2 * acs]
    assert mask[:, :, 32 - acs // 2 : 32 - acs // 2 + acs].all()


def test_kt_masks_change_between_frames_and_uniform_does_not() -> None:
    for kind in ("kt_gaussian", "kt_radial"):
        mask = make_mask(kind, SHAPE, 8, seed=3)
        assert all(not torch.equal(mask[0], mask[t]) for t in range(1, SHAPE[0]))
    uniform = make_mask("uniform", SHAPE, 8)
    assert all(torch.equal(uniform[0], uniform[t]) for t in range(1, SHAPE[0]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("exact", [False, True])
def test_same_seed_same_mask(kind: str, exact: bool) -> None:
    a = make_mask(kind, SHAPE, 10, seed=7, exact=exact)
    b = make_mask(kind, SHAPE, 10, seed=7, exact=exact)
    assert torch.equal(a, b)
    if kind == "kt_gaussian":
        assert not torch.equal(a, make_mask(kind, SHAPE, 10, seed=8, exact=exact))


def test_kt_gaussian_prefers_the_centre() -> None:
    # line probability 0.1 + a/(1-a) exp(-p^2/s^2): about 3.5x more likely at the centre than the edge
    w = 200
    cols = _columns(make_mask("kt_gaussian", (400, 1, w), 10, acs=0, seed=0)).double().mean(dim=0)
    centre, edge = cols[w // 2 - 10 : w // 2 + 10].mean(), torch.cat([cols[:20], cols[-20:]]).mean()
    assert centre > 2 * edge


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 5), (3, 33, 45), (5, 31, 51), (2, 8, 16)])
@pytest.mark.parametrize("kind", KINDS)
def test_odd_and_small_sizes(kind: str, shape: tuple[int, int, int]) -> None:
    acs = min(4, shape[1], shape[2])
    for exact in (False, True):
        mask = make_mask(kind, shape, 4, acs=acs, seed=0, exact=exact)
        assert mask.shape == shape and mask.dtype == torch.bool
        assert mask.flatten(1).any(dim=1).all()  # every frame samples something
        if not exact or kind == "uniform":
            assert mask[:, shape[1] // 2, shape[2] // 2].all()  # the ACS / the centre line holds the centre
        if kind != "kt_radial":
            _columns(mask)


def test_invalid_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="acceleration"):
        make_mask("uniform", SHAPE, 0.5)
    with pytest.raises(ValueError, match="acceleration"):
        make_mask("uniform", SHAPE, float("nan"))
    with pytest.raises(ValueError, match="acs"):
        make_mask("kt_gaussian", (2, 64, 16), 4, acs=20)
    with pytest.raises(ValueError, match="acs"):
        make_mask("kt_radial", (2, 16, 64), 4, acs=20)
    with pytest.raises(ValueError, match="acs"):
        make_mask("uniform", SHAPE, 4, acs=-1)
    with pytest.raises(ValueError, match="kind"):
        make_mask("ktGaussian", SHAPE, 4)
    with pytest.raises(ValueError, match="shape"):
        make_mask("uniform", (64, 246), 4)
    with pytest.raises(ValueError, match="shape"):
        make_mask("uniform", (2, 0, 246), 4)
    with pytest.raises(ValueError, match="kinds"):
        MaskSampler(kinds=("uniform", "poisson"))
    with pytest.raises(ValueError, match="accelerations"):
        MaskSampler(accelerations=())
    with pytest.raises(ValueError, match="acs"):
        MaskSampler(acs=-2)


def test_mask_sampler_is_deterministic_and_covers_its_sets() -> None:
    sampler = MaskSampler(kinds=("uniform", "kt_gaussian", "kt_radial"), accelerations=(4, 8, 24), acs=16)
    shape = (3, 32, 96)
    mask, info = sampler.sample(shape, seed=11)
    again, info_again = sampler.sample(shape, seed=11)
    assert torch.equal(mask, again) and info == info_again
    assert mask.shape == shape and mask.dtype == torch.bool
    draws = [sampler.sample(shape, seed=s)[1] for s in range(60)]
    assert {d["kind"] for d in draws} == set(KINDS)
    assert {d["acceleration"] for d in draws} == {4, 8, 24}
    # what the info records is what was applied (deterministic kinds regenerate identically)
    for seed in range(20):
        mask, info = sampler.sample(shape, seed=seed)
        if info["kind"] != "kt_gaussian":
            assert torch.equal(mask, make_mask(info["kind"], shape, info["acceleration"], acs=16))
    exact = MaskSampler(kinds=("kt_radial",), accelerations=(8,), exact=True).sample((2, 64, 128), seed=0)[0]
    assert torch.all((exact.double().mean(dim=(1, 2)) * 8 - 1).abs() < 0.05)


def test_point_spread_of_full_and_uniform_masks() -> None:
    full = point_spread(torch.ones(1, 12, 16, dtype=torch.bool))[0]
    expected = torch.zeros(12, 16)
    expected[6, 8] = 1
    torch.testing.assert_close(full, expected, atol=1e-6, rtol=0)
    # every 4th line: 4 replicas of height 1, W / 4 apart along the phase-encode axis
    psf = point_spread(make_mask("uniform", (1, 12, 16), 4, acs=0))[0]
    peaks = torch.nonzero(psf > 0.99)
    assert peaks.tolist() == [[6, 0], [6, 4], [6, 8], [6, 12]]
    with pytest.raises(ValueError, match="mask"):
        point_spread(torch.ones(5))
