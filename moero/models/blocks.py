"""Building blocks of the PromptMR+ U-Net and the VQ-PromptBlock.

The blocks follow the structure of the published PromptMR+ (``hellopipu/PromptMR-plus``,
``models/utils.py``; see ``book/conventions.md``): bias-free 3x3 convolutions, channel attention
without biases, a stride-2 3x3 convolution (with bias) to go down, a decoder level that first fuses
the history of earlier cascades, then the prompt. All blocks take real feature maps ``(B, ch, H, W)``;
the U-Net pads its input to a multiple of 8, so every level halves exactly.
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
    "UpBlock",
    "ResidualBlock",
    "VQPromptBlock",
]


def conv3x3(in_ch: int, out_ch: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, bias=False)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate (no biases)."""

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(ch // reduction, 1)
        self.squeeze = conv1x1(ch, hidden)
        self.excite = conv1x1(hidden, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=(-2, -1), keepdim=True)))))
        return x * gate


class CAB(nn.Module):
    """Channel-attention block: ``x + CA(conv(act(conv(x))))``, bias-free 3x3 convolutions.

    Every CAB owns its PReLU (the official code shares one by accident of a default argument; see
    ``book/conventions.md``).
    """

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(ch, ch), nn.PReLU(), conv3x3(ch, ch), ChannelAttention(ch, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def cab_stack(ch: int, count: int, reduction: int = 4) -> nn.Sequential:
    """``count`` CABs in sequence (identity when ``count == 0``)."""
    return nn.Sequential(*(CAB(ch, reduction) for _ in range(count)))


class PromptBlock(nn.Module):
    """Prompt of PromptMR+: pool -> linear -> softmax over N prompt maps -> weighted sum
    -> bilinear resize to the feature size -> 3x3 conv. Output ``(B, prompt_dim, H, W)``, concatenated
    by the caller.

    ``learnable``: the prompt maps are drawn once from U[0, 1) and stay frozen (``False``, the
    published ``learnable_prompt: false``) or are trained.
    """

    def __init__(self, in_ch: int, prompt_dim: int, num_components: int, size: int, learnable: bool = False) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.rand(num_components, prompt_dim, size, size), requires_grad=learnable)
        self.weights = nn.Linear(in_ch, num_components)
        self.conv = conv3x3(prompt_dim, prompt_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.weights(x.mean(dim=(-2, -1))), dim=-1)  # (B, N)
        prompt = torch.einsum("bn,nchw->bchw", weights, self.prompts)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(prompt)


class Downsample(nn.Module):
    """Halve the resolution and change width: a stride-2 3x3 convolution with bias (official ``DownBlock``)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Bilinear resize to ``size`` (x2 on padded inputs), then a bias-free 1x1 conv to the next width."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = conv1x1(in_ch, out_ch)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.proj(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class UpBlock(nn.Module):
    """One decoder level of the published PromptMR+ (``UpBlock``), in forward order:

    1. history momentum (when ``num_history > 0``): 1x1 conv ``(num_history + 1) C -> C`` over
       ``[x, history]`` (``x`` tiled when there is no history yet), then a CAB;
    2. ``num_cabs`` CABs at ``C + prompt_dim`` on ``[x, prompt]``;
    3. 1x1 reduce to ``C``;
    4. upsample and 1x1 conv to ``out_ch``, plus the skip;
    5. a CAB at ``out_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, prompt_dim: int, num_cabs: int, num_history: int = 0,
                 reduction: int = 4) -> None:
        super().__init__()
        self.num_history = num_history
        self.momentum = (
            nn.Sequential(conv1x1(in_ch * (num_history + 1), in_ch), CAB(in_ch, reduction)) if num_history else None
        )
        self.fuse = cab_stack(in_ch + prompt_dim, num_cabs, reduction)
        self.reduce = conv1x1(in_ch + prompt_dim, in_ch)
        self.up = Upsample(in_ch, out_ch)
        self.out = CAB(out_ch, reduction)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor, skip: torch.Tensor,
                history: torch.Tensor | None = None) -> torch.Tensor:
        """``history``: ``(B, num_history * C, h, w)``, newest cascade first (None: tile ``x``)."""
        if self.momentum is not None:
            stacked = x.repeat(1, self.num_history + 1, 1, 1) if history is None else torch.cat([x, history], dim=1)
            x = self.momentum(stacked)
        x = self.reduce(self.fuse(torch.cat([x, prompt], dim=1)))
        return self.out(self.up(x, skip.shape[-2:]) + skip)


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))``: the unit of the VQ-Prompt light decoder."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(ch, ch, bias=True)
        self.conv2 = conv3x3(ch, ch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class VQPromptBlock(nn.Module):
    """VQ-Prompt at the U-Net bottleneck: quantise -> light decoder -> residual fuse.

    ``out = z + decoder(z_q)`` with ``decoder`` = ``num_res_blocks`` residual blocks + a 1x1 conv. The
    block owns its :class:`VectorQuantizer` and decoder; Moero lets the K experts of one cascade share
    one instance (pass it to each expert's U-Net). ``forward`` returns ``(out, VQOutput)``. The authors'
    code concatenates the decoded codes to ``z`` as a prompt instead (``book/conventions.md``).
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
