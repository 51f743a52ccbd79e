"""BranchNav: histogram routing of Moero's branch grid (eq. (9)).

Each cascade of a Moero grid has K experts and one :class:`BranchNav`. The navigator sees the
token-frequency vector of eq. (8) (the coil-map net's for cascade 0, cascade k-1's otherwise) and
picks an expert:

* **Balance rule.** With route counts ``n_j``, if ``max_j n_j / (min_j n_j + 1e-13) > ratio`` (3 in
  the paper), or before centres exist, the sample goes to the least-used expert ``argmin_j n_j``
  (lowest index on ties). From zero counts this is round robin.
* **Centres.** Otherwise the sample goes to the centre of highest cosine similarity. The centres
  come from spherical k-means (:func:`spherical_kmeans`: K clusters, seeded restarts, at most
  ``max_iter`` iterations) fitted once, on a buffer of ``buffer_size`` histograms gathered from all
  ranks and filled only after a warm-up (default: nothing is buffered during the first epoch).
* **Staying current (our departure; the paper fits once).** With ``refit_every = N > 0`` the buffer
  becomes a ring of the latest ``buffer_size`` training histograms after the first fit, and the centres
  are refitted every N routed samples (counted over all ranks); the new centres are matched to the old by
  cosine similarity with a Hungarian assignment (:func:`match_centres`), so expert j keeps its identity.
  With ``freeze_codebook="fit"`` Moero freezes the codebook whose tokens this navigator reads once it is
  fitted (the buffer ``moero.models.vq.VectorQuantizer.frozen``), so the histograms stop drifting by EMA and
  dead-code restarts; ``"buffer"`` freezes it already when buffering starts, so that the fit sees
  histograms of the very codebook it will route on.
* **Capacity (our departure).** The balance rule bounds only the cumulative ratio, so after a fit on
  balanced counts all later samples may go to one expert. With ``capacity = c >= 1`` no expert takes more
  than ``c / K`` of the training samples routed since the last fit (plus one): a sample whose nearest
  centre is full goes to the most similar centre with room.
* **Bias balancing (our departure).** With ``bias_rate = g > 0`` every expert carries a bias ``b_j``
  added to its cosine similarity when routing (training and evaluation): after each training step the
  experts that more samples preferred than the mean (by ``argmax_j cos_j + b_j``) lose ``g``, the others
  gain ``g`` (sign updates, as auxiliary-loss-free load balancing of mixtures of experts). Unlike the
  balance rule and capacity, the balance it learns also holds at evaluation, which routes by
  ``argmax_j cos_j + b_j`` with the biases frozen (still deterministic and history-free).
* **Centring (our departure).** With ``center=True`` the fit subtracts the buffer's mean histogram from
  every histogram (kept in the buffer ``offset``) before the spherical k-means, and routing compares the
  centres with ``hist - offset``. Raw token histograms share a large common part (background and frequent
  codes), so their cosine similarities to any centre are all close to 1 and routing follows that common
  part; the centred cosine is a correlation and follows what differs between images.
* **Balanced fit (our departure).** With ``balance=True`` every fit also sets the biases ``b_j`` so that the
  histograms it was fitted on split equally over the experts (:func:`balanced_biases`); routing in training and
  evaluation is ``argmax_j cos_j + b_j``. k-means on histograms that share a large common part often splits off
  a few outliers; the biases move the boundary into the bulk, as the equipartition of balanced clustering.
* **Calibration (our departure).** With ``calibration = N > 0`` the owning model re-encodes N fixed training
  examples with its current weights at the end of training and refits the centres on their histograms
  (:meth:`BranchNav.calibrate`, called by ``Moero.calibrate_routing`` one cascade after another). The buffer
  holds histograms of past weights; measured on the cpu profile, the drift of those weights between steps moves
  a histogram more than the difference between images does, so centres fitted on the buffer may route every
  image of the final network to one expert.
* **Granularity.** ``route_by="batch"`` sends a whole batch to one expert (the mode of the
  per-sample choices; the paper trains with batch size 1), ``route_by="sample"`` routes every sample
  and :func:`dispatch` runs each active expert once on its group and scatters the results back. A
  batch routed per sample gets exactly the routes of its samples routed one after another.

Evaluation (``eval_mode``) differs from the authors' code on purpose:

* ``"nearest"`` (default): route by the centres alone; deterministic and independent of what was
  evaluated before. Before centres exist it routes to ``argmin_j n_j`` of the frozen training counts
  (the expert training would pick next; expert 0 from zero counts); evaluation never changes state.
* ``"paper"``: the authors' behaviour: the balance rule still runs and evaluation routes are added
  to the route counts (locally, unsynchronised, as in their code), so routing depends on history.

Synchronisation. Everything is a registered buffer (counts, buffer, fill level, centres, fitted
flag, epoch), so checkpoints restore routing exactly. Training routes accumulate in ``step_counts``
and queued histograms; :meth:`BranchNav.sync` (or a model's single per-step collective, through
:meth:`~BranchNav.sync_payload` / :meth:`~BranchNav.apply_sync`) sums the counts over ranks and
gathers the queued histograms into the shared buffer in rank order, so all ranks hold the same
state and fit the same centres (the fit is deterministic by ``seed`` and runs in float64 on CPU).
Without ``torch.distributed`` the navigator syncs itself at the end of every training call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from moero.models.clustering import (
    balanced_biases,
    centre_similarity,
    cosine_assign,
    cosine_similarities,
    match_centres,
    spherical_kmeans,
)
from moero.models.collective import all_reduce_flat, distributed_world

__all__ = ["BranchNav", "AUTHORS_NAV", "spherical_kmeans", "balanced_biases", "cosine_assign", "cosine_similarities",
           "centre_similarity", "match_centres", "dispatch"]

_EPS_RATIO = 1e-13  # the authors' epsilon in max/min

# BranchNav settings of the authors' code (5o1/Moero: models/modules/nav.py KmeansBranchNav with
# plm/configs/model/moero-12x*.yaml): 2048 buffered histograms after skipping 8000 routed samples *per
# rank*, cosine k-means with seed 42, the balance rule at ratio 3, the batch routed by the mode, and
# the same rule at evaluation (route counts keep growing; "paper" eval mode).
AUTHORS_NAV: dict[str, Any] = {
    "buffer_size": 2048,
    "warmup": 8000,
    "warmup_scope": "rank",
    "imbalance_ratio": 3.0,
    "restarts": 8,
    "max_iter": 100,
    "seed": 42,
    "eval_mode": "paper",
    "route_by": "batch",
}


class BranchNav(nn.Module):
    """Router of one Moero cascade over ``num_experts`` experts by token histograms (eq. (9)).

    Args:
        num_experts: experts K of the cascade.
        num_codes: length of the routing histograms (the codebook size).
        buffer_size: histograms gathered (over all ranks) before k-means is fitted, once.
        warmup: ``"epoch"``: buffer nothing while the epoch set by :meth:`set_epoch` is 0 (the paper's
            "no buffering in the first epoch"); an ``int``: buffer nothing until that many samples have
            been routed (see ``warmup_scope``); ``0``: no warm-up.
        warmup_scope: ``"global"``: an ``int`` warm-up counts samples routed over all ranks; ``"rank"``:
            per rank, as the authors' ``sample_idx`` (the synced count must reach ``warmup x world
            size``, which equals every rank's own count because each rank routes its own equal-size
            batches; the authors also count evaluation forwards, we do not).
        imbalance_ratio: the balance rule fires when ``max n / (min n + 1e-13)`` exceeds it.
        restarts, max_iter, seed: of :func:`spherical_kmeans`.
        eval_mode: ``"nearest"`` or ``"paper"`` (module docstring).
        route_by: ``"sample"`` (one expert per sample) or ``"batch"`` (the mode, the paper's way).
        gather_per_step: queued histograms each rank contributes to the buffer per synchronisation
            (the rest wait for the next step); fixes the size of the per-step collective.
        refit_every: after the first fit, refit the centres on the latest ``buffer_size`` training
            histograms every this many routed samples (over all ranks), expert identities kept by
            :func:`match_centres`; ``0``: fit once (the paper).
        freeze_codebook: ``"never"``; ``"fit"``: ask the owning model to freeze the codebook whose tokens
            this navigator reads once the centres exist; ``"buffer"``: once the warm-up is over (Moero
            does either in ``after_backward``; see :attr:`freeze_due`).
        freeze_codebook_after_fit: ``True`` is ``freeze_codebook="fit"`` (the first name of the option).
        capacity: ``c >= 1``: no expert takes more than ``c / K`` (+1 sample) of the training samples routed
            since the last fit; ``0``: off (the paper).
        bias_rate: step of the per-expert routing biases (module doc); ``0``: off (the paper).
        center: route on histograms minus the buffer's mean histogram at the fit (module doc); ``False``:
            the raw histograms (the paper).
        balance: every fit also sets the routing biases so that the histograms it was fitted on split equally
            over the experts (:func:`balanced_biases`; module doc); ``False``: no biases (the paper).
        calibration: training examples the owning model re-encodes with its current weights to refit the
            centres on, at the end of training (:meth:`calibrate`; module doc); ``0``: off (the paper).
    """

    def __init__(
        self,
        num_experts: int,
        num_codes: int,
        buffer_size: int = 2048,
        warmup: str | int = "epoch",
        warmup_scope: str = "global",
        imbalance_ratio: float = 3.0,
        restarts: int = 8,
        max_iter: int = 100,
        seed: int = 42,
        eval_mode: str = "nearest",
        route_by: str = "sample",
        gather_per_step: int = 8,
        refit_every: int = 0,
        freeze_codebook: str = "never",
        freeze_codebook_after_fit: bool = False,
        capacity: float = 0.0,
        bias_rate: float = 0.0,
        center: bool = False,
        balance: bool = False,
        calibration: int = 0,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        if buffer_size < num_experts:
            raise ValueError(f"buffer_size must be >= num_experts={num_experts}, got {buffer_size}")
        if not (warmup == "epoch" or (isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0)):
            raise ValueError(f"warmup must be 'epoch' or an int >= 0, got {warmup!r}")
        if warmup_scope not in ("global", "rank"):
            raise ValueError(f"warmup_scope must be 'global' or 'rank', got {warmup_scope!r}")
        if imbalance_ratio < 1.0:
            raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
        if eval_mode not in ("nearest", "paper"):
            raise ValueError(f"eval_mode must be 'nearest' or 'paper', got {eval_mode!r}")
        if route_by not in ("sample", "batch"):
            raise ValueError(f"route_by must be 'sample' or 'batch', got {route_by!r}")
        if gather_per_step < 1:
            raise ValueError(f"gather_per_step must be >= 1, got {gather_per_step}")
        if isinstance(refit_every, bool) or not isinstance(refit_every, int) or refit_every < 0:
            raise ValueError(f"refit_every must be an int >= 0, got {refit_every!r}")
        if freeze_codebook_after_fit and freeze_codebook == "never":
            freeze_codebook = "fit"
        if freeze_codebook not in ("never", "fit", "buffer"):
            raise ValueError(f"freeze_codebook must be 'never', 'fit' or 'buffer', got {freeze_codebook!r}")
        if not bias_rate >= 0.0:
            raise ValueError(f"bias_rate must be >= 0, got {bias_rate}")
        if balance and bias_rate > 0:
            raise ValueError("balance and bias_rate > 0 both set the routing biases: choose one")
        if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 0:
            raise ValueError(f"calibration must be an int >= 0, got {calibration!r}")
        if 0 < calibration < num_experts:
            raise ValueError(f"calibration must be 0 or >= num_experts={num_experts}, got {calibration}")
        if not (capacity == 0.0 or capacity >= 1.0):
            raise ValueError(f"capacity must be 0 (off) or >= 1, got {capacity}")
        self.num_experts, self.num_codes, self.buffer_size = num_experts, num_codes, buffer_size
        self.warmup, self.warmup_scope, self.imbalance_ratio = warmup, warmup_scope, float(imbalance_ratio)
        self.restarts, self.max_iter, self.seed = restarts, max_iter, seed
        self.eval_mode, self.route_by, self.gather_per_step = eval_mode, route_by, gather_per_step
        self.refit_every, self.freeze_codebook = refit_every, freeze_codebook
        self.capacity, self.bias_rate, self.center = float(capacity), float(bias_rate), bool(center)
        self.balance, self.calibration = bool(balance), int(calibration)
        self.register_buffer("counts", torch.zeros(num_experts, dtype=torch.long))  # synced n_j
        self.register_buffer("step_counts", torch.zeros(num_experts, dtype=torch.long))  # this rank, this step
        self.register_buffer("buffer", torch.zeros(buffer_size, num_codes))
        self.register_buffer("fill", torch.zeros((), dtype=torch.long))
        self.register_buffer("centres", torch.zeros(num_experts, num_codes))
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        # what the fit saw (for the book's evidence on routing): the perplexity of the buffer's mean
        # histogram (codebook usage; num_codes at most) and the mean cosine similarity of each buffered
        # histogram to its centre (1: tight clusters); -1 until fitted (buffers stay finite: the trainer
        # refuses to save non-finite state)
        self.register_buffer("fit_perplexity", torch.tensor(-1.0))
        self.register_buffer("fit_similarity", torch.tensor(-1.0))
        # keeping routing current: ring position of the buffer after the first fit, routed samples (synced,
        # all ranks) at the first and at the latest fit (-1 before), refits so far, counts at the latest fit
        self.register_buffer("head", torch.zeros((), dtype=torch.long))
        self.register_buffer("fitted_at", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("last_fit_at", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("refits", torch.zeros((), dtype=torch.long))
        self.register_buffer("fit_counts", torch.zeros(num_experts, dtype=torch.long))
        # bias balancing: the routing biases and this rank's preferences of this step (argmax cos + bias)
        self.register_buffer("bias", torch.zeros(num_experts))
        self.register_buffer("step_prefs", torch.zeros(num_experts, dtype=torch.long))
        # centring: the buffer's mean histogram at the latest fit, subtracted before every cosine (0 without)
        self.register_buffer("offset", torch.zeros(num_codes))
        # calibration: fits on the current network's histograms so far (see calibrate)
        self.register_buffer("calibrations", torch.zeros((), dtype=torch.long))
        self._queue: list[torch.Tensor] = []  # histograms routed this step, waiting for the buffer

    _ADDED_BUFFERS = ("head", "fitted_at", "last_fit_at", "refits", "fit_counts", "bias", "step_prefs", "offset",
                      "calibrations")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints from before refit/capacity lack these buffers: keep their defaults
        for name in self._ADDED_BUFFERS:
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, num_codes={self.num_codes}, buffer_size={self.buffer_size}, "
                f"warmup={self.warmup!r}, eval_mode={self.eval_mode!r}, route_by={self.route_by!r}, "
                f"refit_every={self.refit_every}, freeze_codebook={self.freeze_codebook!r}, "
                f"capacity={self.capacity}, bias_rate={self.bias_rate}, center={self.center}, "
                f"balance={self.balance}, calibration={self.calibration}")

    # ------------------------------------------------------------------ state
    def set_epoch(self, epoch: int) -> None:
        """Tell the navigator the current epoch (the ``"epoch"`` warm-up buffers from epoch 1 on)."""
        self.epoch.fill_(int(epoch))

    @property
    def warmed_up(self) -> bool:
        """Whether the warm-up is over (by the synced counts, so all ranks agree)."""
        if self.warmup == "epoch":
            return int(self.epoch) >= 1
        ranks = distributed_world()[1] if self.warmup_scope == "rank" else 1
        return int(self.counts.sum()) >= int(self.warmup) * ranks

    @property
    def collecting(self) -> bool:
        """Whether training histograms currently go to the buffer: warmed up and, before the fit, not full;
        after the fit only with ``refit_every`` (the buffer is then a ring of the latest histograms)."""
        if bool(self.fitted):
            return self.refit_every > 0 and self.warmed_up
        return int(self.fill) < self.buffer_size and self.warmed_up

    @property
    def freeze_due(self) -> bool:
        """Whether the codebook this navigator reads should be frozen now (by ``freeze_codebook`` and the
        synced state, so all ranks agree)."""
        if self.freeze_codebook == "fit":
            return bool(self.fitted)
        if self.freeze_codebook == "buffer":
            return bool(self.fitted) or self.warmed_up
        return False

    @property
    def refit_due(self) -> bool:
        """Whether ``refit_every`` routed samples (synced counts) have passed since the latest fit."""
        return (self.refit_every > 0 and bool(self.fitted)
                and int(self.counts.sum()) - int(self.last_fit_at) >= self.refit_every)

    def imbalanced(self, counts: torch.Tensor | None = None) -> bool:
        """The balance rule of eq. (9): ``max n / (min n + 1e-13) > imbalance_ratio``."""
        c = (self.counts if counts is None else counts).double()
        return bool(c.max() / (c.min() + _EPS_RATIO) > self.imbalance_ratio)

    # ------------------------------------------------------------------ routing
    def features(self, hist: torch.Tensor) -> torch.Tensor:
        """What the centres are compared with: the histograms, minus the fit's mean histogram with ``center``."""
        hist = hist.detach().float()
        return hist - self.offset.to(hist.device, hist.dtype) if self.center else hist

    def assign(self, hist: torch.Tensor) -> torch.Tensor:
        """Nearest centre by cosine similarity, ``(B,)``; a ``ValueError`` before the centres exist."""
        self._check(hist)
        if not bool(self.fitted):
            raise ValueError("BranchNav has no centres yet: the buffer is not full (see fill, buffer_size)")
        return cosine_assign(self.features(hist), self.centres)

    @torch.no_grad()
    def cos_now(self, hist: torch.Tensor | None = None) -> float:
        """Mean cosine similarity of histograms ``(N, num_codes)`` to their nearest centre, the diagnostic
        beside :attr:`fit_similarity` (the same mean over the buffer at the latest fit); without ``hist`` the
        buffer's rows (with ``refit_every``, the latest training histograms). NaN before the centres exist."""
        if not bool(self.fitted):
            return float("nan")
        if hist is None:
            hist = self.buffer[: int(self.fill)]
        self._check(hist)
        return float(centre_similarity(self.features(hist), self.centres).double().mean())

    def _check(self, hist: torch.Tensor) -> None:
        if hist.ndim != 2 or hist.shape[1] != self.num_codes:
            raise ValueError(f"hist must be (B, num_codes={self.num_codes}), got {tuple(hist.shape)}")

    @torch.no_grad()
    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        """Routes ``(B,)`` (long, on CPU) of histograms ``hist`` ``(B, num_codes)``; see the module doc."""
        self._check(hist)
        batch = hist.shape[0]
        hist = hist.detach().float()
        fitted = bool(self.fitted)
        eval_nearest = not self.training and self.eval_mode == "nearest"
        # one device -> host transfer: nearest centres and counts together
        parts = [self.counts.double(), self.step_counts.double(), self.fit_counts.double(), self.bias.double()]
        if fitted:
            sims_dev = cosine_similarities(self.features(hist), self.centres)
            parts.append(sims_dev.reshape(-1).double())
        host = torch.cat(parts).cpu()
        k = self.num_experts
        counts = (host[:k] + host[k : 2 * k]).long()
        # cosine + bias (0 without balancing), added in float64 on the host as the balanced fit computed it
        scores = host[4 * k :].view(batch, k) + host[3 * k : 4 * k] if fitted else None
        if eval_nearest:
            if scores is not None:
                return scores.argmax(dim=1)  # = cosine_assign without biases: lowest index on ties
            return torch.full((batch,), int(counts.argmin()), dtype=torch.long)
        routes = self._balanced_routes(counts.clone(), scores, batch, counts - host[2 * k : 3 * k].long())
        added = torch.bincount(routes, minlength=k)
        prefs = torch.bincount(scores.argmax(dim=1), minlength=k) if scores is not None and self.bias_rate > 0 else None
        if self.training:
            if distributed_world()[1] == 1:  # a world of one: what sync() would do, without the payload
                collecting = self.collecting  # decided before this batch counts, as on several ranks
                self.counts += added.to(self.counts.device)
                if prefs is not None:
                    self._update_bias(prefs)
                if collecting:
                    self._append(hist)
                self._maybe_fit()
                return routes
            self.step_counts += added.to(self.step_counts.device)
            if prefs is not None:
                self.step_prefs += prefs.to(self.step_prefs.device)
            if self.collecting:
                self._queue.append(hist)
        else:  # paper eval: the authors count evaluation routes too (not synchronised)
            self.counts += added.to(self.counts.device)
        return routes

    def _balanced_routes(self, counts: torch.Tensor, sims: torch.Tensor | None, batch: int,
                         since: torch.Tensor) -> torch.Tensor:
        """Eq. (9) on the host: least-used expert while imbalanced or unfitted, else the nearest centre
        (``sims`` ``(B, K)``: cosine + bias) with room under ``capacity`` (``since``: counts since the latest fit)."""
        if self.route_by == "batch":
            if sims is None or self.imbalanced(counts):
                choice = int(counts.argmin())
            else:  # the mode of the nearest centres (lowest on ties), or the next most voted with room
                votes = torch.bincount(sims.argmax(dim=1), minlength=self.num_experts)
                choice = self._with_room(torch.argsort(votes, descending=True, stable=True), since)
            return torch.full((batch,), choice, dtype=torch.long)
        routes = torch.empty(batch, dtype=torch.long)
        since = since.clone()
        for i in range(batch):  # sequential, so a batch routes exactly as its samples one by one
            if sims is None or self.imbalanced(counts):
                routes[i] = int(counts.argmin())
            else:
                routes[i] = self._with_room(torch.argsort(sims[i], descending=True, stable=True), since)
            counts[routes[i]] += 1
            since[routes[i]] += 1
        return routes

    def _update_bias(self, prefs: torch.Tensor) -> None:
        """Sign step of the routing biases: experts preferred by more than the mean share lose ``bias_rate``."""
        prefs = prefs.double().cpu()
        if float(prefs.sum()) <= 0:
            return
        step = self.bias_rate * torch.sign(prefs.mean() - prefs)
        self.bias += step.to(self.bias.device, self.bias.dtype)

    def _with_room(self, order: torch.Tensor, since: torch.Tensor) -> int:
        """The first expert of ``order`` below the capacity ``c / K`` of the samples since the fit (``order[0]``
        without capacity). One always has room: ``c >= 1`` and the shares sum to one."""
        if self.capacity > 0.0:
            limit = self.capacity / self.num_experts * (int(since.sum()) + 1)
            for j in order.tolist():
                if int(since[j]) < limit:
                    return int(j)
        return int(order[0])

    # ------------------------------------------------------------------ synchronisation
    def sync_numel(self, world: int) -> int:
        """Length of this navigator's slice of the per-step all-reduce (same on every rank)."""
        gathered = world * (self.gather_per_step * self.num_codes + 1) if self.collecting else 0
        return self._head_numel + gathered

    @property
    def _head_numel(self) -> int:
        """Step counts, then (with bias balancing) step preferences: the fixed head of the payload."""
        return self.num_experts * (2 if self.bias_rate > 0 else 1)

    def sync_payload(self, rank: int, world: int) -> torch.Tensor:
        """float32 ``(sync_numel(world),)``: step counts, then (while collecting) this rank's queued
        histograms in its own slot, zeros in the others' slots, so that the SUM over ranks is a gather."""
        payload = torch.zeros(self.sync_numel(world), device=self.counts.device)
        payload[: self.num_experts] = self.step_counts.float()
        if self.bias_rate > 0:
            payload[self.num_experts : 2 * self.num_experts] = self.step_prefs.float()
        if self.collecting and self._queue:
            queued = torch.cat(self._queue)
            take = queued[: self.gather_per_step]
            self._queue = [queued[self.gather_per_step :]] if queued.shape[0] > self.gather_per_step else []
            slot = self.gather_per_step * self.num_codes + 1
            start = self._head_numel + rank * slot
            payload[start] = take.shape[0]
            payload[start + 1 : start + 1 + take.numel()] = take.reshape(-1).to(payload.device)
        return payload

    @torch.no_grad()
    def apply_sync(self, summed: torch.Tensor, world: int) -> None:
        """Consume the all-reduced payload: add the counts, append gathered histograms, fit when full."""
        k = self.num_experts
        self.counts += summed[:k].round().long().to(self.counts.device)
        self.step_counts.zero_()
        head = self._head_numel
        if self.bias_rate > 0:
            self._update_bias(summed[k : 2 * k].round().long())
            self.step_prefs.zero_()
        if summed.numel() > head:
            slot = self.gather_per_step * self.num_codes + 1
            rows = []
            for r in range(world):
                base = head + r * slot
                n = int(summed[base].round())
                rows.append(summed[base + 1 : base + 1 + n * self.num_codes].view(n, self.num_codes))
            self._append(torch.cat(rows))
        if not self.collecting:
            self._queue = []
        self._maybe_fit()

    def _maybe_fit(self) -> None:
        """Fit once the buffer is full; afterwards refit when ``refit_every`` samples have passed."""
        if (not bool(self.fitted) and int(self.fill) >= self.buffer_size) or self.refit_due:
            self.fit()

    def _append(self, rows: torch.Tensor) -> None:
        if bool(self.fitted):  # refitting: the buffer is a ring of the latest histograms
            rows = rows[-self.buffer_size :]
            head = int(self.head)
            idx = (head + torch.arange(rows.shape[0])) % self.buffer_size
            self.buffer[idx.to(self.buffer.device)] = rows.to(self.buffer.device, self.buffer.dtype)
            self.head.fill_((head + rows.shape[0]) % self.buffer_size)
            return
        fill = int(self.fill)
        take = rows[: self.buffer_size - fill]
        self.buffer[fill : fill + take.shape[0]] = take.to(self.buffer.device, self.buffer.dtype)
        self.fill += take.shape[0]

    @torch.no_grad()
    def sync(self, process_group: Any = None) -> None:
        """Sum this step's routing statistics over ranks (one all-reduce, none without distributed)."""
        rank, world = distributed_world(process_group)
        payload = self.sync_payload(rank, world)
        all_reduce_flat([payload], process_group, dtype=payload.dtype)
        self.apply_sync(payload, world)

    @torch.no_grad()
    def fit(self) -> torch.Tensor:
        """Fit the centres by spherical k-means on the filled part of the buffer; returns the buffer labels.

        A refit (centres already exist) permutes the new centres by :func:`match_centres`, so expert j keeps
        the centre nearest its old one. Records the routed samples at the first and latest fit."""
        fill = int(self.fill)
        if fill < self.num_experts:
            raise ValueError(f"the buffer holds {fill} histograms, fewer than num_experts={self.num_experts}")
        return self._fit_on(self.buffer[:fill])

    @torch.no_grad()
    def calibrate(self, hist: torch.Tensor) -> torch.Tensor:
        """Refit the centres (expert identities kept, biases balanced with ``balance``) on ``hist`` ``(N,
        num_codes)``: the histograms of fixed training examples re-encoded by the network as it is now.

        Why (our departure): the histograms a navigator buffers during training come from the weights of many
        past steps, and at CPU scale the step-to-step drift of those weights moves a histogram more than the
        difference between images does, so centres fitted on the buffer may send every image of the final
        network to one expert. Needs fitted centres (a ``ValueError`` before). Returns the labels of ``hist``."""
        self._check(hist)
        if not bool(self.fitted):
            raise ValueError("BranchNav.calibrate needs fitted centres: train until the buffer is full first")
        if hist.shape[0] < self.num_experts:
            raise ValueError(f"calibrate: {hist.shape[0]} histograms, fewer than num_experts={self.num_experts}")
        labels = self._fit_on(hist.detach().to(self.buffer.device, self.buffer.dtype))
        self.calibrations += 1
        return labels

    def _fit_on(self, data: torch.Tensor) -> torch.Tensor:
        if self.center:  # the common part of all histograms (background, frequent codes) says nothing of content
            self.offset.copy_(data.mean(dim=0))
        centres, labels, score = spherical_kmeans(self.features(data), self.num_experts, self.restarts,
                                                  self.max_iter, self.seed)
        total = int(self.counts.sum())
        if bool(self.fitted):
            perm = match_centres(centres, self.centres)
            centres = centres[perm]
            labels = torch.argsort(perm)[labels]
            self.refits += 1
        else:
            self.fitted_at.fill_(total)
        self.last_fit_at.fill_(total)
        self.fit_counts.copy_(self.counts)
        self.centres.copy_(centres.to(self.centres.dtype))
        self.fitted.fill_(True)
        if self.balance:  # an equal split of what the fit saw: the biases absorb the histograms' common part
            # the similarities exactly as forward computes them, so the split holds for routing itself
            sims = cosine_similarities(self.features(data.float()), self.centres).double().cpu()
            self.bias.copy_(balanced_biases(sims, dtype=self.bias.dtype).to(self.bias.device, self.bias.dtype))
            labels = (sims + self.bias.double().cpu()).argmax(dim=1)
        mean = data.double().clamp_min(0).mean(dim=0)
        prob = mean / mean.sum().clamp_min(1e-12)
        entropy = -(prob * prob.clamp_min(1e-30).log()).sum()
        self.fit_perplexity.fill_(float(entropy.exp()))
        self.fit_similarity.fill_(score / data.shape[0])
        return labels


class _Permute(torch.autograd.Function):
    """Rows of ``x`` in the order ``order``; backward applies the inverse permutation (one gather, where
    ``index_select``'s backward fills a zero tensor and scatters into it)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(order, inverse)
        return x.index_select(0, order)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        order, inverse = ctx.saved_tensors
        return _Permute.apply(grad, inverse, order), None, None


def _permute(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``x`` with its batch rows permuted by ``order`` (``inverse``: the inverse permutation)."""
    order, inverse = order.to(x.device), inverse.to(x.device)
    if x.requires_grad and torch.is_grad_enabled():
        return _Permute.apply(x, order, inverse)
    return x.index_select(0, order)


Order = tuple[torch.Tensor, torch.Tensor] | None  # (order, inverse) of a batch permutation; None: identity


def _split(value: Any, perm: Order, sizes: list[int], batch: int) -> list[Any]:
    """``value`` cut into one piece per group: every tensor with the batch axis (in tensors, lists, tuples)
    is put in group order by ``perm`` (None: it already is) and split into views of ``sizes`` rows, so
    backward concatenates the pieces' gradients once; a tensor whose first axis is not the batch (a
    broadcasting mask, a scalar) and anything else goes to every group whole."""
    groups = len(sizes)
    if isinstance(value, torch.Tensor):
        if not value.ndim or value.shape[0] != batch:
            return [value] * groups
        grouped = value if perm is None else _permute(value, *perm)
        return list(grouped.split(sizes))
    if isinstance(value, list | tuple) and value:
        pieces = [_split(v, perm, sizes, batch) for v in value]
        return [type(value)(p[g] for p in pieces) for g in range(groups)]
    return [value] * groups


def _merge(parts: list[Any], perm: Order, weights: list[float]) -> Any:
    """Inverse of :func:`_split` on the experts' outputs: batched tensors are concatenated and put back in
    batch order (``perm``'s inverse; None: the groups are already in batch order), scalars become the batch
    mean of the per-group values (weights: group sizes / batch)."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        if first.ndim == 0:
            return sum(w * p for w, p in zip(weights, parts, strict=True))
        merged = torch.cat(parts)
        return merged if perm is None else _permute(merged, perm[1], perm[0])
    if isinstance(first, list | tuple):
        return type(first)(_merge([p[i] for p in parts], perm, weights) for i in range(len(first)))
    if dataclasses.is_dataclass(first):
        return type(first)(**{f.name: _merge([getattr(p, f.name) for p in parts], perm, weights)
                              for f in dataclasses.fields(first)})
    raise TypeError(f"dispatch: cannot merge expert outputs of type {type(first).__name__}")


def dispatch(
    experts: Sequence[Callable[..., Any]], routes: torch.Tensor, *batched: Any, **shared: Any
) -> Any:
    """Run ``experts[j]`` once on the samples routed to ``j`` and put the results back in batch order.

    ``batched`` arguments hold tensors with the batch axis 0 (possibly nested in lists and tuples, e.g.
    Moero's history features); they are split by ``routes`` ``(B,)``, except tensors whose first axis is
    not the batch, which every expert gets whole. ``shared`` keyword arguments go to every call
    unchanged. An expert returns a tensor, a tuple/list or a dataclass of them: batched tensors are
    merged back in batch order, scalar tensors (losses) become the batch mean of the per-group values.
    When the whole batch goes to one expert (always at batch size 1) it runs on the inputs as they are,
    without copies. Otherwise each batched input is put in group order once (no copy when the routes are
    already sorted, e.g. ``0, 1`` at batch 2) and split into views, and the outputs are concatenated and
    put back in batch order once (not at all when sorted): one copy per input and per output at most; in
    backward one concatenation per input and the inverse permutation (a gather), instead of a zero-filled
    full-size gradient per group and their sum.
    """
    routes = routes.detach().cpu().long()
    if routes.ndim != 1 or not batched or routes.shape[0] != batched[0].shape[0]:
        raise ValueError(f"routes must be (B,) matching the batch axis of the inputs, got {tuple(routes.shape)}")
    if int(routes.min()) < 0 or int(routes.max()) >= len(experts):
        lo, hi = int(routes.min()), int(routes.max())
        raise ValueError(f"routes must lie in [0, {len(experts)}), got range [{lo}, {hi}]")
    counts = torch.bincount(routes, minlength=len(experts))
    active = torch.nonzero(counts).flatten().tolist()
    if len(active) == 1:
        return experts[active[0]](*batched, **shared)
    batch = routes.shape[0]
    sizes = counts[active].tolist()
    order = torch.argsort(routes, stable=True)  # samples grouped by expert, in batch order within a group
    perm: Order = None  # routes already sorted (e.g. 0, 0, 1, 1): views, no copies
    if not bool(torch.equal(order, torch.arange(batch))):
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(batch)
        perm = (order, inverse)
    pieces = [_split(v, perm, sizes, batch) for v in batched]
    outputs = [experts[j](*(p[g] for p in pieces), **shared) for g, j in enumerate(active)]
    return _merge(outputs, perm, [n / batch for n in sizes])
