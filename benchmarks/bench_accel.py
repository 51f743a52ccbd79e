"""Faster CPU training (issue 30, point 4): ``torch.compile`` (inductor), channels-last and bf16 autocast against
eager fp32, VQ-PromptMR+ of the ``tiny`` and ``small`` presets, one training step and one evaluation forward.

Each variant is built from the eager model's weights and timed against it in interleaved pairs
(:func:`moero.train.acceleration.measure`); ``speedup`` is eager time over variant time (median and
bootstrap interval), ``first_call_s`` includes compilation, ``outputs_equal`` compares the evaluation
output with eager's by ``torch.testing.assert_close``'s default tolerance. Adopt by default (goal) what
clears 1.15 with the interval's lower end and equal outputs. Smoke size: ``tiny`` on 32 x 24, one pair,
without compilation (minutes of C++ builds on a small CPU).
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import pairs
from moero.train.acceleration import VARIANTS, measure, speedup

TITLE = "CPU acceleration of VQ-PromptMR+: compiled / channels-last / bf16 vs eager fp32 (same run)"
ADOPT = 1.15
FULL = {"presets": ("tiny", "small"), "shape": (64, 48), "variants": tuple(VARIANTS), "warmup": 2}
SMOKE = {"presets": ("tiny",), "shape": (32, 24), "variants": ("channels_last", "bf16"), "warmup": 1}


def run(smoke: bool = False) -> list[dict[str, Any]]:
    size = SMOKE if smoke else FULL
    rows = []
    for preset in size["presets"]:
        rows += measure("vq-prompt", preset, size["shape"], size["variants"], pairs=pairs(smoke),
                        warmup=size["warmup"])
    for row in rows:
        row["adopt (goal: low >= 1.15, equal)"] = speedup(row).clears(ADOPT) and row["outputs_equal"]
    return rows
