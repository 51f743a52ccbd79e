"""Moero at batch > 1 (issue 30, point 5): ``dispatch`` with mixed routes against VQ-PromptMR+ at the same batch.

With a batch routed per sample, each expert of a cascade runs once on its group: at batch B with K
experts and mixed routes every expert sees B/K samples, so part of the cost is lost batching, which
no implementation avoids (K convolutions on B/K samples cost more than one on B), and the rest is the
overhead of splitting the inputs and merging the outputs. Per batch B (2 and 4), K = 2 experts and
round-robin routes ``0, 1, 0, 1`` (the worst case for batching), one training step (forward, backward,
synchronisation, AdamW), all timed in the same interleaved rounds
(:func:`moero.train.efficiency.dispatch_batches`):

* ``moero mixed``: Moero with the round-robin routes; ``moero one expert``: Moero with every sample
  sent to expert 0 (routing and Moero's per-step pass, no splitting);
* ``vq-prompt B/K x K``: VQ-PromptMR+ run K times on B/K samples; its speed relative to VQ-PromptMR+
  at batch B is the lost batching;
* ``dispatch overhead``: what is left, ``T(moero mixed) / (T(moero one expert) x lost batching)``
  (1 = no overhead beyond lost batching).

Speeds are VQ-PromptMR+'s time over the model's; every ratio is the median over rounds with a
bootstrap interval. Routes are forced (the navigators' decisions replaced), so the measurement does
not depend on the routing fit.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import pairs
from moero.train.efficiency import batch_scan, dispatch_batches, force_routes  # noqa: F401  (re-exported)

TITLE = "Moero dispatch at batch 2 and 4 (mixed routes) vs VQ-PromptMR+ at the same batch: training step"
FULL = {"preset": "small", "cascades": 4, "shape": (64, 48), "batches": (2, 4), "warmup": 2}
SMOKE = {"preset": "tiny", "cascades": 2, "shape": (32, 24), "batches": (2,), "warmup": 1}


def run(smoke: bool = False) -> list[dict[str, Any]]:
    return dispatch_batches(rounds=pairs(smoke), **(SMOKE if smoke else FULL))
