"""PromptMR+ re-implemented (reference section 1) with the optional VQ-Prompt bottleneck (section 2).

Data interface of :meth:`PromptMR.forward`
------------------------------------------
* ``masked_kspace``: complex64 ``(B, F, C, H, W)``, ``F = config.frames`` adjacent frames; the
  centre frame ``F // 2`` is the one reconstructed (the target is the RSS of its fully sampled data).
* ``mask``: bool or float, ``(B, F|1, 1, H|1, W)`` or ``(B, F|1, H|1, W)`` (no coil axis), 1 = sampled.
* ``num_low_frequencies``: width of the fully sampled calibration (ACS) block of phase-encode lines
  at the k-space centre, an ``int`` or a ``(B,)`` tensor; ``None`` measures it on ``mask`` (the
  central run of lines sampled in every frame).

Returns :class:`PromptMROutput`: ``image`` ``(B, H, W)`` real RSS of ``S x`` for the centre frame,
``vq_loss`` (sum of commitment losses, 0 without VQ), ``histograms`` (token histograms of eq. (8):
``histograms[0]`` from the sensitivity net, ``histograms[k + 1]`` from cascade ``k``, so cascade
``k`` of Moero routes on ``histograms[k]``; empty without VQ) and ``maps`` ``(B, 1, C, H, W)``.

Cascade (eq. (2)): ``x_{k+1} = x_k - eta_k (A^H A x_k - A^H y) - D_k(...)`` with ``A = M F S`` per
frame; ``D_k`` sees the adaptive-input buffer ``[x_k, A^H A x_k, s_k, A^H y, A^H A x_k - A^H y]``
(5 buffers x F frames x 2 real channels) and returns the image update and the next latent ``s_{k+1}``.
Its decoder also receives the decoder features of the previous ``num_history`` cascades ("momentum").
For Moero, :func:`make_cascade` builds one cascade around an externally owned :class:`VQPromptBlock`,
so the K experts of a cascade can share one block; :func:`run_cascade` applies one with optional
gradient checkpointing.

*Assumption* (not fixed by the paper): coil maps are shared by the F frames, estimated from the
time-averaged ACS data (coils do not move across a cine series).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from moero.models.blocks import CAB, Downsample, PromptBlock, Upsample, VQPromptBlock, cab_stack, conv3x3
from moero.models.vq import VQOutput, frozen_statistics, token_histogram
from moero.physics.fft import ifft2c
from moero.physics.sense import normalize_maps, rss, sense_adjoint, sense_forward

__all__ = [
    "UNetConfig",
    "ModelConfig",
    "PRESETS",
    "preset",
    "complex_to_channels",
    "channels_to_complex",
    "PromptUNet",
    "SensitivityNet",
    "Cascade",
    "CascadeOutput",
    "PromptMR",
    "PromptMROutput",
    "make_cascade",
    "make_vq_block",
    "run_cascade",
    "parameter_counts",
    "acs_width_from_mask",
]

_NUM_BUFFERS = 5  # x_k, A^H A x_k, s_k, A^H y, A^H A x_k - A^H y


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class UNetConfig:
    """Sizes of one PromptUNet: stem width, 3 level widths, prompts and CAB counts per level."""

    stem: int
    levels: tuple[int, int, int]
    prompts: tuple[int, int, int]
    prompt_sizes: tuple[int, int, int]
    prompt_components: int = 5
    enc_blocks: tuple[int, int, int] = (2, 3, 3)
    dec_blocks: tuple[int, int, int] = (2, 2, 3)
    skip_blocks: tuple[int, int, int] = (1, 1, 1)
    bottleneck_blocks: int = 3
    reduction: int = 4

    def __post_init__(self) -> None:
        for name in ("levels", "prompts", "prompt_sizes", "enc_blocks", "dec_blocks", "skip_blocks"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"UNetConfig.{name} must have 3 entries (one per level), got {value!r}")
        if self.stem < 1 or min(self.levels) < 1 or min(self.prompts) < 1:
            raise ValueError("UNetConfig.stem, levels and prompts must be positive")


@dataclass(frozen=True)
class ModelConfig:
    """PromptMR(+VQ-Prompt) configuration; build presets with :func:`preset`."""

    name: str
    num_cascades: int
    frames: int
    unet: UNetConfig
    sens: UNetConfig
    num_history: int = 11  # decoder features of this many previous cascades feed each decoder level
    vq_prompt: bool = False
    sens_vq: bool = True  # the sensitivity net carries a VQ bottleneck too (when vq_prompt)
    num_codes: int = 1024
    sens_num_codes: int = 1024
    vq_decoder_blocks: int = 3
    vq_distance: str = "euclidean"
    vq_restart_after: int | None = None
    vq_kmeans_init: bool = False
    data_consistency: str = "gradient"  # "gradient" (image domain, eq. (2)) or "kspace" (soft DC)
    checkpoint: bool = True  # gradient checkpointing per cascade (training only)

    def __post_init__(self) -> None:
        if self.num_cascades < 1:
            raise ValueError(f"ModelConfig.num_cascades must be >= 1, got {self.num_cascades}")
        if self.frames < 1 or self.frames % 2 == 0:
            raise ValueError(f"ModelConfig.frames must be odd (a centre frame), got {self.frames}")
        if self.data_consistency not in ("gradient", "kspace"):
            raise ValueError(
                f"ModelConfig.data_consistency must be 'gradient' or 'kspace', got {self.data_consistency!r}"
            )
        if self.num_history < 0:
            raise ValueError(f"ModelConfig.num_history must be >= 0, got {self.num_history}")

    def vq_kwargs(self) -> dict[str, Any]:
        return {
            "distance": self.vq_distance,
            "restart_after": self.vq_restart_after,
            "kmeans_init": self.vq_kmeans_init,
        }


_ONE = (1, 1, 1)
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        "tiny", num_cascades=2, frames=3, num_history=1, num_codes=32, sens_num_codes=16, vq_decoder_blocks=1,
        unet=UNetConfig(8, (8, 12, 16), (4, 4, 8), (8, 4, 4), 2, _ONE, _ONE, (0, 0, 1), 1),
        sens=UNetConfig(4, (4, 6, 8), (2, 2, 4), (8, 4, 4), 2, _ONE, _ONE, (0, 0, 1), 1),
    ),
    "small": ModelConfig(
        "small", num_cascades=4, frames=3, num_history=3, num_codes=128, sens_num_codes=64, vq_decoder_blocks=2,
        unet=UNetConfig(16, (24, 32, 40), (8, 12, 16), (32, 16, 8), 3, _ONE, _ONE, _ONE, 1),
        sens=UNetConfig(8, (12, 16, 20), (4, 6, 8), (32, 16, 8), 3, _ONE, _ONE, _ONE, 1),
    ),
    "medium": ModelConfig(
        "medium", num_cascades=6, frames=5, num_history=5, num_codes=512, sens_num_codes=512,
        unet=UNetConfig(24, (36, 48, 60), (12, 24, 36), (64, 32, 16), 5, (2, 2, 2), (1, 2, 2), _ONE, 2),
        sens=UNetConfig(12, (18, 24, 30), (6, 12, 18), (64, 32, 16), 5, _ONE, _ONE, _ONE, 1),
    ),
    "paper": ModelConfig(
        "paper", num_cascades=12, frames=5, num_history=11, num_codes=1024, sens_num_codes=1024,
        unet=UNetConfig(48, (72, 96, 120), (24, 48, 72), (64, 32, 16), 5, (2, 3, 3), (2, 2, 3), _ONE, 3),
        sens=UNetConfig(24, (36, 48, 60), (12, 24, 36), (64, 32, 16), 5, (2, 3, 3), (2, 2, 3), _ONE, 3),
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset (``tiny``, ``small``, ``medium``, ``paper``) with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------------------- complex <-> channels
def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, N, H, W)`` -> real ``(B, 2N, H, W)`` ordered ``[re_0, im_0, re_1, im_1, ...]``."""
    if not x.is_complex() or x.ndim != 4:
        raise ValueError(f"x must be complex (B, N, H, W), got {x.dtype} {tuple(x.shape)}")
    b, n, h, w = x.shape
    return torch.view_as_real(x).permute(0, 1, 4, 2, 3).reshape(b, 2 * n, h, w)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels`: real ``(B, 2N, H, W)`` -> complex ``(B, N, H, W)``."""
    if x.is_complex() or x.ndim != 4 or x.shape[1] % 2:
        raise ValueError(f"x must be real (B, 2N, H, W), got {x.dtype} {tuple(x.shape)}")
    b, c, h, w = x.shape
    return torch.view_as_complex(x.reshape(b, c // 2, 2, h, w).permute(0, 1, 3, 4, 2).contiguous())


# ---------------------------------------------------------------------------- networks
@dataclass
class UNetOutput:
    out: torch.Tensor
    features: list[torch.Tensor]  # decoder features per level (0 = finest), the next cascades' history
    vq: VQOutput | None


class PromptUNet(nn.Module):
    """U-Net of CABs with PromptBlocks on 3 decoder levels (reference section 1).

    ``vq_block``: an optional, possibly shared, :class:`VQPromptBlock` applied at the bottleneck.
    ``num_history``: how many previous cascades' decoder features each decoder level fuses (1x1 conv).
    """

    def __init__(
        self, in_ch: int, out_ch: int, cfg: UNetConfig, vq_block: VQPromptBlock | None = None, num_history: int = 0
    ) -> None:
        super().__init__()
        widths = (cfg.stem, *cfg.levels)
        if vq_block is not None and vq_block.quantizer.dim != widths[3]:
            raise ValueError(f"vq_block width {vq_block.quantizer.dim} != bottleneck width {widths[3]}")
        self.num_history = num_history
        self.stem = conv3x3(in_ch, widths[0])
        self.enc = nn.ModuleList(cab_stack(widths[i], cfg.enc_blocks[i], cfg.reduction) for i in range(3))
        self.skip = nn.ModuleList(cab_stack(widths[i], cfg.skip_blocks[i], cfg.reduction) for i in range(3))
        self.down = nn.ModuleList(Downsample(widths[i], widths[i + 1]) for i in range(3))
        self.bottleneck = cab_stack(widths[3], cfg.bottleneck_blocks, cfg.reduction)
        self.vq = vq_block
        self.prompt = nn.ModuleList(
            PromptBlock(widths[i + 1], cfg.prompts[i], cfg.prompt_components, cfg.prompt_sizes[i]) for i in range(3)
        )
        self.prompt_fuse = nn.ModuleList(
            nn.Sequential(
                CAB(widths[i + 1] + cfg.prompts[i], cfg.reduction),
                nn.Conv2d(widths[i + 1] + cfg.prompts[i], widths[i + 1], 1, bias=False),
            )
            for i in range(3)
        )
        self.up = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in range(3))
        self.history_fuse = nn.ModuleList(
            nn.Conv2d(widths[i] * (1 + num_history), widths[i], 1, bias=False) if num_history else nn.Identity()
            for i in range(3)
        )
        self.dec = nn.ModuleList(cab_stack(widths[i], cfg.dec_blocks[i], cfg.reduction) for i in range(3))
        self.head = conv3x3(widths[0], out_ch, bias=True)

    def forward(self, x: torch.Tensor, history: list[list[torch.Tensor]] | None = None) -> UNetOutput:
        history = history or []
        if len(history) != self.num_history:
            raise ValueError(f"history must hold {self.num_history} cascades' features, got {len(history)}")
        skips = []
        x = self.stem(x)
        for i in range(3):
            x = self.enc[i](x)
            skips.append(self.skip[i](x))
            x = self.down[i](x)
        x = self.bottleneck(x)
        vq = None
        if self.vq is not None:
            x, vq = self.vq(x)
        features: list[torch.Tensor] = [x] * 3
        for i in (2, 1, 0):
            x = self.prompt_fuse[i](torch.cat([x, self.prompt[i](x)], dim=1))
            x = self.up[i](x, skips[i].shape[-2:]) + skips[i]
            if self.num_history:
                x = self.history_fuse[i](torch.cat([x, *(h[i] for h in history)], dim=1))
            x = self.dec[i](x)
            features[i] = x
        return UNetOutput(self.head(x), features, vq)


def make_vq_block(config: ModelConfig, sens: bool = False) -> VQPromptBlock:
    """A VQ-PromptBlock sized for a cascade's bottleneck (or the sensitivity net's if ``sens``)."""
    cfg = config.sens if sens else config.unet
    num_codes = config.sens_num_codes if sens else config.num_codes
    return VQPromptBlock(cfg.levels[-1], num_codes, config.vq_decoder_blocks, **config.vq_kwargs())


def acs_width_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Per-sample width ``(B,)`` of the central run of phase-encode lines sampled in all frames and rows.

    ``mask``: ``(B, ..., W)``; the centre line is ``W // 2`` (centred FFT). Raises if it is unsampled.
    """
    cols = (mask.reshape(mask.shape[0], -1, mask.shape[-1]) > 0).all(dim=1)  # (B, W)
    w = cols.shape[-1]
    centre = w // 2
    if not bool(cols[:, centre].all()):
        raise ValueError("mask does not sample the k-space centre line; pass num_low_frequencies explicitly")
    right = cols[:, centre:].long().cumprod(dim=1).sum(dim=1)  # sampled run from the centre rightwards
    left = cols[:, : centre + 1].flip(1).long().cumprod(dim=1).sum(dim=1)
    return left + right - 1


class SensitivityNet(nn.Module):
    """Coil maps from the ACS block (reference section 1): low-res estimate, per-coil PromptUNet refinement,
    normalisation ``S_c / sqrt(sum |S_c|^2 + eps)``. Optional VQ bottleneck whose histogram (averaged over
    coils) routes Moero's cascade 0.
    """

    def __init__(self, config: ModelConfig, vq_block: VQPromptBlock | None = None) -> None:
        super().__init__()
        self.unet = PromptUNet(2, 2, config.sens, vq_block)

    def forward(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: int | torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, VQOutput | None]:
        """Returns maps ``(B, 1, C, H, W)``, the histogram ``(B, K)`` (or None) and the VQ output."""
        b, _, c, h, w = masked_kspace.shape
        if num_low_frequencies is None:
            widths = acs_width_from_mask(mask)
        else:
            widths = torch.as_tensor(num_low_frequencies, device=masked_kspace.device).long().reshape(-1).expand(b)
            if bool((widths < 1).any()) or bool((widths > w).any()):
                raise ValueError(f"num_low_frequencies must lie in [1, W={w}], got {widths.tolist()}")
        start = (w - widths + 1) // 2
        cols = torch.arange(w, device=masked_kspace.device)
        lowpass = (cols >= start[:, None]) & (cols < (start + widths)[:, None])  # (B, W)
        acs = masked_kspace.mean(dim=1) * lowpass[:, None, None, :].to(masked_kspace.real.dtype)
        coil_images = ifft2c(acs)  # (B, C, H, W)
        coil_images = coil_images / rss(coil_images, dim=1).unsqueeze(1).clamp_min(1e-12)
        real = complex_to_channels(coil_images.reshape(b * c, 1, h, w))
        out = self.unet(real)
        maps = normalize_maps(coil_images + channels_to_complex(out.out).reshape(b, c, h, w))
        histogram = None
        if out.vq is not None:
            idx = out.vq.indices
            histogram = token_histogram(idx.reshape(b, c, *idx.shape[1:]), self.unet.vq.num_codes)
        return maps.unsqueeze(1), histogram, out.vq


@dataclass
class CascadeOutput:
    image: torch.Tensor  # x_{k+1}, complex (B, F, H, W)
    latent: torch.Tensor  # s_{k+1}, complex (B, F, H, W)
    features: list[torch.Tensor]  # decoder features (history for later cascades)
    vq_loss: torch.Tensor
    histogram: torch.Tensor | None  # (B, K) token histogram of this cascade's bottleneck


class Cascade(nn.Module):
    """One unrolled step of eq. (2) with a PromptUNet denoiser on the adaptive-input buffer.

    ``index``: the cascade's position (sets how many history features it fuses). ``vq_block``: an
    externally owned, possibly shared, VQ-PromptBlock (None: plain PromptMR+).
    """

    def __init__(self, config: ModelConfig, index: int, vq_block: VQPromptBlock | None = None) -> None:
        super().__init__()
        self.frames, self.data_consistency = config.frames, config.data_consistency
        self.num_history = min(index, config.num_history)
        self.denoiser = PromptUNet(
            _NUM_BUFFERS * 2 * config.frames, 4 * config.frames, config.unet, vq_block, self.num_history
        )
        self.eta = nn.Parameter(torch.ones(()))  # learnable step size, initialised to 1

    def gradient_step(self, x: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor,
                      ata_x: torch.Tensor, atb: torch.Tensor) -> torch.Tensor:
        """``x - eta (A^H A x - A^H y)`` (image domain) or its k-space soft-DC form ``S^H F^-1 (k - eta M(k - y))``."""
        if self.data_consistency == "gradient":
            return x - self.eta * (ata_x - atb)
        k = sense_forward(x, maps)
        residual = (k - kspace) * mask.to(k.real.dtype)
        return sense_adjoint(k - self.eta * residual, maps)

    def forward(
        self, x: torch.Tensor, latent: torch.Tensor, atb: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor,
        maps: torch.Tensor, history: list[list[torch.Tensor]] | None = None,
    ) -> CascadeOutput:
        """``x``, ``latent``, ``atb``: complex ``(B, F, H, W)``; ``kspace`` ``(B, F, C, H, W)``;
        ``maps`` ``(B, 1, C, H, W)``; ``history``: decoder features of earlier cascades (oldest first)."""
        history = list(history or [])[-self.num_history :] if self.num_history else []
        ata_x = sense_adjoint(sense_forward(x, maps, mask), maps)
        buffers = torch.cat([x, ata_x, latent, atb, ata_x - atb], dim=1)  # (B, 5F, H, W)
        scale = buffers.abs().flatten(1).std(dim=1).clamp_min(1e-12)[:, None, None, None]
        out = self.denoiser(complex_to_channels(buffers / scale), history)
        update = channels_to_complex(out.out) * scale
        denoised, new_latent = update[:, : self.frames], update[:, self.frames :]
        image = self.gradient_step(x, kspace, mask, maps, ata_x, atb) - denoised
        vq_loss = out.vq.loss if out.vq is not None else x.real.new_zeros(())
        histogram = None
        if out.vq is not None:
            histogram = token_histogram(out.vq.indices, self.denoiser.vq.num_codes)
        return CascadeOutput(image, new_latent, out.features, vq_loss, histogram)


def make_cascade(config: ModelConfig, index: int, vq_block: VQPromptBlock | None = None) -> Cascade:
    """Factory of cascade ``index``; Moero calls it K times per cascade with one shared ``vq_block``."""
    return Cascade(config, index, vq_block)


def run_cascade(fn: Callable[..., CascadeOutput], *args: Any, use_checkpoint: bool = False) -> CascadeOutput:
    """Call ``fn(*args)``, with gradient checkpointing (non-reentrant) when asked and gradients are on.

    The recomputation during backward runs under :func:`moero.vq.frozen_statistics`, so VQ statistics
    of the batch are counted once.
    """
    if not use_checkpoint or not torch.is_grad_enabled():
        return fn(*args)
    calls = [0]

    def once_counted(*inner: Any) -> CascadeOutput:
        calls[0] += 1
        if calls[0] == 1:
            return fn(*inner)
        with frozen_statistics():
            return fn(*inner)

    return checkpoint(once_counted, *args, use_reentrant=False)


@dataclass
class PromptMROutput:
    image: torch.Tensor  # (B, H, W) RSS of S x for the centre frame
    vq_loss: torch.Tensor  # scalar, sum of commitment losses (0 without VQ)
    histograms: list[torch.Tensor] = field(default_factory=list)  # [sens net, cascade 0, ..., cascade K-1]
    maps: torch.Tensor | None = None  # (B, 1, C, H, W)
    frames: torch.Tensor | None = None  # final complex images (B, F, H, W)


def check_inputs(masked_kspace: torch.Tensor, mask: torch.Tensor, frames: int) -> torch.Tensor:
    if not masked_kspace.is_complex() or masked_kspace.ndim != 5:
        raise ValueError(f"masked_kspace must be complex (B, F, C, H, W), got {masked_kspace.dtype} "
                         f"{tuple(masked_kspace.shape)}")
    if masked_kspace.shape[1] != frames:
        raise ValueError(f"masked_kspace has {masked_kspace.shape[1]} frames, the model expects {frames}")
    if mask.ndim == 4:
        mask = mask.unsqueeze(2)
    if mask.ndim != 5 or mask.shape[2] != 1:
        raise ValueError(f"mask must be (B, F|1, 1, H|1, W) or (B, F|1, H|1, W), got {tuple(mask.shape)}")
    try:
        torch.broadcast_shapes(mask.shape, masked_kspace.shape)
    except RuntimeError as err:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to masked_kspace "
                         f"{tuple(masked_kspace.shape)}") from err
    return mask.to(masked_kspace.real.dtype)


class PromptMR(nn.Module):
    """PromptMR+ (``config.vq_prompt=False``) or PromptMR+ with VQ-Prompt (``True``): see the module doc."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        use_vq = config.vq_prompt
        self.sens_net = SensitivityNet(config, make_vq_block(config, sens=True) if use_vq and config.sens_vq else None)
        self.cascades = nn.ModuleList(
            make_cascade(config, k, make_vq_block(config) if use_vq else None) for k in range(config.num_cascades)
        )

    def forward(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: int | torch.Tensor | None = None
    ) -> PromptMROutput:
        mask = check_inputs(masked_kspace, mask, self.config.frames)
        maps, sens_hist, sens_vq = self.sens_net(masked_kspace, mask, num_low_frequencies)
        vq_loss = sens_vq.loss if sens_vq is not None else masked_kspace.real.new_zeros(())
        histograms = [sens_hist] if sens_hist is not None else []
        atb = sense_adjoint(masked_kspace, maps, mask)
        x, latent, history = atb, atb, []
        use_checkpoint = self.config.checkpoint and self.training
        for cascade in self.cascades:
            out = run_cascade(cascade, x, latent, atb, masked_kspace, mask, maps, history,
                              use_checkpoint=use_checkpoint)
            x, latent = out.image, out.latent
            history = (history + [out.features])[-max(self.config.num_history, 1) :]
            vq_loss = vq_loss + out.vq_loss
            if out.histogram is not None:
                histograms.append(out.histogram)
        centre = x[:, self.config.frames // 2]
        image = rss(maps[:, 0] * centre.unsqueeze(1), dim=1)
        return PromptMROutput(image, vq_loss, histograms, maps, x)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per part (shared modules counted once) plus codebook entries (EMA buffers).

    Keys: ``sensitivity_net`` (without its VQ block), ``denoisers`` (cascade U-Nets without VQ blocks),
    ``vq_prompt`` (VQ-Prompt decoders, incl. the sensitivity net's), ``step_sizes`` (the etas),
    ``other``, ``total``, ``codebook_entries`` (not trained by gradients).
    """
    vq_ids = {id(p) for m in model.modules() if isinstance(m, VQPromptBlock) for p in m.parameters()}
    sens_ids = {id(p) for m in model.modules() if isinstance(m, SensitivityNet) for p in m.parameters()} - vq_ids
    eta_ids = {id(m.eta) for m in model.modules() if isinstance(m, Cascade)}
    den_ids = {id(p) for m in model.modules() if isinstance(m, Cascade) for p in m.parameters()}
    den_ids -= vq_ids | eta_ids | sens_ids
    params = {id(p): p.numel() for p in model.parameters()}
    counts = {
        "sensitivity_net": sum(params[i] for i in sens_ids),
        "denoisers": sum(params[i] for i in den_ids),
        "vq_prompt": sum(params[i] for i in vq_ids),
        "step_sizes": sum(params[i] for i in eta_ids),
    }
    counts["other"] = sum(params.values()) - sum(counts.values())
    counts["total"] = sum(params.values())
    seen: set[int] = set()
    codebook_entries = 0
    for m in model.modules():
        if isinstance(m, VQPromptBlock) and id(m) not in seen:
            seen.add(id(m))
            codebook_entries += m.quantizer.codebook.numel()
    counts["codebook_entries"] = codebook_entries
    return counts

