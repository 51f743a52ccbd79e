"""Moero: a branch grid of cascades x K experts routed by BranchNav.

Every expert is a full PromptMR+ cascade (U-Net denoiser + data consistency, eq. (2)); the K experts
of cascade k share one VQ-PromptBlock (codebook and decoder) and one
:class:`~moero.models.routing.BranchNav`. Cascade 0 is routed by the sensitivity net's token histogram
(eq. (8)), cascade k by the histogram that cascade k-1 produced. Per sample exactly one expert per
cascade runs, so a Moero step costs what a VQ-PromptMR step costs, plus routing.

Sparse training without ``find_unused_parameters``
--------------------------------------------------
DDP with ``find_unused_parameters=True`` traverses the autograd graph every step to find the
experts that did not run (the paper's 0.77x / 0.68x speed). Here the expert parameters stay out of
DDP's reducer (:meth:`Moero.ddp_ignored_parameters`); :meth:`Moero.after_backward`, called once per
step after ``backward``, all-reduces in ONE flattened float32 tensor, in a fixed order:

1. a usage flag per expert (1 if it ran on this rank),
2. the gradients of all experts (zeros for experts this rank did not use),
3. every BranchNav's step counts and gathered buffer histograms,
4. the VQ EMA statistics of every quantiser (those of :func:`moero.models.vq.sync_vq_modules`).

Gradients are averaged over ranks like DDP does; an expert that no rank used gets ``grad = None``,
so AdamW neither moves it nor decays it. Shared parameters (sensitivity net, VQ decoders) stay in
DDP's reducer and overlap with backward as usual. Expert weights are broadcast from rank 0 at the
first distributed training forward (DDP only broadcasts what it manages).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moero.models.collective import all_reduce_flat, broadcast_flat, distributed_world
from moero.models.io import TrainingHooks
from moero.models.promptmr import (
    Cascade,
    CascadeOutput,
    ModelConfig,
    PromptMROutput,
    SensitivityNet,
    check_inputs,
    make_vq_block,
    run_cascade,
    unroll,
)
from moero.models.routing import BranchNav, dispatch
from moero.models.vq import VectorQuantizer, set_auto_update

__all__ = ["Moero", "MoeroOutput"]

@dataclass
class MoeroOutput(PromptMROutput):
    routes: torch.Tensor | None = None  # (num_cascades, B) expert index per cascade and sample


class Moero(nn.Module, TrainingHooks):
    """Grid of ``config.num_cascades`` x ``num_experts`` cascades routed by token histograms.

    Args:
        config: a PromptMR configuration; VQ-Prompt is switched on (routing needs histograms).
        num_experts: experts K per cascade.
        nav_kwargs: keyword arguments of every :class:`~moero.models.routing.BranchNav` (buffer_size, warmup,
            eval_mode, route_by, ...).
        sparse_sync: keep expert parameters out of DDP and sync them in :meth:`after_backward`
            (ours). ``False`` leaves them to DDP, to be run with ``find_unused_parameters=True``
            (the paper's way); routing and VQ statistics are synced here either way.

    Training: call :meth:`after_backward` once per step after ``backward`` (``moero.train.Trainer``
    does); it applies the VQ EMA updates (the quantisers' ``auto_update`` is off, because the shared
    block runs once per expert group within a step) and syncs everything across ranks.
    """

    handles_vq_sync = True  # moero.train.Trainer: after_backward syncs and applies the VQ statistics

    def __init__(self, config: ModelConfig, num_experts: int = 2, nav_kwargs: dict[str, Any] | None = None,
                 sparse_sync: bool = True) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        config = dataclasses.replace(config, vq_prompt=True, sens_vq=True)
        self.config, self.num_experts, self.sparse_sync = config, num_experts, sparse_sync
        self.sens_net = SensitivityNet(config, make_vq_block(config, sens=True))
        # registered before the experts, so the shared blocks are named vq_blocks.k (DDP sees them once)
        self.vq_blocks = nn.ModuleList(make_vq_block(config) for _ in range(config.num_cascades))
        self.experts = nn.ModuleList(
            nn.ModuleList(Cascade(config, k, self.vq_blocks[k]) for _ in range(num_experts))
            for k in range(config.num_cascades)
        )
        nav_kwargs = dict(nav_kwargs or {})
        self.navs = nn.ModuleList(
            BranchNav(num_experts, config.sens_num_codes if k == 0 else config.num_codes, **nav_kwargs)
            for k in range(config.num_cascades)
        )
        # the shared VQ block runs once per expert group within a step: its EMA must wait for after_backward
        set_auto_update(self, False)
        self._used = torch.zeros(config.num_cascades, num_experts, dtype=torch.bool)  # this rank, this step
        self._replicated = False
        self._grid_cache: list[list[tuple[list[nn.Parameter], int]]] | None = None
        self._vq_cache: list[VectorQuantizer] | None = None

    # ------------------------------------------------------------------ parameter groups
    def expert_parameters(self) -> list[list[list[nn.Parameter]]]:
        """Expert-specific parameters ``[cascade][expert] -> list`` (the shared VQ block excluded)."""
        shared = {id(p) for p in self.vq_blocks.parameters()}
        return [[[p for p in e.parameters() if id(p) not in shared and p.requires_grad] for e in row]
                for row in self.experts]

    def ddp_ignored_parameters(self) -> list[str]:
        """Names DDP must leave alone: expert parameters (synced by :meth:`after_backward`) and the
        routing buffers (synced by the navigators). Empty for ``sparse_sync=False`` but the routing
        buffers. Names follow DDP's own traversal (``named_modules`` + ``recurse=False``)."""
        expert_ids = {id(p) for row in self.expert_parameters() for ps in row for p in ps}
        names = []
        for mod_name, module in self.named_modules():
            if self.sparse_sync:
                names += [f"{mod_name}.{n}" for n, p in module.named_parameters(recurse=False) if id(p) in expert_ids]
            if isinstance(module, BranchNav):
                names += [f"{mod_name}.{n}" for n, _ in module.named_buffers(recurse=False)]
        return names

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each expert in backward (memory for time); the ReconModel hook of the trainer."""
        self.config = dataclasses.replace(self.config, checkpoint=bool(enabled))

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every navigator (their default warm-up skips epoch 0)."""
        for nav in self.navs:
            nav.set_epoch(epoch)

    # ------------------------------------------------------------------ forward
    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: int | torch.Tensor | None = None) -> MoeroOutput:
        """Same interface as ``PromptMR.forward``, plus the routes per cascade."""
        mask = check_inputs(masked_kspace, mask, self.config.frames)
        if self.training and not self._replicated:
            self._replicate_from_rank0()
        use_checkpoint = self.config.checkpoint and self.training
        all_routes: list[torch.Tensor] = []

        def step(k: int, inputs: tuple[torch.Tensor, ...], history: list[list[torch.Tensor]],
                 histogram: torch.Tensor | None) -> CascadeOutput:
            routes = self.navs[k](histogram)  # outside any checkpoint: routing happens once per step
            all_routes.append(routes)
            if self.training and torch.is_grad_enabled():
                self._used[k, torch.unique(routes.cpu())] = True
            experts = [functools.partial(run_cascade, e, use_checkpoint=use_checkpoint) for e in self.experts[k]]
            return dispatch(experts, routes, *inputs, history)

        out = unroll(self.config, self.sens_net, masked_kspace, mask, num_low_frequencies, step)
        return MoeroOutput(out.image, out.vq_loss, out.histograms, out.maps, out.frames, torch.stack(all_routes))

    # ------------------------------------------------------------------ synchronisation
    def _vq_modules(self) -> list[VectorQuantizer]:
        """The quantisers in ``modules()`` order (fixed), cached: a module walk per step is not free."""
        if self._vq_cache is None:
            self._vq_cache = [m for m in self.modules() if isinstance(m, VectorQuantizer)]
        return self._vq_cache

    @torch.no_grad()
    def _replicate_from_rank0(self, process_group: Any = None) -> None:
        """Broadcast what DDP does not manage (expert weights, routing state) from rank 0, once."""
        self._replicated = True
        tensors = [p for row in self.expert_parameters() for ps in row for p in ps] if self.sparse_sync else []
        broadcast_flat(tensors + [b for nav in self.navs for b in nav.buffers()], process_group)

    @torch.no_grad()
    def after_backward(self, step: int | None = None, process_group: Any = None) -> None:
        """The once-per-step synchronisation pass, in a fixed order on every rank.

        1. ONE small all-reduce of the usage flags, routing statistics and VQ EMA statistics;
        2. ONE all-reduce of the gradients of the experts that at least one rank ran (zeros from a
           rank that did not run it), in grid order; experts no rank ran do not travel at all and
           keep ``grad=None``, so AdamW neither moves nor decays them;
        3. the VQ EMA update.

        Call on every rank after ``backward`` and before ``optimizer.step()``; ``step`` is unused and
        accepted for the trainer's hook signature."""
        del step
        rank, world = distributed_world(process_group)
        used = self._used.clone()
        self._used.zero_()
        experts = self._expert_grid()
        vqs = self._vq_modules()
        if world == 1:  # nothing to exchange: the navigators synced in forward; only the EMA and the rule
            self._freeze_fitted_codebooks()
            for row, row_used in zip(experts, used.tolist(), strict=True):
                for (ps, _), ran in zip(row, row_used, strict=True):
                    if not ran and (ps[0].grad is not None or ps[-1].grad is not None):
                        for p in ps:
                            p.grad = None  # e.g. after zero_grad(set_to_none=False): keep AdamW off it
            for vq in vqs:
                vq.update()
            return
        device = self.vq_blocks[0].quantizer.codebook.device
        for vq in vqs:
            vq.prepare_for_sum(rank, world)
        # phase 1: flags | navs | VQ (a few kilobytes), summed in place
        used_sum = used.reshape(-1).to(device, torch.float32)
        payloads = [nav.sync_payload(rank, world) for nav in self.navs]
        all_reduce_flat([used_sum, *payloads, *(t for vq in vqs for t in vq.stats_tensors())], process_group)
        used_any = (used_sum.view_as(used).cpu() > 0).tolist()
        for nav, payload in zip(self.navs, payloads, strict=True):
            nav.apply_sync(payload, world)
        self._freeze_fitted_codebooks()  # the fitted flags are synced: every rank freezes at the same step
        # phase 2: gradients of the experts some rank ran, in grid order (every rank knows which now)
        active: list[tuple[list[nn.Parameter], int]] = []
        grads: list[torch.Tensor] = []
        for row, row_used, row_any in zip(experts, used.tolist(), used_any, strict=True):
            for (ps, numel), ran, ran_any in zip(row, row_used, row_any, strict=True):
                if not ran_any:
                    for p in ps:
                        p.grad = None  # no rank ran it: AdamW neither moves nor decays it
                elif self.sparse_sync:  # else DDP (find_unused_parameters) reduces them
                    active.append((ps, numel))
                    if ran:
                        grads += [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in ps]
                    else:
                        grads.append(torch.zeros(numel, device=device))
        if active:
            flat_grads = all_reduce_flat(grads, process_group, copy_back=False)
            flat_grads.div_(world)  # the mean over ranks, as DDP averages
            offset = 0
            for ps, numel in active:  # the grads become views of the reduced buffer
                views = flat_grads[offset : offset + numel].split([p.numel() for p in ps])
                for p, v in zip(ps, views, strict=True):
                    p.grad = v.view_as(p)
                offset += numel
        for vq in vqs:
            vq.update()

    def routing_quantizer(self, k: int) -> VectorQuantizer:
        """The quantiser whose tokens navigator ``k`` reads: the coil-map net's for cascade 0, else cascade k-1's."""
        return self.sens_net.unet.vq.quantizer if k == 0 else self.vq_blocks[k - 1].quantizer

    def _freeze_fitted_codebooks(self) -> None:
        """Freeze the codebook read by every navigator whose ``freeze_codebook`` rule is due (before the step's
        EMA update, so no update moves it after the fit / the warm-up)."""
        for k, nav in enumerate(self.navs):
            if nav.freeze_codebook != "never" and nav.freeze_due:
                self.routing_quantizer(k).frozen.fill_(True)  # idempotent; restored by checkpoints

    def _expert_grid(self) -> list[list[tuple[list[nn.Parameter], int]]]:
        """Cached ``[cascade][expert] -> (parameters, total numel)`` (the parameter set never changes)."""
        if self._grid_cache is None:
            self._grid_cache = [[(ps, sum(p.numel() for p in ps)) for ps in row] for row in self.expert_parameters()]
        return self._grid_cache

    @torch.no_grad()
    def calibrate_routing(self, batches: Callable[[int], Iterable[tuple[tuple[Any, ...], dict[str, Any]]]],
                          process_group: Any = None) -> None:
        """Refit every navigator on the histograms the network has now (``BranchNav.calibrate``; our departure).

        ``batches(n)`` yields the model inputs ``(args, kwargs)`` of n fixed training examples (the trainer's
        ``calibration_batches``). Cascade k routes on histograms that cascade k-1's routes shape, so the
        navigators are calibrated one after another, each on a fresh evaluation pass (routes of the cascades
        before it already calibrated). Off when the navigators' ``calibration`` is 0 or any of them has no
        centres yet. Evaluation mode, no gradients, no random numbers drawn; with several ranks every rank
        computes the same and rank 0's result is broadcast, so the navigators stay identical."""
        n = int(self.navs[0].calibration)
        if n == 0 or not all(bool(nav.fitted) for nav in self.navs):
            return
        was_training = self.training
        self.eval()
        try:
            for k, nav in enumerate(self.navs):
                hist = [self(*args, **kwargs).histograms[k] for args, kwargs in batches(n)]
                nav.calibrate(torch.cat(hist)[:n])
        finally:
            self.train(was_training)
        broadcast_flat([b for nav in self.navs for b in nav.buffers()], process_group)

    def routing_state(self) -> dict[str, Any]:
        """Route counts, buffer fill and fitted flag per cascade (for logs and notebooks)."""
        return {
            "counts": [nav.counts.tolist() for nav in self.navs],
            "fill": [int(nav.fill) for nav in self.navs],
            "fitted": [bool(nav.fitted) for nav in self.navs],
            "fit_perplexity": [float(nav.fit_perplexity) for nav in self.navs],
            "fit_similarity": [float(nav.fit_similarity) for nav in self.navs],
            "fitted_at": [int(nav.fitted_at) for nav in self.navs],
            "refits": [int(nav.refits) for nav in self.navs],
            "calibrations": [int(nav.calibrations) for nav in self.navs],
            "codebook_frozen": [bool(self.routing_quantizer(k).frozen) for k in range(len(self.navs))],
        }

