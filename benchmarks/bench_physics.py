"""Forward model and masks: SENSE operator overhead over bare FFTs; kt-Radial mask generation cost.

Goals (issue 3): SENSE forward + adjoint <= 1.3x a bare batched ``fft2`` + ``ifft2`` of the same
coil stack; generating a 12-frame 512 x 246 kt-Radial mask <= 1x one ``fft2c`` of a
(12 frames, 10 coils, 512, 246) complex64 stack. Each ratio: interleaved pairs, median and bootstrap
interval; met when the interval's upper end is within the goal.
"""

from __future__ import annotations

import torch

from benchmarks.common import goal_columns, interleaved_ratio, pairs
from moero.physics.fft import fft2c
from moero.physics.masks import make_mask
from moero.physics.sense import sense_adjoint, sense_forward

TITLE = "Forward model: SENSE operators and mask generation (ratios within one run)"

FULL = (12, 10, 512, 246)  # frames, coils, H, W
SMOKE = (2, 2, 32, 24)


def run(smoke: bool = False) -> list[dict]:
    frames, coils, h, w = SMOKE if smoke else FULL
    n = pairs(smoke)
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(frames, h, w, dtype=torch.complex64, generator=gen)
    maps = torch.randn(frames, coils, h, w, dtype=torch.complex64, generator=gen)
    stack = torch.randn(frames, coils, h, w, dtype=torch.complex64, generator=gen)
    mask = make_mask("kt_gaussian", (frames, h, w), 8, seed=0)

    def sense() -> torch.Tensor:
        return sense_adjoint(sense_forward(image, maps, mask), maps, mask)

    def bare_fft() -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(stack, norm="ortho"), norm="ortho")

    rows = []
    t, r, ratio = interleaved_ratio(sense, bare_fft, pairs=n, repeat=3)
    rows.append({
        "case": f"SENSE fwd+adj vs bare fft2+ifft2, ({frames},{coils},{h},{w}) c64, kt-Gaussian R=8",
        "target_s": t, "reference_s": r, **goal_columns(ratio, 1.3, higher_is_better=False),
    })
    for acceleration in (4, 24):

        def radial(acceleration: int = acceleration) -> torch.Tensor:
            return make_mask("kt_radial", (frames, h, w), acceleration)

        t, r, ratio = interleaved_ratio(radial, lambda: fft2c(stack), pairs=n, repeat=3)
        rows.append({
            "case": f"kt-Radial mask ({frames},{h},{w}) R={acceleration} vs fft2c of ({frames},{coils},{h},{w})",
            "target_s": t, "reference_s": r, **goal_columns(ratio, 1.0, higher_is_better=False),
        })
    return rows
