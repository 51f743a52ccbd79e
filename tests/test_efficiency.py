"""Measurement tools of issue 30: the allocator's peak memory, ratios with bootstrap intervals, and every
benchmark run once at its smoke size (no timing assertion: a crash fails CI, so the benchmarks cannot rot)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

from moero.train import efficiency

MIB = 2**20
ROOT = Path(__file__).resolve().parents[1]


def _known_step(mib: int) -> None:
    """A step whose peak is one tensor of ``mib`` MiB plus a second of the same size (its double)."""
    a = torch.ones(mib * MIB // 4)  # float32
    b = a * 2
    del a, b


@pytest.mark.parametrize("mib", [16, 64])
def test_peak_memory_of_a_known_step_within_5_percent(mib):
    peak = efficiency.peak_memory(lambda: _known_step(mib))
    assert peak == pytest.approx(2 * mib * MIB, rel=0.05)


def test_peak_memory_counts_nested_allocations_once():
    """Allocations inside nested ops count once (the old profiler sum counted them per nesting level); on CPU
    the figure is the peak of what the step itself allocates (the profiler does not see a tensor allocated
    before the step being freed in it); a training step's peak is above zero."""
    x, w = torch.randn(1024, 256), torch.randn(1024, 256)

    def nested() -> None:
        y = torch.nn.functional.linear(x, w)  # linear -> matmul -> mm: 4 MiB, nested three deep
        z = y.relu()  # 4 MiB more
        del y, z

    assert efficiency.peak_memory(nested) == pytest.approx(8 * MIB, rel=0.05)
    held = [torch.ones(8 * MIB // 4)]

    def frees_first() -> None:
        held.clear()
        z = torch.ones(4 * MIB // 4)
        del z

    assert efficiency.peak_memory(frees_first) == pytest.approx(4 * MIB, rel=0.05)
    model = efficiency.build_model("promptmr", "tiny", cascades=1)
    kspace, mask = efficiency.phantom_batch((32, 24), int(model.config.frames), 2)
    assert efficiency.peak_memory(efficiency.training_step(model, model, kspace, mask)) > MIB


def test_ratio_interval_and_goal():
    r = efficiency.Ratio.of([1.0, 1.1, 1.2, 0.9, 1.05, 1.15, 0.95])
    assert r.low <= r.median <= r.high and r.median == pytest.approx(1.05)
    assert r.clears(0.85) and not r.clears(1.0) and r.clears(1.3, higher_is_better=False)
    inv = r.inverse()
    assert inv.median == pytest.approx(1 / 1.05) and inv.low == pytest.approx(1 / r.high)
    assert efficiency.bootstrap_median([2.0]) == (2.0, 2.0, 2.0)
    calls = []
    ratio, t, ref = efficiency.paired_ratio(lambda: calls.append("t"), lambda: calls.append("r"), pairs=3, warmup=0)
    assert calls == ["t", "r", "r", "t", "t", "r"] and len(ratio.pairs) == len(t) == len(ref) == 3
    note = efficiency.machine_note()
    assert note["threads"] == torch.get_num_threads() and note["load_avg_1min"] >= 0


def _bench_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(ROOT / "benchmarks")]) if m.name.startswith("bench_"))


@pytest.mark.parametrize("name", _bench_modules())
def test_benchmark_runs_at_smoke_size(name, monkeypatch, tmp_path):
    """Every benchmark end to end at its smoke size (one pair, tiny inputs), rows as ``python -m benchmarks``
    prints them; timings are not checked (they mean nothing on a shared CI machine)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.common import print_table

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as python -m benchmarks: 2 threads on a loaded 2-core machine run many times slower
    try:
        mod = importlib.import_module(f"benchmarks.{name}")
        rows = mod.run(smoke=True)
    finally:
        torch.set_num_threads(threads)
    assert rows and all(isinstance(r, dict) for r in rows)
    print_table(rows, mod.TITLE)


@pytest.mark.parametrize("routes", [[0, 1], [1, 0], [0, 1, 0, 1], [1, 1, 0, 2, 0]])
def test_dispatch_split_merge_gradients_match_per_sample(routes):
    """The permute-and-split dispatch (issue 30, point 5) equals running each sample alone, values and
    gradients, for sorted and unsorted routes, complex inputs, nested history lists and scalar losses."""
    from moero.models.routing import dispatch

    torch.manual_seed(0)
    routes = torch.tensor(routes)
    b = routes.numel()
    x = torch.randn(b, 3, 4, dtype=torch.complex64, requires_grad=True)
    hist = [torch.randn(b, 2, requires_grad=True), torch.randn(b, 5, requires_grad=True)]
    shared = torch.randn(1, 3, 4)  # first axis is not the batch: every expert gets it whole
    scales = [1.0, 2.0, -0.5]

    def expert(j):
        def f(x, s, h):
            return (x * scales[j] + s, [t * scales[j] for t in h], (x.abs() ** 2).mean() * scales[j])
        return f

    experts = [expert(j) for j in range(3)]
    out = dispatch(experts, routes, x, shared, hist)
    alone = [experts[int(r)](x[i : i + 1], shared, [t[i : i + 1] for t in hist]) for i, r in enumerate(routes)]
    torch.testing.assert_close(out[0], torch.cat([a[0] for a in alone]))
    for k in range(2):
        torch.testing.assert_close(out[1][k], torch.cat([a[1][k] for a in alone]))
    torch.testing.assert_close(out[2], torch.stack([a[2] for a in alone]).mean())
    loss = out[0].abs().sum() + sum(t.pow(2).sum() for t in out[1]) + out[2]
    grads = torch.autograd.grad(loss, [x, *hist])
    ref_loss = (torch.cat([a[0] for a in alone]).abs().sum()
                + sum(torch.cat([a[1][k] for a in alone]).pow(2).sum() for k in range(2))
                + torch.stack([a[2] for a in alone]).mean())
    for g, r in zip(grads, torch.autograd.grad(ref_loss, [x, *hist]), strict=True):
        torch.testing.assert_close(g, r)
    # the permutation's backward is itself differentiable (second order)
    y = torch.randn(b, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: dispatch([lambda u: u * 2, lambda u: u.sin(), lambda u: u], routes, t), (y,))
    torch.autograd.gradgradcheck(lambda t: dispatch([lambda u: u ** 2, lambda u: u.sin(), lambda u: u], routes, t),
                                 (y,))


def test_acceleration_switches_keep_checkpoints_and_refuse_unknown_modes():
    """Compiling (lazily, nothing runs here) and channels-last keep the parameter names, so checkpoints load
    either way; unknown modes are refused."""
    from moero.train import acceleration

    model = efficiency.build_model("promptmr", "tiny", cascades=1)
    keys = list(model.state_dict())
    assert acceleration.maybe_compile(model, "off") is model
    acceleration.accelerate(model, "default", channels_last=True)
    assert list(model.state_dict()) == keys
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="compile mode"):
        acceleration.maybe_compile(model, "fast")
    with pytest.raises(ValueError, match="precision"):
        with acceleration.autocast("cpu", "fp16"):
            pass
    with pytest.raises(ValueError, match="phases"):
        acceleration.measure("promptmr", "tiny", (32, 24), ["channels_last"], phases=["backward"])
    rel, close = acceleration.output_error(torch.ones(3), torch.ones(3) * (1 + 1e-3))
    assert rel == pytest.approx(1e-3, rel=1e-3) and not close
