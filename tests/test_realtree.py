"""Real CMRxRecon2025 trees end to end (issue 28): the organisers' names, the 2025 test phase,
Submission.zip, FullSample_<Task> truth, eval --centres, fastMRI masks/tables/reconstructions, the
container entrypoint, watchable headless runs and imports without Unix-only modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from realtree import REAL_VENDORS, make_real_tree

from moero.cli import main
from moero.data.layout import layout_index, parse_layout_path
from moero.data.testphase import CHALLENGE_PATTERNS_2024, write_test_phase
from moero.eval.evaluate import ZeroFilled
from moero.train.predict import predict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real(tmp_path_factory, smoke_data) -> Path:
    """The smoke set under the organisers' names (tests/realtree.py), no manifest."""
    return make_real_tree(smoke_data, tmp_path_factory.mktemp("real") / "tree")


@pytest.fixture(scope="module")
def phase(tmp_path_factory, real) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("realphase")
    rows = write_test_phase(real, tmp / "test", tmp / "truth", task="TaskR1", seed=1)
    return {"test": tmp / "test", "truth": tmp / "truth", "rows": rows, "tmp": tmp}


# ---------------------------------------------------------------------------- 1. any names the layout allows
def test_the_layout_indexes_real_names_and_fresh_centres_without_a_manifest(real):
    assert not (real / "manifest.csv").exists()
    rows = layout_index(real)
    vendors = {r["vendor"] for r in rows}
    assert {"UIH_30T_umr780", "Siemens_30T_CIMA.X"} <= vendors and not vendors & set(REAL_VENDORS)
    assert {"Flow2d", "T1rho", "Perfusion", "BlackBlood", "T1w"} <= {r["modality"] for r in rows}
    fresh = {r["centre"] for r in rows if r["split"] == "fresh"}
    assert fresh == {r["centre"] for r in rows if r["set"] == "ValidationSet"} and fresh


def test_full_sample_task_folders_are_truth_of_their_task():
    row = parse_layout_path(Path("MultiCoil/Cine/TestSet/FullSample_TaskR1/Center001/UIH_30T_umr780/P001/cine_sax.mat"))
    assert row["kind"] == "full" and row["task"] == "TaskR1" and row["vendor"] == "UIH_30T_umr780"
    assert parse_layout_path(Path("MultiCoil/Cine/TestSet/FullSampleX/C/V/P001/cine_sax.mat")) is None


# ---------------------------------------------------------------------------- 2. the 2025 test phase
def test_the_test_phase_follows_the_2025_rules_and_keeps_2024_behind_an_option(phase, smoke_data, tmp_path):
    drawn = {(r["pattern"], r["acceleration"]) for r in phase["rows"]}
    assert {r for _, r in drawn} <= {8, 16, 24} and ("Uniform", 16) in drawn and ("Uniform", 24) in drawn
    kus = {Path(r["kus"]).name for r in phase["rows"]}
    assert any(n.endswith("_kus_Uniform16.mat") for n in kus) and any(n.endswith("_kus_Uniform24.mat") for n in kus)
    assert all("/TestSet/FullSample_TaskR1/" in r["truth"] for r in phase["rows"])
    from moero.data.readers import load_cmrxrecon

    row = next(r for r in phase["rows"] if r["pattern"] == "Uniform")
    mask = load_cmrxrecon(phase["test"] / row["kus"], phase["test"] / row["mask"]).mask
    w = mask.shape[-1]
    lines = mask[0, 0]  # every R-th line plus 20 ACS lines, the same in every frame
    assert bool((mask == lines).all()) and lines[w // 2 - 10:w // 2 + 10].all()
    assert int(lines.sum()) <= w // row["acceleration"] + 21
    old = write_test_phase(smoke_data, tmp_path / "t24", tmp_path / "t24-truth", rules="2024", seed=1)
    allowed = {(p, r) for p, rs in CHALLENGE_PATTERNS_2024.items() for r in rs}
    assert {(r["pattern"], r["acceleration"]) for r in old} <= allowed
    with pytest.raises(ValueError, match="rules"):
        write_test_phase(smoke_data, tmp_path / "x", tmp_path / "x-truth", rules="2023")


# ---------------------------------------------------------------------------- 3. Submission.zip, truth, --centres
def _tree_with_two_tasks(phase: dict, dest: Path) -> Path:
    """The test phase with its TaskR1 files also as TaskR2."""
    import shutil

    shutil.copytree(phase["test"], dest)
    for path in sorted(dest.rglob("*.mat")):
        parts = [p.replace("_TaskR1", "_TaskR2") for p in path.relative_to(dest).parts]
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


def test_submission_zip_holds_every_task_and_scores_against_full_sample_task_truth(phase, tmp_path, capsys):
    data = _tree_with_two_tasks(phase, tmp_path / "data")
    out = tmp_path / "out"
    first = predict(None, data, "TaskR1", out, "cpu", progress=False, model=ZeroFilled(), frames=1)
    assert Path(first["zip"]).name == "Submission.zip"
    second = predict(None, data, "TaskR2", out, "cpu", progress=False, model=ZeroFilled(), frames=1)
    with zipfile.ZipFile(second["zip"]) as zf:
        names = zf.namelist()
    assert len(names) == 2 * len(phase["rows"]) and {n.split("/")[0] for n in names} == {"TaskR1", "TaskR2"}
    assert all(n.split("/")[1] == "MultiCoil" for n in names)

    centres = tmp_path / "centres.csv"
    scored_centre = Path(phase["rows"][0]["truth"]).parts[4]
    centres.write_text(f"centre,role\n{scored_centre},fresh\n")
    only_r1 = tmp_path / "r1"
    only_r1.mkdir()
    with zipfile.ZipFile(second["zip"]) as zf:
        zf.extractall(only_r1, [n for n in names if n.startswith("TaskR1/")])
    zipped = tmp_path / "Submission.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for path in sorted(only_r1.rglob("*.mat")):
            zf.write(path, path.relative_to(only_r1).as_posix())
    truth_manifest = phase["truth"] / "manifest.csv"
    truth = tmp_path / "truth"  # the organisers' truth: FullSample_TaskR1 folders, no manifest
    import shutil

    shutil.copytree(phase["truth"], truth, ignore=shutil.ignore_patterns("manifest.csv"))
    assert truth_manifest.is_file() and not (truth / "manifest.csv").exists()
    capsys.readouterr()
    assert main(["eval", "--submission", str(zipped), "--ground-truth", str(truth), "--centres", str(centres),
                 "--out", str(tmp_path / "scores")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not report["missing"] and not report["not_scored"] and report["overall"][0]["files"] == len(phase["rows"])
    assert any(s["split"] == "fresh" and s["files"] >= 1 for s in report["splits"])
    assert main(["eval", "--submission", str(zipped), "--ground-truth", str(truth), "--centres",
                 str(tmp_path / "nope.csv")]) == 2
    assert "--centres" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 6. fastMRI
def test_fastmri_masks_follow_the_fastmri_challenge():
    from moero.physics.fastmri_masks import center_fraction, fastmri_columns, fastmri_mask

    assert center_fraction(4) == 0.08 and center_fraction(8) == 0.04
    for kind in ("fastmri_random", "fastmri_equispaced"):
        for r in (4, 8):
            cols = fastmri_columns(kind, 368, r, seed=(1, 2, 3))
            n_low = round(368 * center_fraction(r))
            pad = (368 - n_low + 1) // 2
            assert cols[pad:pad + n_low].all()
            assert abs(cols.sum() - 368 / r) < 0.25 * 368 / r  # about W / R columns in all
            assert np.array_equal(cols, fastmri_columns(kind, 368, r, seed=(1, 2, 3)))
    eq = fastmri_columns("fastmri_equispaced", 368, 4, seed=0)
    outside = np.flatnonzero(eq[: (368 - 29 + 1) // 2])
    assert len(set(np.diff(outside))) <= 2  # equispaced (rounded spacing)
    mask = fastmri_mask("fastmri_random", (2, 5, 368), 4, seed=0)
    assert mask.shape == (2, 5, 368) and bool((mask == mask[0, 0]).all())
    with pytest.raises(ValueError, match="kind"):
        fastmri_columns("uniform", 368, 4)


def _fastmri_folder(folder: Path, files: int = 2, with_mask: bool = False) -> None:
    from moero.physics.fft import fft2c, ifft2c
    from moero.physics.phantom import shepp_logan
    from moero.physics.sense import rss

    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(5)
    for i in range(files):
        image = shepp_logan(64, 48)
        slices = torch.stack([image * (1 + s) for s in range(3)])
        coils = slices[:, None] * (1 + 0.3 * torch.rand((3, 4, 1, 1), generator=gen))
        kspace = fft2c(coils + 0.01 * torch.randn(coils.shape, generator=gen, dtype=torch.complex64))
        with h5py.File(folder / f"file{i}.h5", "w") as f:
            if with_mask:
                m = np.zeros(48, bool)
                m[::4] = True
                m[22:26] = True
                f["kspace"] = (kspace * torch.from_numpy(m)).numpy()
                f["mask"] = m
            else:
                f["kspace"] = kspace.numpy()
                f["reconstruction_rss"] = rss(ifft2c(kspace), dim=1)[:, 12:52, 4:44].numpy()


def test_fastmri_folder_trains_scores_per_acceleration_and_predicts_leaderboard_files(tmp_path, capsys):
    folder, test = tmp_path / "multicoil_val", tmp_path / "multicoil_test"
    _fastmri_folder(folder)
    _fastmri_folder(test, files=1, with_mask=True)
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(folder), "--run-dir", str(run), "--device", "cpu", "--progress",
                 "false", "--preset", "tiny", "--model", "promptmr", "--max-steps", "1",
                 "--set", "mask_kinds=[fastmri_random]", "--set", "accelerations=[4,8]"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--data-root", str(folder), "--device", "cpu",
                 "--out", str(tmp_path / "eval")]) == 0
    splits = {s["split"]: s for s in json.loads(capsys.readouterr().out)["splits"]}
    assert {"total", "R4", "R8"} <= set(splits) and splits["R4"]["files"] == 2
    assert splits["R4"]["ssim"] != splits["R8"]["ssim"]
    files = (tmp_path / "eval" / "eval_files.csv").read_text()
    assert "acceleration" in files.splitlines()[0] and "fastmri_random" in files

    out = tmp_path / "sub"
    for data in (test, folder):  # a file's own mask; a fully sampled file gets fastMRI's mask
        assert main(["predict", "--checkpoint", str(run), "--data", str(data), "--out", str(out),
                     "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    recon = sorted((out / "reconstructions").glob("*.h5"))
    assert [p.name for p in recon] == ["file0.h5", "file1.h5"]  # file0 of the test folder, then rewritten
    with h5py.File(recon[0]) as f:
        assert f["reconstruction"].shape == (3, 320, 320) and f["reconstruction"].dtype == np.float32


# ---------------------------------------------------------------------------- 7. the container entrypoint
def test_the_container_entrypoint_predicts_the_synthetic_test_phase(tmp_path, smoke_data):
    from moero.train.config import TrainConfig
    from moero.train.trainer import train

    phase_dir = tmp_path / "input"
    write_test_phase(smoke_data, phase_dir, tmp_path / "truth", seed=2)
    run = tmp_path / "run"
    train(TrainConfig.from_dict({"data_root": str(smoke_data), "run_dir": str(run), "device": "cpu",
                                 "progress": False, "preset": "tiny", "model": "promptmr", "max_steps": 1}))
    env = {**os.environ, "MOERO_INPUT": str(phase_dir), "MOERO_OUTPUT": str(tmp_path / "output"),
           "MOERO_CHECKPOINT": str(run / "checkpoint.pt"), "MOERO_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    script = ROOT / "docker" / "entrypoint.sh"
    proc = subprocess.run(["sh", str(script), "--device", "cpu"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["tasks"] == ["TaskR1"]
    with zipfile.ZipFile(tmp_path / "output" / "Submission.zip") as zf:
        assert all(n.startswith("TaskR1/MultiCoil/") for n in zf.namelist()) and zf.namelist()
    missing = subprocess.run(["sh", str(script)], env={**env, "MOERO_CHECKPOINT": str(tmp_path / "none.pt")},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: checkpoint")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ENTRYPOINT" in dockerfile and "docker/entrypoint.sh" in dockerfile


# ---------------------------------------------------------------------------- 5. portability
HIDE = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name in ("resource", "fcntl"):
            raise ImportError(f"{name} is hidden (as on Windows)")
        return None
sys.meta_path.insert(0, Block())
for name in ("resource", "fcntl"):
    sys.modules.pop(name, None)
import moero
failed = []
for info in pkgutil.walk_packages(moero.__path__, "moero."):
    try:
        importlib.import_module(info.name)
    except Exception as err:
        failed.append(f"{info.name}: {type(err).__name__}: {err}")
print("\\n".join(failed) or "ok")
"""


def test_every_module_imports_without_resource_and_fcntl():
    proc = subprocess.run([sys.executable, "-c", HIDE], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr[-2000:]
    # the locks go through filelock (msvcrt on Windows), never fcntl directly
    sources = {p: p.read_text() for p in (ROOT / "moero").rglob("*.py")}
    assert not [p for p, text in sources.items() if "import fcntl" in text]


def test_peak_memory_without_resource(monkeypatch):
    import builtins

    from moero.train.device import peak_memory_bytes

    real_import = builtins.__import__

    def no_resource(name, *args, **kwargs):
        if name == "resource":
            raise ImportError("no resource")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_resource)
    assert peak_memory_bytes("cpu") >= 0


# ---------------------------------------------------------------------------- 4. headless runs you can watch
def test_cell_labels_and_the_cell_timeout_option(monkeypatch):
    from moero.book.execute import CellWatch, PrefixWriter, cell_label, cell_timeout

    assert cell_label("import time\n# Train the model for real\ntime.sleep(1)") == "Train the model for real"
    assert cell_label("x = 1\ny = 2") == "x = 1" and cell_label("") == "(empty cell)"
    monkeypatch.setenv("MOERO_CELL_TIMEOUT", "5")
    assert cell_timeout("smoke") == 5 and cell_timeout("smoke", 0) is None and cell_timeout("paper", 30) == 30
    monkeypatch.delenv("MOERO_CELL_TIMEOUT")
    assert cell_timeout("smoke") == 600 and cell_timeout("gpu") is None
    import io

    stream, seen = io.StringIO(), []
    watch = CellWatch("07_x", 3, log_output=True, status=seen.append, stream=stream)
    watch.start(type("Cell", (), {"cell_type": "code", "source": "import os\n# Fit\nos.getpid()"})(), 1)
    writer = PrefixWriter("07_x", stream)
    writer.write("epoch 1\nepoch")
    writer.write(" 2\n")
    assert seen == ["cell 2/3: Fit"] and watch.describe() == "cell 2 ('Fit')"
    assert stream.getvalue() == "[07_x] cell 2/3: Fit\n[07_x] epoch 1\n[07_x] epoch 2\n"
    assert main(["book", "--profile", "smoke", "--cell-timeout", "-1", "--only", "00_profiles", "--no-html"]) == 2


HEADER = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "smoke"
"""


@pytest.mark.slow
def test_log_output_streams_cells_and_a_timeout_names_its_cell(tmp_path, capfd):
    from moero.book.runner import NotebookFailed, run_notebook

    src = tmp_path / "watched.py"
    src.write_text(HEADER + "\n# %%\n# Say hello\nprint('hello from the kernel')\n\n# %%\nimport time\n"
                   "# Wait far too long\ntime.sleep(60)\n")
    seen: list[str] = []
    with pytest.raises(NotebookFailed) as info:
        run_notebook(src, "smoke", tmp_path / "executed", {}, progress_bar=False, log_output=True, timeout=3,
                     status=seen.append)
    err = capfd.readouterr().err
    assert "[watched] cell 3/4: Say hello" in err and "[watched] hello from the kernel" in err
    assert "Wait far too long" in str(info.value) and "ran out of time after" in str(info.value)
    assert seen[-1].endswith("Wait far too long")


# ---------------------------------------------------------------------------- 1. the chapters on a real tree
@pytest.mark.slow
def test_the_chapters_that_read_data_run_on_a_real_layout_tree(real, tmp_path, monkeypatch):
    from moero.book.runner import run_notebooks, select_notebooks

    chapters = [p.stem for p in select_notebooks() if "data_root" in p.read_text()]  # every chapter reading data
    assert "10_synthetic_data" in chapters and "06_training" in chapters
    monkeypatch.setenv("MOERO_BUILD_DIR", str(tmp_path / "build"))
    # one seed: this test is about real names and layouts, not statistics (the smoke book runs two)
    results = run_notebooks("smoke", data=real, only=chapters, params={"seeds": [0]})
    assert sorted(r.notebook for r in results) == sorted(chapters) and not any(r.skipped for r in results)
