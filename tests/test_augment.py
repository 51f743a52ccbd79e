"""DualSpace-CMR augmentation (moero.augment, moero.geometry): statistics, physics, determinism, errors."""

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
from moero.augment.pipeline import DualSpaceAugment, RatioSchedule, estimate_maps_from_full
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
    maps = out["maps"] if with_maps else estimate_maps_from_full(out["kspace"])
    if with_maps:  # y' = F S' x' exactly: projecting onto the SENSE range changes nothing
        assert _rel(sense_forward(sense_adjoint(out["kspace"], maps), maps), out["kspace"]) < 1e-5
    assert _rel(out["kspace"], scan["kspace"]) > 0.05
    assert torch.equal(out["masked_kspace"], out["kspace"] * scan["mask"][:, None])


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
    assert torch.equal(corrupted["target"], clean["target"])
    assert _rel(corrupted["kspace"], clean["kspace"]) > 0.1
    assert torch.allclose(clean["target"], rss(ifft2c(clean["kspace"][1])), atol=1e-6)
    assert _rel(clean["target"], scan["target"]) > 0.05  # the geometry did reach the target
    frames = aug.apply({**scan, "target": torch.zeros(3, 40, 30)}, plan)["target"]
    assert frames.shape == (3, 40, 30)
    assert torch.allclose(frames[1], clean["target"][4:44, 5:35], atol=1e-6)


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
