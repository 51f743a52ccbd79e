"""Training efficiency: iterations/s, peak memory and time per stage of a training step.

The paper reports (Tab. 2, 8x A100, batch 1) that Moero trains at 0.77x (2 experts) and 0.68x
(4 experts) the baseline's iterations/s, because DDP with ``find_unused_parameters=True`` walks the
autograd graph every step to find the experts that did not run. Our Moero keeps expert parameters
out of DDP's reducer and synchronises them in one all-reduce per step (``Moero.after_backward``).
This module measures both, on the same inputs, as ratios against a baseline timed in the same run:

* :func:`throughput`: single process, seconds per training step and peak memory per model;
* :func:`ddp_throughput`: ``world`` processes (gloo on CPU, NCCL on GPU), ours vs ``find_unused``;
* :func:`stage_times`: the time of each stage of one step (data, augmentation, forward, backward,
  synchronisation, optimiser) on real examples of a ``SliceDataset``.

Model names: the registry's (``promptmr``, ``vq-prompt``, ``moero-CxK``, ours) and ``moero-CxK:find_unused``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.train.distributed import free_port

__all__ = [
    "interleaved_times",
    "build_model",
    "phantom_batch",
    "training_step",
    "peak_memory",
    "bootstrap_median",
    "Ratio",
    "paired_ratio",
    "machine_note",
    "quiet_native_output",
    "throughput",
    "ddp_throughput",
    "stage_times",
    "batch_scan",
    "force_routes",
    "dispatch_batches",
    "STAGES",
]

STAGES = ("data", "augmentation", "forward", "backward", "synchronisation", "optimiser")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


FIND_UNUSED = ":find_unused"  # suffix of a Moero name: experts left to DDP's find_unused_parameters (the paper's way)


def split_variant(name: str) -> tuple[str, bool]:
    """``(registry name, find_unused)`` of a measured model name such as ``moero-2x2:find_unused``."""
    return name.removesuffix(FIND_UNUSED), name.endswith(FIND_UNUSED)


def build_model(name: str, preset: str = "tiny", cascades: int | None = None, device: str | torch.device = "cpu",
                nav_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A registry model (``promptmr``, ``vq-prompt``, ``moero-CxK``, or ``moero-CxK:find_unused``) of ``preset``
    (``cascades`` sets the cascade count of the non-Moero models), without gradient checkpointing, in training
    mode. Moero's navigators default to a warm-up of 0 and a tiny buffer, so that steady-state routing (fitted
    centres) is reached within a few warm-up steps."""
    from moero.models.registry import build_model as build_registry_model
    from moero.models.registry import parse_model_name
    from moero.models.vq import set_auto_update

    base, find_unused = split_variant(name)
    spec = parse_model_name(base)
    torch.manual_seed(0)
    overrides: dict[str, Any] = {"checkpoint": False}
    if cascades and spec.family != "moero":
        overrides["num_cascades"] = int(cascades)
    if spec.family == "moero":
        kwargs = {"warmup": 0, "buffer_size": max(4, spec.num_experts), "restarts": 2, **(nav_kwargs or {})}
        model = build_registry_model(base, preset, nav_kwargs=kwargs, sparse_sync=not find_unused, **overrides)
    else:
        if find_unused:
            raise ValueError(f"model {name!r}: {FIND_UNUSED} applies to Moero models only")
        model = build_registry_model(base, preset, **overrides)
        set_auto_update(model, False)
    return model.to(device).train()


def phantom_batch(shape: Sequence[int], frames: int = 3, coils: int = 4, seed: int = 0,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Shepp-Logan scan ``(1, F, C, H, W)`` undersampled x4 with a 12-line ACS block and its mask ``(1, F, H, W)``."""
    from moero.physics.fft import centred_slice, fft2c
    from moero.physics.phantom import coil_maps, shepp_logan

    h, w = int(shape[0]), int(shape[1])
    img = shepp_logan(h, w).roll((seed, -seed), dims=(0, 1))
    x = torch.stack([img * (1 + 0.1 * f) for f in range(frames)])[None]
    mask = torch.zeros(1, frames, h, w, dtype=torch.bool)
    mask[..., seed % 4 :: 4] = True
    mask[..., centred_slice(w, 12)] = True
    kspace = fft2c(coil_maps(coils, h, w, seed=1) * x[:, :, None]) * mask[:, :, None]
    return kspace.to(device), mask.to(device)


def _image_and_vq(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, torch.Tensor):
        return out, None
    return out.image, getattr(out, "vq_loss", None)


def _synchronise(core: nn.Module, step: int) -> None:
    """The once-per-step synchronisation: Moero's own pass, else the VQ statistics (as the trainer does)."""
    if hasattr(core, "after_backward"):
        core.after_backward(step)
    else:
        from moero.models.vq import sync_vq_modules

        sync_vq_modules(core)


def training_step(model: nn.Module, core: nn.Module, kspace: torch.Tensor, mask: torch.Tensor,
                  lr: float = 1e-4) -> Callable[[], None]:
    """A closure running one full training step (forward, loss, backward, synchronisation, AdamW) of ``model``
    (``core`` is the unwrapped module when ``model`` is a DDP wrapper)."""
    opt = torch.optim.AdamW([p for p in core.parameters() if p.requires_grad], lr=lr, weight_decay=1e-2)
    counter = [0]

    def step() -> None:
        image, vq_loss = _image_and_vq(model(kspace, mask))
        loss = image.pow(2).mean() + (vq_loss if vq_loss is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _synchronise(core, counter[0])
        opt.step()
        counter[0] += 1

    return step


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Hold back what torch's native code writes to the process's stderr (the profiler's ``USDT ...``
    start/stop lines, gloo and allocator notices of spawned DDP workers) and Python warnings, so a
    measurement prints nothing; if the block raises, the held-back text is written out after all."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def _allocation_events(prof: Any, device: torch.device) -> list[tuple[int, int]]:
    """``(time ns, bytes)`` of every allocation (> 0) and free (< 0) the profiler saw on ``device``'s
    allocator, each one on its own (the op events of ``prof.events()`` nest and sum their children's)."""
    from torch._C._profiler import _EventType

    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            fields = node.extra_fields
            if fields.device.type == device.type:
                events.append((int(node.start_time_ns), int(fields.alloc_size)))
        stack.extend(node.children)
    return sorted(events)


def peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated while ``fn`` runs, above what was allocated when it started, by the allocator:
    on CUDA ``torch.cuda.max_memory_allocated`` less the bytes allocated at the start; on CPU the
    largest running sum of the CPU allocator's individual allocations and frees, in time order, as the
    profiler records them (torch tensors only). On CPU the profiler does not see frees of tensors
    allocated before ``fn`` (e.g. last step's gradients released by ``zero_grad``): the figure is the
    peak of what ``fn`` itself allocates, never lowered by them, where CUDA's would be."""
    device = torch.device(device)
    if device.type == "cuda":
        _sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return max(0, int(torch.cuda.max_memory_allocated(device)) - int(start))
    from torch.profiler import ProfilerActivity, profile

    with quiet_native_output(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for _, size in _allocation_events(prof, device):
        live += size
        peak = max(peak, live)
    return int(peak)


def bootstrap_median(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(median, low, high)``: the median of ``values`` and its percentile-bootstrap interval."""
    vals = torch.as_tensor([float(v) for v in values], dtype=torch.float64)
    if vals.numel() == 0:
        raise ValueError("bootstrap_median needs at least one value")
    med = float(vals.quantile(0.5))
    if vals.numel() == 1:
        return med, med, med
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vals.numel(), (resamples, vals.numel()), generator=gen)
    meds = vals[idx].quantile(0.5, dim=1)
    alpha = (1.0 - confidence) / 2
    return med, float(meds.quantile(alpha)), float(meds.quantile(1.0 - alpha))


@dataclasses.dataclass(frozen=True)
class Ratio:
    """A ratio's median over interleaved pairs and its bootstrap interval (``pairs`` per-pair ratios)."""

    median: float
    low: float
    high: float
    pairs: tuple[float, ...] = ()

    @classmethod
    def of(cls, ratios: Sequence[float], confidence: float = 0.95) -> Ratio:
        med, lo, hi = bootstrap_median(ratios, confidence)
        return cls(med, lo, hi, tuple(float(r) for r in ratios))

    def clears(self, goal: float, higher_is_better: bool = True) -> bool:
        """Whether the whole interval lies on the good side of ``goal`` (a goal is met only then)."""
        return self.low >= goal if higher_is_better else self.high <= goal

    def inverse(self) -> Ratio:
        """The ratio the other way round (``1 / r``: a time ratio as a speed ratio)."""
        return Ratio(1.0 / self.median, 1.0 / self.high, 1.0 / self.low, tuple(1.0 / r for r in self.pairs))

    def text(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def paired_ratio(target: Callable[[], Any], reference: Callable[[], Any], pairs: int = 7, repeat: int = 1,
                 warmup: int = 1, device: str | torch.device = "cpu",
                 confidence: float = 0.95) -> tuple[Ratio, list[float], list[float]]:
    """Time ``target`` against ``reference`` in ``pairs`` interleaved pairs (the order alternates from pair
    to pair, so drift and cache effects hit both alike); returns the ratio target time / reference time
    per pair as a :class:`Ratio` (median, bootstrap interval) and the seconds per call of each."""
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    device = torch.device(device)
    for _ in range(warmup):
        target(), reference()
    fns = {"target": target, "reference": reference}
    times: dict[str, list[float]] = {"target": [], "reference": []}
    for i in range(pairs):
        for name in (("target", "reference") if i % 2 == 0 else ("reference", "target")):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(repeat):
                fns[name]()
            _sync(device)
            times[name].append((time.perf_counter() - t0) / repeat)
    ratio = Ratio.of([t / r for t, r in zip(times["target"], times["reference"], strict=True)], confidence)
    return ratio, times["target"], times["reference"]


def machine_note() -> dict[str, Any]:
    """What a timing on a shared machine needs beside it: the 1-minute load average, torch's thread count
    and the CPU count."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"load_avg_1min": round(load, 2), "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def interleaved_times(fns: dict[str, Callable[[], None]], rounds: int, repeat: int, device: torch.device,
                      barrier: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each function in each of ``rounds`` rounds that alternate the functions (load
    drift on a shared machine hits every model alike); ``barrier`` lines the ranks up under DDP."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            barrier()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(repeat):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) / repeat)
    return times


def _check_counts(rounds: int, warmup: int) -> None:
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def throughput(names: Sequence[str], preset: str = "tiny", shape: Sequence[int] = (64, 48), cascades: int | None = None,
               rounds: int = 3, warmup: int = 2, device: str | torch.device = "cpu", frames: int | None = None,
               coils: int = 4, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Single process: iterations/s, its ratio to the first model of ``names`` and peak step memory per model.

    Rows: ``model``, ``experts``, ``parameters``, ``s_per_it``, ``it_per_s``, ``speed_vs_baseline`` (median
    times' ratio), ``speed_round_median`` / ``speed_low`` / ``speed_high`` (the per-round ratios' median and
    bootstrap interval at ``confidence``), ``peak_mib`` (the allocator's, :func:`peak_memory`),
    ``memory_vs_baseline``."""
    _check_counts(rounds, warmup)
    if not names:
        raise ValueError("names must list at least one model")
    device = torch.device(device)
    models = {n: build_model(n, preset, cascades, device) for n in names}
    frames = frames or int(next(iter(models.values())).config.frames)
    kspace, mask = phantom_batch(shape, frames, coils, 0, device)
    steps = {n: training_step(m, m, kspace, mask) for n, m in models.items()}
    for fn in steps.values():  # allocator, AdamW state and routing centres settle before timing
        for _ in range(warmup):
            fn()
    rounds_times = interleaved_times(steps, rounds, 1, device)
    times = {n: statistics.median(ts) for n, ts in rounds_times.items()}
    peaks = {n: peak_memory(fn, device) for n, fn in steps.items()}
    ref = names[0]
    speed = {n: Ratio.of([r / t for r, t in zip(rounds_times[ref], rounds_times[n], strict=True)], confidence)
             for n in names}
    return [{
        "model": n, "experts": _experts(n), "parameters": sum(p.numel() for p in models[n].parameters()),
        "s_per_it": times[n], "it_per_s": 1.0 / times[n], "speed_vs_baseline": times[ref] / times[n],
        "speed_round_median": speed[n].median, "speed_low": speed[n].low, "speed_high": speed[n].high,
        "peak_mib": peaks[n] / 2**20, "memory_vs_baseline": peaks[n] / max(peaks[ref], 1),
    } for n in names]


def _experts(name: str) -> int:
    from moero.models.registry import parse_model_name

    return parse_model_name(split_variant(name)[0]).num_experts



def _ddp_worker(rank: int, world: int, port: int, out: str, spec: dict[str, Any]) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    use_cuda = spec["cuda"]
    if use_cuda:
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, spec["threads"] // world))
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    try:
        steps = {}
        for n in spec["names"]:
            core = build_model(n, spec["preset"], spec["cascades"], device)
            kspace, mask = phantom_batch(spec["shape"], int(core.config.frames), spec["coils"], rank, device)
            ignored = core.ddp_ignored_parameters() if hasattr(core, "ddp_ignored_parameters") else []
            if ignored:
                DDP._set_params_and_buffers_to_ignore_for_model(core, ignored)
            wrapped = DDP(core, device_ids=[device] if use_cuda else None, broadcast_buffers=False,
                          find_unused_parameters=split_variant(n)[1])
            steps[n] = training_step(wrapped, core, kspace, mask)
            for _ in range(spec["warmup"]):
                steps[n]()
        times = interleaved_times(steps, spec["rounds"], 1, device, dist.barrier)
        if rank == 0:
            torch.save(times, Path(out) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def ddp_throughput(names: Sequence[str], world: int = 2, preset: str = "tiny", shape: Sequence[int] = (64, 48),
                   cascades: int | None = None, rounds: int = 2, warmup: int = 2, coils: int = 4,
                   threads: int | None = None) -> list[dict[str, Any]]:
    """``world`` processes (``torch.multiprocessing.spawn``; gloo on CPU, NCCL when there are enough GPUs):
    seconds per step and speed relative to the first model of ``names`` (``speed_low`` / ``speed_high``: the
    bootstrap interval of the per-round ratios' median). Each rank sees another phantom
    shift, so Moero's ranks may route differently (the sparse case that ``find_unused_parameters`` pays for)."""
    import torch.multiprocessing as mp

    _check_counts(rounds, warmup)
    if world < 2:
        raise ValueError(f"world must be >= 2 for a DDP measurement, got {world}")
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    spec = {"names": list(names), "preset": preset, "cascades": cascades, "shape": list(shape), "rounds": rounds,
            "warmup": warmup, "coils": coils, "cuda": use_cuda, "threads": threads or os.cpu_count() or 2}
    with tempfile.TemporaryDirectory() as tmp:
        with quiet_native_output():
            mp.spawn(_ddp_worker, args=(world, free_port(), tmp, spec), nprocs=world, join=True)
        rounds_times = torch.load(Path(tmp) / "ddp.pt", weights_only=True)
    times = {n: statistics.median(ts) for n, ts in rounds_times.items()}
    ref = names[0]
    backend = "nccl" if use_cuda else "gloo"
    speed = {n: Ratio.of([r / t for r, t in zip(rounds_times[ref], ts, strict=True)]) for n, ts in rounds_times.items()}
    return [{
        "model": n, "experts": _experts(n), "ddp": f"{world} x {backend}",
        "find_unused_parameters": split_variant(n)[1], "s_per_it": t, "it_per_s": 1.0 / t,
        "speed_vs_baseline": times[ref] / t, "speed_low": speed[n].low, "speed_high": speed[n].high,
    } for n, t in times.items()]


def batch_scan(batch: int, shape: Sequence[int], frames: int, coils: int = 4,
               device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` phantom scans (each another shift, :func:`phantom_batch`) stacked on the batch axis."""
    scans = [phantom_batch(shape, frames, coils, seed, device) for seed in range(batch)]
    return torch.cat([k for k, _ in scans]), torch.cat([m for _, m in scans])


def force_routes(model: nn.Module, routes: Callable[[int], torch.Tensor]) -> None:
    """Replace every navigator's decision of a Moero ``model`` by ``routes(batch)`` (their state is left alone)."""
    for nav in model.navs:
        nav.forward = lambda hist: routes(hist.shape[0])


def dispatch_batches(preset: str = "small", cascades: int = 4, shape: Sequence[int] = (64, 48),
                     batches: Sequence[int] = (2, 4), experts: int = 2, rounds: int = 7,
                     warmup: int = 2, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Moero at batch > 1 with mixed (round-robin) routes against VQ-PromptMR+ at the same batch, one training
    step each, all in the same interleaved rounds; per batch the rows (``what``):

    * ``moero mixed`` / ``moero one expert`` (every sample to expert 0: no splitting) / ``vq-prompt B/K x K``
      (VQ-PromptMR+ run K times on B/K samples): speed relative to VQ-PromptMR+ at batch B;
    * ``lost batching``: the last of these, the inherent cost of running experts on smaller groups;
    * ``dispatch overhead``: ``T(mixed) / (T(one expert) x T(B/K x K) / T(vq-prompt))``, what is left
      (1: none beyond lost batching).

    Each ratio: ``ratio`` (median over rounds), ``ratio_low`` / ``ratio_high`` (bootstrap interval at
    ``confidence``)."""
    rows = []
    for batch in batches:
        if batch % experts:
            raise ValueError(f"batch {batch} must be a multiple of experts={experts}")
        vq = build_model("vq-prompt", preset, cascades)
        kspace, mask = batch_scan(batch, shape, int(vq.config.frames))
        part = batch // experts
        whole, split = training_step(vq, vq, kspace, mask), training_step(vq, vq, kspace[:part], mask[:part])

        def vq_split(split: Callable[[], None] = split) -> None:
            for _ in range(experts):
                split()

        steps = {"vq-prompt": whole, "vq-prompt B/K x K": vq_split}
        for name, routes in (("moero mixed", lambda b: torch.arange(b) % experts),
                             ("moero one expert", lambda b: torch.zeros(b, dtype=torch.long))):
            model = build_model(f"moero-{cascades}x{experts}", preset, cascades)
            force_routes(model, routes)
            steps[name] = training_step(model, model, kspace, mask)
        for fn in steps.values():
            for _ in range(warmup):
                fn()
        t = interleaved_times(steps, rounds, 1, torch.device("cpu"))
        ref = t["vq-prompt"]
        ratios = {f"{n}: speed vs vq-prompt": Ratio.of([r / x for r, x in zip(ref, t[n], strict=True)], confidence)
                  for n in ("moero mixed", "moero one expert", "vq-prompt B/K x K")}
        ratios["lost batching"] = ratios["vq-prompt B/K x K: speed vs vq-prompt"]
        ratios["dispatch overhead"] = Ratio.of([m / (o * s / r) for m, o, s, r in zip(
            t["moero mixed"], t["moero one expert"], t["vq-prompt B/K x K"], ref, strict=True)], confidence)
        base = {"batch": batch, "experts": experts, "preset": preset, "cascades": cascades,
                "input": f"{batch}x{int(vq.config.frames)}x4x{shape[0]}x{shape[1]}"}
        for what, r in ratios.items():
            name = what.split(":")[0]
            rows.append({**base, "what": what, "s_per_step": statistics.median(t[name]) if name in t else None,
                         "ratio": r.median, "ratio_low": r.low, "ratio_high": r.high})
    return rows


def stage_times(model: nn.Module, dataset: Any, augment: Callable[..., Any] | None = None, steps: int = 3,
                device: str | torch.device = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    """Seconds spent in each stage (:data:`STAGES`) of ``steps`` single-process training steps of ``model`` on
    examples of ``dataset`` (a ``SliceDataset`` without augmentation; ``augment(example, generator)`` is
    timed separately). Rows: ``step``, one column per stage, ``total``. Single process: the
    synchronisation stage is the model's own per-step pass (VQ statistics, routing), no all-reduce."""
    from moero.models.io import collate_examples, model_inputs, output_parts

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = torch.device(device)
    model = model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)
    rows = []
    n = len(dataset)
    for s in range(steps):
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        example = dataset[(s * 7919 + seed) % n]
        times["data"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if augment is not None:
            example = augment(example, torch.Generator().manual_seed(seed + s))
        batch = collate_examples([example])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        times["augmentation"] = time.perf_counter() - t0
        _sync(device)
        t0 = time.perf_counter()
        args, kwargs = model_inputs(batch)
        image, vq_loss = output_parts(model(*args, **kwargs))
        target = batch["target"].float()
        loss = (image - target).abs().mean() / target.abs().mean().clamp_min(1e-12)
        if vq_loss is not None:
            loss = loss + vq_loss
        _sync(device)
        times["forward"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        times["backward"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _synchronise(model, s)
        _sync(device)
        times["synchronisation"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        opt.step()
        _sync(device)
        times["optimiser"] = time.perf_counter() - t0
        rows.append({"step": s, **times, "total": sum(times.values())})
    return rows
