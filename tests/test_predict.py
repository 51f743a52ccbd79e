"""The challenge path end to end on the synthetic set: test phase -> `predict` -> `eval --submission`,
checked against `eval` on the fully sampled truth; the submission format the official loader reads."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from moero.data.testphase import write_test_phase
from moero.eval.submission import (
    load_img4ranking,
    save_img4ranking,
    score_submission,
    truth_img4ranking,
)

STATIC = ("BlackBlood", "T1w", "T2w")


@pytest.fixture(scope="module")
def phase(tmp_path_factory, smoke_data) -> dict[str, Path]:
    """Smoke synthetic set and its test phase with one deterministic pattern (Uniform R = 4)."""
    tmp = tmp_path_factory.mktemp("phase")
    root = smoke_data
    rows = write_test_phase(root, tmp / "test", tmp / "truth", task="TaskR1", patterns={"Uniform": [4]}, seed=3)
    return {"root": root, "test": tmp / "test", "truth": tmp / "truth", "tmp": tmp, "rows": rows}


def _truth_submission(phase: dict, out: Path) -> list[Path]:
    """A submission made of the truth's own img4ranking, at the official paths."""
    from moero.data.readers import load_cmrxrecon

    written = []
    for row in phase["rows"]:
        modality = Path(row["truth"]).parts[1]
        array = truth_img4ranking(load_cmrxrecon(phase["truth"] / row["truth"]).kspace, modality)
        written.append(save_img4ranking(out / "TaskR1" / row["kus"], array))
    return written


class ChallengeUniform4:
    """The test phase's masks as a dataset mask sampler: Uniform R = 4 with the challenge's 20 ACS lines."""

    def sample(self, shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, dict]:
        from moero.physics.masks import make_mask

        return make_mask("uniform", shape, 4, acs=20, seed=seed), {"kind": "uniform", "acceleration": 4, "acs": 20}


def test_test_phase_layout_and_masks(phase):
    from moero.data.readers import load_cmrxrecon

    row = next(r for r in phase["rows"] if "/Cine/" in r["kus"])
    vol = load_cmrxrecon(phase["test"] / row["kus"], phase["test"] / row["mask"])
    full = load_cmrxrecon(phase["truth"] / row["truth"])
    assert vol.key == "kus" and vol.mask.shape == (full.shape[0], *full.shape[-2:])
    assert torch.equal(vol.kspace, full.kspace * vol.mask[:, None, None])  # zeros where not sampled
    lines = vol.mask[0, 0]  # Uniform R = 4: a quarter of the phase-encode lines plus 20 ACS, in every frame
    w = lines.numel()
    assert w // 4 <= int(lines.sum()) <= w // 4 + 21 and lines[w // 2] and bool((vol.mask == lines).all())
    assert not (phase["test"] / "manifest.csv").exists() and (phase["truth"] / "manifest.csv").is_file()
    assert {r["pattern"] for r in phase["rows"]} == {"Uniform"}


def test_submission_of_the_truth_scores_ssim_one_and_missing_files_count_zero(phase, tmp_path):
    written = _truth_submission(phase, tmp_path / "sub")
    arr = load_img4ranking(written[0])
    assert arr.dtype == np.float32 and arr.ndim in (3, 4)
    res = score_submission(tmp_path / "sub", phase["truth"], progress=False)
    assert len(res["files"]) == len(phase["rows"]) and not res["missing"]
    assert all(abs(r["ssim"] - 1) < 1e-9 and r["nmse"] < 1e-12 for r in res["files"])
    assert all(abs(g["ssim"] - 1) < 1e-9 for g in res["groups"])

    # 4-D files (several frames) take the submission's range, as the official calmetric(gt, recon) does
    from moero.eval.metrics import score_images
    from moero.eval.submission import ranking_images

    cine = next(p for p in written if "/Cine/" in p.as_posix() and load_img4ranking(p).ndim == 4)
    truth = load_img4ranking(cine)
    noisy = (truth * (1 + 0.2 * np.random.default_rng(0).random(truth.shape))).astype(np.float32)
    save_img4ranking(cine, noisy)
    rows = {r["file"]: r for r in score_submission(tmp_path / "sub", phase["truth"], progress=False)["files"]}
    row = rows[cine.relative_to(tmp_path / "sub").as_posix()]
    swapped = score_images(ranking_images(noisy), ranking_images(truth), crop=False)
    plain = score_images(ranking_images(truth), ranking_images(noisy), crop=False)
    assert row["nmse"] == pytest.approx(float(swapped["nmse"].mean()), rel=1e-9)
    assert abs(row["nmse"] - float(plain["nmse"].mean())) > 1e-4
    rows = {r["file"]: r for r in score_submission(tmp_path / "sub", phase["truth"], progress=False,
                                                      official_order=False)["files"]}
    assert rows[row["file"]]["nmse"] == pytest.approx(float(plain["nmse"].mean()), rel=1e-9)
    save_img4ranking(cine, truth)

    # a missing file counts 0 in its group (sum / expected) and is listed
    gone = written[0]
    gone.unlink()
    res = score_submission(tmp_path / "sub", phase["truth"], progress=False)
    assert [m["truth"] for m in res["missing"]] == [phase["rows"][0]["truth"]]
    group = next(g for g in res["groups"] if g["files"] < g["expected"])
    assert group["ssim"] == pytest.approx((group["expected"] - 1) / group["expected"])
    # a v7.3 (HDF5) file comes back with reversed axes, as the official loader reads it: not scored
    from moero.data.matfile import write_mat73

    write_mat73(gone, {"img4ranking": arr.T.copy()}, matlab_order=False)
    res = score_submission(tmp_path / "sub", phase["truth"], progress=False)
    bad = next(r for r in res["files"] if r["file"].endswith(gone.relative_to(tmp_path / "sub").as_posix()))
    assert "shape mismatch" in bad["comment"] and math.isnan(bad["ssim"]) and len(res["missing"]) == 1
    with pytest.raises(ValueError, match="extra file"):
        save_img4ranking(tmp_path / "sub" / "TaskR1" / Path(phase["rows"][0]["kus"]).with_name(
            "nothing_kus_Uniform4.mat"), arr)
        score_submission(tmp_path / "sub", phase["truth"], progress=False)


def test_predict_then_eval_submission_matches_eval_on_the_truth(phase, tmp_path, capsys):
    from moero.cli import main
    from moero.data.dataset import SliceDataset
    from moero.eval.evaluate import evaluate
    from moero.train.runs import load_trained

    run = tmp_path / "run"
    assert main(["train", "--data-root", str(phase["root"]), "--run-dir", str(run), "--device", "cpu",
                 "--progress", "false", "--preset", "tiny", "--model", "promptmr", "--max-steps", "1",
                 "--val-every", "0", "--set", "mask_kinds=[uniform]", "--set", "accelerations=[4]"]) == 0
    # a file without its mask: an error naming file and key, the others are still written
    broken = next(r for r in phase["rows"] if Path(r["kus"]).parts[1] in STATIC)
    test = tmp_path / "test"
    import shutil

    shutil.copytree(phase["test"], test)
    (test / broken["mask"]).unlink()
    keep = [r for r in phase["rows"] if Path(r["kus"]).parts[1] in STATIC]
    for r in phase["rows"]:  # keep the test fast: static modalities only (one image per slice)
        if r not in keep:
            (test / r["kus"]).unlink()
    capsys.readouterr()
    sub = tmp_path / "sub"
    assert main(["predict", "--checkpoint", str(run), "--data", str(test), "--task", "TaskR1", "--out", str(sub),
                 "--device", "cpu", "--no-progress"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["written"] == len(keep) - 1 and len(report["errors"]) == 1
    assert broken["kus"] in captured.err and "[key 'mask']" in captured.err
    with zipfile.ZipFile(report["zip"]) as zf:
        assert len(zf.namelist()) == len(keep) - 1 and all(n.startswith("TaskR1/MultiCoil/") for n in zf.namelist())
    # resumable: nothing is recomputed once written
    assert main(["predict", "--checkpoint", str(run), "--data", str(test), "--task", "TaskR1", "--out", str(sub),
                 "--device", "cpu", "--no-progress"]) == 1
    assert json.loads(capsys.readouterr().out)["skipped"] == len(keep) - 1

    scores = tmp_path / "scores"
    assert main(["eval", "--submission", str(sub), "--ground-truth", str(phase["truth"]), "--out", str(scores)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert broken["truth"] in out["missing"] and len(out["missing"]) == len(phase["rows"]) - len(keep) + 1
    assert (scores / "submission_groups.csv").is_file()
    submitted = {r["truth"]: r for r in score_submission(sub, phase["truth"], progress=False)["files"]}

    # the same model, masks and images through `eval` on the fully sampled truth
    model, _, _ = load_trained(run / "checkpoint.pt")
    dataset = SliceDataset(phase["truth"], frames=int(model.config.frames), modalities=list(STATIC),
                           mask_sampler=ChallengeUniform4())
    reference = {r["file"]: r for r in evaluate(model, dataset, "cpu", progress=False)["files"]}
    assert set(submitted) == set(reference) - {broken["truth"]}
    for name, row in submitted.items():
        for metric in ("ssim", "psnr", "nmse"):
            assert row[metric] == pytest.approx(reference[name][metric], rel=1e-6, abs=1e-9), (name, metric)


def test_generate_data_writes_the_test_phase_with_challenge_masks(smoke_copy, tmp_path, capsys):
    from moero.cli import main
    from moero.data.layout import layout_index
    from moero.data.readers import read_manifest

    root = smoke_copy  # generate-data writes into --root when the code or settings changed: a private copy
    out = tmp_path / "tp"
    assert main(["generate-data", "--size", "smoke", "--root", str(root), "--test-phase", str(out),
                 "--seed", "0"]) == 0
    capsys.readouterr()
    kus = [r for r in layout_index(out) if r["kind"] == "kus"]
    tests = [r for r in read_manifest(root) if r["split"] in ("test-total", "rare", "fresh")]
    assert len(kus) == len(tests) and all(r["mask_file"] for r in kus)
    assert {r["pattern"] for r in kus} <= {"Uniform", "ktGaussian", "ktRadial"} and len({r["pattern"] for r in kus}) > 1
    assert len(read_manifest(tmp_path / "tp-truth")) == len(tests)
    again = tmp_path / "again"
    write_test_phase(root, again, tmp_path / "again-truth", seed=0)
    for r in kus:  # the same seed draws the same patterns and masks
        assert (again / r["mask_file"]).read_bytes() == (out / r["mask_file"]).read_bytes()


def test_official_group_scores_per_centre_and_per_disease_count_missing_files():
    """TaskR1 (centre, vendor) and TaskR2 (disease) groups of Val_Score2025.py: SSIM/PSNR are sums over
    the EXPECTED files (a missing file counts 0), NMSE is mean * (2 - n / N); a group with no scored file
    is still listed."""
    from moero.eval.submission import _group_scores as group_scores

    expected = [{"centre": "C1", "vendor": "V", "pathology": "scar"}, {"centre": "C1", "vendor": "V", "pathology": ""},
                {"centre": "C2", "vendor": "W", "pathology": "scar"}]
    scored = [{"centre": "C1", "vendor": "V", "pathology": "scar", "ssim": 0.8, "psnr": 30.0, "nmse": 0.1}]
    out = group_scores(scored, expected)
    c1, c2 = out["groups"]
    assert (c1["expected"], c1["files"], c1["ssim"], c1["psnr"]) == (2, 1, 0.4, 15.0)
    assert c1["nmse"] == pytest.approx(0.1 * (2 - 1 / 2)) and c2["files"] == 0 and c2["ssim"] == 0.0
    (scar,) = out["diseases"]
    assert (scar["disease"], scar["expected"], scar["files"], scar["ssim"]) == ("scar", 2, 1, 0.4)


class _WindowSpy(torch.nn.Module):
    """Records the frames of every window it is given (frame ``t`` of the test volume holds ``t + 1``) and
    returns the magnitude of its centre frame's first coil as the image."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.config = type("Config", (), {"frames": frames})()
        self.windows: list[list[int]] = []

    def forward(self, masked_kspace, mask, num_low_frequencies=None):
        from moero.models.io import ReconOutput

        self.windows.append([int(v) for v in masked_kspace[0, :, 0, 0, 0].real.round().tolist()])
        image = masked_kspace[:, masked_kspace.shape[1] // 2, 0].abs()
        return ReconOutput(image, masked_kspace.real.new_zeros(()))


@pytest.mark.parametrize("modality, num_frames, cyclic", [("Cine", 12, True), ("Mapping", 9, False)])
def test_each_submitted_frame_is_reconstructed_from_its_own_frame_window(modality, num_frames, cyclic):
    """A multi-frame file: every kept frame is one model call on the window of adjacent frames centred on
    *that* frame (cine windows wrap around the cardiac cycle), never one frame's reconstruction reused."""
    from moero.data.dataset import adjacent_frames
    from moero.data.readers import Volume
    from moero.eval.submission import ranking_selection
    from moero.train.predict import reconstruct_selection

    z, h, w = 4, 6, 8
    frame_id = torch.arange(1, num_frames + 1, dtype=torch.float32)[:, None, None, None, None]
    slice_id = torch.arange(z, dtype=torch.float32)[None, :, None, None, None]
    kspace = torch.complex(frame_id.expand(num_frames, z, 2, h, w), slice_id.expand(num_frames, z, 2, h, w))
    volume = Volume(kspace.contiguous(), torch.ones(num_frames, h, w, dtype=torch.bool), Path("x.mat"), "kus")
    spy = _WindowSpy(frames=3)
    out = reconstruct_selection(spy, volume, modality, 3, 20, torch.device("cpu"), cyclic=cyclic)

    keep_t, keep_z = ranking_selection(num_frames, z, modality)
    assert len(keep_t) > 1 and out.shape == (len(keep_t), len(keep_z), h, w)
    expected = [[f + 1 for f in adjacent_frames(t, 3, num_frames, cyclic)] for t in keep_t for _ in keep_z]
    assert spy.windows == expected
    assert len({tuple(win) for win in spy.windows}) == len(keep_t)  # one distinct window per kept frame
    for a, t in enumerate(keep_t):
        for b, s in enumerate(keep_z):
            assert torch.allclose(out[a, b], torch.full((h, w), abs(complex(t + 1, s))))
    if cyclic:
        assert spy.windows[0] == [num_frames, 1, 2]  # frame 0's window wraps to the last frame


def test_predict_calls_the_model_once_per_kept_frame_and_slice_with_its_frame_count(phase, tmp_path):
    from moero.data.layout import layout_index
    from moero.data.readers import load_cmrxrecon
    from moero.eval.submission import ranking_selection
    from moero.train.predict import predict

    spy = _WindowSpy(frames=3)
    result = predict(None, phase["test"], "TaskR1", tmp_path / "sub", device="cpu", progress=False, model=spy,
                     frames=3, make_zip=False)
    assert not result["errors"] and result["written"]
    calls = 0
    for row in (r for r in layout_index(phase["test"]) if r["kind"] == "kus"):
        mask = phase["test"] / row["mask_file"] if row["mask_file"] else None
        t, z = load_cmrxrecon(phase["test"] / row["file"], mask_path=mask).kspace.shape[:2]
        keep_t, keep_z = ranking_selection(t, z, row["modality"])
        calls += len(keep_t) * len(keep_z)
    assert len(spy.windows) == calls and {len(win) for win in spy.windows} == {3}  # frames=3 windows
