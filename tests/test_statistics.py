"""Seeds, paired standard errors, the test grid and BranchNav's fit record: what the verdicts of the results
chapters rest on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from moero.book import experiments as E
from moero.book import results as R
from moero.eval.evaluate import ZeroFilled, evaluate_grid, latin_kind
from moero.eval.stats import file_means, paired_difference, seed_summary
from moero.models.routing import BranchNav


def rows(values: dict[str, float], **extra) -> list[dict]:
    return [{"file": f, "ssim": v, **extra} for f, v in values.items()]


def test_paired_difference_matches_the_crossed_standard_error():
    rng = np.random.default_rng(0)
    a = rng.normal(0.7, 0.05, size=(3, 5))
    b = a - rng.normal(0.02, 0.01, size=(3, 5))
    runs_a = [rows({f"f{j}": a[s, j] for j in range(5)}) for s in range(3)]
    runs_b = [rows({f"f{j}": b[s, j] for j in range(5)}) for s in range(3)]
    d = a - b
    expected_se = math.sqrt(d.mean(1).var(ddof=1) / 3 + d.mean(0).var(ddof=1) / 5)
    out = paired_difference(runs_a, runs_b)
    assert out["mean"] == pytest.approx(d.mean()) and out["se"] == pytest.approx(expected_se)
    assert (out["seeds"], out["files"]) == (3, 5)
    # a deterministic reference pairs with every seed; identical results differ by exactly 0 +- 0
    ref = paired_difference(runs_a, [runs_b[0]])
    assert ref["mean"] == pytest.approx((a - b[0]).mean())
    assert paired_difference(runs_a, runs_a) == {"mean": 0.0, "se": 0.0, "seeds": 3, "files": 5}
    # a file's several masks are averaged first; a filter picks rows
    two = [{"file": "f0", "ssim": 0.2, "acceleration": 8.0}, {"file": "f0", "ssim": 0.4, "acceleration": 16.0}]
    assert file_means(two) == {"f0": pytest.approx(0.3)}
    assert file_means(two, keep=lambda r: r["acceleration"] == 16.0) == {"f0": 0.4}
    with pytest.raises(ValueError, match="per seed"):
        paired_difference(runs_a, runs_b[:2])
    with pytest.raises(ValueError, match="different test files"):
        paired_difference([runs_a[0], rows({"g": 0.1})], [runs_b[0], rows({"g": 0.1})])
    with pytest.raises(ValueError, match="no test file"):
        paired_difference([rows({"x": 1.0})], [rows({"y": 1.0})])


def test_seed_summary_and_the_verdict_rule():
    runs = [rows({"a": 0.5, "b": 0.7}), rows({"a": 0.6, "b": 0.8}), rows({"a": 0.7, "b": 0.9})]
    s = seed_summary(runs)
    assert s == {"mean": pytest.approx(0.7), "sd": pytest.approx(0.1), "seeds": 3}
    assert math.isnan(seed_summary(runs[:1])["sd"])
    with pytest.raises(ValueError, match="filter"):
        seed_summary(runs, keep=lambda r: False)
    # a verdict needs 3 seeds and a difference beyond 2 SE
    assert E.verdict(0.02, 0.01, se=0.005, seeds=3) == "holds"
    assert E.verdict(-0.02, 0.01, se=0.005, seeds=3) == "contradicts"
    assert E.verdict(0.02, 0.01, se=0.02, seeds=3).startswith("inconclusive at this scale (within 2 SE")
    assert E.verdict(0.02, 0.01, se=0.001, seeds=2).startswith("inconclusive at this scale (2 seeds")


def test_latin_square_gives_every_file_every_kind_and_every_acceleration_every_kind():
    kinds = ("uniform", "kt_gaussian", "kt_radial")
    grid = [[latin_kind(f, j, kinds) for j in range(3)] for f in range(6)]
    assert all(sorted(row) == sorted(kinds) for row in grid)  # each file: all kinds over the 3 accelerations
    for j in range(3):
        assert sorted(grid[f][j] for f in range(3)) == sorted(kinds)  # each acceleration: all kinds over files


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    from moero.data.synthetic import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("data") / "CMRxRecon2025", "smoke", 0, progress=False)


def test_evaluate_grid_scores_each_file_once_per_acceleration_with_exact_masks(smoke_data):
    from moero.data.dataset import SliceDataset
    from moero.physics.masks import MaskSampler

    seen = []

    def make(kind, acceleration):
        seen.append((kind, acceleration))
        return SliceDataset(smoke_data, split="fresh", frames=1, seed=2, shape=(40, 40),
                            mask_sampler=MaskSampler(kinds=(kind,), accelerations=(acceleration,), acs=20))

    rows_, images = evaluate_grid(ZeroFilled(), make, (8, 16))
    files = [rec["file"] for rec in make("uniform", 8).records]  # the dataset's file order
    assert sorted(files) == sorted({r["file"] for r in rows_})
    assert len(rows_) == 2 * len(files)  # the Latin design: one mask kind per file and acceleration
    for r in rows_:
        index = files.index(r["file"])
        assert r["kind"] == latin_kind(index, (8.0, 16.0).index(r["acceleration"]), ("uniform", "kt_gaussian",
                                                                                      "kt_radial"))
    # the realised acceleration grows with the nominal one (ACS included, so below it)
    r8 = np.mean([r["r_eff"] for r in rows_ if r["acceleration"] == 8.0])
    r16 = np.mean([r["r_eff"] for r in rows_ if r["acceleration"] == 16.0])
    assert 4 < r8 < 8.5 and r8 < r16 < 16.5
    assert len(images) == sum(r["images"] for r in rows_) and {i["split"] for i in images} == {"fresh"}
    full, _ = evaluate_grid(ZeroFilled(), make, (8,), design="full")
    assert len(full) == 3 * len(files)
    with pytest.raises(ValueError, match="design"):
        evaluate_grid(ZeroFilled(), make, (8,), design="random")


def test_method_row_and_margins_from_results():
    def res(values_by_accel):
        return {"files": [{"file": f, "split": "test-total", "pathology": "", "acceleration": a, "ssim": v,
                           "psnr": 20.0, "nmse": 0.1, "r_eff": a * 0.8}
                          for a, per_file in values_by_accel.items() for f, v in per_file.items()]}

    p = {"test_accelerations": [8, 16]}
    zf = res({8.0: {"a": 0.4, "b": 0.5}, 16.0: {"a": 0.3, "b": 0.4}})
    model = [res({8.0: {"a": 0.6 + e, "b": 0.7 + e}, 16.0: {"a": 0.5 + e, "b": 0.6 + e}}) for e in (0.0, 0.01, 0.02)]
    row = R.method_row("m", model, p)
    assert row["seeds"] == 3 and row["ssim_r8"] == pytest.approx(0.66) and row["ssim_r16"] == pytest.approx(0.56)
    assert row["ssim_total_sd"] == pytest.approx(0.01) and row["r_eff"] == pytest.approx(9.6)
    margins = R.margin_rows("m", model, {"zero-filled": zf}, p, {"zero-filled": 0.15})
    assert [m["acceleration"] for m in margins] == [8.0, 16.0]
    assert all(m["margin"] == pytest.approx(0.21) and m["meets_target"] for m in margins)


def test_nav_settings_scale_with_the_run_length():
    p = {"budget_unit": "steps", "budgets": [250, 500], "curve_budgets": [125], "train": {"batch_size": 2},
         "nav": {"warmup_fraction": 0.4, "buffer_fraction": 0.2, "restarts": 4}}
    exp = E.Experiment("moero-2x4", "m", model="moero-2x4")
    assert E.nav_settings(p, exp) == {"warmup": 400, "buffer_size": 200, "restarts": 4}
    assert E.nav_settings({**p, "budgets": [1000]}, exp)["warmup"] == 800
    assert E.nav_settings({**p, "nav": {"warmup": 7}}, exp) == {"warmup": 7}
    with pytest.raises(ValueError, match="budget_unit"):
        E.nav_settings({**p, "budget_unit": "epochs"}, exp)
    with pytest.raises(ValueError, match="warmup_fraction"):
        E.nav_settings({**p, "nav": {"warmup_fraction": 0.9, "buffer_fraction": 0.2}}, exp)


def test_branchnav_records_codebook_usage_and_cluster_tightness_at_its_fit():
    nav = BranchNav(2, 8, buffer_size=6, warmup=0)
    nav.train()
    assert float(nav.fit_perplexity) == -1.0 and float(nav.fit_similarity) == -1.0
    one_code = torch.zeros(3, 8)
    one_code[:, 0] = 1.0
    two_codes = torch.zeros(3, 8)
    two_codes[:, 1] = 1.0
    nav(torch.cat([one_code, two_codes]))
    assert bool(nav.fitted)
    # two codes used equally: perplexity 2; every histogram sits on its centre: similarity 1
    assert float(nav.fit_perplexity) == pytest.approx(2.0)
    assert float(nav.fit_similarity) == pytest.approx(1.0)
    restored = BranchNav(2, 8, buffer_size=6, warmup=0)
    restored.load_state_dict(nav.state_dict())
    assert float(restored.fit_perplexity) == pytest.approx(2.0)  # checkpoints keep the record
