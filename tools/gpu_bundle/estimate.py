"""Time and memory estimate of a book profile's chapters 01 and 06-09 on one H200, from measured FLOPs.

``python estimate.py --out estimate.json [--profiles gpu-short gpu paper] [--timings stages.json]``

Per model family of a profile: one training step (forward, loss, backward, AdamW) is run at a small
shape with 1 and 2 cascades of the profile's preset, under :class:`torch.utils.flop_counter.FlopCounterMode`
(FLOPs) and a dispatch counter (kernels), then under :func:`moero.train.efficiency.peak_memory` (the
allocator's peak). They are extrapolated linearly to the preset's cascade count and scaled to the
profile's training shape and batch by pixel count (convolution FLOPs and activations are linear in both;
parameters, gradients and optimiser state are counted from the full model, not scaled). A step then takes
``FLOPs / sustained + kernels x
launch`` on the GPU, with the sustained throughput and per-kernel cost of :data:`ASSUMPTIONS`; the
chapters' runs and evaluations come from the profile's own plan (``moero.book.experiments.plan``).
Data generation is the rehearsal's measured time, scaled by rendered voxels. Everything here is an
ESTIMATE: it is written so, and compared with measured stage times when a GPU run has them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ASSUMPTIONS: dict[str, Any] = {
    "gpu": "one NVIDIA H200 (141 GB HBM3e)",
    # a quarter of the 790 TFLOP/s this workplace measured for 8192^3 bf16 matrix products on an H200:
    # the models' convolutions have few channels and small maps, far from a large GEMM's efficiency
    "sustained_tflops_bf16": 200.0,
    # fp32 training (paper: amp off): cuDNN runs fp32 convolutions in TF32 by default (allow_tf32)
    "sustained_tflops_fp32": 100.0,
    # eager PyTorch: host-side dispatch per kernel; small models at small shapes are bound by this
    "launch_us_per_kernel": 10.0,
    "notebook_overhead_s": 15.0,  # kernel start and imports, per notebook
    "segment_overhead_s": 4.0,  # per training segment: dataset index, model build, checkpoint and snapshot copy
    "cuda_context_gib": 0.6,  # CUDA context and cuDNN workspaces, not in the allocator's figures
    "eval_flops_fraction": 1.0 / 3.0,  # a forward pass is about a third of a training step's FLOPs
    "eval_batch": 8,  # images per forward at evaluation (moero.book.experiments.EVAL_BATCH)
}
MEASURE_SHAPE = {"paper": (16, 16)}  # the paper preset is slow on CPU: measured at a smaller map
DEFAULT_MEASURE_SHAPE = (32, 24)
COILS = 10  # the synthetic data's virtual coils (moero.data.synthetic NUM_VIRTUAL_COILS)
NOTEBOOKS = ("01_forward_model", "06_training", "07_augmentation_ablation", "08_model_ablation", "09_efficiency")


def _api(name: str) -> Any:
    """A function of the book's run plan, wherever the package keeps it now."""
    import importlib

    for module in ("moero.book.runspec", "moero.book.experiments"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise ImportError(f"moero.book has no {name}")


class KernelCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten operators that launch work (views and metadata-only operators excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not getattr(func, "is_view", False) and func.namespace == "aten":
            self.count += 1
        return func(*args, **(kwargs or {}))


def measure_step(name: str, preset: str, shape: tuple[int, int], device: str = "cpu", cascades: int | None = None,
                 coils: int = COILS) -> dict[str, Any]:
    """FLOPs, kernels and allocator peak of one training step of registry model ``name`` at ``shape``
    (``cascades``: the cascade count of a non-Moero model; a Moero name carries its own)."""
    from torch.utils.flop_counter import FlopCounterMode

    from moero.train.efficiency import build_model, peak_memory, phantom_batch, training_step

    t0 = time.perf_counter()
    model = build_model(name, preset, cascades, device)
    frames = int(model.config.frames)
    kspace, mask = phantom_batch(shape, frames, coils, 0, device)
    step = training_step(model, model, kspace, mask)
    counter = KernelCounter()
    with FlopCounterMode(display=False) as flops, counter:
        step()  # also creates the AdamW state, which the next step's peak then leaves out
    peak = peak_memory(step, device)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"model": name, "cascades": cascades, "shape": list(shape), "frames": frames, "coils": coils,
            "flops": int(flops.get_total_flops()), "kernels": counter.count, "peak_alloc_bytes": int(peak),
            "param_bytes": int(params), "input_bytes": int(kspace.numel() * kspace.element_size()),
            "seconds": round(time.perf_counter() - t0, 2)}


def family(name: str) -> str:
    """Models that run the same operators per step: Moero runs one expert per cascade whatever K is."""
    return "moero" if name.startswith("moero-") else name


def measure_family(fam: str, preset: str, shape: tuple[int, int], device: str = "cpu",
                   experts: int = 2) -> dict[str, Any]:
    """A family's step at 1 and 2 cascades of ``preset`` (per-cascade cost and the rest, extrapolated by
    :func:`at_cascades`: cheap even for the paper preset's 12 cascades)."""
    out: dict[str, Any] = {"family": fam, "preset": preset, "shape": list(shape)}
    for c in (1, 2):
        name = f"moero-{c}x{experts}" if fam == "moero" else fam
        out[f"c{c}"] = measure_step(name, preset, shape, device, None if fam == "moero" else c)
    return out


def at_cascades(m: dict[str, Any], cascades: int) -> dict[str, float]:
    """FLOPs, kernels, activation bytes (allocator peak less the gradients) and input bytes of one step at
    ``cascades``, linear in the cascade count through the 1- and 2-cascade measurements."""
    one, two = m["c1"], m["c2"]

    def lin(key: Callable[[dict[str, Any]], float]) -> float:
        return max(0.0, key(one) + (key(two) - key(one)) * (cascades - 1))

    return {"flops": lin(lambda r: r["flops"]), "kernels": lin(lambda r: r["kernels"]),
            "activation_bytes": lin(lambda r: max(0, r["peak_alloc_bytes"] - r["param_bytes"])),
            "input_bytes": float(one["input_bytes"]), "pixels": float(m["shape"][0] * m["shape"][1])}


def param_bytes(name: str, preset: str) -> int:
    """Parameter bytes of ``name`` at ``preset``, built on the meta device (no memory, no time)."""
    from moero.models.registry import build_model

    with torch.device("meta"):
        model = build_model(name, preset, checkpoint=False)
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def dataset_stats(size: str) -> dict[str, Any]:
    """Files, examples (slice x frame) per split, mean training matrix and rendered voxels of a synthetic size."""
    from moero.data.synthetic import plan_dataset

    specs = plan_dataset(size, 0)
    splits: dict[str, list[int]] = {}
    for s in specs:
        splits.setdefault(s.split, []).append(s.slices * s.frames)
    train = [s for s in specs if s.split == "train"]
    pixels = [(s.readout // 2) * s.phase for s in train]  # the readout is cut to its central half
    return {"size": size, "files": len(specs), "split_examples": splits,
            "train_examples": sum(splits.get("train", [])),
            "train_subjects": len({s.subject for s in train}),
            "mean_train_pixels": sum(pixels) / max(1, len(pixels)),
            "voxels": sum(s.readout * s.phase * s.frames * s.slices for s in specs)}


def _split_images(stats: dict[str, Any], split: str, files: int) -> int:
    counts = stats["split_examples"].get(split, [])
    return sum(counts[:files] if files else counts)


def profile_estimate(profile: str, steps: dict[str, dict[str, Any]], measured: dict[str, float],
                     assume: dict[str, Any] = ASSUMPTIONS) -> dict[str, Any]:
    """Estimated seconds per part and peak GPU memory of ``profile`` (chapters 01 and 06-09), from the
    per-model step measurements ``steps`` (by family) and measured times ``measured`` (``data_<size>``:
    data generation; ``01_forward_model`` / ``09_efficiency``: notebook wall times at this profile)."""
    from moero.book.profiles import get_profile, notebook_params
    from moero.data.testphase import TEST_SPLITS

    plan, snapshot_budgets, model_names = _api("plan"), _api("snapshot_budgets"), _api("model_names")
    prof = get_profile(profile)
    params = notebook_params("06_training", profile)
    train = params.get("train", {})
    preset = str(train.get("preset", "tiny"))
    batch = int(train.get("batch_size", 1))
    amp = str(train.get("amp", "auto"))
    tflops = assume["sustained_tflops_fp32" if amp == "off" else "sustained_tflops_bf16"] * 1e12
    launch = assume["launch_us_per_kernel"] * 1e-6
    stats = dataset_stats(prof.dataset)
    shape = train.get("image_shape") or []
    pixels = float(shape[0] * shape[1]) if shape else stats["mean_train_pixels"]
    unit = params.get("budget_unit", "steps")

    from moero.models.promptmr import preset as model_preset

    cascades = model_preset(preset).num_cascades

    def step_cost(model: str) -> tuple[float, float, dict[str, float]]:
        m = at_cascades(steps[f"{family(model)}@{preset}"], cascades)
        flops = m["flops"] * pixels * batch / m["pixels"]
        return flops / tflops + m["kernels"] * launch, flops, m

    runs, train_s, eval_s, segments = [], 0.0, 0.0, 0
    eval_files = int(params.get("eval_files", 0) or 0)
    grid = len(params.get("test_accelerations", [8, 16, 24]))
    for job in plan(params):
        if job.exp is None:
            continue
        exp = job.exp
        budgets = snapshot_budgets(params, exp)
        if unit == "steps":
            n_steps = max(budgets)
        else:
            examples = stats["train_examples"]
            if exp.subjects:
                examples = examples * exp.subjects / max(1, stats["train_subjects"])
            n_steps = max(budgets) * math.ceil(examples / batch)
        t_step, flops, m = step_cost(exp.model)
        seconds = n_steps * t_step
        images = 0
        for kind, _budget in job.evals:
            if kind == "val":
                images += _split_images(stats, "val", eval_files)
            else:
                images += grid * sum(_split_images(stats, s, eval_files) for s in TEST_SPLITS)
        fwd = assume["eval_flops_fraction"]
        forwards = math.ceil(images / assume["eval_batch"])
        e_seconds = images * flops * fwd / tflops + forwards * m["kernels"] * fwd * launch
        train_s += seconds
        eval_s += e_seconds
        segments += len(budgets)
        runs.append({"run": exp.run_name, "model": exp.model, "steps": n_steps, "train_s": round(seconds, 1),
                     "eval_images": images, "eval_s": round(e_seconds, 1)})

    memory = {}
    for name in model_names(params):
        _, _, m = step_cost(name)
        scale = pixels * batch / m["pixels"]
        own = steps[f"params:{name}@{preset}"]  # parameters, gradients and two AdamW moments: 4 x own
        total = own * 4 + (m["activation_bytes"] + m["input_bytes"]) * scale + assume["cuda_context_gib"] * 2**30
        memory[name] = round(total / 2**30, 2)

    data_key = f"data_{prof.dataset}"
    data_s = measured.get(data_key)
    basis = "measured by the rehearsal"
    if data_s is None and "data_reference" in measured:
        ref = measured["data_reference"]
        data_s = ref["seconds"] * stats["voxels"] / max(1, ref["voxels"])
        basis = f"the rehearsal's {ref['size']} set ({ref['seconds']:.0f} s) scaled by rendered voxels"
    fixed = {nb: measured[f"{profile}:{nb}"] for nb in ("01_forward_model", "09_efficiency")
             if f"{profile}:{nb}" in measured}
    overhead = len(NOTEBOOKS) * assume["notebook_overhead_s"] + segments * assume["segment_overhead_s"]
    parts = {"data_generation_s": round(data_s, 1) if data_s is not None else None,
             "training_s": round(train_s, 1), "evaluation_s": round(eval_s, 1), "overhead_s": round(overhead, 1),
             **{f"{nb}_s": round(v, 1) for nb, v in fixed.items()}}
    total = sum(v for v in parts.values() if v is not None)
    return {
        "profile": profile, "dataset": prof.dataset, "preset": preset, "batch_size": batch, "amp": amp,
        "train_pixels": round(pixels), "budget_unit": unit, "runs": len(runs),
        "steps": sum(r["steps"] for r in runs), "parts": parts, "total_s": round(total, 1),
        "total_min": round(total / 60, 1), "peak_gib": memory, "max_peak_gib": max(memory.values(), default=0.0),
        "data_generation_basis": basis if data_s is not None else "not measured",
        "not_included": [nb for nb in ("01_forward_model", "09_efficiency") if nb not in fixed]
        + ["zero-filled and CG-SENSE references"],
        "per_run": runs,
    }


def measure_all(profiles: list[str], device: str = "cpu", log: Callable[[str], None] = print,
                save: Path | None = None) -> dict[str, Any]:
    """One step measurement per model family and preset the profiles train, plus every model's parameter bytes
    (cheapest first; written to ``save`` after each, so a measurement stopped at its time limit keeps the rest)."""
    from moero.book.profiles import notebook_params

    model_names = _api("model_names")
    out: dict[str, Any] = {"device": device}
    for profile in profiles:
        params = notebook_params("06_training", profile)
        preset = str(params.get("train", {}).get("preset", "tiny"))
        for name in model_names(params):
            key = f"{family(name)}@{preset}"
            if key not in out:
                shape = MEASURE_SHAPE.get(preset, DEFAULT_MEASURE_SHAPE)
                out[key] = m = measure_family(family(name), preset, shape, device)
                log(f"measured {key} at {shape}, 1 / 2 cascades: {m['c1']['flops'] / 1e9:.2f} / "
                    f"{m['c2']['flops'] / 1e9:.2f} GFLOP, {m['c1']['kernels']} / {m['c2']['kernels']} kernels, "
                    f"{m['c1']['peak_alloc_bytes'] / 2**20:.0f} / {m['c2']['peak_alloc_bytes'] / 2**20:.0f} MiB in "
                    f"{m['c1']['seconds'] + m['c2']['seconds']:.0f} s")
            out.setdefault(f"params:{name}@{preset}", param_bytes(name, preset))
            if save is not None:
                save.write_text(json.dumps(out, indent=1))
    return out


def render_markdown(est: dict[str, Any]) -> str:
    """The estimate as the Markdown table the reproduction page includes."""
    a = est["assumptions"]
    lines = [
        f"**Estimate, not a measurement** ({est['written']}, {est['basis']}). One H200; sustained "
        f"{a['sustained_tflops_bf16']:.0f} TFLOP/s under bf16 autocast and {a['sustained_tflops_fp32']:.0f} TFLOP/s "
        f"in fp32 (TF32 convolutions), plus {a['launch_us_per_kernel']:.0f} µs per kernel launched.",
        "",
        "| profile | runs | training steps | data generation | training | evaluation | chapters 01 + 09 "
        "| overhead | total | peak GPU memory (largest model) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(sec: float | None) -> str:
        if sec is None:
            return "n/a"
        return f"{sec / 60:.1f} min" if sec >= 60 else f"{sec:.0f} s"

    for p in est["profiles"].values():
        if "error" in p:
            lines.append(f"| `{p['profile']}` | {p['error']} |" + " |" * 8)
            continue
        parts = p["parts"]
        chapters = [parts.get(f"{nb}_s") for nb in ("01_forward_model", "09_efficiency")]
        ch = fmt(sum(c for c in chapters if c is not None)) if any(c is not None for c in chapters) else "not estimated"
        lines.append(
            f"| `{p['profile']}` | {p['runs']} | {p['steps']:,} | {fmt(parts['data_generation_s'])} | "
            f"{fmt(parts['training_s'])} | {fmt(parts['evaluation_s'])} | {ch} | {fmt(parts['overhead_s'])} | "
            f"**{fmt(p['total_s'])}** | {p['max_peak_gib']:.1f} GiB |")
    basis = est.get("measured", {}).get("chapters_basis")
    if basis:
        lines += ["", f"Chapters 01 and 09 of `{next(iter(est['profiles']))}`: {basis}."]
    shown = [p for p in est["profiles"].values() if "error" not in p]
    lines += ["", "Not included: " + "; ".join(f"`{p['profile']}`: {', '.join(p['not_included'])}"
                                               for p in shown) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="estimate.json to write (estimate.md beside it)")
    parser.add_argument("--profiles", nargs="+", default=["gpu-short", "gpu", "paper"])
    parser.add_argument("--timings", type=Path, default=None, help="the bundle driver's measured times (JSON)")
    parser.add_argument("--steps", type=Path, default=None,
                        help="the step measurements: written with --measure-only, else read instead of measuring")
    parser.add_argument("--measure-only", action="store_true", help="measure the steps into --steps and stop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.measure_only:
        if args.steps is None:
            parser.error("--measure-only needs --steps")
        measure_all(args.profiles, args.device, log=lambda s: print(s, flush=True), save=args.steps)
        return 0
    if args.out is None:
        parser.error("--out is required unless --measure-only")
    if args.steps is not None and args.steps.is_file():
        steps = json.loads(args.steps.read_text())
    else:
        steps = measure_all(args.profiles, args.device, log=lambda s: print(s, flush=True), save=args.steps)
    measured = json.loads(args.timings.read_text()) if args.timings and args.timings.is_file() else {}
    profiles: dict[str, Any] = {}
    for p in args.profiles:
        try:
            profiles[p] = profile_estimate(p, steps, measured)
        except KeyError as err:  # a measurement that did not finish in its time
            profiles[p] = {"profile": p, "error": f"not measured: {err}"}
    est = {
        "estimate": True,
        "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "basis": f"FLOPs and allocator peaks measured on {steps.get('device', args.device)} "
                 f"({platform.node() or 'this machine'}, torch {torch.__version__}, {os.cpu_count()} CPUs)",
        "assumptions": ASSUMPTIONS,
        "measure_shapes": {**{k: list(v) for k, v in MEASURE_SHAPE.items()}, "default": list(DEFAULT_MEASURE_SHAPE)},
        "steps": steps,
        "measured": measured,
        "profiles": profiles,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(est, indent=2, default=str))
    md = render_markdown(est)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
