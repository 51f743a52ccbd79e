"""Data loading throughput of ``SliceDataset`` and its ratio to one training step of the ``cpu`` model.

Loading must not be the bottleneck: the ratio ``load time per example / train step time`` should
stay well below 1 (one loader worker per GPU then keeps up). Measured on the ``cpu`` profile's
synthetic dataset (``smoke`` at the smoke size), frames = the ``small`` model's frames, with a
``MaskSampler``. The ratio: interleaved pairs (16 loads per example count / one step), median and
bootstrap interval; the goal (< 1) is met when the interval's upper end is below it.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import Ratio, goal_columns, interleaved_ratio, pairs

TITLE = "Data loader throughput vs one training step (cpu profile)"
LOADS = 16


def _step_fn(example: dict, preset_name: str):
    from moero.models.promptmr import PromptMR, preset

    model = PromptMR(preset(preset_name))
    model.train()
    kspace = example["masked_kspace"][None]
    mask = example["mask"][None]
    target = example["target"][None]

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(kspace, mask)
        loss = (out.image - target).abs().mean() / target.abs().mean() + out.vq_loss
        loss.backward()

    return step


def run(smoke: bool = False) -> list[dict]:
    from moero.book.profiles import get_profile
    from moero.data.dataset import SliceDataset
    from moero.data.synthetic import ensure_synthetic
    from moero.models.promptmr import preset
    from moero.paths import default_data_root
    from moero.physics.masks import MaskSampler

    size = "smoke" if smoke else get_profile("cpu").dataset
    preset_name = "tiny" if smoke else "small"
    t0 = time.perf_counter()
    root = ensure_synthetic(default_data_root(size), size=size, seed=0, progress=False)
    ensure_s = time.perf_counter() - t0
    frames = preset(preset_name).frames
    sampler = MaskSampler()
    ds = SliceDataset(root, split="train", frames=frames, mask_sampler=sampler)
    rng = np.random.default_rng(0)
    loads = min(LOADS, len(ds))
    batch = [int(i) for i in rng.choice(len(ds), loads, replace=False)]

    def load() -> None:
        for i in batch:
            ds[i]

    step = _step_fn(ds[batch[0]], preset_name)
    t_load, t_step, ratio = interleaved_ratio(load, step, pairs=pairs(smoke))
    per_example = t_load / loads
    ratio = Ratio(ratio.median / loads, ratio.low / loads, ratio.high / loads, tuple(r / loads for r in ratio.pairs))
    return [
        {"what": "SliceDataset[i] (lazy window + mask)", "dataset": size, "examples": len(ds), "frames": frames,
         "s/example": per_example, "slices/s": 1.0 / per_example, "ensure_synthetic s": ensure_s},
        {"what": f"PromptMR {preset_name} forward+backward (1 example)", "s/example": t_step,
         "slices/s": 1.0 / t_step},
        {"what": "ratio load / train step (lower is better, < 1 keeps up)",
         **goal_columns(ratio, 1.0, higher_is_better=False)},
    ]
