"""Vector quantisation for VQ-Prompt and the token histogram of eq. (8).

:class:`VectorQuantizer` maps each feature vector to its nearest codebook row, the paper's eq. (3)
``k*(z) = argmin_k ||z - e_k||^2``, ``z_q = e_{k*}`` (squared Euclidean distance, or cosine similarity
as an option), passes gradients straight through (``z_q = z + sg(e - z)``) and returns the commitment
loss ``beta * mean((sg(e) - z)^2)`` (beta = 1). Of the objective of eq. (4),
``||sg(z) - e||^2 + beta ||z - sg(e)||^2`` (+ an optional alignment term), only the commitment term is
a loss here: the codebook term is replaced by exponential moving averages (EMA) of the assigned inputs
with Laplace-smoothed cluster sizes, so the codebook is a buffer and no codebook loss term exists.

When the codebook changes
-------------------------
A training forward pass only *accumulates* per-step statistics (counts and sums of the inputs
assigned to each code) in buffers, under ``torch.no_grad``. The EMA is applied by
:meth:`VectorQuantizer.sync_and_update` (or :func:`sync_vq_modules` for a whole model), which a
trainer calls once per step *after* ``backward``: under DDP it all-reduces the statistics of every
quantiser of the model in ONE flattened tensor, in the fixed order of ``model.modules()``, so all
ranks apply the same update and no collective runs inside another module's forward (no hangs).

For standalone use (tests, notebooks, single process) ``auto_update=True`` (the default) applies
the pending statistics at the start of the next training forward instead, and
:meth:`~VectorQuantizer.update` applies them at once. Deferring to the next call keeps the codebook
fixed between a forward pass and its gradient-checkpoint recomputation. A trainer that calls
:func:`sync_vq_modules` switches this off with :func:`set_auto_update` (``False``).

Wrap the model in DDP with ``broadcast_buffers=False``: the quantiser buffers are kept equal by
:func:`sync_vq_modules`, and a per-forward buffer broadcast would overwrite the other ranks'
pending statistics.

Setting the buffer ``VectorQuantizer.frozen`` stops the codebook (EMA and dead-code restarts; the
usage statistics still run): Moero does so for the codebook a fitted BranchNav reads when asked
(``freeze_codebook``), so the navigator's centres stay valid.

Recomputation by gradient checkpointing must not count a batch twice: wrap it in
:func:`frozen_statistics` (``moero.models`` does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from moero.models.collective import all_reduce_flat, distributed_world

__all__ = [
    "VQOutput",
    "VectorQuantizer",
    "token_histogram",
    "code_perplexity",
    "image_patches",
    "patches_to_image",
    "train_codebook",
    "sync_vq_modules",
    "set_auto_update",
    "frozen_statistics",
]

_FROZEN_DEPTH = 0  # > 0 while a checkpoint recomputation runs: statistics must not accumulate twice


@contextlib.contextmanager
def frozen_statistics() -> Iterator[None]:
    """Within this context no :class:`VectorQuantizer` accumulates statistics or initialises itself."""
    global _FROZEN_DEPTH
    _FROZEN_DEPTH += 1
    try:
        yield
    finally:
        _FROZEN_DEPTH -= 1


@dataclass
class VQOutput:
    """``quantized`` has the input's shape (straight-through); ``indices`` drop the channel axis."""

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor


class VectorQuantizer(nn.Module):
    """EMA vector quantiser over the channel axis of ``(B, D, *spatial)`` features.

    Args:
        num_codes: codebook size ``K``.
        dim: code width ``D`` (the channel count of the features).
        decay: EMA decay of cluster sizes and sums.
        eps: Laplace smoothing of cluster sizes.
        commitment: weight of the commitment loss.
        distance: ``"euclidean"`` (squared Euclidean) or ``"cosine"`` (codes and inputs L2-normalised).
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that initialisation.
        restart_after: re-seed codes unused for this many update steps from recent inputs (None: never).
        restart_pool: number of recent input vectors kept for re-seeding.
        dead_after: update steps without assignment after which a code counts as dead in
            :attr:`dead_fraction` when restart is off (with restart, ``restart_after`` is used).
        auto_update: apply the accumulated statistics at the next training forward (see module doc).
        seed: seed of the codebook initialisation and of the choice of re-seeding vectors.
        init_cluster_size: starting EMA cluster size of every code. ``1`` (ours): each code counts as
            having held its initial value once. ``0`` is the authors' quantiser (rosinality's
            ``Quantize`` in ``5o1/Moero: models/modules/vqvae.py``): after the first update an unused
            code keeps a cluster size of ~0, the Laplace smoothing divides its sum by
            ``~eps n / (n + K eps)`` and it grows to ~1e5 times its scale, unreachable from then on
            (collapse by construction); offered for fidelity, not the default.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment: float = 1.0,
        distance: str = "euclidean",
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        restart_after: int | None = None,
        restart_pool: int = 64,
        dead_after: int = 100,
        auto_update: bool = True,
        seed: int = 0,
        init_cluster_size: float = 1.0,
    ) -> None:
        super().__init__()
        if init_cluster_size < 0:
            raise ValueError(f"init_cluster_size must be >= 0, got {init_cluster_size}")
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        if restart_after is not None and restart_after < 1:
            raise ValueError(f"restart_after must be >= 1 or None, got {restart_after}")
        if restart_pool < 1:
            raise ValueError(f"restart_pool must be >= 1, got {restart_pool}")
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.eps, self.commitment = decay, eps, commitment
        self.distance, self.kmeans_iters = distance, kmeans_iters
        self.restart_after, self.auto_update, self.seed = restart_after, auto_update, seed
        self.dead_after = restart_after if restart_after is not None else dead_after
        gen = torch.Generator().manual_seed(seed)
        codebook = torch.randn(num_codes, dim, generator=gen)
        if distance == "cosine":
            codebook = F.normalize(codebook, dim=1)
        self.register_buffer("codebook", codebook)
        self.init_cluster_size = float(init_cluster_size)
        self.register_buffer("cluster_size", torch.full((num_codes,), self.init_cluster_size))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # applied update steps
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("usage", torch.zeros(num_codes))  # EMA of assignment shares (bias-free: normalised)
        self.register_buffer("recent_inputs", torch.zeros(restart_pool, dim))
        self.register_buffer("recent_filled", torch.zeros((), dtype=torch.long))
        # statistics of the current step, accumulated by forward, consumed by update()/sync_and_update()
        self.register_buffer("step_counts", torch.zeros(num_codes))
        self.register_buffer("step_sums", torch.zeros(num_codes, dim))
        self.register_buffer("init_pending", torch.tensor(False))
        self.register_buffer("frozen", torch.tensor(False))  # True: update() no longer moves the codebook

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        state_dict.setdefault(prefix + "frozen", torch.tensor(False))  # checkpoints from before the flag
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ statistics
    @property
    def perplexity(self) -> float:
        """``exp(H(p))`` of the EMA code-usage distribution: the effective number of codes in use (1 before use)."""
        p = self.usage / self.usage.sum().clamp_min(1e-12)
        return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))

    @property
    def dead_fraction(self) -> float:
        """Share of codes not assigned for ``dead_after`` update steps (``restart_after`` when restarting)."""
        return float((self.steps_unused >= self.dead_after).float().mean())

    @property
    def has_pending(self) -> bool:
        return bool(self.step_counts.sum() > 0) or bool(self.init_pending)

    # ------------------------------------------------------------------ quantisation
    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim < 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must be (B, {self.dim}, ...) with the code width on axis 1, got {tuple(z.shape)}")
        return z.movedim(1, -1).reshape(-1, self.dim)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` ``(N, D)``: eq. (3), ``argmin_k ||z - e_k||^2``
        (``argmax_k cos(z, e_k)`` with ``distance="cosine"``)."""
        codebook = self.codebook.to(flat.dtype)
        if self.distance == "cosine":
            return (F.normalize(flat, dim=1) @ codebook.t()).argmax(dim=1)
        # ||z||^2 is the same for every code: argmin of ||e||^2 - 2 z.e, one fused addmm, no (N, K, D) tensor
        dist_part = torch.addmm((codebook * codebook).sum(1), flat, codebook.t(), beta=1.0, alpha=-2.0)
        return dist_part.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> VQOutput:
        """Quantise ``z`` ``(B, D, *spatial)``; returns quantised features, indices ``(B, *spatial)`` and loss."""
        flat_in = self._flatten(z)
        collect = self.training and _FROZEN_DEPTH == 0
        if collect and self.auto_update and self.has_pending:
            self.update()
        if collect and not bool(self.initialized):
            self._kmeans_init(flat_in.detach())
        flat = F.normalize(flat_in, dim=1) if self.distance == "cosine" else flat_in
        with torch.no_grad():
            indices = self.nearest(flat.detach())
        codes = F.embedding(indices, self.codebook).to(flat.dtype)
        loss = self.commitment * F.mse_loss(flat, codes.detach())  # eq. (4)'s commitment term; EMA does the rest
        quantized = flat + (codes - flat).detach()  # straight-through: d quantized / d z = identity
        if collect:
            self._accumulate(flat.detach(), indices)
        spatial = z.shape[2:]
        quantized = quantized.view(z.shape[0], *spatial, self.dim).movedim(-1, 1)
        return VQOutput(quantized, indices.view(z.shape[0], *spatial), loss)

    @torch.no_grad()
    def _accumulate(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        flat = flat.float()
        self.step_counts += torch.bincount(indices, minlength=self.num_codes).to(self.step_counts.dtype)
        self.step_sums.index_add_(0, indices, flat)
        if self.restart_after is None:
            return
        # keep evenly spaced recent inputs (no RNG in forward) for dead-code re-seeding
        pool = self.recent_inputs.shape[0]
        take = min(pool, flat.shape[0])
        rows = torch.linspace(0, flat.shape[0] - 1, take, device=flat.device).long()
        self.recent_inputs.copy_(torch.cat([flat[rows], self.recent_inputs])[:pool])
        self.recent_filled.copy_((self.recent_filled + take).clamp_max(pool))

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Lloyd's k-means on one batch; empty clusters keep their random start (seeded)."""
        flat = flat.float()
        if self.distance == "cosine":
            flat = F.normalize(flat, dim=1)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        pick = torch.randint(0, flat.shape[0], (self.num_codes,), generator=gen).to(flat.device)
        centres = flat[pick].clone()
        for _ in range(self.kmeans_iters):
            d = torch.addmm((centres * centres).sum(1), flat, centres.t(), beta=1.0, alpha=-2.0)
            assign = d.argmin(1)
            counts = torch.bincount(assign, minlength=self.num_codes).float()
            sums = torch.zeros_like(centres).index_add_(0, assign, flat)
            used = counts > 0
            centres[used] = sums[used] / counts[used, None]
            if self.distance == "cosine":
                centres = F.normalize(centres, dim=1)
        self._set_codebook(centres)
        self.initialized.fill_(True)
        self.init_pending.fill_(True)

    def _set_codebook(self, codebook: torch.Tensor) -> None:
        self.codebook.copy_(codebook)
        self.embed_sum.copy_(codebook)
        self.cluster_size.fill_(1.0)

    # ------------------------------------------------------------------ EMA update
    def stats_tensors(self) -> list[torch.Tensor]:
        """The tensors summed across ranks, in a fixed order (see :func:`sync_vq_modules`)."""
        parts = [self.step_counts, self.step_sums]
        if self.restart_after is not None:
            parts += [self.recent_inputs, self.recent_filled]  # only rank 0's pool survives (others send zeros)
        if bool(self.init_pending):
            parts.append(self.codebook)  # a fresh k-means init, averaged over ranks
        return parts

    def prepare_for_sum(self, rank: int, world: int) -> None:
        """Zero what only rank 0 contributes, so that the sum equals rank 0's value on every rank."""
        if rank != 0 and self.restart_after is not None:
            self.recent_inputs.zero_()
            self.recent_filled.zero_()
        if world > 1 and bool(self.init_pending):
            # k-means ran on each rank's own batch: average the results so all ranks agree
            self.codebook.div_(world)

    @torch.no_grad()
    def update(self) -> None:
        """Apply the accumulated statistics: EMA of cluster sizes and sums, then dead-code restart."""
        counts, sums = self.step_counts.clone(), self.step_sums.clone()
        self.step_counts.zero_()
        self.step_sums.zero_()
        if bool(self.init_pending):
            self._set_codebook(self.codebook.clone())
            self.init_pending.fill_(False)
        if counts.sum() <= 0:
            return
        d = self.decay
        if bool(self.frozen):  # codebook fixed: only the usage statistics move
            self.usage.mul_(d).add_(counts / counts.sum(), alpha=1 - d)
            self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
            self.steps += 1
            return
        self.cluster_size.mul_(d).add_(counts, alpha=1 - d)
        self.embed_sum.mul_(d).add_(sums, alpha=1 - d)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace smoothing
        codebook = self.embed_sum / smoothed.unsqueeze(1)
        if self.distance == "cosine":
            codebook = F.normalize(codebook, dim=1)
        self.codebook.copy_(codebook)
        self.usage.mul_(d).add_(counts / counts.sum(), alpha=1 - d)
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        self.steps += 1
        if self.restart_after is not None:
            self._restart_dead()

    @torch.no_grad()
    def _restart_dead(self) -> None:
        dead = torch.nonzero(self.steps_unused >= self.restart_after).flatten()
        filled = int(self.recent_filled)
        if dead.numel() == 0 or filled == 0:
            return
        # same generator state on every rank (seeded by the synced step count): identical re-seeding
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + int(self.steps))
        pick = torch.randint(0, filled, (dead.numel(),), generator=gen).to(dead.device)
        fresh = self.recent_inputs[pick]
        fresh = fresh + 1e-3 * fresh.std() * torch.randn(fresh.shape, generator=gen).to(fresh.device)
        if self.distance == "cosine":
            fresh = F.normalize(fresh, dim=1)
        self.codebook[dead] = fresh
        self.embed_sum[dead] = fresh
        self.cluster_size[dead] = 1.0
        self.steps_unused[dead] = 0

    @torch.no_grad()
    def sync_and_update(self, process_group: dist.ProcessGroup | None = None) -> None:
        """Sum this quantiser's step statistics across ranks (if distributed), then :meth:`update`."""
        _sync([self], process_group)


def _sync(quantizers: list[VectorQuantizer], process_group: dist.ProcessGroup | None) -> None:
    rank, world = distributed_world(process_group)
    if world > 1:
        for vq in quantizers:
            vq.prepare_for_sum(rank, world)
        all_reduce_flat([t for vq in quantizers for t in vq.stats_tensors()], process_group)
    for vq in quantizers:
        vq.update()


@torch.no_grad()
def sync_vq_modules(model: nn.Module, process_group: dist.ProcessGroup | None = None) -> int:
    """All-reduce the step statistics of every :class:`VectorQuantizer` in ``model`` and apply their EMA.

    Call once per training step after ``backward`` (on every rank). The quantisers are visited in
    the fixed order of ``model.modules()`` (a shared module counts once) and their statistics travel
    in ONE flattened tensor, so a single collective serves the whole model. Returns the number of
    quantisers updated.
    """
    quantizers = [m for m in model.modules() if isinstance(m, VectorQuantizer)]
    if quantizers:  # every rank sees the same model, so all skip the collective together
        _sync(quantizers, process_group)
    return len(quantizers)


def set_auto_update(model: nn.Module, enabled: bool) -> None:
    """Switch ``auto_update`` of every quantiser in ``model`` (a trainer that syncs sets ``False``)."""
    for m in model.modules():
        if isinstance(m, VectorQuantizer):
            m.auto_update = enabled


@torch.no_grad()
def token_histogram(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Token-frequency vector of eq. (8): ``h[k] = #{p : k*(p) = k} / #pixels`` per sample.

    ``indices``: integer ``(B, ...)``; every axis after the batch axis is pooled. Because each frame
    (or coil) has the same number of pixels ``H' W'``, pooling e.g. ``(B, F, H', W')`` equals the
    average over frames of the per-frame histograms of eq. (8); for the coil-map network pass
    ``(B, C, H', W')`` to average over coils. Returns float ``(B, num_codes)``, each row summing to 1.
    """
    if indices.dtype.is_floating_point or indices.is_complex() or indices.dtype == torch.bool:
        raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
    if indices.ndim < 2:
        raise ValueError(f"indices must be (B, ...) with at least one axis after the batch, got {tuple(indices.shape)}")
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    batch = indices.shape[0]
    flat = indices.reshape(batch, -1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_codes):
        raise ValueError(f"indices must lie in [0, num_codes={num_codes}), got range [{int(flat.min())}, "
                         f"{int(flat.max())}]")
    offsets = torch.arange(batch, device=flat.device).unsqueeze(1) * num_codes
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=batch * num_codes).view(batch, num_codes)
    return counts.float() / max(flat.shape[1], 1)


def code_perplexity(histogram: torch.Tensor) -> torch.Tensor:
    """``exp(entropy)`` of each row of a histogram ``(..., K)``: effective number of codes used."""
    p = histogram / histogram.sum(-1, keepdim=True).clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(-1))



def image_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Real images ``(B, H, W)`` -> non-overlapping patches as a feature map ``(B, patch^2, H/patch, W/patch)``."""
    if images.ndim != 3 or images.is_complex():
        raise ValueError(f"images must be real (B, H, W), got {images.dtype} {tuple(images.shape)}")
    b, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch={patch} must divide the image size {(h, w)}")
    cols = F.unfold(images.unsqueeze(1), patch, stride=patch)  # (B, p*p, L)
    return cols.view(b, patch * patch, h // patch, w // patch)


def patches_to_image(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of :func:`image_patches`: ``(B, patch^2, H', W')`` -> ``(B, H' patch, W' patch)``."""
    if patches.ndim != 4 or patches.shape[1] != patch * patch:
        raise ValueError(f"patches must be (B, {patch * patch}, H', W'), got {tuple(patches.shape)}")
    b, _, hp, wp = patches.shape
    out = F.fold(patches.reshape(b, patch * patch, hp * wp), (hp * patch, wp * patch), patch, stride=patch)
    return out[:, 0]


def train_codebook(
    vq: VectorQuantizer, features: torch.Tensor, steps: int, batch_size: int, seed: int = 0
) -> list[dict[str, float]]:
    """Fit ``vq``'s EMA codebook on random minibatches of ``features`` ``(N, D, ...)``; one update per step.

    Returns per-step statistics: commitment ``loss``, ``batch_perplexity`` (of the batch's code
    histogram), ``perplexity`` (EMA usage), ``used_codes`` (distinct codes in the batch) and
    ``dead_fraction``. Deterministic in ``seed``.
    """
    if features.shape[0] < 1 or steps < 1 or batch_size < 1:
        raise ValueError("features must be non-empty and steps, batch_size positive")
    gen = torch.Generator().manual_seed(seed)
    vq.train()
    history = []
    for step in range(steps):
        pick = torch.randint(0, features.shape[0], (batch_size,), generator=gen)
        out = vq(features[pick])
        vq.update()
        hist = token_histogram(out.indices.reshape(1, -1), vq.num_codes)
        history.append({
            "step": float(step),
            "loss": float(out.loss.detach()),
            "batch_perplexity": float(code_perplexity(hist)[0]),
            "perplexity": vq.perplexity,
            "used_codes": float(out.indices.unique().numel()),
            "dead_fraction": vq.dead_fraction,
        })
    return history
