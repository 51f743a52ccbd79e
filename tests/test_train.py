"""Trainer: exact resume after an interruption or a crash, hooks, schedules, records, config errors, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from engine_helpers import TinyNet, TinySlices

from moero.models.io import collate_examples, example_meta, set_gradient_checkpointing
from moero.train import distributed as mdist
from moero.train.config import TrainConfig
from moero.train.trainer import Trainer


def _augment(example, generator):
    """A random complex scale of the k-space, drawn from the dataset's per-example generator."""
    phase = torch.rand((), generator=generator) * 2 * math.pi
    scale = 0.8 + 0.4 * torch.rand((), generator=generator)
    return {**example, "kspace": example["kspace"] * (scale * torch.exp(1j * phase)).to(torch.complex64)}


def _trainer(tmp_path, name, init_seed=0, callbacks=(), model=None, **overrides):
    torch.manual_seed(init_seed)
    model = model if model is not None else TinyNet()
    values = {"run_dir": str(tmp_path / name), "device": "cpu", "epochs": 2, "lr": 3e-3, "checkpoint_every": 5,
              "progress": False, "seed": 3, **overrides}
    mdist.seed_everything(init_seed + 100)  # a different global RNG per run: resume must restore it
    return Trainer(TrainConfig(**values), model, TinySlices(augment=_augment), TinySlices(n=4, seed=1),
                   callbacks=callbacks)


def _assert_same_state(a: Trainer, b: Trainer):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    for (na, ba), (nb, bb) in zip(a.model.named_buffers(), b.model.named_buffers(), strict=True):
        assert na == nb and torch.equal(ba, bb), na
    for pa, pb in zip(a.optimizer.state.values(), b.optimizer.state.values(), strict=True):
        for k in pa:
            assert torch.equal(pa[k], pb[k])
    assert a.step == b.step and a.epoch == b.epoch


def _losses(history):
    keep = ("kind", "step", "epoch", "loss", "ssim_loss", "vq_loss", "grad_norm", "lr", "ssim", "psnr", "nmse")
    return [{k: r[k] for k in keep if k in r} for r in history if r["kind"] != "summary"]


def test_interrupted_and_resumed_run_is_bitwise_identical(tmp_path):
    full = _trainer(tmp_path, "full")
    full_summary = full.fit()
    assert full_summary["complete"] and full.step == 16

    first = _trainer(tmp_path, "cut", max_steps_this_run=7)  # stops mid-epoch 0, after a checkpoint
    cut_summary = first.fit()
    assert not cut_summary["complete"] and first.step == 7
    resumed = _trainer(tmp_path, "cut", init_seed=1, resume=True)  # other initial weights: the checkpoint wins
    resumed.fit()
    _assert_same_state(full, resumed)
    assert _losses(full.history) == _losses(resumed.history)
    logged = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert _losses(logged) == _losses(full.history)
    vals = [r for r in resumed.history if r["kind"] == "val"]
    assert [v["epoch"] for v in vals] == [0, 1] and all(0 < v["ssim"] <= 1 for v in vals)


def test_crash_in_a_callback_resumes_from_the_last_checkpoint(tmp_path):
    full = _trainer(tmp_path, "full", schedule="cosine", warmup_steps=2)
    full.fit()

    def crash(record):
        if record.get("step") == 12 and record["kind"] == "train":
            raise RuntimeError("simulated crash")

    crashing = _trainer(tmp_path, "crash", schedule="cosine", warmup_steps=2, callbacks=[crash])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    resumed = _trainer(tmp_path, "crash", init_seed=2, schedule="cosine", warmup_steps=2, resume=True)
    resumed.fit()
    assert resumed.history[0]["step"] == 1  # the log up to the checkpoint (step 10) was kept, 11-12 replayed
    _assert_same_state(full, resumed)
    assert _losses(full.history) == _losses(resumed.history)


def test_records_summary_and_log(tmp_path):
    seen = []
    tr = _trainer(tmp_path, "rec", epochs=1, callbacks=[seen.append])
    summary = tr.fit()
    assert seen == tr.history and seen[-1] is summary
    lines = (tmp_path / "rec" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == json.loads(json.dumps(tr.history))
    assert summary["iterations_per_s"] > 0 and summary["peak_memory_bytes"] > 10 * 2**20
    assert summary["steps_this_run"] == 8 and "ssim" in summary
    assert (tmp_path / "rec" / "checkpoint.pt").is_file() and (tmp_path / "rec" / "config.yaml").is_file()
    # the VQ statistics were synced (and applied) exactly once per step by the trainer
    assert int(tr.model.vq.steps) == 8 and not tr.model.vq.auto_update


class HookedNet(TinyNet):
    """A model that takes over VQ syncing: the trainer must call its hook and leave the VQ alone."""

    handles_vq_sync = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def after_backward(self, step):
        assert all(p.grad is not None for p in self.parameters())  # called after backward
        self.calls.append(step)


def test_after_backward_hook_and_handles_vq_sync(tmp_path):
    tr = _trainer(tmp_path, "hook", epochs=1, model=HookedNet(), max_steps=3)
    tr.fit()
    assert tr.model.calls == [0, 1, 2]
    assert int(tr.model.vq.steps) == 0  # the model said it syncs its VQ itself; the trainer did not


def test_learning_rate_schedules(tmp_path):
    tr = _trainer(tmp_path, "lr", epochs=3)
    spe = tr.steps_per_epoch
    assert tr.lr_factor(0) == 1.0 and tr.lr_factor(2 * spe - 1) == 1.0 and tr.lr_factor(2 * spe) == 0.1
    cos = _trainer(tmp_path, "cos", epochs=3, schedule="cosine", warmup_steps=4)
    assert cos.lr_factor(0) == pytest.approx(0.25) and cos.lr_factor(3) == pytest.approx(1.0)
    assert cos.lr_factor(cos.total_steps) == pytest.approx(0.0, abs=1e-12)
    one = _trainer(tmp_path, "one", epochs=1)
    assert one.lr_factor(7) == 1.0  # a one-epoch run keeps its rate


def test_gradient_checkpointing_switch_reaches_the_model():
    from moero.models.promptmr import PromptMR, preset

    model = PromptMR(preset("tiny", checkpoint=False))
    set_gradient_checkpointing(model, True)
    assert model.config.checkpoint is True
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        set_gradient_checkpointing(torch.nn.Linear(2, 2), True)
    set_gradient_checkpointing(torch.nn.Linear(2, 2), False)  # nothing to switch off: fine


def test_collate_and_meta():
    ds = TinySlices(n=4)
    batch = collate_examples([ds[0], ds[3]])
    assert batch["masked_kspace"].shape == (2, 3, 2, 24, 20) and batch["meta"]["file"] == ["vol0", "vol1"]
    assert example_meta(batch, "file", 1) == "vol1" and example_meta(batch, "slice", 1) == 3
    nested = collate_examples([{"x": torch.zeros(2), "meta": {"file": "a"}},
                               {"x": torch.ones(2), "meta": {"file": "b"}}])
    assert example_meta(nested, "file", 1) == "b"
    with pytest.raises(ValueError, match="'x' has shapes"):
        collate_examples([{"x": torch.zeros(2)}, {"x": torch.zeros(3)}])


def test_malformed_config_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="'lr'"):
        TrainConfig(lr="fast")
    with pytest.raises(ValueError, match="'batch_size'"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="'schedule'"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="'resume'"):
        TrainConfig(resume="maybe")
    with pytest.raises(ValueError, match="'accelerations'"):
        TrainConfig(accelerations=["four"])
    with pytest.raises(ValueError, match="unknown config fields \\['learning_rate'\\]"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nbatch_size: two\n")
    with pytest.raises(ValueError, match="bad.yaml.*'batch_size'"):
        TrainConfig.from_yaml(bad)
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 3\nlr: 1e-3\naccelerations: [4, 8]\nresume: true\n")
    cfg = TrainConfig.from_yaml(good, {"epochs": "5"})
    assert cfg.epochs == 5 and cfg.lr == 1e-3 and cfg.accelerations == [4.0, 8.0] and cfg.resume is True
    with pytest.raises(ValueError, match="'amp'"):
        Trainer(TrainConfig(run_dir=str(tmp_path / "amp"), device="cpu", amp="bf16"), TinyNet(), TinySlices())


def test_cli_builds_the_config_from_yaml_flags_and_set(tmp_path):
    from moero.cli import build_parser, config_from_args

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 4\npreset: small\n")
    args = build_parser().parse_args(
        ["train", "--config", str(cfg_file), "--lr", "0.001", "--set", "epochs=6", "--set", "mask_kinds=[uniform]",
         "--resume", "--run-dir", str(tmp_path / "r")]
    )
    cfg = config_from_args(args)
    assert (cfg.epochs, cfg.lr, cfg.preset, cfg.mask_kinds, cfg.resume) == (6, 0.001, "small", ["uniform"], True)
    assert cfg.run_dir == str(tmp_path / "r")
    args = build_parser().parse_args(["train", "--batch-size", "x"])
    with pytest.raises(ValueError, match="'batch_size'"):
        config_from_args(args)
    with pytest.raises(ValueError, match="unknown config field 'nope'"):
        config_from_args(build_parser().parse_args(["train", "--set", "nope=1"]))


def test_cli_trains_promptmr_on_synthetic_data_and_eval_writes_tables(tmp_path, capsys, smoke_data):
    """Integration: the real PromptMR tiny preset (VQ-Prompt) and SliceDataset on the smoke synthetic set."""
    from moero.cli import main

    root = smoke_data
    run_dir = tmp_path / "run"
    common = ["--data-root", str(root), "--run-dir", str(run_dir), "--device", "cpu", "--progress", "false",
              "--accelerations", "[4,8]"]
    # kt-radial masks lack a full centre line: the trainer passes the ACS width the model cannot measure
    assert main(["train", *common, "--set", "mask_kinds=[kt_radial]", "--preset", "tiny", "--model", "vq-prompt",
                 "--max-steps", "2", "--max-val-examples", "2",
                 "--checkpoint-every", "1"]) == 0
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["train", "train", "val", "summary"]
    assert all(math.isfinite(r["loss"]) and r["vq_loss"] > 0 for r in records[:2])
    assert 0 < records[2]["ssim"] < 1 and records[2]["images"] == 2
    from moero.train.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["step"] == 2 and any("codebook" in k for k in state["buffers"])
    assert state["sampler"] == {"epoch": 0, "seed": 0}  # the balanced sampler's position
    capsys.readouterr()

    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt"), "--out", str(out), "--device", "cpu",
                 "--set", "mask_kinds=[uniform,kt_gaussian]",
                 "--modalities", "BlackBlood,T1w,T2w", "--max-files", "2", "--splits", "test-total,rare,fresh"]) == 0
    files = (out / "eval_files.csv").read_text().splitlines()
    assert files[0].split(",")[:4] == ["model", "file", "subject", "modality"] and len(files) == 3
    splits = (out / "eval_splits.md").read_text()
    assert "| model | split | files | ssim | psnr | nmse |" in splits and "| run | total | 2 |" in splits
    zf = tmp_path / "zf"
    assert main(["eval", "--zero-filled", "--data-root", str(root), "--out", str(zf), "--device", "cpu",
                 "--modalities", "BlackBlood,T1w,T2w", "--max-files", "2", "--set", "accelerations=[8]"]) == 0
    assert "zero-filled" in (zf / "eval_groups.csv").read_text()
    assert main(["eval", "--zero-filled", "--checkpoint", "x.pt"]) == 2  # a usage error: one line, exit 2
    assert "exactly one" in capsys.readouterr().err


def test_cli_trains_moero_and_eval_loads_its_checkpoint(tmp_path, capsys, smoke_data):
    """`train --model moero-CxK` builds Moero from the registry; `eval` restores it (weights, codebooks,
    routing centres and counts) from the checkpoint alone."""
    from moero.cli import build_parser, main
    from moero.models.moero import Moero
    from moero.train.runs import load_trained

    assert "moero-<C>x<K>" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    root = smoke_data
    run_dir = tmp_path / "moero"
    assert main(["train", "--model", "moero-2x2", "--preset", "tiny", "--data-root", str(root), "--run-dir",
                 str(run_dir), "--device", "cpu", "--progress", "false", "--max-steps", "2", "--val-every", "0",
                 "--set", "nav={warmup: 0, buffer_size: 2, restarts: 1}", "--image-shape", "[32,24]"]) == 0
    routes = [json.loads(x) for x in (run_dir / "routing.jsonl").read_text().splitlines()]
    assert [r["step"] for r in routes] == [1, 2] and len(routes[-1]["counts"]) == 2
    model, config, state = load_trained(run_dir / "checkpoint.pt")
    assert isinstance(model, Moero) and (config.model, len(model.experts), model.num_experts) == ("moero-2x2", 2, 2)
    assert model.navs[0].buffer_size == 2 and state["step"] == 2
    trained = {k: v for k, v in state["model"].items() if "experts" in k}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt"), "--out", str(out), "--device", "cpu",
                 "--modalities", "BlackBlood,T1w,T2w", "--max-files", "1"]) == 0
    assert "| moero | total | 1 |" in (out / "eval_splits.md").read_text()
    assert main(["train", "--model", "moero-2", "--data-root", str(root), "--run-dir", str(tmp_path / "bad")]) == 2
    assert "config field 'model'" in capsys.readouterr().err


def _moero(calibration: int):
    from moero.models.moero import Moero
    from moero.models.registry import model_config

    config = model_config("moero-2x2", "tiny", checkpoint=False)
    return Moero(config, 2, nav_kwargs={"warmup": 0, "buffer_size": 4, "restarts": 1, "max_iter": 10,
                                        "balance": True, "calibration": calibration})


def test_moero_is_calibrated_once_at_the_end_and_resumes_bitwise(tmp_path):
    """With ``nav.calibration`` the trainer has Moero refit its navigators on the final network's histograms
    of fixed training examples once, at the last step (before the checkpoint); an interrupted and resumed run
    ends in the same bytes, the interruption's checkpoint is not calibrated, and the calibration draws nothing
    from the global generators."""
    torch.manual_seed(0)
    full = _trainer(tmp_path, "full", model=_moero(4))
    full.fit()
    assert [int(nav.calibrations) for nav in full.model.navs] == [1, 1]
    torch.manual_seed(0)
    first = _trainer(tmp_path, "cut", model=_moero(4), max_steps_this_run=7)
    first.fit()
    assert [int(nav.calibrations) for nav in first.model.navs] == [0, 0]
    torch.manual_seed(0)
    resumed = _trainer(tmp_path, "cut", model=_moero(4), init_seed=1, resume=True)
    resumed.fit()
    _assert_same_state(full, resumed)
    torch.manual_seed(0)
    off = _trainer(tmp_path, "off", model=_moero(0))
    off.fit()
    assert [int(nav.calibrations) for nav in off.model.navs] == [0, 0]
    # the same training up to the end: only the navigators' calibrated state differs
    differ = {k for k, v in off.model.state_dict().items() if not torch.equal(v, full.model.state_dict()[k])}
    assert differ and all(".navs." in f".{k}" for k in differ), sorted(differ)[:5]
