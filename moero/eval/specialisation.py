"""Routing analysis: expert usage over training and the specialisation of experts.

Specialisation asks whether the routes of a cascade carry the same information as a label of the
data (contrast, vendor, pathology). It is measured by two chance-corrected agreement scores between
the route of each sample and its label, both from scikit-learn:

* adjusted Rand index (ARI): 1 for identical partitions, about 0 for independent ones;
* normalised mutual information (NMI): ``I(routes; labels) / mean(H(routes), H(labels))`` in [0, 1].

Neither cares which expert index goes with which label, only whether the partitions agree.

Whether the routing *features* carry a label at all, whatever the router does with them, is what
:func:`content_probe` measures: a supervised probe (logistic regression) predicting the label from the
histograms, cross-validated with whole subjects held out, against the majority-class rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch import nn

from moero.models.routing import BranchNav
from moero.models.vq import VectorQuantizer

__all__ = [
    "expert_usage",
    "usage_over_training",
    "contingency",
    "specialisation",
    "excess_nmi",
    "content_probe",
    "trace_routing",
    "fit_sensitivity_codebook",
    "sensitivity_histograms",
]


def _as_routes(routes: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    arr = np.asarray(routes.detach().cpu() if isinstance(routes, torch.Tensor) else routes)
    if arr.ndim != 1 or (arr.size and (arr.min() < 0 or not np.issubdtype(arr.dtype, np.integer))):
        raise ValueError(f"routes must be a 1-D sequence of non-negative expert indices, got shape {arr.shape}")
    return arr.astype(np.int64)


def expert_usage(routes: Sequence[int] | torch.Tensor | np.ndarray, num_experts: int) -> np.ndarray:
    """Share of samples routed to each expert, ``(num_experts,)`` summing to 1 (zeros for no samples)."""
    arr = _as_routes(routes)
    if arr.size and arr.max() >= num_experts:
        raise ValueError(f"routes hold expert {arr.max()}, but num_experts={num_experts}")
    counts = np.bincount(arr, minlength=num_experts).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def usage_over_training(routes: Sequence[int] | torch.Tensor | np.ndarray, num_experts: int) -> np.ndarray:
    """Cumulative route counts after each routed sample, ``(N, num_experts)``: ``n_j`` over training."""
    arr = _as_routes(routes)
    if arr.size and arr.max() >= num_experts:
        raise ValueError(f"routes hold expert {arr.max()}, but num_experts={num_experts}")
    onehot = np.zeros((arr.size, num_experts), dtype=np.int64)
    onehot[np.arange(arr.size), arr] = 1
    return np.cumsum(onehot, axis=0)


def contingency(routes: Sequence[int] | torch.Tensor | np.ndarray, labels: Sequence[Any],
                num_experts: int) -> tuple[np.ndarray, list[Any]]:
    """Samples per (label, expert): ``(len(label_names), num_experts)`` and the sorted label names."""
    arr = _as_routes(routes)
    if len(labels) != arr.size:
        raise ValueError(f"labels has {len(labels)} entries, routes has {arr.size}")
    names = sorted(set(labels), key=str)
    row = {name: i for i, name in enumerate(names)}
    table = np.zeros((len(names), num_experts), dtype=np.int64)
    for r, lab in zip(arr, labels, strict=True):
        table[row[lab], r] += 1
    return table, names


def specialisation(routes: Sequence[int] | torch.Tensor | np.ndarray,
                   labels: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """ARI and NMI between the routes and each labelling, e.g. ``{"contrast": [...], "vendor": [...]}``.

    Returns one row per labelling: ``{"label", "ari", "nmi", "samples", "classes"}``.
    """
    arr = _as_routes(routes)
    rows = []
    for name, values in labels.items():
        if len(values) != arr.size:
            raise ValueError(f"labels[{name!r}] has {len(values)} entries, routes has {arr.size}")
        codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)[1]
        rows.append({
            "label": name,
            "ari": float(adjusted_rand_score(codes, arr)),
            "nmi": float(normalized_mutual_info_score(codes, arr)),
            "samples": int(arr.size),
            "classes": int(codes.max() + 1) if codes.size else 0,
        })
    return rows


def excess_nmi(routes: Sequence[Sequence[int]], labels: Sequence[Any], groups: Sequence[Any],
               permutations: int = 200, seed: int = 0) -> dict[str, float]:
    """How much more the routes follow ``labels`` than chance: the largest NMI over cascades between a
    cascade's routes and the labels, minus the mean of the same largest NMI with the labels permuted across
    ``groups`` (files: every image of a file keeps one label, so the images of a file, which share content,
    count as one draw, not many). ``routes``: per cascade, one route per image. ``{"nmi", "chance",
    "excess"}``."""
    labels_arr = np.asarray([str(v) for v in labels])
    group_arr = np.asarray([str(g) for g in groups])
    if not routes or any(len(r) != labels_arr.size for r in routes) or group_arr.size != labels_arr.size:
        raise ValueError("excess_nmi: every cascade's routes, the labels and the groups need one entry per image")
    names, index = np.unique(group_arr, return_inverse=True)
    per_group = np.empty(names.size, dtype=labels_arr.dtype)
    per_group[index] = labels_arr
    if not (per_group[index] == labels_arr).all():
        raise ValueError("excess_nmi: a group holds images with different labels")
    codes = [_as_routes(r) for r in routes]

    def best(lab: np.ndarray) -> float:
        return max(float(normalized_mutual_info_score(lab, c)) for c in codes)

    rng = np.random.default_rng(seed)
    chance = float(np.mean([best(per_group[rng.permutation(names.size)][index]) for _ in range(permutations)]))
    observed = best(labels_arr)
    return {"nmi": observed, "chance": chance, "excess": observed - chance}


def content_probe(features: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[Any],
                  groups: Sequence[Any], folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Accuracy of a logistic-regression probe predicting ``labels`` from ``features`` (e.g. token
    histograms), cross-validated by ``groups`` (subjects: no subject in both a training and a test fold),
    and ``chance``, the share of the most frequent label. ``{"accuracy", "chance", "folds"}``; NaN accuracy
    when fewer than two groups or two labels exist."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray([str(v) for v in labels])
    g = np.asarray([str(v) for v in groups])
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(g):
        raise ValueError(f"content_probe: features {x.shape}, labels {len(y)} and groups {len(g)} do not match")
    chance = float(np.unique(y, return_counts=True)[1].max() / len(y)) if len(y) else float("nan")
    n_folds = min(int(folds), len(np.unique(g)))
    if n_folds < 2 or len(np.unique(y)) < 2:
        return {"accuracy": float("nan"), "chance": chance, "folds": 0}
    correct = 0
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))  # GroupKFold is deterministic; a fixed shuffle keeps folds balanced
    x, y, g = x[order], y[order], g[order]
    for train, test in GroupKFold(n_splits=n_folds).split(x, y, g):
        if len(np.unique(y[train])) < 2:
            correct += int((y[test] == y[train][0]).sum())
            continue
        probe = LogisticRegression(max_iter=2000, C=1.0)
        probe.fit(x[train], y[train])
        correct += int((probe.predict(x[test]) == y[test]).sum())
    return {"accuracy": correct / len(y), "chance": chance, "folds": n_folds}


def trace_routing(nav: BranchNav, histograms: torch.Tensor) -> list[dict[str, Any]]:
    """Route ``histograms`` ``(N, K)`` one sample at a time through ``nav`` (training mode) and record why.

    Each row: ``step``, ``route``, ``rule`` (``"least-used: no centres"``, ``"least-used: imbalance"``
    or ``"nearest centre"``), ``overridden`` (the balance rule picked another expert than the nearest
    centre), ``counts`` after the step, buffer ``fill`` and ``fitted``. The rule is read from the state
    before the sample, exactly as eq. (9) decides it.
    """
    nav.train()
    rows = []
    for i in range(histograms.shape[0]):
        hist = histograms[i : i + 1]
        fitted = bool(nav.fitted)
        counts = nav.counts + nav.step_counts
        nearest = int(nav.assign(hist)[0]) if fitted else None
        if not fitted:
            rule = "least-used: no centres"
        elif nav.imbalanced(counts):
            rule = "least-used: imbalance"
        else:
            rule = "nearest centre"
        route = int(nav(hist)[0])
        rows.append({
            "step": i, "route": route, "rule": rule, "overridden": nearest is not None and route != nearest,
            "counts": (nav.counts + nav.step_counts).tolist(), "fill": int(nav.fill), "fitted": bool(nav.fitted),
        })
    return rows


def _sens_quantizer(model: nn.Module) -> VectorQuantizer:
    vq = getattr(getattr(getattr(model, "sens_net", None), "unet", None), "vq", None)
    if vq is None:
        raise ValueError("model has no sens_net.unet.vq: build it with VQ-Prompt (Moero always has it)")
    return vq.quantizer


def _scan_batch(example: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return example["masked_kspace"][None].to(device), example["mask"][None].to(device)


@torch.no_grad()
def fit_sensitivity_codebook(model: nn.Module, examples: Iterable[Mapping[str, Any]],
                             device: str | torch.device = "cpu") -> int:
    """Initialise the sensitivity net's codebook by the quantiser's own k-means on the bottleneck features
    of ``examples`` (dataset dicts with ``masked_kspace`` and ``mask``); returns the feature count.

    An untrained codebook drawn at random maps every feature to one code, and every histogram would
    look alike; the paper's codebooks are learnt, this gives an untrained network a data-driven one.
    """
    quantizer = _sens_quantizer(model)
    seen: list[torch.Tensor] = []
    handle = quantizer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    was_training = model.training
    model.eval()
    try:
        for example in examples:
            model.sens_net(*_scan_batch(example, torch.device(device)), None)
    finally:
        handle.remove()
        model.train(was_training)
    if not seen:
        raise ValueError("examples is empty: no features to fit the codebook on")
    flat = torch.cat([z.movedim(1, -1).reshape(-1, quantizer.dim) for z in seen])
    quantizer._kmeans_init(flat)
    quantizer.update()  # apply the fresh codebook (EMA sums restart from it)
    return int(flat.shape[0])


@torch.no_grad()
def sensitivity_histograms(model: nn.Module, examples: Iterable[Mapping[str, Any]],
                           device: str | torch.device = "cpu") -> torch.Tensor:
    """Token histograms of eq. (8) of the sensitivity net (what routes cascade 0), ``(N, num_codes)``."""
    was_training = model.training
    model.eval()
    try:
        rows = [model.sens_net(*_scan_batch(ex, torch.device(device)), None)[1].cpu() for ex in examples]
    finally:
        model.train(was_training)
    if not rows:
        raise ValueError("examples is empty")
    return torch.cat(rows)
