"""Evidence on Moero's routing (chapter 06): what the navigators were fitted on, how they share the images
among the experts at every budget, and whether the routes and the features carry content.

* :func:`specialisation_over_training`: ARI / NMI between the test routes of each cascade and the images'
  labels, with a k-means fitted on the test histograms themselves (what the features allow);
* :func:`routing_budgets`: per run, seed, budget and cascade, when the centres were fitted, the largest
  expert share on test and in training, the cosine similarity of the histograms to their centres at the
  fit and now, NMI with each label, and a supervised content probe (:func:`moero.eval.specialisation.content_probe`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from moero.book.evaluation import evaluate_checkpoint, load_model
from moero.book.logs import route_history
from moero.book.runspec import SPEC_NAME, snapshot_path
from moero.eval.specialisation import content_probe, excess_nmi, specialisation
from moero.models.registry import parse_model_name
from moero.models.routing import centre_similarity, spherical_kmeans
from moero.train.checkpoint import load_checkpoint

__all__ = ["ROUTE_LABELS", "BUDGET_LABELS", "specialisation_over_training", "routing_budgets", "fit_step",
           "routing_inactive", "content_excess", "identical_share"]

# what Moero's test routes are compared with: the image's contrast, view, vendor, centre and its undersampling
ROUTE_LABELS = ("modality", "view", "vendor", "centre", "kind", "acceleration")
# the routing_budgets.csv columns nmi_<name> and the image label each is measured against
BUDGET_LABELS = {"modality": "modality", "view": "view", "mask_kind": "kind", "acceleration": "acceleration",
                 "vendor": "vendor"}


def specialisation_over_training(run_dir: str | Path, params: dict[str, Any], data_root: str | Path | None = None,
                                 labels: Sequence[str] = ROUTE_LABELS,
                                 device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """ARI / NMI between Moero's routes (per cascade) on the test images and their labels, at every Tab. 2
    budget, with the route counts per expert and ``nmi_kmeans_on_test``: the NMI of a spherical k-means
    (as many clusters as experts) fitted on the test histograms themselves, what these features allow."""
    spec = json.loads((Path(run_dir) / SPEC_NAME).read_text())
    experts = parse_model_name(spec["experiment"]["model"]).num_experts
    rows = []
    for budget in sorted(int(b) for b in params["budgets"]):  # the Tab. 2 budgets: evaluations shared with it
        res = evaluate_checkpoint(run_dir, budget, params, data_root, device=device)
        if not res["routes"]:
            continue
        for k in range(len(res["routes"][0])):
            routes = [r[k] for r in res["routes"]]
            counts = [routes.count(j) for j in range(experts)]
            # separability: spherical k-means fitted on these test histograms themselves (what the best
            # centres could do with these features) against the routes the trained centres give
            oracle = None
            if res.get("histograms") and len(res["histograms"]) >= experts:
                hist = torch.tensor([h[k] for h in res["histograms"]], dtype=torch.float64)
                oracle = spherical_kmeans(hist, experts, restarts=4, max_iter=50, seed=0)[1].tolist()
            values = {name: [lab[name] for lab in res["labels"]] for name in labels}
            best = {r["label"]: r for r in specialisation(oracle, values)} if oracle is not None else {}
            for row in specialisation(routes, values):
                rows.append({"budget": budget, "cascade": k, **row, "route_counts": "/".join(map(str, counts)),
                             "nmi_kmeans_on_test": best.get(row["label"], {}).get("nmi", math.nan)})
    return rows


def identical_share(hist: torch.Tensor) -> float:
    """The share of the rows of ``hist`` ``(N, D)`` equal to its most frequent row: the images a router must
    send to one expert whatever it does, because their routing histograms are the same."""
    if hist.shape[0] == 0:
        return math.nan
    _, counts = torch.unique(hist, dim=0, return_counts=True)
    return float(counts.max()) / hist.shape[0]


def _max_share(counts: Sequence[int]) -> float:
    total = sum(counts)
    return max(counts) / total if total else math.nan


def _counts_at(history: list[dict[str, Any]], step: int, cascade: int) -> list[int] | None:
    """Cumulative training route counts of ``cascade`` at the last logged step <= ``step``."""
    before = [r for r in history if int(r["step"]) <= step]
    return [int(c) for c in before[-1]["counts"][cascade]] if before else None


def routing_budgets(run_dir: str | Path, params: dict[str, Any], data_root: str | Path | None = None,
                    device: str | torch.device = "cpu", world_size: int = 1) -> list[dict[str, Any]]:
    """One row per Tab. 2 budget and cascade of a Moero run (the columns of ``routing_budgets.csv``).

    ``fitted_at_step``: the optimiser step at which the centres were first fitted (-1: not fitted);
    ``max_share_test``: the largest share of the test images any expert receives; ``max_share_train``: the
    same over the training samples routed between the fit (or the previous budget) and this budget;
    ``identical_share_test``: :func:`identical_share` of the test histograms (what no router can split);
    ``cos_fit``: the mean cosine similarity of the buffered histograms to their centres at the latest fit;
    ``cos_now``: that of this budget's test histograms; ``nmi_<label>``: NMI of the test routes with the
    label; ``probe_accuracy``/``probe_chance``: the content probe for modality on the test histograms,
    cross-validated by subject, and the majority-class rate."""
    run_dir = Path(run_dir)
    history = route_history(run_dir)
    rows: list[dict[str, Any]] = []
    previous: dict[int, int] = {}
    for budget in sorted(int(b) for b in params["budgets"]):
        model, config, state = load_model(run_dir, budget)
        navs = getattr(model, "navs", None)
        if navs is None:
            return []
        res = evaluate_checkpoint(run_dir, budget, params, data_root, device=device)
        step, per_step = int(state["step"]), int(config.batch_size) * int(world_size)
        labels = res["labels"]
        for k, nav in enumerate(navs):
            fitted = bool(nav.fitted)
            fitted_at = math.ceil(int(nav.fitted_at) / per_step) if fitted and int(nav.fitted_at) >= 0 else -1
            routes = [r[k] for r in res["routes"]]
            test_counts = [routes.count(j) for j in range(nav.num_experts)]
            start = previous.get(k, fitted_at if fitted_at >= 0 else 0)
            now, then = _counts_at(history, step, k), _counts_at(history, start, k)
            train_counts = [a - b for a, b in zip(now, then or [0] * len(now), strict=True)] if now else []
            hist = torch.tensor([h[k] for h in res["histograms"]], dtype=torch.float32)
            cos_now = float(centre_similarity(hist, nav.centres).double().mean()) if fitted else math.nan
            nmi = {f"nmi_{name}": r["nmi"] for name, label in BUDGET_LABELS.items()
                   for r in specialisation(routes, {label: [lab[label] for lab in labels]})}
            probe = content_probe(hist.numpy(), [lab["modality"] for lab in labels],
                                  [lab.get("subject") or lab["file"] for lab in labels])
            rows.append({"budget": budget, "step": step, "cascade": k, "fitted_at_step": fitted_at,
                         "max_share_test": _max_share(test_counts), "max_share_train": _max_share(train_counts),
                         "identical_share_test": identical_share(hist),
                         "cos_fit": float(nav.fit_similarity) if fitted else math.nan, "cos_now": cos_now, **nmi,
                         "probe_accuracy": probe["accuracy"], "probe_chance": probe["chance"],
                         "test_counts": "/".join(map(str, test_counts)),
                         "train_counts": "/".join(map(str, train_counts))})
            previous[k] = step
    return rows


def content_excess(run_dir: str | Path, budget: int, params: dict[str, Any], data_root: str | Path | None = None,
                   device: str | torch.device = "cpu", label: str = "modality", seed: int = 0) -> dict[str, float]:
    """How much the test routes of a Moero run at snapshot ``budget`` follow the images' ``label`` beyond
    chance: :func:`moero.eval.specialisation.excess_nmi` over its cascades, labels permuted across files."""
    res = evaluate_checkpoint(run_dir, budget, params, data_root, device=device)
    cascades = len(res["routes"][0]) if res["routes"] else 0
    return excess_nmi([[r[k] for r in res["routes"]] for k in range(cascades)],
                      [lab[label] for lab in res["labels"]], [lab["file"] for lab in res["labels"]], seed=seed)


def fit_step(run_dir: str | Path) -> int | None:
    """The first logged training step at which every navigator of a Moero run had its centres (None: never)."""
    return next((int(h["step"]) for h in route_history(run_dir) if h.get("fitted") and all(h["fitted"])), None)


def routing_inactive(run_dirs: Sequence[str | Path], budget: int, params: dict[str, Any]) -> str | None:
    """``"routing not active"`` unless every run's navigators were fitted for at least half of the steps up
    to snapshot ``budget`` (the book judges a Moero comparison only then); None when they were."""
    for run_dir in run_dirs:
        steps = int(budget) if params.get("budget_unit", "steps") == "steps" else \
            int(load_checkpoint(snapshot_path(run_dir, budget))["step"])
        fitted = fit_step(run_dir)
        if fitted is None or fitted > steps / 2:
            return "routing not active"
    return None
