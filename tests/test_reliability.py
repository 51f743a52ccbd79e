"""Issue 19: never lose a run, never report a broken result as success (one test per point 1-11).

Most tests use the engine's tiny model (``engine_helpers``) for speed; the command-line ones use the
``tiny`` preset on the ``smoke`` synthetic set, generated once per session.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from engine_helpers import TinyNet, TinySlices

from moero.train import distributed as mdist
from moero.train.checkpoint import CheckpointError, load_checkpoint, non_finite_tensors, save_checkpoint
from moero.train.config import TrainConfig
from moero.train.rundir import RunLock, RunLockedError
from moero.train.trainer import DivergenceError, Trainer


@pytest.fixture(scope="session")
def smoke_root(smoke_data):
    return smoke_data


def _trainer(run_dir, callbacks=(), model=None, **overrides) -> Trainer:
    torch.manual_seed(0)
    values = {"run_dir": str(run_dir), "device": "cpu", "epochs": 1, "lr": 3e-3, "checkpoint_every": 2,
              "progress": False, "seed": 3, **overrides}
    mdist.seed_everything(0)
    return Trainer(TrainConfig(**values), model or TinyNet(), TinySlices(), TinySlices(n=2, seed=1),
                   callbacks=callbacks)


def _cli_train(root, run_dir, *extra):
    from moero.cli import main

    return main(["train", "--data-root", str(root), "--run-dir", str(run_dir), "--device", "cpu", "--progress",
                 "false", "--val-every", "0", "--image-shape", "[32,24]", "--set", "mask_kinds=[uniform]",
                 "--accelerations", "[4]", *extra])


def _strict_records(path: Path) -> list[dict]:
    def refuse(name):
        raise ValueError(f"bare {name} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- 1. fresh into an existing run
def test_1_fresh_run_into_an_existing_run_is_refused_and_overwrite_moves_it_aside(tmp_path):
    run = tmp_path / "run"
    _trainer(run).fit()
    before = _snapshot(run)
    with pytest.raises(ValueError, match="holds a run .*checkpoint.pt, metrics.jsonl.*resume.*overwrite"):
        _trainer(run).fit()
    assert _snapshot(run) == before  # nothing was deleted, truncated or rewritten (config.yaml included)
    _trainer(run, overwrite=True, lr=1e-3).fit()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and _snapshot(aside[0]) == before  # moved aside byte for byte, never deleted
    assert "lr: 0.001" in (run / "config.yaml").read_text()


# ---------------------------------------------------------------------------- 2. one process per run folder
def test_2_a_concurrent_second_trainer_exits_nonzero_and_the_first_run_is_intact(tmp_path, smoke_root, capsys):
    run = tmp_path / "run"
    second = {}

    def start_second(record):
        if record.get("kind") == "train" and record["step"] == 1:  # the first run holds the folder now
            second["rc"] = _cli_train(smoke_root, run, "--max-steps", "1", "--resume-if-present")

    summary = _trainer(run, callbacks=[start_second]).fit()
    assert second["rc"] == 1
    err = capsys.readouterr().err
    assert f"in use by process {os.getpid()}" in err and err.startswith("error: ") and err.count("\n") == 1
    assert summary["complete"] and load_checkpoint(run / "checkpoint.pt")["step"] == summary["step"] == 8
    steps = [r["step"] for r in _strict_records(run / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, 9))  # one uninterleaved log
    assert "max_steps: 0" in (run / "config.yaml").read_text()  # the second never wrote its config


def test_2_the_lock_names_a_live_holder_and_dies_with_it(tmp_path):
    run = tmp_path / "run"
    code = f"import sys, time; from moero.train.rundir import RunLock; RunLock({str(run)!r}).acquire(); " \
           "print('locked', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by process {proc.pid}"):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    RunLock(run).acquire().release()  # kill -9 released it: no stale lock


# ---------------------------------------------------------------------------- 3. --resume without a checkpoint
def test_3_resume_without_a_checkpoint_is_an_error_unless_resume_if_present(tmp_path):
    run = tmp_path / "typo"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    with pytest.raises(ValueError, match="'resume': there is no checkpoint .*typo/checkpoint.pt"):
        _trainer(run, resume=True).fit()
    assert (run / "metrics.jsonl").read_text() == '{"kind": "train", "step": 1}\n'  # the log is kept
    assert _trainer(run, resume_if_present=True).fit()["complete"]


# ---------------------------------------------------------------------------- 4. atomic notebook results
NOTEBOOK = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "cpu"
params = {}
results_dir = None

# %%
from moero.book.run import start_run
run = start_run("00_profiles", profile=profile, params=params, results_dir=results_dir)
run.table([{"value": VALUE}], "who")
run.table([{"value": 2}], "extra")
FAIL
run.finish()
"""


@pytest.mark.slow
def test_4_a_failed_notebook_run_leaves_the_last_good_results_byte_identical(tmp_path, monkeypatch):
    import papermill

    from moero.book.runner import NotebookFailed, run_notebook

    src = tmp_path / "notebooks" / "chapter.py"
    src.parent.mkdir()
    results, out = tmp_path / "results", tmp_path / "executed"
    params = {"results_dir": str(results)}
    src.write_text(NOTEBOOK.replace("VALUE", "1").replace("FAIL", "").replace('run.table([{"value": 2}], "extra")', ""))
    run_notebook(src, "smoke", out, params, progress_bar=False)
    good = {**_snapshot(results), "executed": (out / "chapter.ipynb").read_bytes()}
    assert json.loads((results / "provenance.json").read_text())["complete"]

    src.write_text(NOTEBOOK.replace("VALUE", "99").replace("FAIL", "raise RuntimeError('killed mid-run')"))
    with pytest.raises(NotebookFailed, match="killed mid-run"):
        run_notebook(src, "smoke", out, params, progress_bar=False)
    assert {**_snapshot(results), "executed": (out / "chapter.ipynb").read_bytes()} == good  # no extra.csv either

    assert len(list(tmp_path.glob("results.staging-*"))) == 1  # the failed run's partial results, apart

    # the skip check covers the results: a damaged result file makes the unchanged notebook run again
    src.write_text(NOTEBOOK.replace("VALUE", "1").replace("FAIL", "").replace('run.table([{"value": 2}], "extra")', ""))
    assert run_notebook(src, "smoke", out, params, progress_bar=False).skipped
    (results / "who.csv").write_text("value\n5\n")

    class Rerun(Exception):
        pass

    def rerun(*args, **kwargs):
        raise Rerun

    monkeypatch.setattr(papermill, "execute_notebook", rerun)
    with pytest.raises(Rerun):
        run_notebook(src, "smoke", out, params, progress_bar=False)


# ---------------------------------------------------------------------------- 5. divergence
def test_5_a_diverging_run_stops_nonzero_keeps_the_last_finite_checkpoint_and_logs_strict_json(
        tmp_path, smoke_root, capsys):
    run = tmp_path / "nan"
    rc = _cli_train(smoke_root, run, "--lr", "1e30", "--max-steps", "8", "--checkpoint-every", "1",
                    "--max-nonfinite", "2")
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: training diverged: 2 consecutive non-finite") and err.count("\n") == 1
    records = _strict_records(run / "metrics.jsonl")  # no bare NaN
    assert records[-1]["kind"] == "error" and not any(r["kind"] == "summary" for r in records)
    assert [r["loss"] for r in records if r["kind"] == "train"][-2:] == [None, None]
    state = load_checkpoint(run / "checkpoint.pt")
    assert non_finite_tensors(state["model"]) == [] and state["step"] < records[-1]["step"]


def test_5_eval_refuses_a_non_finite_checkpoint(tmp_path, capsys):
    from moero.cli import main

    _trainer(tmp_path / "run").fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    save_checkpoint(tmp_path / "nan.pt", state)
    assert main(["eval", "--checkpoint", str(tmp_path / "nan.pt"), "--out", str(tmp_path / "eval")]) == 1
    err = capsys.readouterr().err
    assert "non-finite weights" in err and name in err and not (tmp_path / "eval" / "eval_splits.csv").exists()


class NaNAfter(TinyNet):
    """Finite for ``finite_steps`` training forwards, then a NaN image (a diverging model)."""

    def __init__(self, finite_steps: int) -> None:
        super().__init__()
        self.finite_steps, self.forwards = finite_steps, 0

    def forward(self, masked_kspace, mask, **kwargs):
        if self.training:
            self.forwards += 1
            if self.forwards > self.finite_steps:
                masked_kspace = masked_kspace * float("nan")
        return super().forward(masked_kspace, mask, **kwargs)


def test_5_the_trainer_raises_after_max_nonfinite_consecutive_steps(tmp_path):
    tr = _trainer(tmp_path / "run", model=NaNAfter(3), checkpoint_every=1)  # the default max_nonfinite: 3
    with pytest.raises(DivergenceError, match="3 consecutive non-finite .*'max_nonfinite' = 3"):
        tr.fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3  # the last finite step


# ---------------------------------------------------------------------------- 6. resume is checked
def test_6_resume_refuses_changed_model_data_or_schedule_fields_with_a_one_line_diff(tmp_path):
    run = tmp_path / "run"
    _trainer(run, max_steps_this_run=3, schedule="cosine").fit()
    config_before = (run / "config.yaml").read_bytes()
    with pytest.raises(ValueError, match=r"cannot resume .*: seed 3 -> 4; lr 0\.003 -> 0\.1 \(these must match"):
        _trainer(run, resume=True, schedule="cosine", lr=0.1, seed=4).fit()
    with pytest.raises(ValueError, match="max_steps 0 -> 20"):  # the cosine schedule depends on the length
        _trainer(run, resume=True, schedule="cosine", max_steps=20).fit()
    assert (run / "config.yaml").read_bytes() == config_before  # refused before anything was written
    # device, logging, checkpointing may change
    tr = _trainer(run, resume=True, schedule="cosine", log_every=2, checkpoint_every=3)
    assert tr.fit()["complete"]


def test_6_a_length_independent_schedule_may_be_extended(tmp_path):
    run = tmp_path / "run"
    _trainer(run, schedule="constant", max_steps=3).fit()
    assert _trainer(run, resume=True, schedule="constant", max_steps=5).fit()["step"] == 5


def test_6_cli_resume_starts_from_the_runs_own_settings(tmp_path):
    from moero.cli import build_parser, config_from_args

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(TrainConfig(preset="small", lr=1e-3, overwrite=True, run_dir=str(run)).to_yaml())
    cfg = config_from_args(build_parser().parse_args(["train", "--run-dir", str(run), "--resume", "--device", "cpu"]))
    assert (cfg.preset, cfg.lr, cfg.resume, cfg.overwrite, cfg.device) == ("small", 1e-3, True, False, "cpu")
    fresh = config_from_args(build_parser().parse_args(["train", "--run-dir", str(run)]))
    assert fresh.preset == "tiny"  # a fresh run takes only what it is given


# ---------------------------------------------------------------------------- 7. another world size
def test_7_resuming_a_two_rank_checkpoint_in_one_process_is_refused_with_the_reason(tmp_path):
    run = tmp_path / "run"
    _trainer(run, max_steps_this_run=2).fit()
    state = load_checkpoint(run / "checkpoint.pt")
    state["world_size"], state["rng"] = 2, state["rng"] * 2  # as written by a 2-rank torchrun
    save_checkpoint(run / "checkpoint.pt", state)
    with pytest.raises(ValueError, match="world_size 2 -> 1 .*defined per world size; resume with 2 processes"):
        _trainer(run, resume=True).fit()


# ---------------------------------------------------------------------------- 8. (issue 20: augmentation parameters)
# preview_artefacts / augmentation-parameter validation belong to issue 20 (moero/augment), tested there.


# ---------------------------------------------------------------------------- 9. zero-size axes
@pytest.mark.parametrize("shape", [(0, 1, 2, 8, 6), (1, 0, 2, 8, 6), (1, 1, 0, 8, 6), (1, 1, 2, 0, 6)])
def test_9_zero_size_axes_are_refused_naming_file_and_key(tmp_path, shape):
    from moero.data.matfile import write_mat73
    from moero.data.readers import DataError, load_cmrxrecon, volume_shape

    path = write_mat73(tmp_path / "empty.mat", {"kspace_full": np.zeros(shape, np.complex64)})
    for read in (volume_shape, load_cmrxrecon):
        with pytest.raises(DataError, match=r"empty\.mat \[key 'kspace_full'\]: has a zero-size axis"):
            read(path)


# ---------------------------------------------------------------------------- 10. early, clear errors
def test_10_config_values_are_checked_where_they_enter(tmp_path):
    from moero.cli import build_parser, config_from_args

    with pytest.raises(ValueError, match="config field 'seed' must be >= 0, got -1"):
        TrainConfig(seed=-1)
    for none in ("", "none", "null", None):
        assert TrainConfig(val_split=none).val_split == ""
    args = build_parser().parse_args(["train", "--val-split", ""])
    assert config_from_args(args).val_split == ""


def test_10_manifest_fields_name_file_row_and_column(tmp_path):
    from moero.data.readers import DataError, read_manifest

    header = "file,subject,centre,vendor,modality,view,pathology,split,frames,slices\n"
    (tmp_path / "manifest.csv").write_text(header + "a.mat,P1,C1,V,Cine,sax,none,train,3,2\n"
                                           "b.mat,P2,C1,V,Cine,sax,none,train,three,2\n")
    with pytest.raises(DataError, match=r"manifest\.csv: row 3, column 'frames': 'three' is not an integer"):
        read_manifest(tmp_path)


def test_10_checkpoint_without_the_trainers_keys_names_them(tmp_path):
    from moero.train.runs import load_trained

    save_checkpoint(tmp_path / "bare.pt", {"weights": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"bare\.pt lacks keys \['config', 'model', 'buffers'\]"):
        load_trained(tmp_path / "bare.pt")


def test_10_cli_errors_are_one_line_with_exit_2_for_usage_1_otherwise_and_debug_traceback(
        tmp_path, monkeypatch, capsys):
    import moero.train.runs as runs
    from moero.cli import main

    _trainer(tmp_path / "run").fit()
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    assert main(["eval", "--checkpoint", ckpt, "--max-files", "-1"]) == 2
    assert capsys.readouterr().err == "error: eval: --max-files must be >= 0 (0: all files), got -1\n"

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output folder was checked")

    monkeypatch.setattr(runs, "evaluate", no_work)
    (tmp_path / "file").write_text("")
    assert main(["eval", "--checkpoint", ckpt, "--out", str(tmp_path / "file" / "eval")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: output folder {tmp_path / 'file' / 'eval'} is not writable") and err.count("\n") == 1

    assert main(["train", "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "error: config field 'seed' must be >= 0, got -1\n"
    assert main(["--debug", "train", "--seed", "-1"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_10_book_parameters_are_type_checked_before_any_kernel_starts(monkeypatch, capsys):
    import moero.book.runner as runner
    from moero.cli import main

    def no_run(*args, **kwargs):
        raise AssertionError("a notebook ran")

    monkeypatch.setattr(runner, "run_notebook", no_run)
    entries = runner.get_profile("smoke").notebooks["01_forward_model"]
    int_key = next(k for k, v in entries.items() if type(v) is int)
    list_key = next(k for k, v in entries.items() if isinstance(v, list))
    book = ["book", "--profile", "smoke", "--only", "01_forward_model", "--no-html"]
    assert main([*book, "-p", int_key, "eight"]) == 2
    assert capsys.readouterr().err.startswith(f"error: parameter {int_key!r}: expected an integer like the profile's")
    assert main([*book, "-p", list_key, "7"]) == 2
    assert f"parameter {list_key!r}: expected a list" in capsys.readouterr().err
    runner.check_param_type("lam", 1, 0.01)  # an integer is a valid number
    with pytest.raises(ValueError, match=r"'lams\[1\]': expected a number"):
        runner.check_param_type("lams", [0.1, "x"], [0.01])


# ---------------------------------------------------------------------------- 11. debris and stamps
def test_11_stale_temporaries_are_removed_and_checkpoints_get_the_run_file_mode(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    _trainer(run).fit()
    assert not stale.exists()
    names = ("checkpoint.pt", "config.yaml", "metrics.jsonl")
    modes = {name: stat.S_IMODE((run / name).stat().st_mode) for name in names}
    assert len(set(modes.values())) == 1, modes


def test_11_generate_data_verifies_sizes_always_and_hashes_with_verify(tmp_path, smoke_root, capsys):
    import shutil

    from moero.cli import main
    from moero.data.synthetic import STAMP_NAME
    from moero.data.synthetic.writer import OWNER_MARKER

    root = tmp_path / "smoke"
    shutil.copytree(smoke_root, root)  # a stamped tree (generated once per session)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    debris = tmp_path / f"smoke.tmp-{dead.pid}-abc"  # the temporary folder of a generator that died
    (debris / "x").mkdir(parents=True)
    (debris / OWNER_MARKER).write_text(json.dumps({"pid": dead.pid, "root": "smoke"}))  # its marker
    assert main(["generate-data", "--root", str(root), "--profile", "smoke"]) == 0
    assert not debris.exists()
    capsys.readouterr()
    files = json.loads((root / STAMP_NAME).read_text())["files"]
    name = next(n for n in files if n.endswith(".mat"))
    good = (root / name).read_bytes()

    (root / name).write_bytes(good[: len(good) // 2])  # truncated: the size check catches it
    assert main(["generate-data", "--root", str(root), "--profile", "smoke"]) == 0
    assert (root / name).read_bytes() == good and "has" in capsys.readouterr().err

    flipped = bytearray(good)
    flipped[-1] ^= 0xFF  # same size, other bytes: only --verify notices
    (root / name).write_bytes(bytes(flipped))
    assert main(["generate-data", "--root", str(root), "--profile", "smoke"]) == 0
    assert (root / name).read_bytes() == bytes(flipped)
    assert main(["generate-data", "--root", str(root), "--profile", "smoke", "--verify"]) == 0
    assert (root / name).read_bytes() == good and "SHA-256" in capsys.readouterr().err


def test_zero_size_mask_is_refused(tmp_path):
    """A zero-size mask axis (part of 9) names the mask key."""
    from moero.data.readers import DataError, load_cmrxrecon

    path = tmp_path / "kus.mat"
    from moero.data.matfile import write_mat73

    write_mat73(path, {"kus": np.ones((1, 1, 2, 8, 6), np.complex64)})
    with h5py.File(path, "a") as f:
        f.create_dataset("mask", shape=(0, 8), dtype="uint8")
    with pytest.raises(DataError, match=r"\[key 'mask'\]: has a zero-size axis"):
        load_cmrxrecon(path)

