"""PromptMR+ re-implemented with the optional VQ-Prompt bottleneck.

The ``paper`` preset reproduces the structure of the published PromptMR+ (``hellopipu/PromptMR-plus``,
``configs/model/pmr-plus.yaml`` with ``models/promptmr_v2.py``): 12 cascades, 82.49 M trainable plus
10.37 M frozen prompt parameters (``book/conventions.md`` lists what still differs and why).

Data interface of :meth:`PromptMR.forward`
------------------------------------------
* ``masked_kspace``: complex64 ``(B, F, C, H, W)``, ``F = config.frames`` adjacent frames; the
  centre frame ``F // 2`` is the one reconstructed (the target is the RSS of its fully sampled data).
* ``mask``: bool or float, ``(B, F|1, 1, H|1, W)`` or ``(B, F|1, H|1, W)`` (no coil axis), 1 = sampled.
* ``num_low_frequencies``: side ``n`` of the calibration (ACS) region, an ``int`` or a ``(B,)``
  tensor: a central band of ``n`` phase-encode columns for Cartesian masks, a centred ``n x n``
  square for kt-radial masks (masks that vary along the rows); ``None`` measures it on ``mask``.

Returns :class:`PromptMROutput`: ``image`` ``(B, H, W)`` real RSS of ``S x`` for the centre frame,
``vq_loss`` (sum of commitment losses, 0 without VQ), ``histograms`` (token histograms of eq. (8):
``histograms[0]`` from the sensitivity net, ``histograms[k + 1]`` from cascade ``k``, so cascade
``k`` of Moero routes on ``histograms[k]``; empty without VQ) and ``maps`` ``(B, F, C, H, W)``
(one map set per frame).

Cascade (eq. (2)): ``x_{k+1} = x_k - eta_k (A^H A x_k - A^H y) - D_k(...)`` with ``A = M F S`` per
frame; ``D_k`` sees the adaptive-input buffer ``[x_k, A^H A x_k, s_k, A^H y, A^H A x_k - A^H y]``
(5 buffers x F frames x 2 real channels, normalised by one mean and std per sample and padded to a
multiple of 8) and returns the image update and the next latent ``s_{k+1}``. Each decoder level first
fuses the fixed-width history of the last ``num_history`` cascades' decoder inputs ("momentum";
cascade 0 tiles its own). Data consistency: every preset uses the image-domain gradient step
(``data_consistency="gradient"``, what the published training code runs); ``"kspace"`` offers the
official v1 soft DC on a multi-coil k-space state. For Moero, :class:`Cascade` takes an externally
owned :class:`VQPromptBlock`, so the K experts of a cascade can share one block; :func:`run_cascade`
applies one with optional gradient checkpointing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from moero.models.blocks import Downsample, PromptBlock, UpBlock, VQPromptBlock, cab_stack, conv3x3
from moero.models.io import ReconOutput, TrainingHooks
from moero.models.vq import VQOutput, frozen_statistics, token_histogram
from moero.physics.fft import ifft2c
from moero.physics.sense import rss, sense_adjoint, sense_forward, sense_normal

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
    "make_vq_block",
    "run_cascade",
    "unroll",
    "parameter_counts",
    "acs_width_from_mask",
    "acs_square_from_mask",
    "acs_lowpass",
    "is_radial_mask",
    "normalized_unet",
    "pad_to_multiple",
    "to_channels",
    "from_channels",
    "update_history",
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
    num_history: int = 11  # fixed-width history: decoder inputs of the last this many cascades
    learnable_prompt: bool = False  # False: prompt maps frozen (official learnable_prompt: false)
    vq_prompt: bool = False
    sens_vq: bool = True  # the sensitivity net carries a VQ bottleneck too (when vq_prompt)
    num_codes: int = 1024
    sens_num_codes: int = 1024
    vq_decoder_blocks: int = 3
    vq_distance: str = "euclidean"
    vq_restart_after: int | None = None
    vq_kmeans_init: bool = False
    vq_init_cluster_size: float = 1.0  # 0: the authors' EMA start (see VectorQuantizer)
    data_consistency: str = "gradient"  # "gradient" (image domain, eq. (2), official v2) or "kspace" (v1 soft DC)
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
            "init_cluster_size": self.vq_init_cluster_size,
        }


_ONE = (1, 1, 1)
# Every preset has the published structure (``paper``: configs/model/pmr-plus.yaml, 82.49 M trainable +
# 10.37 M frozen); tiny/small/medium are narrower and shallower versions of it (``tiny`` is what the
# whole test suite trains). All use the image-domain gradient step (data_consistency="gradient"), the
# published training code's default; pass data_consistency="kspace" for the v1 soft DC.
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
    features: list[torch.Tensor]  # input of each decoder level (0 = finest): the next cascades' history
    vq: VQOutput | None


class PromptUNet(nn.Module):
    """U-Net of CABs with PromptBlocks on 3 decoder levels, structured as the published PromptMR+
    (``PromptUnet``): 3x3 stem; per level CABs then a stride-2 conv; skip CABs;
    bottleneck CABs (then the optional VQ-PromptBlock); three :class:`~moero.models.blocks.UpBlock`
    levels; a bias-free 5x5 head. Inputs must have sizes divisible by 8 (see :func:`normalized_unet`).

    ``vq_block``: an optional, possibly shared, :class:`VQPromptBlock` applied at the bottleneck.
    ``num_history``: how many earlier cascades' decoder inputs each decoder level fuses (0: none).
    """

    def __init__(
        self, in_ch: int, out_ch: int, cfg: UNetConfig, vq_block: VQPromptBlock | None = None, num_history: int = 0,
        learnable_prompt: bool = False,
    ) -> None:
        super().__init__()
        widths = (cfg.stem, *cfg.levels)
        if vq_block is not None and vq_block.quantizer.dim != widths[3]:
            raise ValueError(f"vq_block width {vq_block.quantizer.dim} != bottleneck width {widths[3]}")
        self.num_history, self.widths = num_history, widths
        self.stem = conv3x3(in_ch, widths[0])
        self.enc = nn.ModuleList(cab_stack(widths[i], cfg.enc_blocks[i], cfg.reduction) for i in range(3))
        self.down = nn.ModuleList(Downsample(widths[i], widths[i + 1]) for i in range(3))
        self.skip = nn.ModuleList(cab_stack(widths[i], cfg.skip_blocks[i], cfg.reduction) for i in range(3))
        self.bottleneck = cab_stack(widths[3], cfg.bottleneck_blocks, cfg.reduction)
        self.vq = vq_block
        self.prompt = nn.ModuleList(
            PromptBlock(widths[i + 1], cfg.prompts[i], cfg.prompt_components, cfg.prompt_sizes[i], learnable_prompt)
            for i in range(3)
        )
        self.dec = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], cfg.prompts[i], cfg.dec_blocks[i], num_history, cfg.reduction)
            for i in range(3)
        )
        self.head = nn.Conv2d(widths[0], out_ch, 5, padding=2, bias=False)

    def forward(self, x: torch.Tensor, history: list[torch.Tensor] | None = None) -> UNetOutput:
        """``history``: per decoder level ``(B, num_history * C_level, h, w)`` (None: each level tiles its input)."""
        if history is not None and len(history) != 3:
            raise ValueError(f"history must hold one tensor per decoder level (3), got {len(history)}")
        encoded = []
        x = self.stem(x)
        for i in range(3):
            x = self.enc[i](x)
            encoded.append(x)
            x = self.down[i](x)
        x = self.bottleneck(x)
        vq = None
        if self.vq is not None:
            x, vq = self.vq(x)
        features: list[torch.Tensor] = [x] * 3
        for i in (2, 1, 0):
            features[i] = x
            x = self.dec[i](x, self.prompt[i](x), self.skip[i](encoded[i]), None if history is None else history[i])
        return UNetOutput(self.head(x), features, vq)


def to_channels(z: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, N, H, W)`` -> real ``(B, 2N, H, W)`` as ``[Re of all N, Im of all N]`` (the official
    ``'b c h w two -> b (two c) h w'``)."""
    return torch.cat([z.real, z.imag], dim=1)


def from_channels(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_channels`."""
    n = x.shape[1] // 2
    return torch.complex(x[:, :n], x[:, n:])


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two axes up to a multiple of ``multiple``, split floor/ceil as the official
    ``NormPromptUnet.pad``; returns the padded tensor and ``(left, right, top, bottom)``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return (F.pad(x, pads) if ph or pw else x), pads


def normalized_unet(unet: PromptUNet, z: torch.Tensor, history: list[torch.Tensor] | None = None) -> tuple[
        torch.Tensor, list[torch.Tensor], VQOutput | None]:
    """The official ``NormPromptUnet``: complex ``(B, N, H, W)`` -> channels -> one scalar mean and (unbiased)
    std per sample -> pad to a multiple of 8 -> U-Net -> unpad -> ``* std + mean`` -> complex.

    Returns the complex output, the decoder-level features (at the padded size) and the VQ output.
    """
    x = to_channels(z)
    flat = x.flatten(1)
    mean = flat.mean(dim=1)[:, None, None, None]
    std = flat.std(dim=1).clamp_min(1e-12)[:, None, None, None]  # the clamp only guards an all-zero input
    x, (left, right, top, bottom) = pad_to_multiple((x - mean) / std)
    out = unet(x, history)
    hp, wp = out.out.shape[-2:]
    y = out.out[..., top : hp - bottom, left : wp - right]
    return from_channels(y * std + mean), out.features, out.vq


def update_history(history: list[torch.Tensor] | None, features: list[torch.Tensor],
                   num_history: int) -> list[torch.Tensor] | None:
    """Fixed-width history of the last ``num_history`` cascades' decoder inputs, newest first; the first
    cascade fills it with copies of its own features (official ``PromptMR.forward``)."""
    if num_history == 0:
        return None
    if history is None:
        return [f.repeat(1, num_history, 1, 1) for f in features]
    return [torch.cat([f, h[:, : h.shape[1] - f.shape[1]]], dim=1) for f, h in zip(features, history, strict=True)]


def make_vq_block(config: ModelConfig, sens: bool = False) -> VQPromptBlock:
    """A VQ-PromptBlock sized for a cascade's bottleneck (or the sensitivity net's if ``sens``)."""
    cfg = config.sens if sens else config.unet
    num_codes = config.sens_num_codes if sens else config.num_codes
    return VQPromptBlock(cfg.levels[-1], num_codes, config.vq_decoder_blocks, **config.vq_kwargs())


def _central_run(line: torch.Tensor) -> torch.Tensor:
    """Symmetric central run ``(B,)`` of True in ``line`` ``(B, n)`` as the official ``KspaceACSExtractor``
    measures it: ``2 min(left, right)`` with ``right`` the run from index ``n // 2`` on and ``left`` the
    run before it (0 if the centre is unsampled)."""
    centre = line.shape[-1] // 2
    right = line[:, centre:].long().cumprod(dim=1).sum(dim=1)
    left = line[:, :centre].flip(1).long().cumprod(dim=1).sum(dim=1)
    return 2 * torch.minimum(left, right)


def acs_width_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Per-sample width ``(B,)`` of the symmetric central run of phase-encode lines sampled in all frames
    and rows (see :func:`_central_run`).

    ``mask``: ``(B, ..., W)``; the centre line is ``W // 2`` (centred FFT). Raises if it is unsampled.
    """
    cols = (mask.reshape(mask.shape[0], -1, mask.shape[-1]) > 0).all(dim=1)  # (B, W)
    if not bool(cols[:, cols.shape[-1] // 2].all()):
        raise ValueError("mask does not sample the k-space centre line; pass num_low_frequencies explicitly")
    return _central_run(cols).clamp_min(1)


def is_radial_mask(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` True where the mask ``(B, F|1, 1, H|1, W)`` varies along the readout rows (kt-radial)."""
    if mask.shape[-2] == 1:
        return torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    return (mask != mask[..., :1, :]).flatten(1).any(dim=1)


def acs_square_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Per-sample side ``(B,)`` of the centred square sampled in every frame: the shorter of the central
    runs along the centre row and the centre column (a kt-radial mask's 20 x 20 ACS)."""
    full = (mask > 0).all(dim=1).reshape(mask.shape[0], mask.shape[-2], mask.shape[-1])  # (B, H, W)
    h, w = full.shape[-2:]
    side = torch.minimum(_central_run(full[:, h // 2, :]), _central_run(full[:, :, w // 2]))
    if bool((side < 1).any()):
        raise ValueError("mask does not sample the k-space centre; pass num_low_frequencies explicitly")
    return side


def acs_lowpass(mask: torch.Tensor, num_low_frequencies: int | torch.Tensor | None, height: int,
                width: int) -> torch.Tensor:
    """The calibration region ``(B, 1, 1, H, W)`` (real 0/1) of the official ``KspaceACSExtractor``:
    a centred ``n x n`` square for kt-radial masks, a central band of ``n`` phase-encode columns over all
    rows for Cartesian masks. ``n`` is ``num_low_frequencies`` or measured on ``mask``."""
    b = mask.shape[0]
    radial = is_radial_mask(mask)
    if num_low_frequencies is None:
        widths = torch.zeros(b, dtype=torch.long, device=mask.device)
        if bool(radial.any()):
            widths = torch.where(radial, acs_square_from_mask(mask), widths)
        if not bool(radial.all()):
            widths = torch.where(radial, widths, acs_width_from_mask(mask))
    else:
        widths = torch.as_tensor(num_low_frequencies, device=mask.device).long().reshape(-1).expand(b)
        if bool((widths < 1).any()) or bool((widths > width).any()):
            raise ValueError(f"num_low_frequencies must lie in [1, W={width}], got {widths.tolist()}")
    cols, rows = torch.arange(width, device=mask.device), torch.arange(height, device=mask.device)
    start = (width - widths + 1) // 2
    band = (cols >= start[:, None]) & (cols < (start + widths)[:, None])  # (B, W), official batched_mask_center
    row0, col0 = height // 2 - widths // 2, width // 2 - widths // 2  # official kt_radial square
    in_rows = (rows >= row0[:, None]) & (rows < (row0 + widths)[:, None])
    in_cols = (cols >= col0[:, None]) & (cols < (col0 + widths)[:, None])
    square = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    region = torch.where(radial[:, None, None], square, band[:, None, :].expand(-1, height, -1))
    return region[:, None, None].float()


class SensitivityNet(nn.Module):
    """Coil maps as the published PromptMR+ (``SensitivityModel`` with ``use_sens_adj``): ACS k-space of
    each of the F adjacent frames -> coil images -> one normalised PromptUNet sample per coil with the F
    frames as channels -> the output *is* the map set of each frame -> divided by the RSS over coils.
    Optional VQ bottleneck whose histogram (averaged over coils) routes Moero's cascade 0.
    """

    def __init__(self, config: ModelConfig, vq_block: VQPromptBlock | None = None) -> None:
        super().__init__()
        channels = 2 * config.frames
        self.unet = PromptUNet(channels, channels, config.sens, vq_block, learnable_prompt=config.learnable_prompt)

    def forward(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: int | torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, VQOutput | None]:
        """Maps ``(B, F, C, H, W)`` (one set per frame), the histogram ``(B, K)`` (or None) and the VQ output."""
        b, f, c, h, w = masked_kspace.shape
        acs = masked_kspace * acs_lowpass(mask, num_low_frequencies, h, w).to(masked_kspace.real.dtype)
        coil_images = ifft2c(acs).transpose(1, 2).reshape(b * c, f, h, w)
        maps, _, vq = normalized_unet(self.unet, coil_images)
        maps = maps.reshape(b, c, f, h, w).transpose(1, 2)
        maps = maps / rss(maps, dim=2).unsqueeze(2).clamp_min(1e-12)
        histogram = None
        if vq is not None:
            idx = vq.indices
            histogram = token_histogram(idx.reshape(b, c, *idx.shape[1:]), self.unet.vq.num_codes)
        return maps, histogram, vq


@dataclass
class CascadeOutput:
    image: torch.Tensor  # the next state: x_{k+1} (B, F, H, W), or the k-space k_{k+1} (B, F, C, H, W)
    latent: torch.Tensor  # s_{k+1}, complex (B, F, H, W)
    features: list[torch.Tensor]  # decoder-level inputs (history for later cascades)
    vq_loss: torch.Tensor
    histogram: torch.Tensor | None  # (B, K) token histogram of this cascade's bottleneck


class Cascade(nn.Module):
    """One unrolled step of eq. (2) with a PromptUNet denoiser on the adaptive-input buffer.

    ``index``: the cascade's position (every cascade has the same structure: cascade 0 tiles its own
    features as history). ``vq_block``: an externally owned, possibly shared, VQ-PromptBlock (None:
    plain PromptMR+). ``config.data_consistency``: ``"gradient"`` (image state, the published
    ``promptmr_v2``) or ``"kspace"`` (multi-coil k-space state, ``promptmr`` v1's soft DC).
    """

    def __init__(self, config: ModelConfig, index: int, vq_block: VQPromptBlock | None = None) -> None:
        super().__init__()
        self.index = index
        self.frames, self.data_consistency = config.frames, config.data_consistency
        channels = _NUM_BUFFERS * 2 * config.frames  # adaptive input: in = out (official)
        self.denoiser = PromptUNet(channels, channels, config.unet, vq_block, config.num_history,
                                   config.learnable_prompt)
        self.eta = nn.Parameter(torch.ones(()))  # learnable step size, initialised to 1

    def denoise(self, buffers: torch.Tensor, history: list[torch.Tensor] | None) -> tuple[
            torch.Tensor, list[torch.Tensor], VQOutput | None]:
        """``D_k``: complex buffers ``(B, 5F, H, W)`` -> complex ``(B, 5F, H, W)`` (normalised, padded U-Net)."""
        return normalized_unet(self.denoiser, buffers, history)

    def forward(
        self, x: torch.Tensor, latent: torch.Tensor, atb: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor,
        maps: torch.Tensor, history: list[torch.Tensor] | None = None,
    ) -> CascadeOutput:
        """``x``: the state, complex ``(B, F, H, W)`` (image) or ``(B, F, C, H, W)`` (k-space DC);
        ``latent``, ``atb``: ``(B, F, H, W)``; ``kspace`` ``(B, F, C, H, W)``; ``maps`` ``(B, F, C, H, W)``;
        ``history``: per decoder level, the last cascades' features (None: tile this cascade's own)."""
        state = x
        if self.data_consistency == "kspace":
            x = sense_adjoint(state, maps)
        ata_x = sense_normal(x, maps, mask)
        buffers = torch.cat([x, ata_x, latent, atb, ata_x - atb], dim=1)  # (B, 5F, H, W)
        update, features, vq = self.denoise(buffers, history)
        f = self.frames
        denoised, new_latent = update[:, :f], update[:, 2 * f : 3 * f]  # official split [cc, cc, cc, rest]
        if self.data_consistency == "gradient":
            nxt = x - self.eta * (ata_x - atb) - denoised
        else:  # k - eta M (k - y) - F S D(S^H F^-1 k)
            nxt = state - self.eta * (state - kspace) * mask - sense_forward(denoised, maps)
        vq_loss = vq.loss if vq is not None else x.real.new_zeros(())
        histogram = token_histogram(vq.indices, self.denoiser.vq.num_codes) if vq is not None else None
        return CascadeOutput(nxt, new_latent, features, vq_loss, histogram)


def run_cascade(fn: Callable[..., CascadeOutput], *args: Any, use_checkpoint: bool = False) -> CascadeOutput:
    """Call ``fn(*args)``, with gradient checkpointing (non-reentrant) when asked and gradients are on.

    The recomputation during backward runs under :func:`moero.models.vq.frozen_statistics`, so VQ statistics
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
class PromptMROutput(ReconOutput):
    """``image`` (B, H, W): RSS of S x for the centre frame; ``vq_loss``: the sum of commitment losses."""

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


class PromptMR(nn.Module, TrainingHooks):
    """PromptMR+ (``config.vq_prompt=False``) or PromptMR+ with VQ-Prompt (``True``): see the module doc."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        use_vq = config.vq_prompt
        self.sens_net = SensitivityNet(config, make_vq_block(config, sens=True) if use_vq and config.sens_vq else None)
        self.cascades = nn.ModuleList(
            Cascade(config, k, make_vq_block(config) if use_vq else None) for k in range(config.num_cascades)
        )

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each cascade in backward (memory for time); the ReconModel hook of the trainer."""
        self.config = dataclasses.replace(self.config, checkpoint=bool(enabled))

    def forward(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: int | torch.Tensor | None = None
    ) -> PromptMROutput:
        mask = check_inputs(masked_kspace, mask, self.config.frames)
        use_checkpoint = self.config.checkpoint and self.training

        def step(k: int, inputs: tuple[torch.Tensor, ...], history: list[torch.Tensor] | None,
                 histogram: torch.Tensor | None) -> CascadeOutput:
            return run_cascade(self.cascades[k], *inputs, history, use_checkpoint=use_checkpoint)

        return unroll(self.config, self.sens_net, masked_kspace, mask, num_low_frequencies, step)


CascadeStep = Callable[[int, tuple[torch.Tensor, ...], "list[torch.Tensor] | None", "torch.Tensor | None"],
                       CascadeOutput]


def unroll(config: ModelConfig, sens_net: SensitivityNet, masked_kspace: torch.Tensor, mask: torch.Tensor,
           num_low_frequencies: int | torch.Tensor | None, step: CascadeStep) -> PromptMROutput:
    """The unrolled network of eq. (2), shared by PromptMR+ and Moero.

    Coil maps from ``sens_net`` (one set per frame); ``x_0 = s_0 = A^H y``; then ``config.num_cascades``
    times ``out = step(k, (x_k, s_k, A^H y, y, M, S), history, h)``, where ``history`` holds, per
    decoder level, the features of the last ``num_history`` cascades (newest first, None before
    cascade 0) and ``h`` the latest token histogram (eq. (8): the coil-map net's for cascade 0, cascade
    k-1's after; None without VQ), which Moero routes on. ``step`` runs one cascade (PromptMR+) or
    routes the batch to one expert per sample (Moero). With ``data_consistency="kspace"`` the state is
    the multi-coil k-space ``k_0 = y`` and the output the RSS of its centre frame (official v1).
    Returns the RSS of ``S x`` for the centre frame with the summed VQ losses and the histograms.
    """
    maps, sens_hist, sens_vq = sens_net(masked_kspace, mask, num_low_frequencies)
    vq_loss = sens_vq.loss if sens_vq is not None else masked_kspace.real.new_zeros(())
    histograms = [sens_hist] if sens_hist is not None else []
    atb = sense_adjoint(masked_kspace, maps, mask)
    kspace_state = config.data_consistency == "kspace"
    state = masked_kspace if kspace_state else atb
    latent, history = atb, None
    for k in range(config.num_cascades):
        out = step(k, (state, latent, atb, masked_kspace, mask, maps), history, histograms[-1] if histograms else None)
        state, latent = out.image, out.latent
        history = update_history(history, out.features, config.num_history)
        vq_loss = vq_loss + out.vq_loss
        if out.histogram is not None:
            histograms.append(out.histogram)
    c = config.frames // 2
    if kspace_state:
        frames = sense_adjoint(state, maps)
        image = rss(ifft2c(state[:, c]), dim=1)
    else:
        frames = state
        image = rss(maps[:, c] * frames[:, c].unsqueeze(1), dim=1)
    return PromptMROutput(image, vq_loss, histograms, maps, frames)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per part (shared modules counted once), frozen parameters and codebook entries.

    Keys: ``sensitivity_net`` (without its VQ block), ``denoisers`` (cascade U-Nets without VQ blocks),
    ``vq_prompt`` (VQ-Prompt decoders, incl. the sensitivity net's), ``step_sizes`` (the etas),
    ``other``, ``total`` (all trainable), ``frozen`` (parameters without gradient: the frozen prompts),
    ``codebook_entries`` (EMA buffers, not trained by gradients).
    """
    vq_ids = {id(p) for m in model.modules() if isinstance(m, VQPromptBlock) for p in m.parameters()}
    sens_ids = {id(p) for m in model.modules() if isinstance(m, SensitivityNet) for p in m.parameters()} - vq_ids
    eta_ids = {id(m.eta) for m in model.modules() if isinstance(m, Cascade)}
    den_ids = {id(p) for m in model.modules() if isinstance(m, Cascade) for p in m.parameters()}
    den_ids -= vq_ids | eta_ids | sens_ids
    params = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
    counts = {
        "sensitivity_net": sum(params.get(i, 0) for i in sens_ids),
        "denoisers": sum(params.get(i, 0) for i in den_ids),
        "vq_prompt": sum(params.get(i, 0) for i in vq_ids),
        "step_sizes": sum(params.get(i, 0) for i in eta_ids),
    }
    counts["other"] = sum(params.values()) - sum(counts.values())
    counts["total"] = sum(params.values())
    counts["frozen"] = sum(p.numel() for p in {id(p): p for p in model.parameters() if not p.requires_grad}.values())
    seen: set[int] = set()
    codebook_entries = 0
    for m in model.modules():
        if isinstance(m, VQPromptBlock) and id(m) not in seen:
            seen.add(id(m))
            codebook_entries += m.quantizer.codebook.numel()
    counts["codebook_entries"] = codebook_entries
    return counts
