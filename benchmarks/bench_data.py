"""Data loading throughput of ``SliceDataset`` and its ratio to one training step of the ``cpu`` model.

Loading must not be the bottleneck: the ratio ``load time per example / train step time`` should
stay well below 1 (one loader worker per GPU then keeps up). Measured on the ``cpu`` profile's
synthetic dataset, frames = the ``small`` model's frames, with a ``MaskSampler`` when available.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import median_time

TITLE = "Data loader throughput vs one training step (cpu profile)"


def _step_fn(example: dict):
    from moero.models.promptmr import PromptMR, preset

    model = PromptMR(preset("small"))
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


def run() -> list[dict]:
    from moero.book.profiles import get_profile
    from moero.data.dataset import SliceDataset
    from moero.data.synthetic import ensure_synthetic
    from moero.paths import default_data_root

    prof = get_profile("cpu")
    t0 = time.perf_counter()
    root = ensure_synthetic(default_data_root(prof.dataset), size=prof.dataset, seed=0)
    ensure_s = time.perf_counter() - t0
    from moero.models.promptmr import preset
    from moero.physics.masks import MaskSampler

    frames = preset("small").frames
    sampler = MaskSampler()
    ds = SliceDataset(root, split="train", frames=frames, mask_sampler=sampler)
    rng = np.random.default_rng(0)
    batch = [int(i) for i in rng.choice(len(ds), 16, replace=False)]

    def load() -> None:
        for i in batch:
            ds[i]

    per_example = median_time(load, repeat=5, warmup=1) / len(batch)
    rows = [{
        "what": "SliceDataset[i] (lazy window + mask)",
        "examples": len(ds),
        "frames": frames,
        "mask_sampler": sampler is not None,
        "s/example": per_example,
        "slices/s": 1.0 / per_example,
        "ensure_synthetic s": ensure_s,
    }]
    if True:  # one training step of the small preset, for the load/step ratio
        step = _step_fn(ds[batch[0]])
        step_s = median_time(step, repeat=3, warmup=1)
        rows.append({"what": "PromptMR small forward+backward (1 example)", "s/example": step_s,
                     "slices/s": 1.0 / step_s})
        rows.append({"what": "ratio load / train step (lower is better, < 1 keeps up)",
                     "s/example": per_example / step_s})
    return rows
