"""PromptMR+ and VQ-Prompt networks (reference sections 1 and 2)."""

from __future__ import annotations

import pytest
import torch

from moero.models.blocks import CAB, VQPromptBlock
from moero.models.promptmr import (
    PRESETS,
    Cascade,
    PromptMR,
    acs_lowpass,
    acs_width_from_mask,
    channels_to_complex,
    complex_to_channels,
    is_radial_mask,
    make_vq_block,
    parameter_counts,
    preset,
    update_history,
)
from moero.models.vq import set_auto_update
from moero.physics.fft import fft2c
from moero.physics.phantom import coil_maps, shepp_logan
from moero.physics.sense import sense_adjoint, sense_forward

# The published PromptMR+ (hellopipu/PromptMR-plus, configs/model/pmr-plus.yaml), counted on the official
# code (notes/fidelity-audit.md section 1.4): trainable and frozen (prompt) parameters per part.
OFFICIAL_SENS, OFFICIAL_SENS_FROZEN = 1_456_817, 414_720
OFFICIAL_CASCADE, OFFICIAL_CASCADE_FROZEN = 6_752_850, 829_440
OFFICIAL_TOTAL, OFFICIAL_FROZEN = 82_491_005, 10_368_000
PARTS = ("sensitivity_net", "denoisers", "vq_prompt", "step_sizes", "other")

H, W, COILS = 32, 24, 4


def _batch(frames: int, batch: int = 2, acs: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Phantom k-space ``(B, F, C, H, W)``, slightly different per frame, and a mask ``(B, F, 1, 1, W)``."""
    image = shepp_logan(H, W)
    maps = coil_maps(COILS, H, W, seed=1)
    scale = torch.linspace(0.9, 1.1, frames).to(torch.complex64)
    kspace = fft2c(maps * image).unsqueeze(0) * scale[:, None, None, None]
    kspace = kspace.unsqueeze(0).expand(batch, -1, -1, -1, -1).clone()
    mask = torch.zeros(batch, frames, 1, 1, W, dtype=torch.bool)
    for f in range(frames):
        mask[:, f, ..., f % 3 :: 3] = True
    mask[..., W // 2 - acs // 2 : W // 2 + acs // 2] = True
    return kspace * mask, mask


def test_complex_channel_helpers_round_trip() -> None:
    x = torch.randn(2, 3, 4, 5, dtype=torch.complex64)
    ch = complex_to_channels(x)
    assert ch.shape == (2, 6, 4, 5) and not ch.is_complex()
    torch.testing.assert_close(ch[:, 2], x[:, 1].real)
    torch.testing.assert_close(ch[:, 3], x[:, 1].imag)
    torch.testing.assert_close(channels_to_complex(ch), x)


def _trainable(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params if not p.requires_grad)


def test_paper_preset_matches_the_official_parameter_counts() -> None:
    with torch.device("meta"):
        model = PromptMR(preset("paper"))
    counts = parameter_counts(model)
    assert abs(counts["total"] - OFFICIAL_TOTAL) <= 0.005 * OFFICIAL_TOTAL
    assert counts["frozen"] == OFFICIAL_FROZEN
    # the one remaining difference is exact: every CAB owns its PReLU, the official code has 2 per part
    # (one shared through a default argument + the first encoder CAB's own), the model total counts the
    # shared one once
    sens_cabs = sum(isinstance(m, CAB) for m in model.sens_net.modules())
    cascade_cabs = sum(isinstance(m, CAB) for m in model.cascades[0].modules())
    assert (sens_cabs, cascade_cabs) == (24, 27)
    assert _trainable(model.sens_net) == (OFFICIAL_SENS + sens_cabs - 2, OFFICIAL_SENS_FROZEN)
    for cascade in model.cascades:  # every cascade has the same structure (cascade 0 tiles its history)
        assert _trainable(cascade) == (OFFICIAL_CASCADE + cascade_cabs - 2, OFFICIAL_CASCADE_FROZEN)
    assert counts["total"] == OFFICIAL_TOTAL + 12 + (sens_cabs - 2) + 12 * (cascade_cabs - 2)
    assert counts["total"] == sum(counts[k] for k in PARTS)
    # the official per-part numbers of one cascade (audit table 1.2), PReLUs excluded
    unet = model.cascades[0].denoiser

    def without_prelu(module: torch.nn.Module) -> int:
        return sum(p.numel() for n, p in module.named_parameters()
                   if p.requires_grad and not n.endswith("body.1.weight"))

    assert without_prelu(unet.stem) == 21_600 and without_prelu(unet.head) == 60_000
    encoders = [without_prelu(unet.enc[i]) + without_prelu(unet.down[i]) for i in range(3)]
    assert encoders == [116_425 - 1, 350_016, 615_288]  # the official 116,425 counts its own PReLU
    assert without_prelu(unet.skip) == 309_024 and without_prelu(unet.bottleneck) == 799_200
    assert [without_prelu(unet.prompt[i]) for i in (2, 1, 0)] == [47_261, 21_221, 5_549]
    assert [without_prelu(unet.dec[i]) for i in (2, 1, 0)] == [2_690_208, 1_164_960, 552_096]
    assert sum(without_prelu(unet.dec[i].momentum) for i in range(3)) == 878_400
    assert sum(without_prelu(unet.dec[i].fuse) for i in range(3)) == 3_154_176


def test_prompts_are_frozen_unless_learnable() -> None:
    frozen = PromptMR(preset("tiny"))
    learnable = PromptMR(preset("tiny", learnable_prompt=True))
    prompts = [n for n, _ in frozen.named_parameters() if n.endswith("prompts")]
    assert prompts and all(not p.requires_grad for n, p in frozen.named_parameters() if n in prompts)
    assert all(p.requires_grad for n, p in learnable.named_parameters() if n in prompts)
    assert parameter_counts(learnable)["frozen"] == 0
    frozen_counts = parameter_counts(frozen)
    assert parameter_counts(learnable)["total"] == frozen_counts["total"] + frozen_counts["frozen"]


def test_every_preset_instantiates_and_vq_counts_follow_the_config() -> None:
    for name in ("tiny", "small", "medium"):
        counts = parameter_counts(PromptMR(preset(name, vq_prompt=True)))
        assert counts["total"] > 0 and counts["vq_prompt"] > 0 and counts["frozen"] > 0
    cfg = PRESETS["paper"]
    assert (cfg.num_cascades, cfg.unet.stem, cfg.unet.levels, cfg.unet.prompts) == (12, 48, (72, 96, 120), (24, 48, 72))
    assert (cfg.frames, cfg.num_codes, cfg.sens.stem, cfg.sens.levels) == (5, 1024, 24, (36, 48, 60))
    assert (cfg.num_history, cfg.learnable_prompt, cfg.data_consistency) == (11, False, "gradient")
    with torch.device("meta"):
        vq_model = PromptMR(preset("paper", vq_prompt=True))
        plain_model = PromptMR(preset("paper"))
    counts, plain = parameter_counts(vq_model), parameter_counts(plain_model)
    assert counts["total"] == sum(counts[k] for k in PARTS)
    # VQ-Prompt decoders from the config arithmetic: 3 residual blocks (2 biased 3x3 convs) + a biased 1x1 conv
    def decoder(d: int) -> int:
        return 3 * 2 * (d * d * 9 + d) + d * d + d

    assert counts["vq_prompt"] == 12 * decoder(120) + decoder(60)
    assert counts["codebook_entries"] == 12 * 1024 * 120 + 1024 * 60
    assert plain["total"] == counts["total"] - counts["vq_prompt"]


@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize("vq_prompt", [False, True])
def test_forward_backward(name: str, vq_prompt: bool) -> None:
    torch.manual_seed(0)
    model = PromptMR(preset(name, vq_prompt=vq_prompt)).train()
    batch = 2 if name == "tiny" else 1
    kspace, mask = _batch(model.config.frames, batch=batch)
    out = model(kspace, mask)
    assert out.image.shape == (batch, H, W) and torch.isfinite(out.image).all()
    frames = model.config.frames
    assert out.maps.shape == (batch, frames, COILS, H, W)  # one map set per adjacent frame
    torch.testing.assert_close((out.maps.abs() ** 2).sum(2), torch.ones(batch, frames, H, W), atol=1e-4, rtol=0)
    (out.image.mean() + out.vq_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert not missing
    if vq_prompt:
        assert len(out.histograms) == model.config.num_cascades + 1
        assert out.histograms[0].shape == (batch, model.config.sens_num_codes)
        for hist in out.histograms:
            torch.testing.assert_close(hist.sum(1), torch.ones(batch))
        assert float(out.vq_loss.detach()) > 0
    else:
        assert out.histograms == [] and float(out.vq_loss) == 0.0


def _no_denoiser(cascade: Cascade) -> None:
    """Make ``D_k`` return zeros, leaving the data-consistency step alone."""
    def zero(buffers: torch.Tensor, history: object) -> tuple:
        return torch.zeros_like(buffers), [], None

    cascade.denoise = zero  # type: ignore[method-assign]


def test_zero_denoiser_step_reduces_data_residual_in_both_dc_forms() -> None:
    cfg = preset("tiny")
    cascade = Cascade(cfg, index=0)
    _no_denoiser(cascade)
    kspace, mask = _batch(cfg.frames)
    maps = coil_maps(COILS, H, W, seed=1)
    maps = (maps / (maps.abs() ** 2).sum(0).sqrt()).expand(2, cfg.frames, -1, -1, -1)
    x = torch.randn(2, cfg.frames, H, W, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    atb = sense_adjoint(kspace, maps, mask.float())

    def residual(img: torch.Tensor) -> float:
        return float((sense_forward(img, maps, mask.float()) - kspace).abs().norm())

    with torch.no_grad():
        out = cascade(x, x, atb, kspace, mask.float(), maps)
    assert residual(out.image) < 0.9 * residual(x)
    # official v1 soft DC on a k-space state: with eta = 1 the sampled points become y, the others stay
    kspace_dc = Cascade(preset("tiny", data_consistency="kspace"), index=0)
    _no_denoiser(kspace_dc)
    k = sense_forward(x, maps)
    with torch.no_grad():
        out_k = kspace_dc(k, x, atb, kspace, mask.float(), maps)
    sampled = mask.expand_as(k)
    torch.testing.assert_close(out_k.image[sampled], kspace[sampled])
    torch.testing.assert_close(out_k.image[~sampled], k[~sampled])


def test_kspace_dc_model_runs_and_outputs_the_rss_of_its_kspace() -> None:
    model = PromptMR(preset("tiny", data_consistency="kspace")).eval()
    kspace, mask = _batch(3)
    with torch.no_grad():
        out = model(kspace, mask)
    assert out.image.shape == (2, H, W) and torch.isfinite(out.image).all()


def test_history_is_fixed_width_newest_first() -> None:
    a, b, c = (torch.full((1, 2, 3, 3), float(v)) for v in (1, 2, 3))
    hist = update_history(None, [a], 3)
    assert torch.equal(hist[0], torch.cat([a, a, a], dim=1))  # the first cascade tiles its own
    hist = update_history(update_history(hist, [b], 3), [c], 3)
    assert torch.equal(hist[0], torch.cat([c, b, a], dim=1))  # newest first, width fixed
    assert update_history(None, [a], 0) is None
    cascade = Cascade(preset("tiny", num_history=4), index=0)
    widths = (8, 8, 12, 16)  # tiny: stem + levels; level i fuses at the width of its input
    for i, level in enumerate(cascade.denoiser.dec):
        assert level.momentum[0].in_channels == 5 * widths[i + 1]


def test_acs_region_is_a_band_for_cartesian_and_a_square_for_radial() -> None:
    cart = torch.zeros(1, 1, 1, 16, 12)
    cart[..., ::4] = 1  # columns 0, 4, 8
    cart[..., 3:9] = 1  # 6 central lines around W // 2 = 6 (one more on the left: the run is made symmetric)
    cart[..., 2] = 1
    band = acs_lowpass(cart, None, 16, 12)[0, 0, 0]
    assert band[:, 3:9].all() and band.sum() == 16 * 6
    radial = torch.zeros(1, 2, 1, 16, 12)
    radial[..., 8, :] = 1  # a horizontal spoke through the centre in every frame
    radial[..., 6:10, 4:8] = 1  # a 4 x 4 ACS square around (8, 6)
    assert bool(is_radial_mask(radial)) and not bool(is_radial_mask(cart))
    square = acs_lowpass(radial, None, 16, 12)[0, 0, 0]
    assert square.sum() == 16 and square[6:10, 4:8].all()  # the spoke is not taken in
    square6 = acs_lowpass(radial, 6, 16, 12)[0, 0, 0]
    assert square6.sum() == 36 and square6[5:11, 3:9].all()


def test_checkpointed_and_plain_cascades_give_same_gradients() -> None:
    kspace, mask = _batch(3, batch=1)
    grads, counts = [], []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        model = PromptMR(preset("tiny", vq_prompt=True, checkpoint=use_checkpoint)).train()
        set_auto_update(model, False)
        out = model(kspace, mask)
        (out.image.square().mean() + out.vq_loss).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        counts.append(float(model.cascades[1].denoiser.vq.quantizer.step_counts.sum()))
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)
    assert counts[0] == counts[1] > 0  # recomputation did not count the batch twice


def test_experts_can_share_one_vq_block() -> None:
    cfg = preset("tiny", vq_prompt=True)
    shared = make_vq_block(cfg)
    experts = torch.nn.ModuleList(Cascade(cfg, 1, shared) for _ in range(3))
    assert all(e.denoiser.vq is shared for e in experts)
    counts = parameter_counts(experts)
    assert counts["vq_prompt"] == sum(p.numel() for p in shared.parameters())
    assert counts["codebook_entries"] == cfg.num_codes * cfg.unet.levels[-1]
    with pytest.raises(ValueError, match="bottleneck width"):
        Cascade(cfg, 0, VQPromptBlock(7, 4))


def test_acs_width_and_bad_inputs() -> None:
    _, mask = _batch(3, acs=6)
    widths = acs_width_from_mask(mask)
    assert widths.tolist() == [6, 6]
    model = PromptMR(preset("tiny")).eval()
    kspace, mask = _batch(3)
    with pytest.raises(ValueError, match="masked_kspace"):
        model(kspace.abs(), mask)
    with pytest.raises(ValueError, match="frames"):
        model(kspace[:, :2], mask[:, :2])
    with pytest.raises(ValueError, match="mask"):
        model(kspace, mask[..., :5])
    with pytest.raises(ValueError, match="num_low_frequencies"):
        model(kspace, mask, num_low_frequencies=0)
    empty = torch.zeros_like(mask)
    with pytest.raises(ValueError, match="num_low_frequencies"):
        model(kspace, empty)
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")
    with pytest.raises(ValueError, match="frames"):
        preset("tiny", frames=4)
    with torch.no_grad():
        explicit = model(kspace, mask.squeeze(2), num_low_frequencies=6).image
        measured = model(kspace, mask).image
    torch.testing.assert_close(explicit, measured)


def test_coil_map_net_routing_histogram_is_the_average_over_all_coils() -> None:
    """Eq. (8) for the coil-map net: ``h`` averages the token histograms of every coil (the net quantises
    each coil as its own sample), per sample of the batch; not one coil's. Moero's cascade-0 navigator
    receives that average."""
    from moero.models.moero import Moero
    from moero.models.vq import VectorQuantizer, token_histogram

    torch.manual_seed(0)
    config = preset("tiny", vq_prompt=True)
    kspace, mask = _batch(config.frames, batch=2)
    kspace[1] = kspace[1].flip(-2)  # another image (flipped along the readout, which the mask does not cut)
    for model in (PromptMR(config).eval(), Moero(config, num_experts=2).eval()):
        sens_vq = next(m for m in model.sens_net.modules() if isinstance(m, VectorQuantizer))
        seen: dict[str, torch.Tensor] = {}
        sens_vq.register_forward_pre_hook(lambda mod, args, seen=seen: seen.update(z=args[0]))
        with torch.no_grad():  # an untrained codebook sends everything to one code: take codes from the features
            model(kspace, mask)
            flat = seen["z"].movedim(1, -1).reshape(-1, sens_vq.codebook.shape[1])
            sens_vq.codebook.copy_(flat[torch.randperm(len(flat))[: len(sens_vq.codebook)]])
        sens_vq.register_forward_hook(lambda mod, args, out, seen=seen: seen.update(indices=out.indices))  # -> None
        if isinstance(model, Moero):
            model.navs[0].register_forward_pre_hook(lambda mod, args, seen=seen: seen.update(routed=args[0]))
        with torch.no_grad():
            out = model(kspace, mask)
        per_coil = seen["indices"].reshape(2, COILS, -1)  # (B * C, h', w'): coils of one sample together
        num_codes = config.sens_num_codes
        expected = torch.stack([token_histogram(per_coil[:, c], num_codes) for c in range(COILS)]).mean(0)
        assert not torch.allclose(expected, token_histogram(per_coil[:, 0], num_codes))  # coils disagree here
        torch.testing.assert_close(out.histograms[0], expected)
        if isinstance(model, Moero):
            torch.testing.assert_close(seen["routed"], expected)


def test_training_hooks_are_no_ops_by_default_and_reach_a_foreign_models_own():
    """Our models are their own TrainingHooks (Moero overrides them); a user's network gets an adapter that
    calls the hooks it defines and no-ops for the rest."""
    from torch import nn

    from moero.models.io import TrainingHooks, training_hooks
    from moero.models.registry import build_model

    plain = build_model("promptmr", "tiny")
    hooks = training_hooks(plain)
    assert hooks is plain and isinstance(plain, TrainingHooks)
    assert hooks.routing_state() is None and hooks.ddp_ignored_parameters() == [] and not hooks.handles_vq_sync
    hooks.set_epoch(1)
    hooks.after_backward(0)
    moero = build_model("moero-2x2", "tiny")
    assert training_hooks(moero).handles_vq_sync and set(training_hooks(moero).routing_state()) >= {"counts", "fitted"}

    class Foreign(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[int] = []

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    foreign = Foreign()
    adapter = training_hooks(foreign)
    adapter.set_epoch(3)
    adapter.after_backward(1)  # not defined by the model: a no-op
    assert foreign.epochs == [3] and adapter.routing_state() is None and not adapter.handles_vq_sync
