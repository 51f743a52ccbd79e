"""Forward model and masks: SENSE operator overhead over bare FFTs; kt-Radial mask generation cost.

Goals (issue 3): SENSE forward + adjoint <= 1.3x a bare batched ``fft2`` + ``ifft2`` of the same
coil stack; generating a 12-frame 512 x 246 kt-Radial mask <= 1x one ``fft2c`` of a
(12 frames, 10 coils, 512, 246) complex64 stack.
"""

from __future__ import annotations

import torch

from benchmarks.common import interleaved_ratio
from moero.physics.fft import fft2c
from moero.physics.masks import make_mask
from moero.physics.sense import sense_adjoint, sense_forward

TITLE = "Forward model: SENSE operators and mask generation (ratios within one run)"

FRAMES, COILS, H, W = 12, 10, 512, 246


def run() -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(FRAMES, H, W, dtype=torch.complex64, generator=gen)
    maps = torch.randn(FRAMES, COILS, H, W, dtype=torch.complex64, generator=gen)
    stack = torch.randn(FRAMES, COILS, H, W, dtype=torch.complex64, generator=gen)
    mask = make_mask("kt_gaussian", (FRAMES, H, W), 8, seed=0)

    def sense() -> torch.Tensor:
        return sense_adjoint(sense_forward(image, maps, mask), maps, mask)

    def bare_fft() -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(stack, norm="ortho"), norm="ortho")

    rows = []
    t, r, ratio = interleaved_ratio(sense, bare_fft, rounds=3, repeat=3)
    rows.append(
        {
            "case": f"SENSE fwd+adj vs bare fft2+ifft2, ({FRAMES},{COILS},{H},{W}) c64, kt-Gaussian R=8",
            "target_s": t,
            "reference_s": r,
            "ratio": ratio,
            "goal": "<= 1.3",
            "met": ratio <= 1.3,
        }
    )
    for acceleration in (4, 24):

        def radial(acceleration: int = acceleration) -> torch.Tensor:
            return make_mask("kt_radial", (FRAMES, H, W), acceleration)

        t, r, ratio = interleaved_ratio(radial, lambda: fft2c(stack), rounds=3, repeat=3)
        rows.append(
            {
                "case": f"kt-Radial mask ({FRAMES},{H},{W}) R={acceleration} vs fft2c of ({FRAMES},{COILS},{H},{W})",
                "target_s": t,
                "reference_s": r,
                "ratio": ratio,
                "goal": "<= 1",
                "met": ratio <= 1.0,
            }
        )
    return rows
