"""CPU/GPU acceleration switches for training and evaluation, and their measurement against eager fp32.

Three independent switches (issue 30, point 4), each off by default:

* ``compile``: :func:`maybe_compile` compiles the model in place with ``torch.compile`` (inductor),
  keeping its parameter names, so checkpoints load either way;
* ``channels_last``: :func:`maybe_channels_last` stores the convolution weights channels-last;
* ``precision``: :func:`autocast` runs the forward under bf16 autocast (``"fp32"``: no autocast).

:func:`measure` times a training step and an evaluation forward of a registry model with each variant
against eager fp32 built from the same weights, in interleaved pairs in one run, and checks the
variant's output against eager's (``torch.testing.assert_close`` defaults: the tolerance the tests use).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from moero.train.efficiency import Ratio, build_model, paired_ratio, phantom_batch, training_step

__all__ = ["COMPILE_MODES", "PRECISIONS", "VARIANTS", "maybe_compile", "maybe_channels_last", "autocast",
           "accelerate", "output_error", "measure", "speedup"]

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
PRECISIONS = ("fp32", "bf16")
VARIANTS = {  # name -> (compile mode, channels_last, precision)
    "compile": ("default", False, "fp32"),
    "channels_last": ("off", True, "fp32"),
    "bf16": ("off", False, "bf16"),
}


def maybe_compile(model: nn.Module, mode: str = "off") -> nn.Module:
    """Compile ``model`` in place with ``torch.compile`` (inductor) unless ``mode == "off"``; returns it.
    ``nn.Module.compile`` keeps the parameter names (a checkpoint of either loads into the other)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    if mode != "off":
        # the complex FFTs of data consistency break the graph by design; dynamo's warning about it would print
        # a stack of file paths into every log and notebook that compiles
        logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
        model.compile(mode=None if mode == "default" else mode)
    return model


def maybe_channels_last(model: nn.Module, enabled: bool = False) -> nn.Module:
    """Store ``model``'s 4-d weights channels-last (in place) when ``enabled``; returns it."""
    return model.to(memory_format=torch.channels_last) if enabled else model


@contextlib.contextmanager
def autocast(device: str | torch.device = "cpu", precision: str = "fp32") -> Iterator[None]:
    """bf16 autocast on ``device`` for ``precision == "bf16"``, nothing for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def accelerate(model: nn.Module, compile: str = "off", channels_last: bool = False) -> nn.Module:  # noqa: A002
    """Both in-place switches of a model: channels-last weights, then compilation."""
    return maybe_compile(maybe_channels_last(model, channels_last), compile)


def output_error(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, bool]:
    """``(max |ours - ref| / max |ref|, within assert_close's default tolerance)``."""
    ours, ref = ours.detach().float(), ref.detach().float()
    rel = float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    try:
        torch.testing.assert_close(ours, ref)
        close = True
    except AssertionError:
        close = False
    return rel, close


def _image(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.image


def _variant_step(model: nn.Module, kspace: torch.Tensor, mask: torch.Tensor, precision: str,
                  train: bool) -> Callable[[], None]:
    if train:
        step = training_step(model, model, kspace, mask)

        def run() -> None:
            with autocast(kspace.device, precision):
                step()
        return run

    def forward() -> None:
        with torch.no_grad(), autocast(kspace.device, precision):
            model(kspace, mask)
    return forward


def measure(name: str = "vq-prompt", preset: str = "tiny", shape: Sequence[int] = (64, 48),
            variants: Sequence[str] = tuple(VARIANTS), pairs: int = 7, warmup: int = 2, coils: int = 4,
            cascades: int | None = None, confidence: float = 0.95,
            phases: Sequence[str] = ("train", "eval")) -> list[dict[str, Any]]:
    """Each variant of :data:`VARIANTS` against eager fp32 (same weights, same input, one process):
    a training step and an evaluation forward (``phases``), in ``pairs`` interleaved pairs after ``warmup``
    calls.

    Rows: ``preset``, ``phase`` (train/eval), ``variant``, ``speedup`` (eager time / variant time, the
    median over pairs) with ``speedup_low`` / ``speedup_high`` (bootstrap interval at ``confidence``), ``eager_s``,
    ``variant_s``, ``first_call_s`` (the variant's first call: compilation), ``output_rel_error`` (eval
    forward against eager's) and ``outputs_equal`` (within assert_close's default tolerance)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if not set(phases) <= {"train", "eval"}:
        raise ValueError(f"phases must be 'train' and/or 'eval', got {list(phases)}")
    eager = build_model(name, preset, cascades)
    kspace, mask = phantom_batch(shape, int(eager.config.frames), coils)
    state = copy.deepcopy(eager.state_dict())
    eager.eval()
    with torch.no_grad():
        ref_image = _image(eager(kspace, mask)).clone()
    rows = []
    for variant in variants:
        mode, channels_last, precision = VARIANTS[variant]
        if mode != "off":
            # a fresh dynamo cache per compiled variant: the previous variant's compiled forward (same code
            # object, other tensors) would otherwise be recompiled, and torch 2.13's recompilation-reason
            # logging fails on its tensor-aliasing guard (TypeError inside torch._dynamo.guards)
            torch._dynamo.reset()
        model = build_model(name, preset, cascades)
        model.load_state_dict(state)
        accelerate(model, mode, channels_last)
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(kspace.device, precision):
            image = _image(model(kspace, mask))
        first_eval = time.perf_counter() - t0
        rel, close = output_error(image, ref_image)
        for phase in phases:
            train = phase == "train"
            for m in (eager, model):
                m.load_state_dict(state)
                m.train(train)
            ours = _variant_step(model, kspace, mask, precision, train)
            base = _variant_step(eager, kspace, mask, "fp32", train)
            t0 = time.perf_counter()
            ours()
            first = time.perf_counter() - t0 + (first_eval if not train else 0.0)
            ratio, t_base, t_ours = paired_ratio(base, ours, pairs, 1, warmup, confidence=confidence)  # eager / variant
            rows.append({"model": name, "preset": preset, "shape": f"{shape[0]}x{shape[1]}", "phase": phase,
                         "variant": variant, "speedup": ratio.median, "speedup_low": ratio.low,
                         "speedup_high": ratio.high, "eager_s": statistics.median(t_base),
                         "variant_s": statistics.median(t_ours), "first_call_s": first,
                         "output_rel_error": rel, "outputs_equal": close, "pairs": len(ratio.pairs)})
    return rows


def speedup(row: dict[str, Any]) -> Ratio:
    """The :class:`~moero.train.efficiency.Ratio` of a :func:`measure` row."""
    return Ratio(row["speedup"], row["speedup_low"], row["speedup_high"])
