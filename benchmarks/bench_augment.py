"""DualSpace-CMR augmentation cost: the full pipeline on one slice against one training step and one
``sense_forward`` of the same slice (goal: augmentation <= 0.1 of a training step).

The augmentation runs its most expensive path (every transform drawn: flips, shift, rotation,
anisotropic scaling, elastic deformation, motion and noise) on one 10-coil, 5-frame 256x208 slice.
The training step is forward + backward + Adam step of the ``cpu`` profile's model preset
(``small``, batch 1, its own frame count) on the same matrix. Ratios: interleaved pairs, median and
bootstrap interval; the goal is met when the interval's upper end is within it.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import goal_columns, interleaved_ratio, pairs
from moero.augment.geometry import RandomElastic, RandomFlip, RandomRotation, RandomScaling, RandomShift
from moero.augment.kspace import RandomKspaceNoise, RandomRigidMotion
from moero.augment.pipeline import DualSpaceAugment
from moero.physics.phantom import coil_maps, shepp_logan
from moero.physics.sense import sense_forward

TITLE = "DualSpace-CMR augmentation: full pipeline vs one training step and one sense_forward"

FRAMES, COILS, H, W = 5, 10, 256, 208
SMOKE_SHAPE = (32, 24)


def _example(device: torch.device, h: int = H, w: int = W) -> dict[str, torch.Tensor]:
    image = torch.stack([shepp_logan(h, w) * (1 + 0.05 * f) for f in range(FRAMES)]).to(device)
    maps = coil_maps(COILS, h, w, seed=0, normalize=True).to(device)
    mask = torch.zeros(FRAMES, h, w, dtype=torch.bool, device=device)
    mask[..., ::4] = True
    mask[..., w // 2 - 10 : w // 2 + 10] = True
    kspace = sense_forward(image, maps)
    return {"kspace": kspace, "mask": mask, "target": image[FRAMES // 2].abs()}


def _worst_case_augment() -> DualSpaceAugment:
    return DualSpaceAugment(
        geometric={
            "flip": RandomFlip(p=1.0),
            "shift": RandomShift(p=1.0),
            "rotation": RandomRotation(p=1.0),
            "scaling": RandomScaling(p=1.0),
            "elastic": RandomElastic(p=1.0),
        },
        motion=RandomRigidMotion(p=1.0),
        noise=RandomKspaceNoise(p=1.0),
        schedule=1.0,
    )


def _train_step(device: torch.device, example: dict[str, torch.Tensor], preset_name: str = "small"):
    """One optimiser step of the ``cpu`` profile's model, or None when moero.models is not there."""
    try:
        from moero.models.promptmr import PromptMR, preset
    except ImportError:
        return None, None
    config = preset(preset_name)  # small: the size of the cpu profile's training runs
    model = PromptMR(config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lo = FRAMES // 2 - config.frames // 2
    masked = (example["kspace"] * example["mask"][:, None])[lo : lo + config.frames].unsqueeze(0)
    mask = example["mask"][lo : lo + config.frames].unsqueeze(0)
    target = example["target"].unsqueeze(0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(masked, mask)
        loss = (out.image - target).abs().mean() + out.vq_loss
        loss.backward()
        opt.step()

    return step, config.name


def _measure(device: torch.device, smoke: bool = False) -> list[dict[str, Any]]:
    h, w = SMOKE_SHAPE if smoke else (H, W)
    n = pairs(smoke)
    example = _example(device, h, w)
    aug = _worst_case_augment()
    seeds = iter(range(10**9))
    image = torch.stack([example["target"].to(torch.complex64)] * FRAMES)
    maps = coil_maps(COILS, h, w, normalize=True).to(device)
    shape = f"{FRAMES}x{COILS}x{h}x{w}"

    def augment() -> None:
        aug(example, torch.Generator().manual_seed(next(seeds)))

    def forward_slice() -> None:
        sense_forward(image, maps)

    t_aug, t_fwd, ratio_fwd = interleaved_ratio(augment, forward_slice, pairs=n, repeat=5, device=device)
    rows = [{
        "device": str(device), "slice": shape, "reference": "sense_forward (same slice)",
        "augment_s": t_aug, "reference_s": t_fwd, "ratio": ratio_fwd.median, "ratio low": ratio_fwd.low,
        "ratio high": ratio_fwd.high, "goal": "report",
    }]
    step, name = _train_step(device, example, "tiny" if smoke else "small")
    if step is None:
        rows.append({"device": str(device), "reference": "training step (moero.models missing)", "goal": "<= 0.1"})
        return rows
    t_aug, t_step, ratio = interleaved_ratio(augment, step, pairs=n, repeat=1, device=device)
    rows.append({
        "device": str(device), "slice": shape, "reference": f"training step, PromptMR {name} (fwd+bwd+Adam, B=1)",
        "augment_s": t_aug, "reference_s": t_step, **goal_columns(ratio, 0.1, higher_is_better=False),
    })
    return rows


def run(smoke: bool = False) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() and not smoke else [])
    return [row for device in devices for row in _measure(device, smoke)]
