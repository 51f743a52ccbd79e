"""PromptMR+ and VQ-Prompt networks (reference sections 1 and 2)."""

from __future__ import annotations

import pytest
import torch

from moero.models.blocks import VQPromptBlock
from moero.models.promptmr import (
    PRESETS,
    Cascade,
    PromptMR,
    acs_width_from_mask,
    channels_to_complex,
    complex_to_channels,
    make_cascade,
    make_vq_block,
    parameter_counts,
    preset,
)
from moero.models.vq import set_auto_update
from moero.physics.fft import fft2c
from moero.physics.phantom import coil_maps, shepp_logan
from moero.physics.sense import sense_adjoint, sense_forward

# Total trainable parameters of PromptMR(preset("paper", vq_prompt=True)), derived once from this code
# (moero 0.1.0) and frozen here: a change means the architecture changed, which must be deliberate.
PAPER_VQ_TOTAL = 72_956_228

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


def test_every_preset_instantiates_and_paper_count_is_stable() -> None:
    for name in ("tiny", "small", "medium"):
        counts = parameter_counts(PromptMR(preset(name, vq_prompt=True)))
        assert counts["total"] > 0 and counts["vq_prompt"] > 0
    cfg = PRESETS["paper"]
    assert (cfg.num_cascades, cfg.unet.stem, cfg.unet.levels, cfg.unet.prompts) == (12, 48, (72, 96, 120), (24, 48, 72))
    assert (cfg.frames, cfg.num_codes, cfg.sens.stem, cfg.sens.levels) == (5, 1024, 24, (36, 48, 60))
    with torch.device("meta"):
        vq_model = PromptMR(preset("paper", vq_prompt=True))
        plain_model = PromptMR(preset("paper"))
    counts, plain = parameter_counts(vq_model), parameter_counts(plain_model)
    assert counts["total"] == PAPER_VQ_TOTAL
    assert counts["total"] == sum(v for k, v in counts.items() if k not in ("total", "codebook_entries"))
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
    assert out.maps.shape == (batch, 1, COILS, H, W)
    torch.testing.assert_close((out.maps.abs() ** 2).sum(2), torch.ones(batch, 1, H, W), atol=1e-4, rtol=0)
    (out.image.mean() + out.vq_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    if vq_prompt:
        assert len(out.histograms) == model.config.num_cascades + 1
        assert out.histograms[0].shape == (batch, model.config.sens_num_codes)
        for hist in out.histograms:
            torch.testing.assert_close(hist.sum(1), torch.ones(batch))
        assert float(out.vq_loss.detach()) > 0
    else:
        assert out.histograms == [] and float(out.vq_loss) == 0.0


def test_zero_denoiser_step_reduces_data_residual() -> None:
    cfg = preset("tiny")
    cascade = Cascade(cfg, index=0)
    head = cascade.denoiser.head
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    kspace, mask = _batch(cfg.frames)
    maps = coil_maps(COILS, H, W, seed=1)
    maps = (maps / (maps.abs() ** 2).sum(0).sqrt()).expand(2, 1, -1, -1, -1)
    x = torch.randn(2, cfg.frames, H, W, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    atb = sense_adjoint(kspace, maps, mask.float())

    def residual(img: torch.Tensor) -> float:
        return float((sense_forward(img, maps, mask.float()) - kspace).abs().norm())

    with torch.no_grad():
        out = cascade(x, x, atb, kspace, mask.float(), maps)
    assert residual(out.image) < 0.9 * residual(x)
    kspace_dc = Cascade(preset("tiny", data_consistency="kspace"), index=0)
    kspace_dc.load_state_dict(cascade.state_dict())
    with torch.no_grad():
        out_k = kspace_dc(x, x, atb, kspace, mask.float(), maps)
    torch.testing.assert_close(out_k.image, out.image, atol=1e-4, rtol=1e-4)  # same step with normalised maps


def test_checkpointed_and_plain_cascades_give_same_gradients() -> None:
    kspace, mask = _batch(3, batch=1)
    grads, counts = [], []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        model = PromptMR(preset("tiny", vq_prompt=True, checkpoint=use_checkpoint)).train()
        set_auto_update(model, False)
        out = model(kspace, mask)
        (out.image.square().mean() + out.vq_loss).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        counts.append(float(model.cascades[1].denoiser.vq.quantizer.step_counts.sum()))
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)
    assert counts[0] == counts[1] > 0  # recomputation did not count the batch twice


def test_experts_can_share_one_vq_block() -> None:
    cfg = preset("tiny", vq_prompt=True)
    shared = make_vq_block(cfg)
    experts = torch.nn.ModuleList(make_cascade(cfg, 1, shared) for _ in range(3))
    assert all(e.denoiser.vq is shared for e in experts)
    counts = parameter_counts(experts)
    assert counts["vq_prompt"] == sum(p.numel() for p in shared.parameters())
    assert counts["codebook_entries"] == cfg.num_codes * cfg.unet.levels[-1]
    with pytest.raises(ValueError, match="bottleneck width"):
        make_cascade(cfg, 0, VQPromptBlock(7, 4))


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
