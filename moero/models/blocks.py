"""Building blocks of the PromptMR+ U-Net (reference section 1) and the VQ-PromptBlock (section 2).

All blocks take real feature maps ``(B, ch, H, W)``. Down- and up-sampling resize to the size of
the matching skip connection, so odd image sizes need no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moero.models.vq import VectorQuantizer, VQOutput

__all__ = [
    "ChannelAttention",
    "CAB",
    "cab_stack",
    "PromptBlock",
    "Downsample",
    "Upsample",
    "ResidualBlock",
    "VQPromptBlock",
]


def conv3x3(in_ch: int, out_ch: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(ch // reduction, 1)
        self.squeeze = nn.Conv2d(ch, hidden, 1)
        self.excite = nn.Conv2d(hidden, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=(-2, -1), keepdim=True)))))
        return x * gate


class CAB(nn.Module):
    """Channel-attention block: ``x + CA(conv(act(conv(x))))``."""

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(ch, ch), nn.PReLU(), conv3x3(ch, ch), ChannelAttention(ch, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def cab_stack(ch: int, count: int, reduction: int = 4) -> nn.Sequential:
    """``count`` CABs in sequence (identity when ``count == 0``)."""
    return nn.Sequential(*(CAB(ch, reduction) for _ in range(count)))


class PromptBlock(nn.Module):
    """Learned prompt (reference section 1): pool -> linear -> softmax over N prompt maps -> weighted sum
    -> resize to the feature size -> 3x3 conv. Output ``(B, prompt_dim, H, W)`` is concatenated by the caller.
    """

    def __init__(self, in_ch: int, prompt_dim: int, num_components: int, size: int) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.rand(num_components, prompt_dim, size, size))
        self.weights = nn.Linear(in_ch, num_components)
        self.conv = conv3x3(prompt_dim, prompt_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.weights(x.mean(dim=(-2, -1))), dim=-1)  # (B, N)
        prompt = torch.einsum("bn,nchw->bchw", weights, self.prompts)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(prompt)


class Downsample(nn.Module):
    """Halve the resolution (average pooling, odd sizes rounded up) and change width by a 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False))


class Upsample(nn.Module):
    """Bilinear resize to ``size`` and change width by a 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.proj(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))``: the unit of the VQ-Prompt light decoder."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(ch, ch, bias=True)
        self.conv2 = conv3x3(ch, ch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class VQPromptBlock(nn.Module):
    """VQ-Prompt at the U-Net bottleneck (reference section 2): quantise -> light decoder -> residual fuse.

    ``out = z + decoder(z_q)`` with ``decoder`` = ``num_res_blocks`` residual blocks + a 1x1 conv. The
    block owns its :class:`VectorQuantizer` and decoder; Moero lets the K experts of one cascade share
    one instance (pass it to each expert's U-Net). ``forward`` returns ``(out, VQOutput)``.
    """

    def __init__(self, dim: int, num_codes: int, num_res_blocks: int = 3, **vq_kwargs: object) -> None:
        super().__init__()
        self.quantizer = VectorQuantizer(num_codes, dim, **vq_kwargs)  # type: ignore[arg-type]
        self.decoder = nn.Sequential(*(ResidualBlock(dim) for _ in range(num_res_blocks)), nn.Conv2d(dim, dim, 1))

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, VQOutput]:
        vq = self.quantizer(z)
        return z + self.decoder(vq.quantized), vq
