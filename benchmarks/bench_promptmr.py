"""One training step of PromptMR+ (``preset('small')``, 5 adjacent frames) against a plain transcription.

Both run the same network (the published PromptMR+ structure at the ``small`` widths, so the same
forward FLOPs); they differ only in the SENSE operators. Ours (:mod:`moero.physics.sense`) folds the
centred FFT's shifts into phase ramps on the image and the mask multiply and computes ``A^H A x`` in
one pass; the transcription does what the official code writes: ``fftshift(fft2(ifftshift(.)))``
per coil (two copies of the coil stack per FFT), the mask applied separately, ``A^H A x`` as
``sens_reduce(mask * sens_expand(x))``. Reported on one 10-coil 160 x 128 slice (a cropped cine
matrix), batch 1, forward + backward, gradient checkpointing off: seconds per step, peak memory,
forward GFLOPs (torch's FlopCounterMode: convolutions and matmuls; FFTs are not counted) and seconds
per forward GFLOP. Goal: ours no slower per FLOP than the transcription (speed ratio >= 1, met when the
interval's lower end clears it). Peak memory: the CPU allocator's (``moero.train.efficiency.peak_memory``);
the memory ratio is ours over the transcription's. Smoke size: ``tiny`` preset on 32 x 24.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import moero.models.promptmr as promptmr_module
from benchmarks.common import goal_columns, interleaved_ratio, pairs, peak_memory
from moero.models.promptmr import PromptMR, parameter_counts, preset
from moero.physics.fft import fft2c, ifft2c
from moero.physics.phantom import coil_maps, shepp_logan

TITLE = "PromptMR+ (small, 5 frames): one training step, ours vs a plain transcription of the SENSE operators"

COILS, H, W, FRAMES = 10, 160, 128, 5
SMOKE_SHAPE = (32, 24)


def _inputs(frames: int, shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, ...]:
    h, w = shape
    image = torch.stack([shepp_logan(h, w) * (1 + 0.05 * f) for f in range(frames)])
    maps = coil_maps(COILS, h, w, seed=0, normalize=True)
    mask = torch.zeros(1, frames, 1, 1, w, dtype=torch.bool)
    mask[..., ::4] = True
    mask[..., max(0, w // 2 - 10) : w // 2 + 10] = True
    kspace = fft2c(maps * image[:, None]).unsqueeze(0) * mask
    target = image[frames // 2].abs().unsqueeze(0)
    return kspace.to(device), mask.to(device), target.to(device)


# ------------------------------------------------------------------ the plain transcription
def _plain_forward(image: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sens_expand``: ``fft2c(x * S)`` per coil, then the mask."""
    k = fft2c(image.unsqueeze(-3) * maps)
    return k if mask is None else k * mask.to(k.real.dtype)


def _plain_adjoint(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sens_reduce``: ``sum_c ifft2c(k) * conj(S)``."""
    if mask is not None:
        kspace = kspace * mask.to(kspace.real.dtype)
    return (ifft2c(kspace) * maps.conj()).sum(dim=-3)


def _plain_normal(image: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return _plain_adjoint(_plain_forward(image, maps, mask), maps)


@contextlib.contextmanager
def _plain_operators() -> Iterator[None]:
    """Swap the SENSE operators the model module uses for the transcription's, for the duration."""
    names = {"sense_forward": _plain_forward, "sense_adjoint": _plain_adjoint, "sense_normal": _plain_normal}
    saved = {n: getattr(promptmr_module, n) for n in names}
    for n, fn in names.items():
        setattr(promptmr_module, n, fn)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(promptmr_module, n, fn)


def _step(model: PromptMR, inputs: tuple[torch.Tensor, ...], plain: bool) -> Callable[[], None]:
    kspace, mask, target = inputs

    def step() -> None:
        with _plain_operators() if plain else contextlib.nullcontext():
            model.zero_grad(set_to_none=True)
            out = model(kspace, mask)
            (out.image - target).abs().mean().backward()

    return step


def _forward_flops(model: PromptMR, inputs: tuple[torch.Tensor, ...]) -> int:
    kspace, mask, _ = inputs
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(kspace, mask)
    return int(counter.get_total_flops())


def run(smoke: bool = False, shape: tuple[int, int] = (H, W), repeat: int = 1) -> list[dict[str, Any]]:
    device = torch.device("cpu")
    torch.manual_seed(0)
    shape = SMOKE_SHAPE if smoke else shape
    model = PromptMR(preset("tiny" if smoke else "small", frames=FRAMES, checkpoint=False)).to(device).train()
    inputs = _inputs(FRAMES, shape, device)
    ours, plain = _step(model, inputs, plain=False), _step(model, inputs, plain=True)
    t_ours, t_plain, ratio = interleaved_ratio(ours, plain, pairs=pairs(smoke), repeat=repeat, device=device)
    peaks = {"ours": peak_memory(ours, device), "plain": peak_memory(plain, device)}
    flops = _forward_flops(model, inputs)
    with _plain_operators():
        flops_plain = _forward_flops(model, inputs)
    counts = parameter_counts(model)
    gflop = flops / 1e9
    return [
        {
            "variant": name,
            "input": f"1x{FRAMES}x{COILS}x{shape[0]}x{shape[1]}",
            "trainable params": counts["total"],
            "frozen params": counts["frozen"],
            "s/step": t,
            "peak MiB": peaks[key] / 2**20,
            "forward GFLOP": f / 1e9,
            "s per forward GFLOP": t / gflop,
        }
        for name, key, t, f in (("ours", "ours", t_ours, flops), ("plain transcription", "plain", t_plain, flops_plain))
    ] + [
        {"variant": "speed ratio (plain s / ours s)", **goal_columns(ratio.inverse(), 1.0, higher_is_better=True)},
        {"variant": "memory ratio (ours peak / plain peak)", "ratio": peaks["ours"] / max(peaks["plain"], 1)},
    ]
