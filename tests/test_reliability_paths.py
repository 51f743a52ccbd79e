"""Issue 29: reliability of the new paths (predict, the layout cache, generate-data, the test phase,
concurrent book runs). One or more tests per numbered point of the issue, named ``test_<point>_...``.

The data tests use the ``smoke`` synthetic set (generated once per session) and its test phase;
predict runs the zero-filled reference, so no training is needed.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from moero.eval.evaluate import ZeroFilled

STATIC = ("BlackBlood", "T1w", "T2w")


@pytest.fixture(scope="session")
def smoke_root(smoke_data) -> Path:
    return smoke_data


@pytest.fixture(scope="session")
def phase(smoke_root, tmp_path_factory) -> dict:
    """The smoke set's test phase (Uniform R = 4), cut down to the static modalities (fast to predict)."""
    from moero.data.testphase import write_test_phase

    tmp = tmp_path_factory.mktemp("phase29")
    rows = write_test_phase(smoke_root, tmp / "test", tmp / "truth", patterns={"Uniform": [4]}, seed=3)
    keep = [r for r in rows if Path(r["kus"]).parts[1] in STATIC]
    for r in rows:
        if r not in keep:
            (tmp / "test" / r["kus"]).unlink()
            (tmp / "test" / r["mask"]).unlink()
    return {"test": tmp / "test", "truth": tmp / "truth", "rows": keep, "tmp": tmp}


class Scaled(ZeroFilled):
    """The zero-filled reference times a factor: two factors are two models (two weight hashes)."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, masked_kspace, mask, num_low_frequencies=None):
        out = super().forward(masked_kspace, mask, num_low_frequencies)
        return type(out)(out.image * self.factor, out.vq_loss)


def _predict(data: Path, out: Path, model: torch.nn.Module | None = None) -> dict:
    from moero.train.predict import predict

    return predict(None, data, "TaskR1", out, "cpu", progress=False, model=model or Scaled(), frames=1, acs=20)


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".moero_layout.csv"))
    return dst


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _one_line(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err.rstrip("\n")) <= 300, err


# ---------------------------------------------------------------------------- 1. neighbours of --root
def test_1_generate_data_leaves_folders_beside_the_root_alone(tmp_path, smoke_root, capsys):
    from moero.cli import main

    root = _copy_tree(smoke_root, tmp_path / "ds")
    dead = _dead_pid()
    backups = [tmp_path / "ds.old-2024", tmp_path / f"ds.old-{dead}", tmp_path / f"ds.tmp-{dead}",
               tmp_path / f"ds.tmp-{dead}-x1"]
    for folder in backups:
        folder.mkdir()
        (folder / "keep.txt").write_text("a user's backup")
    assert main(["generate-data", "--root", str(root), "--size", "smoke"]) == 0  # up to date: regenerates nothing
    assert all((folder / "keep.txt").read_text() == "a user's backup" for folder in backups)


# ---------------------------------------------------------------------------- 2. --test-phase into a full folder
def test_2_test_phase_refuses_non_empty_folders_without_overwrite(tmp_path, smoke_copy, capsys):
    from moero.cli import main

    smoke_root = smoke_copy  # generate-data may regenerate the tree it is given: a private copy

    out, truth = tmp_path / "phase", tmp_path / "truth"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    truth.mkdir()
    (truth / "manifest.csv").write_text("my own manifest\n")
    base = ["generate-data", "--root", str(smoke_root), "--size", "smoke", "--test-phase", str(out),
            "--truth", str(truth)]
    assert main(base) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "not empty" in err and ("phase" in err or "truth" in err)
    assert (truth / "manifest.csv").read_text() == "my own manifest\n" and sorted(os.listdir(out)) == ["notes.txt"]
    (out / "notes.txt").unlink()  # the test-phase folder empty, the truth folder still not
    assert main(base) == 2 and str(truth.resolve()) in capsys.readouterr().err
    assert sorted(os.listdir(out)) == [] and (truth / "manifest.csv").read_text() == "my own manifest\n"
    assert main([*base, "--overwrite"]) == 0  # asked for: files of the same names replaced, nothing else removed
    assert "file,subject" in (truth / "manifest.csv").read_text() and any(out.iterdir())
    assert main(["generate-data", "--root", str(smoke_root), "--size", "smoke", "--test-phase",
                 str(smoke_root / "phase")]) == 2  # never inside the source tree
    assert "separate trees" in capsys.readouterr().err and not (smoke_root / "phase").exists()


# ---------------------------------------------------------------------------- 3. ../ in the layout cache
def _rewrite_cache(root: Path, edit) -> None:
    from moero.data.layout import LAYOUT_CACHE

    cache = root / LAYOUT_CACHE
    first, *rest = cache.read_text().splitlines(keepends=True)
    rows = list(csv.DictReader(rest))
    rows = edit(rows)
    with open(cache, "w", newline="") as fh:
        fh.write(first)  # the signature line kept: the cache looks valid
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_3_a_layout_cache_row_cannot_lead_predict_outside_out(tmp_path, phase):
    from moero.data.layout import layout_index
    from moero.train.predict import submission_path

    data = _copy_tree(phase["test"], tmp_path / "a" / "test")
    fresh = layout_index(data)
    row = next(r for r in fresh if r["kind"] == "kus")
    evil = Path("MultiCoil/../../../escape") / Path(row["file"]).name
    (tmp_path / "escape").mkdir()
    shutil.copyfile(data / row["file"], tmp_path / "escape" / Path(row["file"]).name)

    def inject(rows):
        for r in rows:
            if r["file"] == row["file"]:
                r["file"] = evil.as_posix()
        return rows

    _rewrite_cache(data, inject)
    rows = layout_index(data)
    assert all(".." not in Path(r["file"]).parts for r in rows) and len(rows) == len(fresh)  # rebuilt
    with pytest.raises(ValueError, match="not a plain path inside"):
        submission_path(tmp_path / "b" / "c" / "sub", "TaskR1", evil.as_posix())
    _rewrite_cache(data, inject)
    _predict(data, tmp_path / "b" / "c" / "sub")
    assert not (tmp_path / "b" / "c" / "escape").exists() and not (tmp_path / "b" / "escape").exists()


# ---------------------------------------------------------------------------- 4. one book run per chapter
def test_4_a_second_book_run_of_a_chapter_is_refused_naming_the_holder(tmp_path, monkeypatch):
    import papermill

    from moero.book.runner import run_notebook
    from moero.train.rundir import RunLock, RunLockedError

    src = tmp_path / "notebooks" / "chapter.py"
    src.parent.mkdir()
    src.write_text("# %%\nx = 1\n")
    out = tmp_path / "executed" / "smoke"

    def no_run(*args, **kwargs):
        raise AssertionError("the second run executed the notebook")

    monkeypatch.setattr(papermill, "execute_notebook", no_run)
    out.mkdir(parents=True)
    with RunLock(out / "chapter"):  # the first run of (smoke, chapter), in progress
        with pytest.raises(RunLockedError, match=f"notebook chapter of profile 'smoke' .*in use by process "
                                                 f"{os.getpid()}"):
            run_notebook(src, "smoke", out, {}, progress_bar=False)
    assert not (out / ".chapter.staging.jsonl").exists()  # the loser touched nothing


# ---------------------------------------------------------------------------- 5. --resume-if-present
def test_5_resume_if_present_without_a_checkpoint_deletes_no_log(tmp_path):
    from engine_helpers import TinyNet, TinySlices

    from moero.train.config import TrainConfig
    from moero.train.trainer import Trainer

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 7, "note": "an earlier run"}\n')
    config = TrainConfig(run_dir=str(run), device="cpu", epochs=1, progress=False, resume_if_present=True)
    assert Trainer(config, TinyNet(), TinySlices(), None).fit()["complete"]
    kept = [p / "metrics.jsonl" for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(kept) == 1 and "an earlier run" in kept[0].read_text()  # moved aside, never deleted
    assert "an earlier run" not in (run / "metrics.jsonl").read_text()


# ---------------------------------------------------------------------------- 6. a NaN pixel
def _truth_submission(phase: dict, out: Path) -> list[Path]:
    from moero.data.readers import load_cmrxrecon
    from moero.eval.submission import save_img4ranking, truth_img4ranking

    written = []
    for row in phase["rows"]:
        array = truth_img4ranking(load_cmrxrecon(phase["truth"] / row["truth"]).kspace, Path(row["truth"]).parts[1])
        written.append(save_img4ranking(out / "TaskR1" / row["kus"], array))
    return written


def test_6_a_non_finite_submission_file_fails_alone(tmp_path, phase):
    from moero.eval.submission import load_img4ranking, save_img4ranking, score_submission

    files = _truth_submission(phase, tmp_path / "sub")
    array = load_img4ranking(files[0])
    array.flat[0] = np.nan
    save_img4ranking(files[0], array)
    res = score_submission(tmp_path / "sub", phase["truth"], progress=False)
    bad = next(r for r in res["files"] if files[0].as_posix().endswith(r["file"]))
    assert "non-finite" in bad["comment"] and str(files[0]) in bad["comment"]
    assert phase["rows"][0]["truth"] in [m["truth"] for m in res["missing"]]  # scored as a missing file
    groups = {(g["centre"], g["vendor"]): g for g in res["groups"]}
    group = groups[(bad["centre"], bad["vendor"])]
    assert np.isfinite(group["ssim"]) and group["ssim"] < 1  # the group stays, its missing file counts 0
    assert res["overall"][0]["groups"] == len(groups) and np.isfinite(res["overall"][0]["ssim"])


# ---------------------------------------------------------------------------- 7. predict and what is in --out
def test_7_predict_verifies_what_is_in_out(tmp_path, phase):
    import zipfile

    from moero.eval.submission import load_img4ranking

    out = tmp_path / "sub"
    first = _predict(phase["test"], out, Scaled(1.0))
    assert len(first["written"]) == len(phase["rows"]) and not first["errors"]
    with pytest.raises(ValueError, match="another model"):  # another checkpoint would mix two models
        _predict(phase["test"], out, Scaled(2.0))
    damaged = Path(first["written"][0])
    good, images = damaged.read_bytes(), load_img4ranking(damaged)
    damaged.write_bytes(good[: len(good) // 3])
    again = _predict(phase["test"], out, Scaled(1.0))
    assert again["written"] == [str(damaged)] and len(again["skipped"]) == len(phase["rows"]) - 1
    assert np.array_equal(load_img4ranking(damaged), images)  # written again (the v5 header holds the time)
    with zipfile.ZipFile(again["zip"]) as zf:
        assert len(zf.namelist()) == len(phase["rows"])
    other = _copy_tree(phase["test"], tmp_path / "other")  # another test tree (new files): refused
    with pytest.raises(ValueError, match="another input tree"):
        _predict(other, out, Scaled(1.0))
    stranger = tmp_path / "stranger"
    (stranger / "TaskR1" / "MultiCoil").mkdir(parents=True)
    (stranger / "TaskR1" / "MultiCoil" / "x_kus_Uniform4.mat").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="no recorded predict run wrote"):
        _predict(phase["test"], stranger)


# ---------------------------------------------------------------------------- 8. the cache hides no file
def test_8_the_layout_cache_is_checked_against_the_tree(tmp_path, phase):
    from moero.data.layout import layout_index

    data = _copy_tree(phase["test"], tmp_path / "test")
    full = layout_index(data)
    _rewrite_cache(data, lambda rows: rows[:1])  # cut down, signature intact
    assert layout_index(data) == full
    row = next(r for r in full if r["kind"] == "kus")
    folder = (data / row["file"]).parent
    st = folder.stat()
    part2 = folder / Path(row["file"]).name.replace("Uniform4", "Uniform8")  # a second archive part arrives...
    shutil.copyfile(data / row["file"], part2)
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... with the folder's time restored
    assert part2.relative_to(data).as_posix() in {r["file"] for r in layout_index(data)}


# ---------------------------------------------------------------------------- 9. a broken manifest
def test_9_a_broken_manifest_is_an_error_never_a_fallback(tmp_path, smoke_root):
    from moero.data.dataset import SliceDataset
    from moero.data.readers import DataError, read_manifest

    root = _copy_tree(smoke_root, tmp_path / "smoke")
    text = (root / "manifest.csv").read_text()
    (root / "manifest.csv").write_text(text.replace("split", "splt", 1))  # a damaged header
    with pytest.raises(DataError, match=r"manifest.csv: manifest lacks columns \['split'\]"):
        SliceDataset(root, split="train")
    (root / "manifest.csv").write_bytes(text.encode()[: len(text) // 2] + b"\xff\xfe\n")  # truncated, not UTF-8
    with pytest.raises(DataError, match="manifest.csv: not UTF-8"):
        SliceDataset(root, split="train")
    lines = text.splitlines()
    first = lines[1].split(",")
    first[0] = "../" + first[0]
    (root / "manifest.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match="row 2, column 'file'.*not a path inside"):
        read_manifest(root)


# ---------------------------------------------------------------------------- 10. values checked before work
def test_10_acs_beyond_the_matrix_and_negative_book_parameters_are_usage_errors(tmp_path, monkeypatch, capsys):
    import moero.book.runner as runner
    from moero.cli import main

    assert main(["train", "--run-dir", str(tmp_path / "r"), "--acs", "1000", "--print-config"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "'acs'" in err and "1000" in err
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--acs", "30", "--image-shape", "[32,24]",
                 "--print-config"]) == 0  # scaled to the 24-line matrix: 3 lines
    capsys.readouterr()

    def no_run(*args, **kwargs):
        raise AssertionError("a notebook ran")

    monkeypatch.setattr(runner, "run_notebook", no_run)
    entries = runner.get_profile("smoke").notebooks["01_forward_model"]
    int_key = next(k for k, v in entries.items() if type(v) is int and v > 0)
    book = ["book", "--profile", "smoke", "--only", "01_forward_model", "--no-html"]
    assert main([*book, "-p", int_key, "-3"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert f"parameter {int_key!r}: must be >= 0" in err
    with pytest.raises(ValueError, match=r"'lams\[1\]': must be >= 0"):
        runner.check_param_type("lams", [0.1, -0.5], [0.01])


# ---------------------------------------------------------------------------- 11. a crafted checkpoint
def test_11_a_crafted_checkpoint_is_refused_at_once(tmp_path, smoke_root):
    from moero.train.checkpoint import CheckpointError, load_checkpoint

    blowup: list = [0]
    for _ in range(60):  # 2**60 items once expanded: formatting it never ends
        blowup = [blowup, blowup]
    state = {"format": blowup, "config": {"seed": blowup, "model": "promptmr"}, "model": {}, "buffers": {},
             "step": 0}
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} holds more than"):
        load_checkpoint(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (["eval", "--checkpoint", str(path), "--out", str(tmp_path / "e")],
                 ["predict", "--checkpoint", str(path), "--data", str(tmp_path), "--task", "TaskR1", "--out",
                  str(tmp_path / "p")],
                 ["train", "--run-dir", str(path.parent), "--resume", "--device", "cpu", "--data-root",
                  str(smoke_root), "--preset", "tiny", "--image-shape", "[32,24]", "--progress", "false"]):
        proc = subprocess.run([sys.executable, "-m", "moero", *args], capture_output=True, text=True, timeout=120,
                              env=env)
        assert proc.returncode == 1, proc.stderr[-600:]
        _one_line(proc.stderr)
        assert str(path) in proc.stderr


# ---------------------------------------------------------------------------- 12. errors that name the file
def test_12_a_torn_last_log_line_is_dropped_with_a_warning_naming_the_file(tmp_path):
    from engine_helpers import TinyNet, TinySlices

    from moero.train.config import TrainConfig
    from moero.train.trainer import Trainer

    run = tmp_path / "run"
    config = TrainConfig(run_dir=str(run), device="cpu", epochs=1, progress=False, checkpoint_every=2, seed=3)
    Trainer(config, TinyNet(), TinySlices(), None).fit()
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "step": 9, "lo')  # killed mid-line
    with pytest.warns(UserWarning, match=r"metrics.jsonl, line \d+: dropped a torn last line"):
        Trainer(config.replace(resume=True), TinyNet(), TinySlices(), None).fit()
    assert '"step": 9' not in (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    from moero.train.rundir import read_records

    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not JSON"):
        read_records(run / "metrics.jsonl")


def test_12_a_foreign_model_checkpoint_gives_one_short_line(tmp_path, capsys):
    from moero.cli import main
    from moero.train.config import TrainConfig
    from moero.train.trainer import FORMAT

    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(400)])  # hundreds of foreign keys
    path = tmp_path / "foreign.pt"
    torch.save({"format": FORMAT, "config": TrainConfig(preset="tiny").to_dict(), "model": model.state_dict(),
                "buffers": {}}, path)
    assert main(["eval", "--checkpoint", str(path), "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    _one_line(err)
    assert str(path) in err and "do not fit" in err


def test_12_a_truncated_submission_file_is_a_failed_file(tmp_path, phase):
    from moero.eval.submission import score_submission

    files = _truth_submission(phase, tmp_path / "sub")
    good = files[1].read_bytes()
    for cut in (60, 100, 127, 128, 400, len(good) // 2, len(good) - 8):  # wherever scipy's parser stops
        files[1].write_bytes(good[:cut])
        res = score_submission(tmp_path / "sub", phase["truth"], progress=False)
        bad = next(r for r in res["files"] if files[1].as_posix().endswith(r["file"]))
        assert str(files[1]) in bad["comment"] and len(res["files"]) == len(files)
        assert sum(1 for r in res["files"] if not r["comment"]) == len(files) - 1  # the rest is scored


def test_12_bad_text_files_give_errors_naming_the_file_or_option(tmp_path, smoke_root, phase, capsys):
    from moero.cli import main
    from moero.data.layout import layout_index, scan_layout
    from moero.data.readers import DataError, read_manifest

    root = _copy_tree(smoke_root, tmp_path / "smoke")
    (root / "manifest.csv").write_bytes((root / "manifest.csv").read_bytes().replace(b"none", b"n\xe9ant", 1))
    with pytest.raises(DataError, match=f"{root / 'manifest.csv'}: not UTF-8"):
        read_manifest(root)
    centres = tmp_path / "centres.csv"
    centres.write_bytes(b"centre,role\nCentr\xe9,fresh\n")
    with pytest.raises(ValueError, match=f"centre table {centres}: not UTF-8"):
        scan_layout(root, centres)
    data = _copy_tree(phase["test"], tmp_path / "test")  # bad values in the cache: rebuilt, not a bare error
    full = layout_index(data)

    def spoil(rows):
        rows[0]["slices"] = "many"
        return rows

    _rewrite_cache(data, spoil)
    assert layout_index(data) == full
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: promptmr\nimage_shape: [32,\n")  # truncated
    assert main(["train", "--run-dir", str(run), "--resume", "--print-config"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert f"config file {run / 'config.yaml'}" in err
    assert main(["generate-data", "--root", str(tmp_path / "g"), "--size", "smoke", "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "error: generate-data: --seed must be >= 0, got -1\n"
    assert not (tmp_path / "g").exists()


# ---------------------------------------------------------------------------- 13. --centres
def test_13_the_centre_table_is_checked_against_the_tree(tmp_path, smoke_root):
    from moero.data.layout import scan_layout
    from moero.data.readers import read_manifest

    row = read_manifest(smoke_root)[0]
    centre, vendor, subject = row["subject"].split("/")
    table = tmp_path / "centres.csv"

    def refused(text: str, match: str) -> None:
        table.write_text(text)
        with pytest.raises(ValueError, match=match):
            scan_layout(smoke_root, table)

    refused(f"centre,role\n{centre}x,fresh\n", rf"not in the tree: \['{centre}x'\]")
    refused(f"centre,vendor,subject,split\n{centre},{vendor},{subject}9,rare\n", "not in the tree")
    refused(f"centre,vendor,subject,split\n{centre},{vendor},{subject},trian\n", "field 'split' must be one of")
    refused(f"centre,role\n{centre},fresh\n{centre},rare\n", f"lines 2 and 3 disagree about {centre}")
    refused(f"centre,vendor,subject,split\n{centre},{vendor},{subject},val\n{centre},{vendor},{subject},train\n",
            "lines 2 and 3 disagree")
    table.write_bytes(f"\ufeffcentre,role\n{centre},fresh\n{centre},fresh\n".encode())  # a byte-order mark, a repeat
    rows = scan_layout(smoke_root, table)
    assert {r["split"] for r in rows if r["centre"] == centre} == {"fresh"}


# ---------------------------------------------------------------------------- 14. leftovers
def test_14_predict_removes_the_part_files_of_a_killed_run(tmp_path, phase):
    out = tmp_path / "sub"
    first = _predict(phase["test"], out)
    target = Path(first["written"][0])
    leftovers = [target.with_name(target.name + ".k1ll3d.part"), out / "TaskR1.zip.abc123.part"]
    for part in leftovers:
        part.write_bytes(b"half")
    target.unlink()  # the file the killed run was writing
    again = _predict(phase["test"], out)
    assert again["written"] == [str(target)] and not any(p.exists() for p in leftovers)
    assert not list(out.rglob("*.part"))


def test_14_a_failed_generation_removes_its_temporary_folder(tmp_path, monkeypatch):
    from moero.data.synthetic import ensure_synthetic

    writer = sys.modules[ensure_synthetic.__module__]

    def failing(root, **kwargs):  # the disk fills up half-way
        Path(root).mkdir(parents=True, exist_ok=True)
        Path(root, "partial.mat").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "generate", failing)
    with pytest.raises(OSError, match="No space left"):
        ensure_synthetic(tmp_path / "ds", size="smoke", progress=False)
    assert sorted(os.listdir(tmp_path)) == []


def test_14_a_read_only_parent_does_not_block_a_writable_run_folder(tmp_path, monkeypatch):
    from moero.train import rundir

    run = tmp_path / "run"
    run.mkdir()
    real_open = os.open

    def read_only_parent(path, *args, **kwargs):  # what a non-root user sees in a read-only folder
        if Path(path).parent == tmp_path and Path(path) != run:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(rundir.os, "open", read_only_parent)
    lock = rundir.RunLock(run).acquire()
    try:
        assert lock.path == run / rundir.INNER_LOCK
        with pytest.raises(rundir.RunLockedError, match=f"in use by process {os.getpid()}"):
            rundir.RunLock(run).acquire()
    finally:
        lock.release()
