"""A real CMRxRecon2025 tree without manifest.csv: the layout index, its splits and cache, and the
commands (`manifest`, `eval`, a book chapter) on such a tree."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from moero.data.layout import LAYOUT_CACHE, layout_index, parse_layout_path, scan_layout
from moero.data.matfile import write_mat73


def _touch_kspace(path: Path, shape: tuple[int, ...] = (2, 3, 4, 8, 6), key: str = "kspace") -> None:
    """A tiny MATLAB v7.3 k-space file; ``shape`` is the package order (T, Z, C, H, W)."""
    write_mat73(path, {key: np.ones(shape, np.complex64)})


def _real_tree(root: Path) -> None:
    mc = root / "MultiCoil"
    for centre, vendor, subject in [("Center001", "Siemens_30T_Vida", f"P{i:03d}") for i in range(1, 7)] + [
            ("Center002", "UIH_30T_umr880", "P001")]:
        _touch_kspace(mc / "Cine" / "TrainingSet" / "FullSample" / centre / vendor / subject / "cine_lax_4ch.mat")
    _touch_kspace(mc / "Mapping" / "TrainingSet" / "FullSample" / "Center002" / "UIH_30T_umr880" / "P001" / "T1map.mat",
                  (1, 3, 4, 8, 6))
    val = mc / "Cine" / "ValidationSet"
    # Center009 never appears in training: TaskR1's unseen centre
    kus = val / "UnderSample_TaskR1" / "Center009" / "GE_15T_Signa" / "P001" / "cine_sax_kus_ktGaussian16.mat"
    _touch_kspace(kus, key="kus")
    write_mat73(val / "Mask_TaskR1" / "Center009" / "GE_15T_Signa" / "P001" / "cine_sax_mask_ktGaussian16.mat",
                {"mask": np.ones((2, 8, 6), bool)})
    _touch_kspace(val / "UnderSample_TaskR2" / "Center001" / "Siemens_30T_Vida" / "P099" / "cine_sax_kus_Uniform8.mat",
                  key="kus")
    (mc / "Cine" / "TrainingSet" / "FullSample" / "README.mat").write_bytes(b"not in the layout")


def test_parse_layout_path_reads_modality_view_contrast_task_pattern():
    row = parse_layout_path(Path("MultiCoil/Cine/ValidationSet/UnderSample_TaskR1/Center005/GE_15T/P012/"
                                 "cine_lax_3ch_kus_ktRadial24.mat"))
    assert (row["kind"], row["task"], row["modality"], row["view"], row["contrast"]) == (
        "kus", "TaskR1", "Cine", "lax_3ch", "cine")
    assert (row["pattern"], row["acceleration"], row["subject"]) == ("ktRadial", "24", "Center005/GE_15T/P012")
    full = parse_layout_path(Path("MultiCoil/Mapping/TrainingSet/FullSample/C1/V1/P001/T1map.mat"))
    assert (full["kind"], full["name"], full["view"], full["contrast"]) == ("full", "T1map", "", "T1map")
    assert parse_layout_path(Path("MultiCoil/Cine/TrainingSet/FullSample/README.mat")) is None
    # a kus file inside a Mask folder is not the layout
    assert parse_layout_path(Path("MultiCoil/Cine/TestSet/Mask_TaskR1/C/V/P001/cine_sax_kus_Uniform4.mat")) is None


def test_scan_assigns_splits_links_masks_and_reads_shapes(tmp_path):
    _real_tree(tmp_path)
    rows = {r["file"]: r for r in scan_layout(tmp_path)}
    assert len(rows) == 11  # 8 full + 2 kus + 1 mask; README.mat skipped
    kus = next(r for r in rows.values() if r["task"] == "TaskR1" and r["kind"] == "kus")
    assert kus["split"] == "fresh" and kus["mask_file"].endswith("Mask_TaskR1/Center009/GE_15T_Signa/P001/"
                                                                    "cine_sax_mask_ktGaussian16.mat")
    r2 = next(r for r in rows.values() if r["task"] == "TaskR2")
    assert r2["split"] == "rare" and r2["mask_file"] == ""
    full = [r for r in rows.values() if r["kind"] == "full"]
    splits = [r["split"] for r in full]
    assert {"train", "val", "test-total"} <= set(splits)  # 7 training subjects: one val, one test at least
    by_subject = {}
    for r in full:
        by_subject.setdefault(r["subject"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_subject.values())  # never split a subject's files
    t1 = next(r for r in full if r["name"] == "T1map")
    assert (t1["frames"], t1["slices"], t1["coils"], t1["readout"], t1["phase"]) == (1, 3, 4, 8, 6)
    assert scan_layout(tmp_path) == list(rows.values())  # deterministic


def test_centre_csv_overrides_roles_and_subjects(tmp_path):
    _real_tree(tmp_path)
    table = tmp_path / "centres.csv"
    table.write_text("centre,vendor,subject,role,pathology,split\nCenter002,,,fresh,,\nCenter009,,,known,,\n"
                     "Center001,Siemens_30T_Vida,P001,,HCM,\n")
    rows = scan_layout(tmp_path, centres=table)
    assert {r["split"] for r in rows if r["centre"] == "Center002"} == {"fresh"}
    assert {r["split"] for r in rows if r["subject"] == "Center001/Siemens_30T_Vida/P001"} == {"rare"}
    assert next(r for r in rows if r["task"] == "TaskR1" and r["kind"] == "kus")["split"] == "val"
    bad = tmp_path / "bad.csv"
    bad.write_text("centre,role\nCenter001,sometimes\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2: field 'role'"):
        scan_layout(tmp_path, centres=bad)


def test_index_is_cached_and_rebuilt_when_a_file_comes(tmp_path):
    _real_tree(tmp_path)
    first = layout_index(tmp_path)
    cache = tmp_path / LAYOUT_CACHE
    assert cache.is_file() and not list(tmp_path.glob(LAYOUT_CACHE + ".*"))  # no temporary left
    assert layout_index(tmp_path) == first
    new = tmp_path / "MultiCoil/Cine/TrainingSet/FullSample/Center001/Siemens_30T_Vida/P001/cine_sax.mat"
    _touch_kspace(new)
    os.utime(new.parent, ns=(1, 1))  # a folder time that surely differs from the cached one
    assert len(layout_index(tmp_path)) == len(first) + 1


def test_tree_without_manifest_runs_manifest_eval_and_a_chapter(tmp_path, monkeypatch, capsys, smoke_copy):
    from moero.cli import main
    from moero.data.readers import read_manifest

    root = smoke_copy  # a private copy: its manifest is removed
    (root / "manifest.csv").unlink()
    rows = read_manifest(root)  # falls back to the layout
    assert rows and {"train", "test-total"} <= {r["split"] for r in rows}
    assert all(isinstance(r["readout"], int) for r in rows)

    out = tmp_path / "manifest.csv"
    assert main(["manifest", str(root), "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    capsys.readouterr()

    evals = tmp_path / "zf"
    assert main(["eval", "--zero-filled", "--data-root", str(root), "--out", str(evals), "--device", "cpu",
                 "--modalities", "BlackBlood,T1w,T2w,Cine", "--max-files", "2", "--set", "accelerations=[8]"]) == 0
    report = json.loads(capsys.readouterr().out)
    total = next(s for s in report["splits"] if s["split"] == "total")
    assert total["files"] >= 1 and 0 < total["ssim"] < 1

    monkeypatch.setenv("MOERO_BUILD_DIR", str(tmp_path / "build"))
    assert main(["book", "--profile", "smoke", "--only", "10_synthetic_data", "--data", str(root), "--no-html",
                 "--force"]) == 0
    assert (tmp_path / "build" / "executed" / "smoke" / "10_synthetic_data.ipynb").is_file()


# ---------------------------------------------------------------------------- fastMRI folders
def _fastmri_folder(folder: Path, files: int = 2) -> None:
    """fastMRI multicoil files: ``kspace`` (slices, coils, H, W) and a cropped ``reconstruction_rss``."""
    import h5py
    import torch

    from moero.physics.fft import fft2c, ifft2c
    from moero.physics.phantom import shepp_logan
    from moero.physics.sense import rss

    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(5)
    for i in range(files):
        image = shepp_logan(64, 48)
        slices = torch.stack([image * (1 + s) for s in range(3)])  # slices of different brightness
        coils = slices[:, None] * (1 + 0.3 * torch.rand((3, 4, 1, 1), generator=gen))
        kspace = fft2c(coils + 0.01 * torch.randn(coils.shape, generator=gen, dtype=torch.complex64))
        target = rss(ifft2c(kspace), dim=1)[:, 12:52, 4:44]  # a 40 x 40 centre crop
        with h5py.File(folder / f"file{i}.h5", "w") as f:
            f["kspace"] = kspace.numpy()
            f["reconstruction_rss"] = target.numpy()


def test_fastmri_eval_conventions_and_training_without_flags(tmp_path, capsys):
    import torch
    from skimage.metrics import structural_similarity

    from moero.cli import main
    from moero.data.dataset import SliceDataset
    from moero.eval.evaluate import ZeroFilled, evaluate
    from moero.models.io import ReconOutput

    folder = tmp_path / "multicoil_val"
    _fastmri_folder(folder)

    class Half(ZeroFilled):  # the fully sampled RSS at half brightness (the dataset draws no mask here)
        def forward(self, masked_kspace, mask, num_low_frequencies=None):
            return ReconOutput(0.5 * super().forward(masked_kspace, mask).image, torch.zeros(()))

    res = evaluate(Half(), SliceDataset(folder, frames=1), "cpu", progress=False)
    assert [r["images"] for r in res["files"]] == [3, 3]  # every slice, not the central two
    import h5py

    with h5py.File(folder / "file0.h5") as f:
        gt = f["reconstruction_rss"][()].astype(np.float64)
    pred, vmax = 0.5 * gt, gt.max()
    row = res["files"][0]
    assert row["nmse"] == pytest.approx(0.25, rel=1e-6)
    assert row["psnr"] == pytest.approx(10 * np.log10(vmax**2 / np.mean((gt - pred) ** 2)), rel=1e-6)
    want = np.mean([structural_similarity(g, p, data_range=vmax) for g, p in zip(gt, pred, strict=True)])
    assert row["ssim"] == pytest.approx(want, rel=1e-5)  # the volume's max, not each slice's

    run = tmp_path / "run"
    assert main(["train", "--data-root", str(folder), "--run-dir", str(run), "--device", "cpu", "--progress",
                 "false", "--preset", "tiny", "--model", "promptmr", "--max-steps", "1"]) == 0  # no --train-split
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--data-root", str(folder), "--device", "cpu",
                 "--out", str(tmp_path / "eval")]) == 0
    total = next(s for s in json.loads(capsys.readouterr().out)["splits"] if s["split"] == "total")
    assert total["files"] == 2


# ---------------------------------------------------------------------------- configs and logging
def test_print_config_and_book_set_override(tmp_path, capsys):
    import yaml

    from moero.cli import main

    assert main(["train", "--model", "moero-12x2", "--set", "lr=1e-3", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"] == "moero-12x2" and config["lr"] == 1e-3
    assert not (tmp_path / "runs").exists()
    # book: --set KEY=VALUE is checked like -p KEY VALUE (an unknown key is a usage error naming it)
    assert main(["book", "--profile", "smoke", "--only", "10_synthetic_data", "--set", "no_such_key=3"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert main(["book", "--profile", "smoke", "--set", "broken"]) == 2


def test_shipped_configs_load(tmp_path):
    from moero.train.config import TrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    names = {p.stem: TrainConfig.from_yaml(p) for p in sorted(root.glob("*.yaml"))}
    assert {"promptmr", "vq-prompt", "moero-12x2", "moero-12x4"} <= set(names)
    assert {c.model for c in names.values()} >= {"promptmr", "vq-prompt", "moero-12x2", "moero-12x4"}
    assert all(c.preset == "paper" for c in names.values())


def test_plot_and_tensorboard_records(tmp_path, monkeypatch):
    from moero.cli import main
    from moero.train import trainer as trainer_module

    scalars = []

    class Recorder:  # stands in for SummaryWriter when tensorboard is not installed
        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

    monkeypatch.setattr(trainer_module, "tensorboard_writer", lambda run_dir: Recorder())
    from engine_helpers import TinyNet, TinySlices

    from moero.train.config import TrainConfig

    run = tmp_path / "run"
    config = TrainConfig(run_dir=str(run), device="cpu", epochs=2, progress=False, val_every=1)
    trainer_module.Trainer(config, TinyNet(), TinySlices(), TinySlices(n=4, seed=1)).fit()
    tags = {tag for tag, _, _ in scalars}
    assert {"train/loss", "train/lr", "val/ssim"} <= tags
    train_steps = [step for tag, _, step in scalars if tag == "train/loss"]
    assert train_steps == sorted(train_steps) and len(train_steps) >= 2

    png = tmp_path / "curves.png"
    assert main(["plot", str(run), str(run), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert main(["plot", str(tmp_path / "nothing")]) == 1  # no metrics.jsonl: an error naming the file


def test_tensorboard_writer_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")  # the optional extra: pip install moero[tensorboard]
    from moero.train.trainer import tensorboard_writer

    writer = tensorboard_writer(tmp_path)
    writer.add_scalar("train/loss", 0.5, 1)
    writer.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


_SPLITS_SCRIPT = """
import json, sys
from moero.data.layout import scan_layout
print(json.dumps([[r["file"], r["split"]] for r in scan_layout(sys.argv[1])]))
"""


def test_splits_of_a_tree_do_not_depend_on_the_python_hash_seed(tmp_path):
    """Two processes with different ``PYTHONHASHSEED`` (string hashes, so set and dict orders of strings,
    differ) assign every file of the same tree to the same split."""
    import subprocess
    import sys

    for centre, vendor in (("Center001", "Siemens_30T_Vida"), ("Center002", "UIH_30T_umr780")):
        for p in range(1, 16):
            for name in ("cine_sax.mat", "T1map.mat"):
                modality = "Cine" if name.startswith("cine") else "Mapping"
                path = tmp_path / "MultiCoil" / modality / "TrainingSet" / "FullSample" / centre / vendor / f"P{p:03d}"
                path.mkdir(parents=True, exist_ok=True)
                (path / name).write_bytes(b"")  # the split needs the path only (the shape columns stay empty)
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _SPLITS_SCRIPT, str(tmp_path)], env=env, check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out))
    assert not (tmp_path / LAYOUT_CACHE).exists()  # each process scanned the tree itself
    assert runs[0] == runs[1]
    splits = {}
    for file, split in runs[0]:
        splits.setdefault(Path(file).parent.as_posix(), set()).add(split)
    assert all(len(s) == 1 for s in splits.values())  # a subject's files share its split
    assert {"train", "val", "test-total"} <= {split for _, split in runs[0]} and len(runs[0]) == 60
