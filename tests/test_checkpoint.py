"""Atomic checkpoints: a crash or a kill mid-write keeps the previous one; weights_only loading; RNG states."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from moero.train import checkpoint as ckpt
from moero.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_module_buffers,
    module_buffers,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip_keeps_tensors_and_primitives(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3), "step": 7, "nested": {"lr": 1e-3, "names": ["a", "b"], "n": None},
             "tup": (1, 2.5, True)}
    path = save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(path)
    assert torch.equal(back["w"], state["w"]) and back["step"] == 7 and back["nested"] == state["nested"]
    assert list(back["tup"]) == [1, 2.5, True]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_objects_that_weights_only_refuses_are_not_written(tmp_path):
    with pytest.raises(CheckpointError, match=r"\['obj'\] holds a Foreign"):
        save_checkpoint(tmp_path / "c.pt", {"obj": Foreign()})
    assert not (tmp_path / "c.pt").exists()


class Foreign:
    """A class that a checkpoint must never unpickle."""


def test_loading_foreign_pickled_objects_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": Foreign(), "w": torch.zeros(1)}, path)  # written behind our back
    with pytest.raises(CheckpointError, match="evil.pt.*weights_only"):
        load_checkpoint(path)


def test_truncated_and_missing_files_name_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(100)})
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="none.pt"):
        load_checkpoint(tmp_path / "none.pt")


def test_a_failure_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1, "w": torch.ones(3)})

    def partial_save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a zip")  # some bytes reach the temporary file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", partial_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    back = load_checkpoint(path)
    assert back["step"] == 1 and torch.equal(back["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_process_killed_mid_write_keeps_the_previous_checkpoint(tmp_path):
    # the child writes checkpoint 1, then is SIGKILLed inside the second save: after the temporary
    # file is written and flushed, right at its fsync, before the rename
    script = textwrap.dedent(f"""
        import os, signal, torch
        from moero.train import checkpoint as ckpt
        path = {str(tmp_path / "c.pt")!r}
        ckpt.save_checkpoint(path, {{"step": 1, "w": torch.ones(1000)}})
        ckpt.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        ckpt.save_checkpoint(path, {{"step": 2, "w": torch.zeros(1000)}})
        print("unreachable")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(ckpt.__file__)))
    assert proc.returncode == -9, proc.stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name != "c.pt"]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 1000  # the killed write's temporary file
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["step"] == 1 and torch.equal(back["w"], torch.ones(1000))


def test_rng_states_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    state = rng_state()
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    want = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(path)["rng"])
    got = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    assert got[0] == want[0] and got[1] == want[1] and torch.equal(got[2], want[2])


def test_module_buffers_include_non_persistent_ones():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("ema", torch.zeros(3))
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

    a, b = Net(), Net()
    a.ema += 1
    a.scratch += 2
    load_module_buffers(b, module_buffers(a))
    assert torch.equal(b.ema, a.ema) and torch.equal(b.scratch, a.scratch)
    with pytest.raises(CheckpointError, match="lacks buffers \\['scratch'\\]"):
        load_module_buffers(b, {"ema": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="'ema' has shape"):
        load_module_buffers(b, {"ema": torch.zeros(4), "scratch": torch.zeros(2)})
