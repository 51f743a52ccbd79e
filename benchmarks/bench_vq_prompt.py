"""Cost of VQ-Prompt: PromptMR+ with VQ-Prompt against plain PromptMR+, same preset, same input, one run.

Forward + backward (training mode, gradient checkpointing on, VQ statistics collected and applied
once per step by ``sync_vq_modules`` as a trainer would) of the ``cpu`` profile's preset (``small``)
on one 10-coil 160x128 slice (a cropped cine matrix) with the preset's adjacent frames, batch 1. Reported: seconds per
step, speed ratio (baseline time / VQ time, i.e. the it/s ratio; paper 1.18 / 1.27 = 0.93, goal
>= 0.95) and peak-memory ratio (VQ / baseline; paper +0.8%, goal <= 1.02). The FLOP ratio (torch's
FlopCounterMode over one step, VQ / baseline) is reported too: it does not depend on machine load,
which on a shared CPU can swamp a 5% timing difference. On GPU the same runs on the ``gpu`` preset.
Speed: interleaved pairs, median and bootstrap interval, met when the interval's lower end clears 0.95.
Memory: the allocator's peak (``moero.train.efficiency.peak_memory``). Smoke size: ``tiny`` on 32 x 24.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import goal_columns, interleaved_ratio, pairs, peak_memory
from moero.models.promptmr import PromptMR, preset
from moero.models.vq import set_auto_update, sync_vq_modules
from moero.physics.fft import fft2c
from moero.physics.phantom import coil_maps, shepp_logan

TITLE = "VQ-Prompt overhead: PromptMR+ with VQ-Prompt vs without (forward + backward)"

COILS, H, W = 10, 160, 128
SMOKE_SHAPE = (32, 24)


def _inputs(frames: int, device: torch.device, shape: tuple[int, int] = (H, W)) -> tuple[torch.Tensor, ...]:
    H, W = shape  # noqa: N806
    image = torch.stack([shepp_logan(H, W) * (1 + 0.05 * f) for f in range(frames)])
    maps = coil_maps(COILS, H, W, seed=0, normalize=True)
    mask = torch.zeros(1, frames, 1, 1, W, dtype=torch.bool)
    mask[..., ::4] = True
    mask[..., W // 2 - 10 : W // 2 + 10] = True
    kspace = fft2c(maps * image[:, None]).unsqueeze(0) * mask
    target = image[frames // 2].abs().unsqueeze(0)
    return kspace.to(device), mask.to(device), target.to(device)


def _step(vq_prompt: bool, preset_name: str, device: torch.device,
          shape: tuple[int, int] = (H, W)) -> Callable[[], None]:
    torch.manual_seed(0)
    model = PromptMR(preset(preset_name, vq_prompt=vq_prompt)).to(device).train()
    set_auto_update(model, False)  # the trainer's way: one sync per step, after backward
    kspace, mask, target = _inputs(model.config.frames, device, shape)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(kspace, mask)
        ((out.image - target).abs().mean() + out.vq_loss).backward()
        sync_vq_modules(model)

    return step


def _flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def run(smoke: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() and not smoke else [])
    shape = SMOKE_SHAPE if smoke else (H, W)
    for device in devices:
        preset_name = "tiny" if smoke else "small" if device.type == "cpu" else "medium"
        with_vq, without_vq = _step(True, preset_name, device, shape), _step(False, preset_name, device, shape)
        t_vq, t_base, time_ratio = interleaved_ratio(with_vq, without_vq, pairs=pairs(smoke), device=device)
        mem_vq, mem_base = peak_memory(with_vq, device), peak_memory(without_vq, device)
        flops_vq, flops_base = _flops(with_vq), _flops(without_vq)
        rows.append(
            {
                "device": device.type,
                "preset": preset_name,
                "input": f"1x{COILS}x{shape[0]}x{shape[1]}",
                "baseline s/step": t_base,
                "VQ-Prompt s/step": t_vq,
                **goal_columns(time_ratio.inverse(), 0.95, higher_is_better=True, name="speed ratio"),
                "baseline peak MiB": mem_base / 2**20,
                "VQ-Prompt peak MiB": mem_vq / 2**20,
                "memory ratio (goal <= 1.02)": mem_vq / mem_base,
                "baseline GFLOP/step": flops_base / 1e9,
                "FLOP ratio (VQ / baseline)": flops_vq / flops_base,
            }
        )
    return rows
