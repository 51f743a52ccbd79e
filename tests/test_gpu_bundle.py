"""The GPU bundle without a GPU: the CUDA-only helpers' CPU logic, the bundle's stages and packing, the estimate.

The tests marked for CUDA run on the GPU machine only (the bundle's cuda-tests stage lists this file)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from moero.train import device as mdev

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_bundle_{name}", ROOT / "tools" / "gpu_bundle" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


driver, build, estimate = _load("driver"), _load("build"), _load("estimate")


# -- moero.train.device: the CPU side of every CUDA-only path


def test_amp_resolution_per_device():
    assert mdev.resolve_amp("auto", "cuda") is torch.bfloat16
    assert mdev.resolve_amp("auto", "cpu") is None
    assert mdev.resolve_amp("auto", "cpu", allow_cpu=True) is torch.bfloat16
    assert mdev.resolve_amp("off", "cuda") is None
    assert mdev.resolve_amp("fp16", torch.device("cuda", 0)) is torch.float16
    assert mdev.resolve_amp("bf16", "cpu", allow_cpu=True) is torch.bfloat16
    with pytest.raises(ValueError, match="GPU runs only"):
        mdev.resolve_amp("bf16", "cpu")
    with pytest.raises(ValueError, match="amp must be one of"):
        mdev.resolve_amp("tf32", "cuda")


def test_autocast_context_casts_only_when_asked():
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    with mdev.autocast("cpu", torch.bfloat16):
        assert torch.nn.functional.linear(x, w).dtype is torch.bfloat16
    with mdev.autocast("cpu", None):
        assert torch.nn.functional.linear(x, w).dtype is torch.float32


def test_bf16_training_step_of_a_model_on_cpu():
    """The amp path of a real model (complex FFTs, VQ, routing) under bf16 autocast, as on a GPU."""
    from moero.train.efficiency import build_model, phantom_batch

    assert mdev.cpu_autocast_supported(torch.bfloat16)
    model = build_model("moero-2x2", "tiny")
    kspace, mask = phantom_batch((32, 24), int(model.config.frames), 4)
    with mdev.autocast("cpu", mdev.resolve_amp("auto", "cpu", allow_cpu=True)):
        out = model(kspace, mask)
    image = out if isinstance(out, torch.Tensor) else out.image
    loss = image.float().abs().mean()
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.dtype is torch.float32 for p in model.parameters())  # autocast never casts the weights


def test_tf32_flags_set_and_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with mdev.tf32(not before[0]):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before[0])
        assert torch.backends.cudnn.allow_tf32 is (not before[0])
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(RuntimeError), mdev.tf32(True):
        raise RuntimeError("restored on error too")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_pinning_copies_and_backend_follow_the_device():
    assert mdev.pin_memory("cuda") and not mdev.pin_memory("cpu")
    assert mdev.dist_backend("cuda:1") == "nccl" and mdev.dist_backend("cpu") == "gloo"

    def fake(pinned: bool, where: str = "cpu"):
        return SimpleNamespace(device=torch.device(where), is_pinned=lambda: pinned)

    assert mdev.copy_is_async(fake(True), "cuda")
    assert not mdev.copy_is_async(fake(False), "cuda")  # pageable memory: a synchronous copy
    assert not mdev.copy_is_async(fake(True), "cpu")
    batch = {"x": torch.ones(2), "meta": {"file": "a"}, "n": 3}
    moved = mdev.to_device(batch, "cpu")
    assert torch.equal(moved["x"], batch["x"]) and moved["meta"] is batch["meta"] and moved["n"] == 3


def test_cpu_peak_memory_is_the_process_peak():
    mdev.reset_peak_memory("cpu")  # no-op on CPU
    mdev.synchronize("cpu")
    before = mdev.peak_memory_bytes("cpu")
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert block.sum() > 0
    after = mdev.peak_memory_bytes("cpu")
    assert after >= before > 0 and after >= 64 * 2**20


@cuda
def test_cuda_pinned_copy_peak_memory_and_bf16():
    dev = torch.device("cuda")
    batch = {"x": torch.arange(1024.0).pin_memory()}
    assert mdev.copy_is_async(batch["x"], dev)
    moved = mdev.to_device(batch, dev)
    mdev.synchronize(dev)
    assert moved["x"].is_cuda and torch.equal(moved["x"].cpu(), batch["x"])
    mdev.reset_peak_memory(dev)
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)
    assert mdev.peak_memory_bytes(dev) >= big.numel()
    with mdev.autocast(dev, mdev.resolve_amp("auto", dev)):
        assert (torch.randn(8, 8, device=dev) @ torch.randn(8, 8, device=dev)).dtype is torch.bfloat16
    assert mdev.dist_backend(dev) == "nccl" and torch.distributed.is_nccl_available()


# -- the bundle's stages


def _cuda_only_tests() -> set[str]:
    """``file::test`` of every test skipped without CUDA (a skipif on ``torch.cuda.is_available()``)."""
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = [ast.unparse(d) for d in node.decorator_list]
                if any("cuda.is_available" in m or m == "cuda" for m in marks):
                    found.add(f"tests/{path.name}::{node.name}")
    return found


def test_every_cuda_test_is_run_by_the_bundle():
    listed = set(driver.CUDA_TESTS)
    missing = {t for t in _cuda_only_tests() if t not in listed and t.split("::")[0] not in listed}
    assert not missing, f"add to tools/gpu_bundle/driver.py CUDA_TESTS: {sorted(missing)}"
    for entry in listed:
        assert (ROOT / entry.split("::")[0]).is_file(), entry


def test_rehearsal_cuts_are_parameters_of_the_profile():
    from moero.book.profiles import get_profile
    from moero.book.runner import select_notebooks, split_params

    prof = get_profile(driver.PROFILE)
    stems = [p.stem for p in select_notebooks(driver.NOTEBOOKS)]
    assert stems == driver.NOTEBOOKS
    routed = split_params(driver.PROFILE, stems, driver.REHEARSE_PARAMS)
    assert routed["06_training"]["budgets"] == driver.REHEARSE_PARAMS["budgets"]
    assert all(nb in prof.notebooks for nb in driver.NOTEBOOKS)
    argv = driver.book_argv("python", rehearse=True)
    assert argv[argv.index("--profile") + 1] == driver.PROFILE and "--no-html" in argv


def test_stage_limit_stops_the_whole_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    stage = driver.Stage("sleeper", [sys.executable, "-c", script], 1.5, 1.5)
    t0 = time.monotonic()
    res = driver.run_stage(stage, 1.5, tmp_path, dict(os.environ), tmp_path)
    assert res.status == "timeout" and time.monotonic() - t0 < 20
    child = int(marker.read_text())
    time.sleep(0.5)
    status = Path(f"/proc/{child}/status")
    if status.exists():  # the grandchild went with its group (dead, perhaps not yet reaped by init)
        assert "zombie" in status.read_text() or not status.exists()
    res = driver.run_stage(driver.Stage("late", ["true"], 5, 5), 0.0, tmp_path, dict(os.environ), tmp_path)
    assert res.status == "skipped"
    res = driver.run_stage(driver.Stage("bad", [sys.executable, "-c", "raise SystemExit(3)"], 5, 5), 5,
                           tmp_path, dict(os.environ), tmp_path)
    assert res.status == "failed" and res.returncode == 3


def test_pack_writes_at_most_eight_small_files(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    results = work / "_build" / "results" / driver.PROFILE / "06_training"
    results.mkdir(parents=True)
    (results / "provenance.json").write_text("{}")
    (work / "logs").mkdir()
    (work / "logs" / "book.log").write_text("06_training: 12.5 s -> x\n")
    executed = work / "_build" / "executed" / driver.PROFILE
    executed.mkdir(parents=True)
    (executed / "06_training.ipynb").write_text("{}")
    (work / "estimate.json").write_text(json.dumps({"profiles": {"gpu": {"total_min": 9.0, "max_peak_gib": 2.0}}}))
    stage = driver.StageResult("book", "ok", 1.0, 5.0, 0, "x", "book.log")
    meta = {"rehearse": True, "started": time.time(), "budget_s": 900, "install_rc": 0, "root": str(tmp_path)}
    summary = driver.pack(out, work, [stage], meta)
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= driver.MAX_FILES and summary["bar"]["within"] and summary["passed"]
    assert {"summary.json", "summary.md", "estimate.json", "logs.tar.gz", "results.tar.gz"} <= set(files)
    assert summary["estimate_totals"]["gpu"]["total_min"] == 9.0
    assert driver.notebook_times(work / "logs" / "book.log") == {"06_training": 12.5}


def test_tar_leaves_out_the_largest_members_to_fit(tmp_path):
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_text("x")
    big.write_bytes(os.urandom(200_000))  # incompressible
    dropped = driver._tar(tmp_path / "a.tar.gz", [(small, "small.txt"), (big, "big.bin")], limit=100_000)
    assert dropped == ["big.bin"] and (tmp_path / "a.tar.gz").stat().st_size <= 100_000


def test_wheelhouse_holds_what_the_machine_lacks():
    assert build.wheel_name("jupyter_client-8.10.0-py3-none-any.whl") == "jupyter-client"
    assert build.normalise("PyYAML") == "pyyaml"
    assert {"torch", "numpy", "h5py", "pytest"} <= build.MACHINE_HAS
    assert not {build.normalise(n) for n in build.WANTED} & build.MACHINE_HAS
    assert set(build.MACHINE_NEEDED) <= build.MACHINE_HAS | {"scikit-learn", "scikit-image"}
    files = build.source_files()
    assert {"tools/gpu_bundle/run.sh", "moero/train/device.py", "_toc.yml"} <= set(files)
    data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "moero").rglob("*.yaml")]  # package data travels too
    assert set(data) <= set(files)
    assert not any(f.startswith(("_build/", ".venv/", "gpu-bundle/")) for f in files)


# -- the estimate


def _fake_steps(profile: str) -> dict:
    from moero.book.profiles import notebook_params

    params = notebook_params("06_training", profile)
    preset = params["train"]["preset"]
    one = {"flops": 10**9, "kernels": 1000, "peak_alloc_bytes": 3 * 2**20, "param_bytes": 2**20, "input_bytes": 2**16}
    two = {**one, "flops": 2 * 10**9 - 10**8, "kernels": 1900, "peak_alloc_bytes": 5 * 2**20, "param_bytes": 2**21}
    names = estimate._api("model_names")(params)
    steps = {f"{estimate.family(n)}@{preset}": {"shape": [32, 24], "c1": dict(one), "c2": dict(two)} for n in names}
    steps.update({f"params:{n}@{preset}": 2**20 for n in names})
    return steps


def test_cascade_extrapolation_is_linear():
    m = {"shape": [32, 24], "c1": {"flops": 10, "kernels": 5, "peak_alloc_bytes": 300, "param_bytes": 100,
                                   "input_bytes": 7},
         "c2": {"flops": 16, "kernels": 8, "peak_alloc_bytes": 500, "param_bytes": 150, "input_bytes": 7}}
    at12 = estimate.at_cascades(m, 12)
    assert at12["flops"] == 10 + 6 * 11 and at12["kernels"] == 5 + 3 * 11
    assert at12["activation_bytes"] == 200 + 150 * 11 and at12["input_bytes"] == 7 and at12["pixels"] == 768
    assert estimate.family("moero-12x4") == estimate.family("moero-2x2") == "moero"


def test_estimate_adds_up_and_scales_with_flops():
    steps = _fake_steps("smoke")
    est = estimate.profile_estimate("smoke", steps, {"data_smoke": 10.0})
    parts = est["parts"]
    assert est["total_s"] == pytest.approx(sum(v for v in parts.values() if v is not None), abs=0.2)
    assert parts["data_generation_s"] == 10.0 and est["runs"] > 0 and est["steps"] > 0
    slow = {k: {**v, "c1": {**v["c1"], "flops": v["c1"]["flops"] * 1000},
                "c2": {**v["c2"], "flops": v["c2"]["flops"] * 1000}} if isinstance(v, dict) else v
            for k, v in steps.items()}
    assert estimate.profile_estimate("smoke", slow, {})["parts"]["training_s"] > parts["training_s"]
    assert est["max_peak_gib"] > estimate.ASSUMPTIONS["cuda_context_gib"]
    md = estimate.render_markdown({"written": "now", "basis": "test", "assumptions": estimate.ASSUMPTIONS,
                                   "profiles": {"smoke": est}})
    assert md.startswith("**Estimate, not a measurement**") and "`smoke`" in md


def test_kernel_counter_and_flop_counter_see_a_step():
    from torch.utils.flop_counter import FlopCounterMode

    counter = estimate.KernelCounter()
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with FlopCounterMode(display=False) as flops, counter:
        (a @ b).relu().view(-1)
    assert flops.get_total_flops() == 2 * 4 * 8 * 3
    assert counter.count == 2  # mm and relu; the view launches nothing


def test_background_stage_is_joined_before_the_stage_that_needs_it(tmp_path, monkeypatch):
    import signal

    done = tmp_path / "data.done"
    bg = driver.Stage("data", [sys.executable, "-c", f"import time, pathlib; time.sleep(1); "
                                                     f"pathlib.Path({str(done)!r}).write_text('x')"],
                      30, 30, reserve_s=0.0, background=True)
    needs = driver.Stage("book", [sys.executable, "-c", f"import pathlib, sys; "
                                                        f"sys.exit(0 if pathlib.Path({str(done)!r}).exists() else 5)"],
                         30, 30, join=("data",))
    monkeypatch.setattr(driver, "stages", lambda *args, **kwargs: [bg, needs])
    handler = signal.getsignal(signal.SIGTERM)
    try:
        rc = driver.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--root", str(ROOT),
                          "--rehearse", "--budget", "120"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["stages"]] == [("data", "ok"), ("book", "ok")]
    assert rc == 0 and summary["bar"]["within"]


def test_timings_take_the_data_generation_cpu_time_on_a_shared_cpu(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "data.log").write_text("synthetic set smoke at /x in 90.0 s (cpu 30.5 s)\n")
    (tmp_path / "logs" / "book.log").write_text("01_forward_model: 12.0 s -> a\n09_efficiency: 7.5 s -> b\n")
    data = driver.StageResult("data", "ok", 90.0, 100.0, 0, "x", "data.log")
    rehearsed = driver.timings([data], tmp_path, "smoke", rehearse=True)
    assert rehearsed["data_smoke"] == 30.5 and rehearsed["data_reference"]["voxels"] > 0
    assert rehearsed[f"{driver.PROFILE}:09_efficiency"] == 7.5
    assert driver.timings([data], tmp_path, "smoke", rehearse=False)["data_smoke"] == 90.0  # a GPU machine's own
