"""Moero: a branch grid of cascades x K experts routed by BranchNav (reference section 3).

Every expert is a full PromptMR+ cascade (U-Net denoiser + data consistency, eq. (2)); the K experts
of cascade k share one VQ-PromptBlock (codebook and decoder, section 2) and one
:class:`~moero.routing.BranchNav`. Cascade 0 is routed by the sensitivity net's token histogram
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
4. the VQ EMA statistics of every quantiser (those of :func:`moero.vq.sync_vq_modules`).

Gradients are averaged over ranks like DDP does; an expert that no rank used gets ``grad = None``,
so AdamW neither moves it nor decays it. Shared parameters (sensitivity net, VQ decoders) stay in
DDP's reducer and overlap with backward as usual. Expert weights are broadcast from rank 0 at the
first distributed training forward (DDP only broadcasts what it manages).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from moero.models.promptmr import (
    CascadeOutput,
    ModelConfig,
    PromptMROutput,
    SensitivityNet,
    check_inputs,
    make_cascade,
    make_vq_block,
    run_cascade,
)
from moero.models.routing import BranchNav, distributed_world
from moero.models.vq import VectorQuantizer, set_auto_update
from moero.physics.sense import rss, sense_adjoint

__all__ = ["Moero", "MoeroOutput"]

@dataclass
class MoeroOutput(PromptMROutput):
    routes: torch.Tensor | None = None  # (num_cascades, B) expert index per cascade and sample


class Moero(nn.Module):
    """Grid of ``config.num_cascades`` x ``num_experts`` cascades routed by token histograms.

    Args:
        config: a PromptMR configuration; VQ-Prompt is switched on (routing needs histograms).
        num_experts: experts K per cascade.
        nav_kwargs: keyword arguments of every :class:`~moero.routing.BranchNav` (buffer_size, warmup,
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
            nn.ModuleList(make_cascade(config, k, self.vq_blocks[k]) for _ in range(num_experts))
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

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every navigator (their default warm-up skips epoch 0)."""
        for nav in self.navs:
            nav.set_epoch(epoch)

    # ------------------------------------------------------------------ forward
    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: int | torch.Tensor | None = None) -> MoeroOutput:
        """Same interface as :meth:`moero.models.PromptMR.forward`, plus the routes per cascade."""
        mask = check_inputs(masked_kspace, mask, self.config.frames)
        if self.training and not self._replicated:
            self._replicate_from_rank0()
        maps, route_hist, sens_vq = self.sens_net(masked_kspace, mask, num_low_frequencies)
        vq_loss = sens_vq.loss
        histograms = [route_hist]
        atb = sense_adjoint(masked_kspace, maps, mask)
        x, latent, history = atb, atb, []
        use_checkpoint = self.config.checkpoint and self.training
        all_routes = []
        for k, row in enumerate(self.experts):
            routes = self.navs[k](route_hist)  # outside any checkpoint: routing happens once per step
            all_routes.append(routes)
            out = self._run_routed(k, row, routes, (x, latent, atb, masked_kspace, mask, maps), history,
                                   use_checkpoint)
            x, latent = out.image, out.latent
            history = (history + [out.features])[-max(self.config.num_history, 1) :]
            vq_loss = vq_loss + out.vq_loss
            route_hist = out.histogram
            histograms.append(out.histogram)
        centre = x[:, self.config.frames // 2]
        image = rss(maps[:, 0] * centre.unsqueeze(1), dim=1)
        return MoeroOutput(image, vq_loss, histograms, maps, x, torch.stack(all_routes))

    def _run_routed(self, k: int, row: nn.ModuleList, routes: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                    history: list[list[torch.Tensor]], use_checkpoint: bool) -> CascadeOutput:
        """Each active expert runs once on its group of samples; results go back in batch order."""
        active = torch.unique(routes).tolist()
        if self.training and torch.is_grad_enabled():
            self._used[k, active] = True
        if len(active) == 1:
            return run_cascade(row[active[0]], *inputs, history, use_checkpoint=use_checkpoint)
        batch = routes.shape[0]
        device = inputs[0].device
        groups = [torch.nonzero(routes == j).flatten() for j in active]
        outs = []
        for j, idx in zip(active, groups, strict=True):
            dev_idx = idx.to(device)

            def pick(t: torch.Tensor, dev_idx: torch.Tensor = dev_idx) -> torch.Tensor:
                return t.index_select(0, dev_idx) if t.shape[0] == batch else t  # a mask may broadcast

            sub_history = [[pick(f) for f in feats] for feats in history]
            outs.append(run_cascade(row[j], *(pick(t) for t in inputs), sub_history, use_checkpoint=use_checkpoint))
        order = torch.cat(groups)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        inverse = inverse.to(device)

        def merge(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(parts).index_select(0, inverse)

        weights = [idx.numel() / batch for idx in groups]  # the batch mean of per-group mean losses
        return CascadeOutput(
            image=merge([o.image for o in outs]),
            latent=merge([o.latent for o in outs]),
            features=[merge([o.features[i] for o in outs]) for i in range(len(outs[0].features))],
            vq_loss=sum(w * o.vq_loss for w, o in zip(weights, outs, strict=True)),
            histogram=merge([o.histogram for o in outs]),
        )

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
        rank, world = distributed_world(process_group)
        if world == 1:
            return
        tensors = [p for row in self.expert_parameters() for ps in row for p in ps] if self.sparse_sync else []
        tensors += [b for nav in self.navs for b in nav.buffers()]
        flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        dist.broadcast(flat, src=dist.get_global_rank(process_group, 0) if process_group else 0, group=process_group)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()

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
            vq._prepare_for_sum(rank, world)
        vq_parts = [t for vq in vqs for t in vq._stats_tensors()]
        nav_sizes = [nav.sync_numel(world) for nav in self.navs]
        # phase 1: flags | navs | VQ (a few kilobytes)
        parts = [used.reshape(-1).to(device, torch.float32)]
        parts += [nav.sync_payload(rank, world) for nav in self.navs]
        parts += [t.reshape(-1).float() for t in vq_parts]
        flat = torch.cat(parts)
        dist.all_reduce(flat, group=process_group)
        used_any = (flat[: used.numel()].view_as(used).cpu() > 0).tolist()
        offset = used.numel()
        for nav, size in zip(self.navs, nav_sizes, strict=True):
            nav.apply_sync(flat[offset : offset + size], world)
            offset += size
        for t in vq_parts:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
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
            flat_grads = torch.cat(grads)
            dist.all_reduce(flat_grads, group=process_group)
            flat_grads.div_(world)  # the mean over ranks, as DDP averages
            offset = 0
            for ps, numel in active:  # the grads become views of the reduced buffer
                views = flat_grads[offset : offset + numel].split([p.numel() for p in ps])
                for p, v in zip(ps, views, strict=True):
                    p.grad = v.view_as(p)
                offset += numel
        for vq in vqs:
            vq.update()

    def _expert_grid(self) -> list[list[tuple[list[nn.Parameter], int]]]:
        """Cached ``[cascade][expert] -> (parameters, total numel)`` (the parameter set never changes)."""
        if self._grid_cache is None:
            self._grid_cache = [[(ps, sum(p.numel() for p in ps)) for ps in row] for row in self.expert_parameters()]
        return self._grid_cache

    def routing_state(self) -> dict[str, Any]:
        """Route counts, buffer fill and fitted flag per cascade (for logs and notebooks)."""
        return {
            "counts": [nav.counts.tolist() for nav in self.navs],
            "fill": [int(nav.fill) for nav in self.navs],
            "fitted": [bool(nav.fitted) for nav in self.navs],
        }

