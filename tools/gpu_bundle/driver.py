"""The GPU bundle's stages after the offline install: tests, benchmarks, data, chapters, estimate, packing.

Run by ``run.sh`` (standard library only, so it can still pack when the install failed)::

    python tools/gpu_bundle/driver.py --out OUT --work WORK --python VENV/bin/python [--rehearse]

Each stage is a subprocess in its own process group with its own time limit, cut further so that the
whole run ends within ``--budget`` seconds of ``--started``; a stage over its limit is stopped (SIGTERM,
then SIGKILL) and the run goes on. Whatever happened, OUT receives at most :data:`MAX_FILES` files of at
most :data:`MAX_FILE_BYTES` each: ``summary.json``/``summary.md`` (stages, times, environment, the
estimate's totals beside the measured ones), ``estimate.json``/``estimate.md``, and ``logs.tar.gz``,
``notebooks.tar.gz``, ``results.tar.gz``.

``--rehearse`` runs the same stages on CPU with every training cut to a few steps (:data:`REHEARSE_PARAMS`)
at the ``gpu-short`` shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROFILE = os.environ.get("MOERO_BUNDLE_PROFILE", "gpu-short")  # another profile only to try the bundle out
# in run order (moero.book.toc.run_order): chapter 8 shows chapter 9's timings, the claims page reads 06-09
NOTEBOOKS = ["01_forward_model", "06_training", "07_augmentation_ablation", "09_efficiency", "08_model_ablation",
             "claims"]
# every test that runs only with CUDA (tests/test_gpu_bundle.py checks that this list is complete)
CUDA_TESTS = [
    "tests/test_augment.py::test_gpu_matches_cpu",
    "tests/test_metrics.py::test_metrics_on_gpu_equal_cpu",
    "tests/test_gpu_bundle.py::test_cuda_pinned_copy_peak_memory_and_bf16",
]
BENCHMARKS = ["bench_moero", "bench_vq_prompt", "bench_augment"]  # the ones that run on a GPU when there is one
REHEARSE_BENCHMARKS = ["bench_moero"]  # the others take minutes on two CPU cores and have no size knob
# the rehearsal's cuts: two steps per training run, one test file per split at one acceleration, one timing round
REHEARSE_PARAMS: dict[str, Any] = {
    "budgets": [1, 2],
    "curve_budgets": [1, 2],
    "small_budgets": [1, 2],
    "eval_files": 1,
    "test_accelerations": [8],
    "threads": 2,  # this machine's cores: more intra-op threads only contend
    "09_efficiency.rounds": 1,
    "09_efficiency.warmup": 1,
    "09_efficiency.ddp_rounds": 1,
    "09_efficiency.stage_steps": 1,
}
REHEARSE_ENV = {"MOERO_BENCH_ROUNDS": "1", "MOERO_BENCH_SIZE": "32x24", "MOERO_BENCH_SMOKE": "1"}
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
PACK_RESERVE_S = 20.0


@dataclass
class Stage:
    name: str
    argv: list[str]
    limit_s: float  # on the GPU
    rehearse_limit_s: float  # on CPU
    reserve_s: float = 10.0  # what later stages keep back from earlier ones
    env: dict[str, str] = field(default_factory=dict)
    background: bool = False  # runs beside the next stages (CPU-bound work beside the GPU's)
    join: tuple[str, ...] = ()  # background stages to wait for before this one starts


@dataclass
class StageResult:
    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float
    limit_s: float
    returncode: int | None
    command: str
    log: str
    tail: str = ""


def dataset_size(profile: str = PROFILE) -> str:
    from moero.book.profiles import get_profile

    return get_profile(profile).dataset


def book_argv(python: str, rehearse: bool) -> list[str]:
    argv = [python, "-m", "moero", "book", "--profile", PROFILE, "--only", *NOTEBOOKS, "--no-html"]
    if rehearse:
        for key, value in REHEARSE_PARAMS.items():
            argv += ["-p", key, json.dumps(value)]
    return argv


ENV_SCRIPT = r"""
import json, os, platform, subprocess, sys
import torch
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                gpus=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported())
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                                         "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
except (OSError, subprocess.SubprocessError):
    info["nvidia_smi"] = None
import importlib.metadata as md
info["packages"] = {d.metadata["Name"]: d.version for d in md.distributions()
                    if d.metadata["Name"] and d.metadata["Name"].lower() in {
                        "torch", "numpy", "scipy", "h5py", "matplotlib", "papermill", "jupytext", "nbclient",
                        "ipykernel", "jupyter-client", "pyzmq", "scikit-image", "scikit-learn", "pytest"}}
print(json.dumps(info, indent=1, default=str))
with open(sys.argv[1], "w") as fh:
    json.dump(info, fh, indent=1, default=str)
"""

DATA_SCRIPT = r"""
import sys, time
from moero.data.synthetic import ensure_synthetic
from moero.paths import default_data_root
t, c = time.perf_counter(), time.process_time()
root = ensure_synthetic(default_data_root(sys.argv[1]), size=sys.argv[1], seed=0, progress=False)
print(f"synthetic set {sys.argv[1]} at {root} in {time.perf_counter() - t:.1f} s (cpu {time.process_time() - c:.1f} s)")
"""


def benchmark_argv(python: str, rehearse: bool, root: Path) -> list[str]:
    """``python -m benchmarks``: the GPU-relevant ones; in the rehearsal at their smoke sizes where the runner
    has ``--smoke``, else only those with a size knob (:data:`REHEARSE_ENV`)."""
    argv = [python, "-m", "benchmarks"]
    if not rehearse:
        return argv + BENCHMARKS
    runner = root / "benchmarks" / "__main__.py"
    if runner.is_file() and "--smoke" in runner.read_text():
        return argv + ["--smoke", *BENCHMARKS]
    return argv + REHEARSE_BENCHMARKS


def stages(python: str, work: Path, rehearse: bool, size: str, root: Path | None = None) -> list[Stage]:
    """The stages in order (the same list on GPU and in the rehearsal; the rehearsal's limits and cuts)."""
    device = "cpu" if rehearse else "cuda"
    root = root or Path(__file__).resolve().parents[2]
    estimate = [python, str(Path(__file__).with_name("estimate.py")), "--steps", str(work / "steps.json"),
                "--device", device, "--profiles", *dict.fromkeys([PROFILE, "gpu", "paper"])]
    return [
        Stage("environment", [python, "-c", ENV_SCRIPT, str(work / "environment.json")], 45, 60),
        # CPU work beside the GPU's: the synthetic data and the estimate's FLOP and memory measurements
        Stage("data", [python, "-c", DATA_SCRIPT, size], 200, 420, reserve_s=0.0, background=True),
        Stage("estimate-measure", [*estimate, "--measure-only", "--threads", "1"], 300, 600, reserve_s=0.0,
              background=True),
        Stage("cuda-tests", [python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                             f"--junitxml={work / 'logs' / 'cuda-tests.xml'}", *CUDA_TESTS], 60, 150),
        Stage("benchmarks", benchmark_argv(python, rehearse, root), 75, 170, env=REHEARSE_ENV if rehearse else {}),
        Stage("book", book_argv(python, rehearse), 420, 900, join=("data",)),
        Stage("estimate", [*estimate, "--out", str(work / "estimate.json"), "--timings", str(work / "timings.json")],
              30, 60, reserve_s=30.0, join=("estimate-measure",)),
    ]


@dataclass
class Running:
    stage: Stage
    proc: subprocess.Popen | None
    started: float
    limit: float
    log: Path
    command: str
    started_wall: float = field(default_factory=time.time)


def start_stage(stage: Stage, limit: float, cwd: Path, env: dict[str, str], log_dir: Path) -> Running:
    """Start one stage in its own process group (nothing when ``limit`` leaves no time)."""
    log = log_dir / f"{stage.name}.log"
    command = shlex.join(stage.argv)
    if limit <= 1:
        log.write_text("skipped: no time left in the run's budget\n")
        return Running(stage, None, time.monotonic(), limit, log, command)
    print(f"[{time.strftime('%H:%M:%S')}] {stage.name}: started (limit {limit:.0f} s)", flush=True)
    with open(log, "w") as fh:
        fh.write(f"$ {command}\n")
        fh.flush()
        proc = subprocess.Popen(stage.argv, cwd=cwd, env={**env, **stage.env}, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Running(stage, proc, time.monotonic(), limit, log, command)


def finish_stage(run: Running, deadline: float | None = None) -> StageResult:
    """Wait for a started stage until its limit (or the monotonic ``deadline``, if sooner); stop it then."""
    name = run.stage.name
    if run.proc is None:
        return StageResult(name, "skipped", 0.0, run.limit, None, run.command, run.log.name, "no time left")
    end = run.started + run.limit if deadline is None else min(run.started + run.limit, deadline)
    done_before = run.proc.poll() is not None  # a background stage that ended before it was joined
    status = "ok"
    try:
        run.proc.wait(timeout=max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        status = "timeout"
        _stop(run.proc)
    except BaseException:
        _stop(run.proc)
        raise
    rc = run.proc.returncode
    if status == "ok" and rc != 0:
        status = "failed"
    seconds = time.monotonic() - run.started
    if done_before:  # its log's last write, not the join, is when it ended
        seconds = min(seconds, max(0.0, run.log.stat().st_mtime - run.started_wall))
    tail = "\n".join(run.log.read_text(errors="replace").splitlines()[-15:])
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {status} in {seconds:.0f} s (exit {rc})", flush=True)
    if status != "ok":
        print(tail, flush=True)
    return StageResult(name, status, round(seconds, 1), round(run.limit, 1), rc, run.command, run.log.name, tail)


def run_stage(stage: Stage, limit: float, cwd: Path, env: dict[str, str], log_dir: Path) -> StageResult:
    """Run one stage in its own process group; stop it (TERM, then KILL) at ``limit`` seconds."""
    return finish_stage(start_stage(stage, limit, cwd, env, log_dir))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the stage's process group, SIGKILL what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def notebook_times(book_log: Path) -> dict[str, float]:
    """``{notebook: seconds}`` from the runner's closing lines (``06_training: 41.2 s -> ...``)."""
    out = {}
    if book_log.is_file():
        for line in book_log.read_text(errors="replace").splitlines():
            m = re.match(r"^(\d\d_[A-Za-z_]+): ([0-9.]+) s -> ", line)
            if m:
                out[m.group(1)] = float(m.group(2))
    return out


def timings(results: list[StageResult], work: Path, size: str, rehearse: bool) -> dict[str, Any]:
    """What the estimate takes as measured: data generation and the two chapters it does not model."""
    out: dict[str, Any] = {"rehearse": rehearse}
    data = next((r for r in results if r.name == "data" and r.status == "ok"), None)
    if data is not None:
        text = (work / "logs" / data.log).read_text()
        m, cpu = re.search(r" in ([0-9.]+) s", text), re.search(r"\(cpu ([0-9.]+) s\)", text)
        if m:
            # on a shared CPU the wall time counts the others' load: the process's CPU time is what an idle
            # core takes (the generator runs in one process)
            seconds = min(float(m.group(1)), float(cpu.group(1))) if rehearse and cpu else float(m.group(1))
            try:
                from moero.data.synthetic import plan_dataset

                voxels = sum(s.readout * s.phase * s.frames * s.slices for s in plan_dataset(size, 0))
            except Exception:  # noqa: BLE001 - the estimate then shows the data time as not measured
                voxels = 0
            out[f"data_{size}"] = seconds
            if voxels:
                out["data_reference"] = {"size": size, "seconds": seconds, "voxels": voxels}
    for nb, seconds in notebook_times(work / "logs" / "book.log").items():
        if nb in ("01_forward_model", "09_efficiency"):
            out[f"{PROFILE}:{nb}"] = seconds
    out["chapters_basis"] = ("the CPU rehearsal's wall time (09 cut to one timed round): an upper bound"
                             if rehearse else "measured on this GPU machine")
    return out


def _tar(out: Path, members: list[tuple[Path, str]], limit: int = MAX_FILE_BYTES - 2**20) -> list[str]:
    """Write ``out`` (gzip tar of ``(path, arcname)``), leaving out the largest members until it fits
    ``limit``; returns the arcnames left out."""
    members = sorted(((p, a) for p, a in members if p.is_file()), key=lambda m: m[0].stat().st_size)
    dropped: list[str] = []
    while True:
        with tarfile.open(out, "w:gz", compresslevel=6) as tar:
            for path, arc in members:
                tar.add(path, arcname=arc)
        if out.stat().st_size <= limit or not members:
            return dropped
        dropped.append(members.pop()[1])


def pack(out: Path, work: Path, results: list[StageResult], meta: dict[str, Any]) -> dict[str, Any]:
    """Write OUT's files; returns the summary (also written as summary.json and summary.md)."""
    out.mkdir(parents=True, exist_ok=True)
    build = work / "_build"
    left_out: dict[str, list[str]] = {}
    logs = [(p, f"logs/{p.name}") for p in sorted((work / "logs").glob("*"))]
    logs += [(work / "environment.json", "environment.json"), (work / "timings.json", "timings.json")]
    left_out["logs.tar.gz"] = _tar(out / "logs.tar.gz", logs)
    executed = build / "executed" / PROFILE
    left_out["notebooks.tar.gz"] = _tar(out / "notebooks.tar.gz",
                                        [(p, f"executed/{p.name}") for p in sorted(executed.glob("*.ipynb"))])
    results_files = [(p, f"results/{p.relative_to(build / 'results' / PROFILE)}")
                     for p in sorted((build / "results" / PROFILE).rglob("*")) if p.is_file()]
    bench = Path(meta["root"]) / "_build" / "benchmarks"
    results_files += [(p, f"benchmarks/{p.name}") for p in sorted(bench.glob("*"))]
    runs = build / "runs" / PROFILE
    keep = {"metrics.jsonl", "segments.jsonl", "routing.jsonl", "experiment.json", "config.yaml"}
    results_files += [(p, f"runs/{p.relative_to(runs)}") for p in sorted(runs.rglob("*")) if p.name in keep]
    left_out["results.tar.gz"] = _tar(out / "results.tar.gz", results_files)
    estimate: dict[str, Any] = {}
    if (work / "estimate.json").is_file():
        estimate = json.loads((work / "estimate.json").read_text())
        (out / "estimate.json").write_text(json.dumps(estimate, indent=2))
        if (work / "estimate.md").is_file():
            (out / "estimate.md").write_text((work / "estimate.md").read_text())
    env = json.loads((work / "environment.json").read_text()) if (work / "environment.json").is_file() else {}
    wall = time.time() - meta["started"]
    book = next((r for r in results if r.name == "book"), None)
    data = next((r for r in results if r.name == "data"), None)
    measured_short = (book.seconds if book else 0.0) + (data.seconds if data else 0.0)
    est_short = estimate.get("profiles", {}).get(PROFILE, {}).get("total_s")
    summary = {
        **meta,
        "wall_s": round(wall, 1),
        "environment": env,
        "stages": [asdict(r) for r in results],
        # a GPU run on a machine whose torch sees no GPU would pass on CPU, its CUDA tests skipped: not a pass
        "passed": all(r.status == "ok" for r in results) and meta.get("install_rc") == 0
        and (meta["rehearse"] or bool(env.get("cuda_available"))),
        "gpu_short": {"measured_data_plus_book_s": round(measured_short, 1), "estimated_s": est_short,
                      "note": "the rehearsal's figure is a CPU run cut to a few steps" if meta["rehearse"] else ""},
        "estimate_totals": {p: {"total_min": e.get("total_min"), "max_peak_gib": e.get("max_peak_gib")}
                            for p, e in estimate.get("profiles", {}).items()},
        "left_out": {k: v for k, v in left_out.items() if v},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "summary.md").write_text(summary_markdown(summary))
    files = sorted(p for p in out.iterdir() if p.is_file())
    summary["files"] = {p.name: p.stat().st_size for p in files}
    summary["bar"] = {
        "files": len(files), "max_files": MAX_FILES,
        "largest_bytes": max((p.stat().st_size for p in files), default=0), "max_file_bytes": MAX_FILE_BYTES,
        "within": len(files) <= MAX_FILES and all(p.stat().st_size <= MAX_FILE_BYTES for p in files),
        "estimate_written": bool(estimate),
        "wall_s": round(time.time() - meta["started"], 1), "budget_s": meta["budget_s"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


def summary_markdown(s: dict[str, Any]) -> str:
    env = s.get("environment", {})
    lines = [f"# moero GPU bundle: {'REHEARSAL on CPU' if s['rehearse'] else 'GPU run'}: "
             f"{'PASSED' if s['passed'] else 'NOT PASSED'}", "",
             f"commit {s.get('commit', '?')}, bundle built {s.get('built', '?')}; "
             f"{env.get('gpu') or 'no GPU'}, torch {env.get('torch', '?')}, Python {env.get('python', '?')}, "
             f"{env.get('cpus', '?')} CPUs, load {env.get('load_avg', '?')}; wall {s['wall_s']:.0f} s "
             f"of a {s['budget_s']:.0f} s budget (install {s.get('install_s', 0):.0f} s, exit {s.get('install_rc')})",
             "", "| stage | status | seconds | limit |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.0f} | {r['limit_s']:.0f} |" for r in s["stages"]]
    if s.get("estimate_totals"):
        lines += ["", "Estimate on one H200 (an ESTIMATE, see estimate.md): " + ", ".join(
            f"{p} {v['total_min']} min, peak {v['max_peak_gib']} GiB" for p, v in s["estimate_totals"].items())]
    g = s.get("gpu_short", {})
    lines += ["", f"gpu-short measured (data + chapters): {g.get('measured_data_plus_book_s')} s; "
                  f"estimated {g.get('estimated_s')} s {g.get('note', '')}"]
    if s.get("files"):
        lines += ["", "Files: " + ", ".join(f"{k} ({v / 2**20:.2f} MiB)" for k, v in s["files"].items())]
    if s.get("left_out"):
        lines += ["", f"Left out of the archives (size limit): {s['left_out']}"]
    return "\n".join(lines) + "\n"


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stop(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the GPU bundle's stages after the install")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="the package checkout")
    parser.add_argument("--python", default=sys.executable, help="the virtual environment's python")
    parser.add_argument("--rehearse", action="store_true")
    parser.add_argument("--started", type=float, default=None, help="epoch seconds run.sh started")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (run.sh included)")
    parser.add_argument("--install-rc", type=int, default=0)
    parser.add_argument("--install-s", type=float, default=0.0)
    parser.add_argument("--only", nargs="+", default=None, help="run only these stages (debugging)")
    args = parser.parse_args(argv)
    started = args.started or time.time()
    default_budget = 900.0 if args.rehearse else 585.0
    budget = args.budget or default_budget
    scale = max(1.0, budget / default_budget)  # a larger budget (a slower or shared machine) widens every stage
    deadline = started + budget - PACK_RESERVE_S
    work, out, root = args.work.resolve(), args.out.resolve(), args.root.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    manifest = root.parent / "MANIFEST.json"
    meta: dict[str, Any] = {"rehearse": args.rehearse, "started": started, "budget_s": budget,
                            "install_rc": args.install_rc, "install_s": args.install_s, "profile": PROFILE,
                            "root": str(root)}
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        meta.update(commit=m.get("commit"), built=m.get("built"))
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")])),
               MOERO_BUILD_DIR=str(work / "_build"), PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               MPLCONFIGDIR=str(work / "mpl"), IPYTHONDIR=str(work / "ipython"),
               JUPYTER_RUNTIME_DIR=str(work / "jupyter-runtime"), JUPYTER_DATA_DIR=str(work / "jupyter-data"),
               # the environment's own kernel first: a user's or the machine's "python3" kernel is another python
               JUPYTER_PATH=str(Path(args.python).parent.parent / "share" / "jupyter"),
               MOERO_COMMIT=str(meta.get("commit") or ""))
    sys.path.insert(0, str(root))
    try:
        size = dataset_size()
    except Exception as err:  # noqa: BLE001 - an install that failed: still pack what there is
        print(f"cannot read the profile {PROFILE}: {err}", flush=True)
        size = "cpu"
    results: list[StageResult] = []
    background: list[Running] = []
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        todo = [s for s in stages(args.python, work, args.rehearse, size, root) if not args.only or s.name in args.only]
        for i, stage in enumerate(todo):
            own = (stage.rehearse_limit_s if args.rehearse else stage.limit_s) * scale
            later = sum(s.reserve_s for s in todo[i + 1:])
            if stage.join:  # wait for the background stages it needs, within the time it leaves them
                until = time.monotonic() + deadline - time.time() - later - stage.reserve_s
                results += [finish_stage(b, until) for b in background if b.stage.name in stage.join]
                background = [b for b in background if b.stage.name not in stage.join]
            limit = 0.0 if args.install_rc != 0 else min(own, deadline - time.time() - later)
            if stage.name == "book":
                env["MOERO_CELL_TIMEOUT"] = str(max(1, int(limit)))
            started = start_stage(stage, limit, root, env, work / "logs")
            if stage.background:
                background.append(started)
                continue
            results.append(finish_stage(started))
            if stage.name == "book":
                (work / "timings.json").write_text(json.dumps(timings(results, work, size, args.rehearse), indent=1))
    except (_Stop, KeyboardInterrupt) as err:
        print(f"stopped ({err}); packing what there is", flush=True)
    for b in background:  # never joined (a stage list cut short): stop what still runs, record it
        results.append(finish_stage(b, time.monotonic()))
    if not (work / "timings.json").is_file():
        (work / "timings.json").write_text(json.dumps(timings(results, work, size, args.rehearse), indent=1))
    summary = pack(out, work, results, meta)
    print(summary_markdown(summary), flush=True)
    return 0 if summary["passed"] and summary["bar"]["within"] else 1


if __name__ == "__main__":
    sys.exit(main())
