"""DualSpace-CMR augmentation (moero.augment, moero.augment.geometry): statistics, physics, determinism, errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

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
    KspaceNoise,
    RandomKspaceNoise,
    RandomRigidMotion,
    RigidMotion,
    add_kspace_noise,
    shot_of_line,
    signal_level,
    simulate_rigid_motion,
)
from moero.augment.pipeline import DualSpaceAugment, RatioSchedule, estimate_maps_from_full, preview_artefacts
from moero.physics.fft import fft2c, ifft2c
from moero.physics.phantom import coil_maps, shepp_logan
from moero.physics.sense import rss, sense_adjoint, sense_forward


def _rand_complex(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().norm() / b.abs().norm())


@pytest.fixture(scope="module")
def scan() -> dict[str, torch.Tensor]:
    """A SENSE-consistent 3-frame, 6-coil slice with normalised maps (non-square matrix)."""
    h, w = 48, 40
    image = shepp_logan(h, w)
    frames = torch.stack([image * (1 + 0.1 * f) for f in range(3)])
    maps = coil_maps(6, h, w, seed=1, normalize=True)
    kspace = sense_forward(frames, maps)
    mask = torch.zeros(3, h, w, dtype=torch.bool)
    mask[..., ::3] = True
    mask[..., w // 2 - 4 : w // 2 + 4] = True
    target = rss(ifft2c(kspace[1]))
    return {"kspace": kspace, "maps": maps, "image": frames, "mask": mask, "target": target}


# ------------------------------------------------------------------------------------------- noise
def test_noise_std_matches_request_on_large_sample():
    y = _rand_complex(2, 8, 128, 128) * torch.linspace(0.5, 2.0, 128)  # non-white signal, two scans
    sigma = 0.07
    noisy = add_kspace_noise(y, sigma, torch.Generator().manual_seed(3), renormalize=False)
    noise = noisy - y
    level = signal_level(y)
    measured = torch.sqrt((noise.abs() ** 2).mean(dim=(-3, -2, -1), keepdim=True)) / level
    assert torch.allclose(measured, torch.full_like(measured, sigma), rtol=0.03)
    # circular: real and imaginary parts carry half the variance each, uncorrelated
    ratio = noise.real.var() / noise.imag.var()
    assert abs(float(ratio) - 1) < 0.03
    assert float((noise.real * noise.imag).mean().abs() / noise.real.var()) < 0.03


@pytest.mark.parametrize("c", [3.7, complex(0.6, -1.3)])
def test_noise_scale_equivariance(c):
    y = _rand_complex(3, 4, 32, 24)
    aug = add_kspace_noise(y, 0.1, torch.Generator().manual_seed(5), scan_dims=4)
    aug_scaled = add_kspace_noise(c * y, 0.1, torch.Generator().manual_seed(5), scan_dims=4)
    assert _rel(aug_scaled, c * aug) < 1e-5


def test_noise_renormalisation_keeps_signal_level(scan):
    y = scan["kspace"]
    out = KspaceNoise(0.2, seed=11).apply(y, scan_dims=4)
    assert _rel(out, y) > 0.1  # noise was added
    assert torch.allclose(signal_level(out, 4), signal_level(y, 4), rtol=1e-5)
    raw = KspaceNoise(0.2, seed=11, renormalize=False).apply(y, scan_dims=4)
    assert float(signal_level(raw, 4) / signal_level(y, 4)) == pytest.approx(math.sqrt(1 + 0.2**2), rel=0.02)
    assert torch.equal(add_kspace_noise(y, 0.0, torch.Generator().manual_seed(0)), y)


def test_random_noise_draws_from_the_discrete_set():
    rn = RandomKspaceNoise(sigmas=(0.01, 0.3), p=1.0)
    g = torch.Generator().manual_seed(0)
    drawn = {rn.sample(g).sigma for _ in range(50)}
    assert drawn == {0.01, 0.3}
    assert RandomKspaceNoise(p=0.0).sample(g) is None


# ------------------------------------------------------------------------------------------ motion
def test_motion_keeps_magnitudes_and_zero_range_is_identity(scan):
    y = scan["kspace"]
    moved = RigidMotion(((0.7, -1.2), (2.0, 0.3), (0.0, 1.5)), "segmented").apply(y)
    assert torch.allclose(moved.abs(), y.abs(), rtol=1e-5, atol=1e-6)
    assert _rel(moved, y) > 1e-2
    still = RandomRigidMotion(max_shift=0.0, shots=4, p=1.0).sample(torch.Generator().manual_seed(1), y.shape[-1])
    assert _rel(still.apply(y), y) < 1e-7


def test_single_shot_shift_is_recovered_by_phase_correlation():
    x = shepp_logan(64, 56)
    k = fft2c(x)[None]  # one coil
    moved = simulate_rigid_motion(k, torch.tensor([[5.0, -3.0]]), shots=1)
    cross = moved[0] * k[0].conj()
    corr = ifft2c(cross / cross.abs().clamp_min(1e-12)).abs()
    peak = divmod(int(corr.argmax()), corr.shape[-1])
    shift = (peak[0] - 64 // 2, peak[1] - 56 // 2)  # centred transform: zero shift sits at N // 2
    assert shift == (5, -3)
    assert torch.allclose(ifft2c(moved[0]), torch.roll(x, (5, -3), dims=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize("ordering", ["interleaved", "segmented"])
def test_lines_of_one_shot_share_one_translation(ordering):
    h, w, shots = 32, 30, 5
    y = torch.ones(2, h, w, dtype=torch.complex64)
    motion = RandomRigidMotion(max_shift=0.9, shots=shots, ordering=ordering, p=1.0, keep_center_still=True)
    plan = motion.sample(torch.Generator().manual_seed(7), w)
    ratio = plan.apply(y)[0]  # = exp(-i 2 pi (kx dx / H + ky dy / W)) per line
    dx = -torch.angle(ratio[1:] / ratio[:-1]).mean(0) * h / (2 * math.pi)  # (W,)
    ky = torch.arange(w) - w // 2
    nonzero = ky != 0
    dy = -torch.angle(ratio[h // 2, nonzero]) * w / (2 * math.pi * ky[nonzero])  # the centre line has no dy
    line_shot = shot_of_line(w, shots, ordering)
    recorded = torch.tensor(plan.shifts, dtype=torch.float32)
    assert torch.allclose(dx, recorded[line_shot, 0], atol=1e-3)
    assert torch.allclose(dy, recorded[line_shot[nonzero], 1], atol=1e-3)
    for j in range(shots):  # the measured translation is one per shot
        assert float(dx[line_shot == j].std()) < 1e-3
        assert float(dy[line_shot[nonzero] == j].std()) < 1e-3
    assert plan.shifts[int(line_shot[w // 2])] == (0.0, 0.0)  # the centre's shot is still
    assert len(set(plan.shifts)) == shots


def test_shot_orderings():
    assert shot_of_line(6, 3, "interleaved").tolist() == [0, 1, 2, 0, 1, 2]
    assert shot_of_line(6, 3, "segmented").tolist() == [0, 0, 1, 1, 2, 2]


def test_motion_shifts_are_uniform_over_the_symmetric_range():
    """Shifts are uniform in ``[-m, m]`` on both axes: mean 0, variance ``m^2 / 3``, both signs reached."""
    m, shots, draws = (1.5, 3.0), 8, 400
    motion = RandomRigidMotion(max_shift=m, shots=shots, p=1.0, keep_center_still=False, readout_shifts=True)
    g = torch.Generator().manual_seed(0)
    shifts = torch.tensor([motion.sample(g, 32).shifts for _ in range(draws)], dtype=torch.float64).view(-1, 2)
    bound = torch.tensor(m, dtype=torch.float64)
    assert bool((shifts.abs() <= bound).all())
    n = shifts.shape[0]
    for axis in range(2):
        se = bound[axis] / math.sqrt(3 * n)  # standard error of the mean of U(-m, m)
        assert abs(float(shifts[:, axis].mean())) < 4 * se, axis
        assert float(shifts[:, axis].var()) == pytest.approx(float(bound[axis]) ** 2 / 3, rel=0.1)
        assert float(shifts[:, axis].min()) < -0.95 * bound[axis] and float(shifts[:, axis].max()) > 0.95 * bound[axis]
    # the default moves along the phase encode only, with the same symmetric law
    along_w = RandomRigidMotion(max_shift=m, shots=shots, p=1.0, keep_center_still=False)
    dy = torch.tensor([along_w.sample(g, 32).shifts for _ in range(draws)], dtype=torch.float64).view(-1, 2)[:, 1]
    assert abs(float(dy.mean())) < 4 * float(bound[1]) / math.sqrt(3 * n)
    assert float(dy.min()) < -0.95 * bound[1] and float(dy.max()) > 0.95 * bound[1]


# ------------------------------------------------------------------------------------------- image
def test_flips_are_involutive_and_four_quarter_turns_are_identity():
    x, s = _rand_complex(2, 20, 20), _rand_complex(3, 20, 20, seed=1)
    for axes in [("H",), ("W",), ("H", "W")]:
        once = Flip(axes).apply(x, s)
        assert not torch.equal(once[0], x)
        assert all(torch.equal(a, b) for a, b in zip(Flip(axes).apply(*once), (x, s), strict=True))
    out = (x, s)
    for _ in range(4):
        out = Rot90(1).apply(*out)
        if _ < 3:
            assert not torch.equal(out[0], x)
    assert torch.equal(out[0], x) and torch.equal(out[1], s)
    with pytest.raises(ValueError, match="k=1"):
        Rot90(1).apply(_rand_complex(20, 16))
    assert RandomRot90(p=1.0).sample(torch.Generator().manual_seed(0), (20, 16)).k == 2


def test_rotation_by_zero_is_identity_and_quarter_rotation_matches_rot90():
    x = shepp_logan(40, 40)
    assert _rel(Affine(angle=0.0).apply(x)[0], x) < 1e-5
    assert _rel(Affine(angle=90.0).apply(x)[0], Rot90(1).apply(x)[0]) < 1e-5
    assert _rel(Affine(angle=30.0).apply(x)[0], x) > 0.1
    # anisotropic magnification: a scale above 1 widens the object along that axis only
    wide = Affine(scale_w=1.3).apply(x)[0].abs()
    assert (wide.sum(0) > 0.05).sum() > (x.abs().sum(0) > 0.05).sum()
    assert (wide.sum(1) > 0.05).sum() == (x.abs().sum(1) > 0.05).sum()


def test_elastic_field_amplitude_and_smoothness():
    disp = Elastic(alpha=3.0, sigma=6.0, seed=4).displacement(50, 40)
    assert torch.allclose(disp.abs().amax(dim=(-2, -1)), torch.tensor([3.0, 3.0], dtype=torch.float64))
    assert float(disp.diff(dim=-1).abs().max()) < 1.0  # smooth: neighbours move alike
    assert torch.equal(disp, Elastic(alpha=3.0, sigma=6.0, seed=4).displacement(50, 40))


def test_maps_normalised_after_joint_transform(scan):
    transforms = [Affine(angle=20.0, scale_h=1.1, scale_w=0.9), Elastic(2.0, 8.0, seed=1), Shift(3, -2)]
    image, maps = transform_image_and_maps(scan["image"], scan["maps"], transforms)
    assert torch.allclose(rss(maps), torch.ones(maps.shape[-2:]), atol=1e-5)
    # joint means: the same geometry as transforming each alone
    alone = transforms[0].apply(scan["image"])[0]
    for t in transforms[1:]:
        alone = t.apply(alone)[0]
    assert torch.allclose(image, alone, atol=1e-6)


def test_exact_transforms_give_the_forward_model_of_the_moved_scan(scan):
    aug = DualSpaceAugment.without_artefacts(schedule=1.0)
    plan = dataclasses.replace(
        aug.sample(torch.Generator().manual_seed(0), scan["kspace"].shape),
        geometric=(("flip", Flip(("W",))), ("shift", Shift(4, -3)), ("rot90", Rot90(2))),
    )
    out = aug.apply(scan, plan)
    img, maps = scan["image"], scan["maps"]
    for _, t in plan.geometric:
        img, maps = t.apply(img, maps)
    assert _rel(out["kspace"], sense_forward(img, maps)) < 1e-5
    assert _rel(out["maps"], maps) < 1e-5


@pytest.mark.parametrize("with_maps", [True, False])
def test_reexpanded_kspace_is_consistent_with_transformed_maps(scan, with_maps):
    example = dict(scan) if with_maps else {k: v for k, v in scan.items() if k != "maps"}
    aug = DualSpaceAugment.without_artefacts(
        geometric={"rotation": RandomRotation(25.0, p=1.0), "elastic": RandomElastic(3.0, 8.0, p=1.0)}, schedule=1.0
    )
    out = aug(example, torch.Generator().manual_seed(2))
    assert _rel(out["kspace"], scan["kspace"]) > 0.05
    assert torch.equal(out["masked_kspace"], out["kspace"] * scan["mask"][:, None])
    # the raw coil images are transformed: the k-space and the target never depend on the maps
    truth = aug(scan, torch.Generator().manual_seed(2))
    assert torch.equal(out["kspace"], truth["kspace"]) and torch.equal(out["target"], truth["target"])
    if with_maps:  # the maps moved with the anatomy: they still explain the transformed coil images
        maps = out["maps"]
        assert _rel(sense_forward(sense_adjoint(out["kspace"], maps), maps), out["kspace"]) < 0.1
    else:
        assert "maps" not in out


def test_estimated_maps_reproduce_the_coil_images(scan):
    """``estimate_maps_from_full``: combining with the estimated maps and re-expanding gives back every coil image."""
    k = scan["kspace"]
    maps = estimate_maps_from_full(k)
    assert maps.shape == scan["maps"].shape
    assert _rel(sense_forward(sense_adjoint(k, maps), maps), k) < 0.05
    inside = scan["image"][0].abs() > 0.05 * scan["image"][0].abs().max()
    assert torch.allclose(rss(maps)[inside], torch.ones(int(inside.sum())), atol=0.05)  # normalised on the object
    # flat maps would combine the coils into one image and lose the coil weighting
    flat = torch.full_like(maps, 1 / math.sqrt(maps.shape[0]))
    assert _rel(sense_forward(sense_adjoint(k, flat), flat), k) > 0.5


def test_target_is_the_clean_transformed_image_never_the_artefacts(scan):
    aug = DualSpaceAugment(
        geometric={"rotation": RandomRotation(20.0, p=1.0)},
        motion=RandomRigidMotion(2.0, shots=4, p=1.0),
        noise=RandomKspaceNoise((0.2,), p=1.0),
        schedule=1.0,
    )
    plan = aug.sample(torch.Generator().manual_seed(4), scan["kspace"].shape)
    corrupted = aug.apply(scan, plan)
    clean = aug.apply(scan, dataclasses.replace(plan, noise=None, motion=None))
    # the noise renormalisation L(y) / L(y + n) scales the target with the input; nothing else reaches it
    moved = plan.motion.apply(clean["kspace"])
    noisy = dataclasses.replace(plan.noise, renormalize=False).apply(moved, scan_dims=4)
    scale = float(signal_level(moved, 4).reshape(()) / signal_level(noisy, 4).reshape(()))
    assert scale < 1.0
    torch.testing.assert_close(corrupted["target"], clean["target"] * scale)
    assert _rel(corrupted["kspace"], clean["kspace"]) > 0.1
    assert torch.allclose(clean["target"], rss(ifft2c(clean["kspace"][1])), atol=1e-6)
    assert _rel(clean["target"], scan["target"]) > 0.05  # the geometry did reach the target
    frames = aug.apply({**scan, "target": torch.zeros(3, 40, 30)}, plan)["target"]
    assert frames.shape == (3, 40, 30)
    assert torch.allclose(frames[1], corrupted["target"][4:44, 5:35], atol=1e-6)


# -------------------------------------------------------------------------------- pipeline and seeds
def test_same_seed_same_bytes_and_seeds_differ(scan):
    aug = DualSpaceAugment(schedule=1.0, motion=RandomRigidMotion(p=1.0), noise=RandomKspaceNoise(p=1.0))
    a = aug(scan, torch.Generator().manual_seed(9))
    b = aug(scan, torch.Generator().manual_seed(9))
    c = aug(scan, torch.Generator().manual_seed(10))
    for key in ("kspace", "masked_kspace", "target", "maps"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["kspace"], c["kspace"])
    for t in (RandomFlip(p=0.5), RandomShift(p=1), RandomScaling(p=1), RandomElastic(p=1)):
        s1, s2 = (t.sample(torch.Generator().manual_seed(1), (30, 30)) for _ in range(2))
        assert s1 == s2


def test_ratio_and_schedule(scan):
    assert [RatioSchedule("linear", 0.8, start=2, end=6)(t) for t in (0, 2, 4, 6, 9)] == [0, 0, 0.4, 0.8, 0.8]
    assert [RatioSchedule("delayed", 0.5, start=3)(t) for t in (0, 2.9, 3, 10)] == [0, 0, 0.5, 0.5]
    assert RatioSchedule("constant", 0.3)(100) == 0.3
    aug = DualSpaceAugment(schedule=RatioSchedule("delayed", 0.4, start=5))
    g = torch.Generator().manual_seed(0)
    assert not any(aug.sample(g, (3, 6, 48, 40)).applied for _ in range(50))
    aug.set_epoch(5)
    share = sum(aug.sample(g, (3, 6, 48, 40)).applied for _ in range(1000)) / 1000
    assert share == pytest.approx(0.4, abs=0.05)
    # an example's own epoch wins over set_epoch; a skipped example is untouched and keyed alike
    skipped = aug({**scan, "epoch": 0}, torch.Generator().manual_seed(0))
    assert not skipped["augment_params"]["applied"] and skipped["kspace"] is scan["kspace"]
    done = DualSpaceAugment(schedule=1.0)(scan, torch.Generator().manual_seed(0))
    assert set(done["augment_params"]) == set(skipped["augment_params"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu(scan):
    aug = DualSpaceAugment.without_artefacts(
        geometric={"rotation": RandomRotation(p=1.0), "elastic": RandomElastic(p=1.0)}, schedule=1.0
    )
    cpu = aug(scan, torch.Generator().manual_seed(1))
    on_gpu = {k: v.cuda() for k, v in scan.items()}
    gpu = aug(on_gpu, torch.Generator().manual_seed(1))
    assert gpu["kspace"].is_cuda
    assert _rel(gpu["kspace"].cpu(), cpu["kspace"]) < 1e-4
    noisy = KspaceNoise(0.1, seed=3).apply(on_gpu["kspace"], scan_dims=4)
    assert noisy.is_cuda and torch.equal(noisy, KspaceNoise(0.1, seed=3).apply(on_gpu["kspace"], scan_dims=4))


# ------------------------------------------------------------------------------------------ preview
def test_preview_shots_change_the_artefact(scan):
    """The chapter 02 slider: the shot count decides which lines move together, so it changes the image."""
    k = scan["kspace"]
    previews = {n: preview_artefacts(k, max_shift=2.0, shots=n, seed=3) for n in (1, 4, 8)}
    for n, p in previews.items():
        assert p["shifts"].shape == (n, 2)
        assert p["rms_shift_px"] == pytest.approx(float(p["shifts"].double().square().sum(1).mean().sqrt()))
    # one shot holds the k-space centre and is kept still: nothing moves
    assert previews[1]["rms_shift_px"] == 0 and torch.equal(previews[1]["image"], previews[1]["image_clean"])
    assert previews[4]["rms_shift_px"] > 0 and previews[8]["rms_shift_px"] > 0
    assert _rel(previews[4]["image"], previews[8]["image"]) > 1e-3
    assert _rel(previews[8]["image"], previews[8]["image_clean"]) > 1e-3
    segmented = preview_artefacts(k, max_shift=2.0, shots=8, ordering="segmented", seed=3)
    assert _rel(segmented["image"], previews[8]["image"]) > 1e-3


def test_preview_readouts_follow_sigma_and_range(scan):
    k = scan["kspace"] + 0.01 * _rand_complex(*scan["kspace"].shape, seed=5) * signal_level(scan["kspace"], 4)
    clean = preview_artefacts(k)
    assert clean["snr_added_db"] == math.inf and clean["snr_drop_db"] == 0 and clean["rms_shift_px"] == 0
    assert torch.equal(clean["kspace"], k) and torch.equal(clean["difference"], torch.zeros_like(clean["image"]))
    low, high = (preview_artefacts(k, sigma=s, seed=1) for s in (0.05, 0.3))
    assert low["snr_added_db"] == pytest.approx(-20 * math.log10(0.05))
    assert high["snr_added_db"] == pytest.approx(-20 * math.log10(0.3))
    assert low["snr_clean_db"] == pytest.approx(clean["snr_clean_db"])
    assert high["snr_db"] < low["snr_db"] < clean["snr_db"]
    assert high["snr_drop_db"] > low["snr_drop_db"] > 0
    assert low["snr_drop_db"] == pytest.approx(low["snr_clean_db"] - low["snr_db"])
    # the two difference panels add up, and motion alone leaves the noise panel (and the SNR) untouched
    both = preview_artefacts(k, sigma=0.1, max_shift=2.0, seed=2)
    torch.testing.assert_close(both["difference_motion"] + both["difference_noise"], both["difference"])
    moved = preview_artefacts(k, max_shift=2.0, seed=2)
    assert torch.equal(moved["difference_noise"], torch.zeros_like(moved["image"]))
    assert moved["snr_drop_db"] == 0 and moved["rms_shift_px"] > 0
    torch.testing.assert_close(both["difference_motion"], moved["difference_motion"])
    wider = preview_artefacts(k, max_shift=4.0, seed=2)
    assert wider["rms_shift_px"] == pytest.approx(2 * moved["rms_shift_px"])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"max_shift": -1.0}, "max_shift"),
        ({"max_shift": float("nan")}, "max_shift"),
        ({"shots": 0}, "shots"),
        ({"ordering": "random"}, "ordering"),
    ],
)
def test_preview_rejects_bad_values_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        preview_artefacts(_rand_complex(2, 16, 16), **kwargs)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: add_kspace_noise(_rand_complex(2, 4, 4), -0.1, torch.Generator()), "sigma"),
        (lambda: RandomKspaceNoise(sigmas=(0.1, -1.0)), "sigmas"),
        (lambda: RandomKspaceNoise(p=1.5), "p"),
        (lambda: RandomRigidMotion(shots=0), "shots"),
        (lambda: simulate_rigid_motion(_rand_complex(2, 4, 4), torch.zeros(0, 2), shots=0), "shots"),
        (lambda: RandomRigidMotion(p=-0.1), "p"),
        (lambda: RandomRigidMotion(ordering="random"), "ordering"),
        (lambda: RandomRigidMotion(max_shift=-1.0), "max_shift"),
        (lambda: RandomRigidMotion(max_shift=float("nan")), "max_shift"),
        (lambda: RandomRigidMotion(max_shift=(1.0, float("inf"))), "max_shift"),
        (lambda: add_kspace_noise(_rand_complex(2, 4, 4), float("nan"), torch.Generator()), "sigma"),
        (lambda: KspaceNoise(-0.2, seed=0), "sigma"),
        (lambda: RandomKspaceNoise(sigmas=(float("nan"),)), "sigmas"),
        (lambda: RigidMotion(((float("nan"), 0.0),)), "shifts"),
        (lambda: simulate_rigid_motion(_rand_complex(2, 4, 4), torch.full((1, 2), float("nan")), shots=1), "shifts"),
        (lambda: RandomFlip(p=2.0), "p"),
        (lambda: RandomRotation(p=1.01), "p"),
        (lambda: RandomScaling(scales=(-1.0, 1.0)), "scales"),
        (lambda: RandomElastic(sigma=0.0), "sigma"),
        (lambda: RatioSchedule("constant", 1.5), "ratio"),
        (lambda: RatioSchedule("sometimes"), "kind"),
        (lambda: DualSpaceAugment(schedule=-0.2), "schedule"),
        (lambda: DualSpaceAugment(schedule=1.0)({"kspace": _rand_complex(1, 2, 8, 8)}, torch.Generator()), "mask"),
    ],
)
def test_impossible_parameters_raise_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_ratio_is_the_probability_of_at_least_one_artefact():
    aug = DualSpaceAugment(schedule=1.0)  # default transforms: alone they would leave ~half untouched
    assert aug.artefact_fraction((3, 2, 32, 24), draws=300, seed=1) == 1.0
    half = DualSpaceAugment(schedule=0.5).artefact_fraction((3, 2, 32, 24), draws=1000, seed=2)
    assert half == pytest.approx(0.5, abs=0.05)
    # the relative odds of the transforms stay those of their own p (conditioned on at least one)
    two = DualSpaceAugment(geometric={"flip": RandomFlip(("W",), p=0.5)}, motion=RandomRigidMotion(p=0.0),
                           noise=RandomKspaceNoise(p=0.5), schedule=1.0)
    g = torch.Generator().manual_seed(3)
    plans = [two.sample(g, (3, 2, 32, 24)) for _ in range(900)]
    both = sum(bool(p.geometric) and p.noise is not None for p in plans) / len(plans)
    assert both == pytest.approx(1 / 3, abs=0.05)  # P(both | at least one) = 0.25 / 0.75
    none = DualSpaceAugment(geometric={}, motion=RandomRigidMotion(p=0.0), noise=RandomKspaceNoise(p=0.0), schedule=1.0)
    assert not none.sample(g, (3, 2, 32, 24)).applied


def test_motion_moves_along_the_phase_encode_only_by_default():
    g = torch.Generator().manual_seed(4)
    pe = torch.tensor(RandomRigidMotion(3.0, shots=6, p=1.0).sample(g, 32).shifts)
    assert bool((pe[:, 0] == 0).all()) and float(pe[:, 1].abs().max()) > 0
    both = torch.tensor(RandomRigidMotion(3.0, shots=6, p=1.0, readout_shifts=True).sample(g, 32).shifts)
    assert float(both[:, 0].abs().max()) > 0


def test_geometric_target_is_the_rss_of_the_transformed_raw_coil_images(scan):
    aug = DualSpaceAugment.without_artefacts(geometric={"shift": RandomShift((4, 4), p=1.0)}, schedule=1.0)
    plan = aug.sample(torch.Generator().manual_seed(5), scan["kspace"].shape)
    out = aug.apply(scan, plan)
    (shift,) = (t for _, t in plan.geometric)
    coils = ifft2c(scan["kspace"][1])
    (moved,) = shift.apply(coils)
    torch.testing.assert_close(out["target"], rss(moved))  # an integer shift: exact, no SENSE projection
