"""The results chapters' machinery: experiment catalogue, run-or-resume with snapshots, official-protocol
evaluation, efficiency measurements, result references, and the paper profile end to end at smoke sizes."""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path

import pytest
import torch

from moero.book import evaluation, experiments, logs, routes, runspec, show
from moero.book.profiles import notebook_params
from moero.train import efficiency

ROOT = Path(__file__).resolve().parents[1]


def shrunk_paper_params(notebook: str = "08_model_ablation") -> dict:
    """The paper profile's parameters with sizes shrunk to seconds (everything else as the paper runs it)."""
    p = notebook_params(notebook, "paper")
    train = {**p["train"], "preset": "tiny", "image_shape": [32, 24], "max_val_examples": 2, "num_workers": 0,
             "accelerations": [4, 8], "acs": 8, "device": "cpu", "checkpoint_every": 1}
    return {"train": train, "budget_unit": "steps", "budgets": [1, 2], "curve_budgets": [1, 2], "experts": [2],
            "nav": {"warmup": 1, "buffer_size": 2, "restarts": 1, "max_iter": 5}, "eval_files": 1,
            "eval_shape": [48, 32], "nproc": 1, "workers": 1, "ratios": [0.0], "small_subjects": 1,
            "small_budgets": [1], "small_seeds": [0], "seeds": [0], "test_accelerations": [8, 16], "threads": 2,
            "cg": {"iters": 2, "lams": [0.01, 0.1]}}


@pytest.fixture()
def build(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MOERO_BUILD_DIR", str(tmp_path / "_build"))
    return tmp_path / "_build"


def test_catalogue_names_and_ratio_runs():
    # the cpu profile trains one Moero size and no image augmentation; the catalogue knows them all
    p = {**notebook_params("07_augmentation_ablation", "cpu"), "experts": [2, 4], "augmentations": ["kspace", "image"]}
    assert notebook_params("07_augmentation_ablation", "cpu")["experts"] == [2]
    cat = runspec.catalogue(p)
    for name in ("promptmr", "vq-prompt", "moero-2x2", "moero-2x4", "kspace-aug", "image-aug"):
        assert name in cat
    assert cat["moero-2x4"].model == "moero-2x4" and cat["moero-2x4"].num_experts == 4
    assert cat["vq-prompt"].model == "vq-prompt" and cat["promptmr"].model == "promptmr"
    assert runspec.model_names(p) == ["promptmr", "vq-prompt", "moero-2x2", "moero-2x4"]
    names = [runspec.paper_model(n) for n in runspec.model_names(p)]
    assert names == ["promptmr", "vq-prompt", "moero-12x2", "moero-12x4"]
    # the full set's ratios are the baseline (ratio 0) and kspace-aug (the default ratio); the sweep is small-set
    assert runspec.ratio_experiment(p, 0.0, small=False) == "promptmr"
    assert runspec.ratio_experiment(p, p["augment_probability"], small=False) == "kspace-aug"
    with pytest.raises(KeyError, match="0.25"):
        runspec.ratio_experiment(p, 0.25, small=False)
    assert p["ratios"] == [0.0, 0.25, 0.5, 1.0]
    for r in p["ratios"]:
        exp = cat[runspec.ratio_experiment(p, r, True)]
        assert exp.subjects == p["small_subjects"] and exp.budgets == tuple(p["small_budgets"])
        assert runspec.snapshot_budgets(p, exp) == p["small_budgets"]
    # seeds: one folder per seed, the seed reaches the training config
    assert runspec.seeds(p) == [0, 1, 2, 3, 4] and runspec.seeds(p, small=True) == [0, 1, 2]
    assert cat["promptmr"].with_seed(2).run_name == "promptmr/seed-2"
    assert runspec.experiment_config(cat["promptmr"].with_seed(2), p, "/tmp/x", data_root="/tmp").seed == 2
    with pytest.raises(ValueError, match="seed"):
        runspec.Experiment("x", "x", seed=-1)
    with pytest.raises(ValueError, match="seeds"):
        runspec.seeds({"seeds": [0, 0]})
    with pytest.raises(ValueError, match="model"):
        runspec.Experiment("x", "x", model="resnet")
    with pytest.raises(ValueError, match="nproc"):
        runspec.resolve_nproc(0)


def test_small_set_trains_on_the_chosen_subjects_only(smoke_data, tmp_path):
    """The small set restricts the training split to its subjects (TrainConfig.train_subjects) in the same tree:
    no second manifest, validation and test untouched."""
    from moero.data.dataset import SliceDataset
    from moero.data.readers import read_manifest

    full = read_manifest(smoke_data)
    chosen = runspec.small_set(smoke_data, 1)
    assert len(chosen) == 1 and chosen[0] in {r["subject"] for r in full if r["split"] == "train"}
    exp = runspec.Experiment("ratio-0-small", "small", subjects=1)
    p = notebook_params("07_augmentation_ablation", "smoke")
    config = runspec.experiment_config(exp, p, tmp_path / "run", smoke_data, "smoke")
    assert config.train_subjects == chosen and config.data_root == str(smoke_data)
    train = SliceDataset(smoke_data, split="train", frames=1, subjects=config.train_subjects)
    assert {r["subject"] for r in train.records} == set(chosen)
    assert len(train.records) == sum(1 for r in full if r["split"] == "train" and r["subject"] in chosen)
    assert len(train.records) < sum(1 for r in full if r["split"] == "train")
    with pytest.raises(ValueError, match="subjects"):
        runspec.small_set(smoke_data, 0)


def test_paper_profile_end_to_end_at_smoke_sizes(smoke_data, build):
    """The paper profile's pipeline (its schedule, validation, checkpointing; sizes shrunk) on a synthetic tree
    in the real layout: snapshots, resume without retraining, evaluation by split, references, logs."""
    p = shrunk_paper_params()
    cat = runspec.catalogue(p)
    dirs = {n: experiments.ensure_run(cat[n], p, "paper", data_root=smoke_data, dataset_size="gpu", log=lambda _: None)
            for n in ("promptmr", "moero-2x2")}
    for rd in dirs.values():
        assert [runspec.snapshot_path(rd, b).is_file() for b in (1, 2)] == [True, True]
        assert rd.parent.parent == build / "runs" / "paper" and rd.name == "seed-0"
    # the snapshots differ (training happened between them) and the schedule is the paper's
    s1 = torch.load(runspec.snapshot_path(dirs["promptmr"], 1), weights_only=True)
    s2 = torch.load(runspec.snapshot_path(dirs["promptmr"], 2), weights_only=True)
    assert (s1["step"], s2["step"]) == (1, 2)
    cfg = s2["config"]  # the Moero authors' optimisation (moero.train.config.AUTHORS_TRAINING)
    assert (cfg["schedule"], cfg["grad_clip"], cfg["amp"], cfg["ssim_window"], cfg["ssim_sigma"]) == (
        "constant", 0.0, "off", "gaussian", 1.0)
    assert any(not torch.equal(a, s2["model"][k]) for k, a in s1["model"].items() if a.is_floating_point())
    # a second call resumes: nothing is retrained
    stamp = runspec.snapshot_path(dirs["promptmr"], 2).stat().st_mtime_ns
    experiments.ensure_run(cat["promptmr"], p, "paper", data_root=smoke_data, dataset_size="gpu", log=lambda _: None)
    assert runspec.snapshot_path(dirs["promptmr"], 2).stat().st_mtime_ns == stamp
    # an interrupted run (checkpoint at step 1, last snapshot missing) continues from its checkpoint
    runspec.snapshot_path(dirs["promptmr"], 2).unlink()
    (dirs["promptmr"] / "checkpoint.pt").write_bytes(runspec.snapshot_path(dirs["promptmr"], 1).read_bytes())
    messages = []
    experiments.ensure_run(cat["promptmr"], p, "paper", data_root=smoke_data, dataset_size="gpu", log=messages.append)
    assert messages == ["promptmr/seed-0: training to steps 2 (from 1)"]
    resumed = torch.load(runspec.snapshot_path(dirs["promptmr"], 2), weights_only=True)
    assert all(torch.equal(a, resumed["model"][k]) for k, a in s2["model"].items())  # exact resume
    # evaluation: the three Tab. 2 splits on the test grid (every file at each test acceleration), Moero routes
    # one expert per cascade for every scored image
    res = evaluation.evaluate_checkpoint(dirs["moero-2x2"], 2, p, smoke_data)
    assert set(res["splits"]) == {"total", "rare", "fresh"}
    assert res["splits"]["fresh"]["files"] >= 2 and 0 < res["splits"]["total"]["ssim"] <= 1
    assert sorted({f["acceleration"] for f in res["files"]}) == [8.0, 16.0]
    assert len(res["routes"]) == len(res["labels"]) > 0 and all(len(r) == 2 for r in res["routes"])
    assert {lab["acceleration"] for lab in res["labels"]} == {8.0, 16.0}
    spec = routes.specialisation_over_training(dirs["moero-2x2"], p, smoke_data)
    assert {r["label"] for r in spec} == set(routes.ROUTE_LABELS)
    assert {r["budget"] for r in spec} == set(p["budgets"])
    assert all(sum(int(c) for c in r["route_counts"].split("/")) == r["samples"] for r in spec)
    refs = evaluation.reference_rows(p, smoke_data, "gpu")
    assert set(refs) == {"zero-filled", "CG-SENSE"}
    assert refs["zero-filled"]["splits"]["total"]["files"] == res["splits"]["total"]["files"]
    # CG-SENSE's weight is the validation-best of the sweep; the test files and masks are the models'
    sweep = refs["CG-SENSE"]["val_sweep"]
    assert [r["lam"] for r in sweep] == [0.01, 0.1]
    assert refs["CG-SENSE"]["lam"] == max(sweep, key=lambda r: r["val_ssim"])["lam"]
    assert [(f["file"], f["kind"], f["acceleration"]) for f in refs["CG-SENSE"]["files"]] == [
        (f["file"], f["kind"], f["acceleration"]) for f in res["files"]]
    curves = logs.learning_curves(dirs["moero-2x2"])
    assert [s for s, _ in curves["loss"]] == [1, 2] and curves["val_ssim"]  # the paper profile validates
    assert [h["step"] for h in logs.route_history(dirs["moero-2x2"])] == [1, 2]
    assert logs.segment_speed(dirs["promptmr"]) > 0
    # other settings under the same name start afresh; the paper profile's multi-process path (torchrun, gloo)
    changed = {**p, "train": {**p["train"], "lr": 1e-3}, "budgets": [1], "curve_budgets": [1]}
    messages = []
    rd = experiments.ensure_run(cat["moero-2x2"], changed, "paper", data_root=smoke_data, dataset_size="gpu", nproc=2,
                      log=messages.append)
    assert messages[0] == "moero-2x2/seed-0: settings changed, starting the run afresh"
    assert not runspec.snapshot_path(rd, 2).exists() and runspec.snapshot_path(rd, 1).is_file()
    segment = [json.loads(line) for line in (rd / "segments.jsonl").read_text().splitlines()]
    assert [s["world_size"] for s in segment] == [2]
    assert sum(logs.route_history(rd)[-1]["counts"][0]) == 2  # one sample per rank, counts synchronised


def test_model_ablation_notebook_paper_profile_table_and_provenance(smoke_data, build):
    """One papermill execution of chapter 8 under the paper profile (shrunk): Tab. 2 has its promised rows and
    columns, and the provenance names the commit."""
    from moero.book.run import git_commit
    from moero.book.runner import run_notebook

    p = shrunk_paper_params()
    out = build / "results" / "paper" / "08_model_ablation"
    # chapter 8's cost columns are chapter 9's measurement (one source): run it first, at the same shrunk models
    names = ["promptmr", "vq-prompt", "moero-2x2"]
    run_notebook(ROOT / "notebooks" / "09_efficiency.py", "paper", build / "executed" / "paper",
                 {"profile": "paper", "data_root": str(smoke_data), "params": {
                     "names": names, "preset": "tiny", "cascades": 2, "shape": [32, 24], "rounds": 1, "warmup": 1,
                     "ddp_names": [], "stage_steps": 1, "stage_shape": [32, 24], "threads": 1}},
                 force=True, progress_bar=False)
    run_notebook(ROOT / "notebooks" / "08_model_ablation.py", "paper", build / "executed" / "paper",
                 {"profile": "paper", "params": p, "data_root": str(smoke_data)}, force=True, progress_bar=False)
    with open(out / "table2.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for col in ("method", "ssim_total", "ssim_rare", "ssim_fresh", "peak_memory_mib", "iterations_per_s",
                "speed_vs_baseline", "memory_vs_baseline",
                "train_iterations_per_s", "paper_ssim_total", "paper_ssim_rare", "paper_ssim_fresh", "paper_memory_gb"):
        assert col in rows[0], col
    for col in ("seeds", "ssim_total_sd", "ssim_r8", "ssim_r16", "r_eff"):
        assert col in rows[0], col
    runs = [r["run"] for r in rows]
    assert runs == ["promptmr"] * 2 + ["vq-prompt"] * 2 + ["moero-2x2"] * 2 + ["reference"] * 2
    assert rows[-2]["method"] == "zero-filled" and rows[-1]["method"].startswith("CG-SENSE (lambda ")
    assert rows[0]["paper_ssim_total"] == "0.836" and rows[0]["paper_epochs"] == "12"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["complete"] and prov["commit"] == git_commit() and prov["profile"] == "paper"
    assert {"table2.csv", "table2.md", "table2_budgets.png"} <= set(prov["files"])


def test_efficiency_rows_and_stages(smoke_data):
    names = ["moero-2x2", "promptmr"]  # the first model is the baseline of the ratios
    rows = efficiency.throughput(names, "tiny", (32, 24), cascades=2, rounds=1, warmup=1)
    assert [r["model"] for r in rows] == names and [r["experts"] for r in rows] == [2, 1]
    for row in rows:
        assert row["speed_vs_baseline"] == pytest.approx(rows[0]["s_per_it"] / row["s_per_it"])
        assert row["memory_vs_baseline"] == pytest.approx(row["peak_mib"] / rows[0]["peak_mib"])
        assert row["it_per_s"] == pytest.approx(1 / row["s_per_it"]) and row["peak_mib"] > 0
        model = efficiency.build_model(row["model"], "tiny", 2)
        assert row["parameters"] == sum(p.numel() for p in model.parameters())
    assert rows[0]["parameters"] > rows[1]["parameters"]
    from moero.data.dataset import SliceDataset
    from moero.physics.masks import MaskSampler

    model = efficiency.build_model("moero-2x2", "tiny", 2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ds = SliceDataset(smoke_data, split="train", frames=3, mask_sampler=MaskSampler(acs=8), shape=(32, 24))
    start = time.perf_counter()
    steps = efficiency.stage_times(model, ds, None, steps=2)
    elapsed = time.perf_counter() - start
    assert [r["step"] for r in steps] == [0, 1] and set(efficiency.STAGES) < set(steps[0])
    assert all(r[s] >= 0 for r in steps for s in efficiency.STAGES)
    assert all(r["forward"] > 0 and r["backward"] > 0 for r in steps)
    # the stages are disjoint slices of the wall clock: together they cannot exceed it
    assert sum(r["total"] for r in steps) <= elapsed
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)  # optimiser ran
    with pytest.raises(ValueError, match="unknown model"):
        efficiency.build_model("transformer")
    with pytest.raises(ValueError, match="world"):
        efficiency.ddp_throughput(["promptmr"], world=1)


def test_referring_to_a_result_no_run_produced_fails(tmp_path):
    from moero.book.run import start_run

    run = start_run("09_efficiency", profile="smoke", results_dir=tmp_path)
    run.table([{"a": 1}], "made")
    assert show.require_result(tmp_path, "made.csv").is_file()
    assert show.read_table(tmp_path, "made") == [{"a": "1"}]
    with pytest.raises(runspec.MissingResultError, match="never.png"):
        show.require_result(tmp_path, "never.png")
    (tmp_path / "stray.csv").write_text("x\n1\n")  # on disk, but no run recorded it
    with pytest.raises(runspec.MissingResultError, match="not recorded"):
        show.require_result(tmp_path, "stray.csv")


def test_book_chapter_referring_to_a_missing_result_fails_the_run(tmp_path):
    """A chapter that shows a result file no run produced stops papermill, hence ``make book``."""
    from moero.book.runner import NotebookFailed, run_notebook

    src = tmp_path / "notebooks" / "99_missing.py"
    src.parent.mkdir()
    src.write_text("# %%\nfrom moero.book import runspec, logs, evaluation, show, experiments\n"
                   "show.show_result(" + repr(str(tmp_path)) + ", 'table9')\n")
    with pytest.raises(NotebookFailed, match="MissingResultError"):
        run_notebook(src, "smoke", tmp_path / "executed", {}, force=True, progress_bar=False)


def test_profiles_share_one_run_configuration_across_chapters():
    """06, 07 and 08 must agree on the runs' settings, or one chapter would retrain another's runs."""
    keys = ("train", "budget_unit", "budgets", "curve_budgets", "nav", "augment_probability", "ratios",
            "small_subjects", "experts")
    for profile in ("smoke", "cpu", "gpu", "paper"):
        ps = [notebook_params(nb, profile) for nb in ("06_training", "07_augmentation_ablation", "08_model_ablation")]
        for key in keys:
            assert ps[0][key] == ps[1][key] == ps[2][key], (profile, key)
    paper = notebook_params("08_model_ablation", "paper")
    assert paper["train"]["preset"] == "paper" and paper["budgets"] == [12, 18, 24]
    assert paper["budget_unit"] == "epochs" and paper["nproc"] == "all"
    assert copy.deepcopy(paper) == notebook_params("08_model_ablation", "paper")


def test_plan_covers_every_result_of_the_chapters_once():
    p = notebook_params("06_training", "cpu")
    jobs = experiments.plan(p)
    runs = [j.exp.run_name for j in jobs if j.exp is not None]
    headline = len(runspec.model_names(p)) + len(runspec.augmented_names(p))  # 4 in the cpu profile: no image-aug
    assert headline == 4 and runspec.augmented_names(p) == ["kspace-aug"]
    assert len(runs) == len(set(runs)) == headline * len(p["seeds"]) + len(p["ratios"]) * len(p["small_seeds"])
    assert sum(j.exp is None for j in jobs) == 1  # the references
    by_name = {j.exp.run_name: j for j in jobs if j.exp is not None}
    for name in runspec.model_names(p):  # Tab. 2: test at every budget, for every seed
        for seed in runspec.seeds(p):
            evals = by_name[f"{name}/seed-{seed}"].evals
            assert [b for k, b in evals if k == "test"] == sorted(p["budgets"])
            assert [b for k, b in evals if k == "val"] == sorted(p["curve_budgets"])
    assert [b for k, b in by_name["kspace-aug/seed-1"].evals if k == "test"] == [max(p["budgets"])]
    small = by_name[f"{runspec.ratio_experiment(p, 0.25, True)}/seed-0"]
    assert small.exp.subjects == p["small_subjects"] and small.evals[-1] == ("test", max(p["small_budgets"]))


def test_prepare_trains_in_parallel_workers_and_keeps_what_is_done(smoke_data, build):
    p = shrunk_paper_params()
    cat = runspec.catalogue(p)
    jobs = [experiments.Job(cat["promptmr"].with_seed(s), (("test", 2),)) for s in (0, 1)]
    times = experiments.prepare(p, "paper", smoke_data, "gpu", workers=2, jobs=jobs)
    dirs = [build / "runs" / "paper" / "promptmr" / f"seed-{s}" for s in (0, 1)]
    assert set(times) == {str(d) for d in dirs}
    snaps = [torch.load(runspec.snapshot_path(d, 2), weights_only=True) for d in dirs]
    assert snaps[0]["config"]["seed"] == 0 and snaps[1]["config"]["seed"] == 1
    assert any(not torch.equal(a, snaps[1]["model"][k]) for k, a in snaps[0]["model"].items()
               if a.is_floating_point())  # other seeds, other weights
    stamp = runspec.snapshot_path(dirs[0], 2).stat().st_mtime_ns
    experiments.prepare(p, "paper", smoke_data, "gpu", workers=1, jobs=jobs[:1])  # done already: nothing retrained
    assert runspec.snapshot_path(dirs[0], 2).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="workers"):
        experiments.prepare(p, "paper", smoke_data, "gpu", nproc=2, workers=2, jobs=jobs)


def test_routing_settings_restart_moero_runs_only():
    """A change of the profile's routing settings (or of the config's nav defaults) starts Moero runs afresh
    and keeps every other run: their specs carry no routing settings, and older specs that did still match."""
    from moero.book.experiments import _same_spec, _spec
    from moero.book.runspec import Experiment, experiment_config

    params = notebook_params("06_training", "smoke")
    changed = {**params, "nav": {**params["nav"], "calibration": 2}}
    for model, restarts in (("promptmr", False), ("moero-2x2", True)):
        exp = Experiment(name=model, label=model, model=model, seed=0)
        old, new = (_spec(exp, experiment_config(exp, p, "/tmp/run", None, "smoke"), p) for p in (params, changed))
        assert (not _same_spec(json.loads(json.dumps(old)), new)) is restarts, model
    exp = Experiment(name="promptmr", label="promptmr", model="promptmr", seed=0)
    spec = _spec(exp, experiment_config(exp, params, "/tmp/run", None, "smoke"), params)
    legacy = json.loads(json.dumps({**spec, "nav": params["nav"],
                                    "config": {**spec["config"], "nav": {"warmup": "epoch"}}}))
    assert _same_spec(legacy, spec)


def test_identical_share_counts_the_largest_group_of_equal_histograms():
    """What no router can split: 3 of 5 rows equal -> 0.6; all distinct -> 1/N; none -> NaN."""
    same = torch.tensor([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    assert routes.identical_share(same) == pytest.approx(0.6)
    assert routes.identical_share(torch.eye(4)) == pytest.approx(0.25)
    assert routes.identical_share(torch.zeros(0, 3)) != routes.identical_share(torch.zeros(0, 3))  # NaN
