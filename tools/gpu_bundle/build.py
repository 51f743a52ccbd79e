"""``make gpu-bundle``: write ``gpu-bundle/`` for a GPU machine with no network (at most 40 MiB).

Contents: ``src/`` (the package, notebooks, tests, benchmarks and this tool, as a clean clone would hold
them: tracked and untracked-but-not-ignored files), ``wheelhouse/`` (wheels for CPython 3.12 and 3.11,
manylinux x86_64, of what the GPU machine lacks: papermill, jupytext, nbclient, ipykernel, ipywidgets
and their dependencies, less :data:`MACHINE_HAS`), ``machine-standin.txt`` (the machine's own packages
that the run needs, for the CPU rehearsal to install from the index), ``run.sh`` and ``MANIFEST.json``.
Wheels are downloaded once into ``_build/gpu-wheels/`` (ignored) and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 40 * 2**20
PYTHONS = ("3.12", "3.11")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# what the run needs that the GPU machine lacks (its image has no notebook stack)
WANTED = ("papermill", "jupytext", "nbclient", "nbformat", "ipykernel", "jupyter_client", "pyzmq", "ipywidgets")
# the package's own needs, all on the machine: the rehearsal installs them into its torch-only environment
MACHINE_NEEDED = ("numpy", "scipy", "h5py", "scikit-learn", "scikit-image", "matplotlib", "tqdm", "pyyaml", "pytest")
# the GPU machine's Python packages (the device notes' list for the nvidia-h200 image, read 2026-11-17)
MACHINE_HAS = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
SOURCE_PATHS = ("moero", "notebooks", "benchmarks", "tests", "tools/gpu_bundle", "configs", "_toc.yml", "_config.yml",
                "pyproject.toml", "constraints.txt", "LICENSE", "CITATION.cff")


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> str:
    """Distribution name of a wheel file, normalised."""
    return normalise(filename.split("-")[0])


def source_files(root: Path = ROOT) -> list[str]:
    """What a clean clone holds of :data:`SOURCE_PATHS`: tracked and untracked-not-ignored files that exist."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *SOURCE_PATHS],
                         cwd=root, capture_output=True, text=True, check=True).stdout.split("\n")
    return sorted({f for f in out if f and (root / f).is_file()})


def download(dest: Path, python: str, log: Path) -> list[Path]:
    """Wheels of :data:`WANTED` and their dependencies for CPython ``python`` (pinned by constraints.txt)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}",
           *[f"--platform={p}" for p in PLATFORMS], "-c", str(ROOT / "constraints.txt"), "-d", str(dest), *WANTED]
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)
    return sorted(dest.glob("*.whl"))


def constraint_pins(root: Path = ROOT) -> dict[str, str]:
    pins = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[normalise(name.strip())] = version.strip()
    return pins


def build(out: Path, cache: Path) -> dict:
    """Write the bundle to ``out`` (replaced); returns its manifest."""
    if out.exists():
        shutil.rmtree(out)
    (out / "src").mkdir(parents=True)
    files = source_files()
    for rel in files:
        target = out / "src" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir()
    log = cache / "download.log"
    cache.mkdir(parents=True, exist_ok=True)
    closure: set[str] = set()
    for python in PYTHONS:
        for wheel in download(cache / python, python, log):
            name = wheel_name(wheel.name)
            closure.add(name)
            if name not in MACHINE_HAS and name != "torch":
                shutil.copy2(wheel, wheelhouse / wheel.name)
    (wheelhouse / "requirements.txt").write_text("\n".join(WANTED) + "\n")
    pins = constraint_pins()
    standin = sorted({normalise(n) for n in MACHINE_NEEDED} | (closure & MACHINE_HAS))
    (out / "machine-standin.txt").write_text(
        "# the GPU machine's own packages that the run needs; the CPU rehearsal installs these from the index\n"
        + "\n".join(f"{n}=={pins[n]}" if n in pins else n for n in standin) + "\n")
    shutil.copy2(Path(__file__).with_name("run.sh"), out / "run.sh")
    (out / "run.sh").chmod(0o755)
    shutil.copy2(Path(__file__).with_name("README.txt"), out / "README.txt")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest = {
        "commit": commit + ("+dirty" if dirty else ""),
        "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "pythons": list(PYTHONS), "source_files": len(files), "wheels": wheels,
        "wheelhouse_bytes": sum(p.stat().st_size for p in wheelhouse.glob("*.whl")),
        "machine_standin": standin, "bytes": size,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    manifest["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-bundle")
    parser.add_argument("--cache", type=Path, default=ROOT / "_build" / "gpu-wheels")
    args = parser.parse_args(argv)
    manifest = build(args.out.resolve(), args.cache.resolve())
    mib = manifest["bytes"] / 2**20
    print(f"{args.out}: {mib:.1f} MiB ({len(manifest['wheels'])} wheels, "
          f"{manifest['wheelhouse_bytes'] / 2**20:.1f} MiB; {manifest['source_files']} source files), "
          f"commit {manifest['commit']}")
    print(f"run it on the GPU machine: {args.out}/run.sh OUTDIR    rehearse here: {args.out}/run.sh OUTDIR --rehearse")
    if manifest["bytes"] > MAX_BYTES:
        print(f"error: the bundle is {mib:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
