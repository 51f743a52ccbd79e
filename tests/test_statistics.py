"""Seeds, paired standard errors, the test grid and BranchNav's fit record: what the verdicts of the results
chapters rest on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import t as scipy_t

from moero.book import results as R
from moero.book import runspec
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


def test_latin_square_gives_every_file_every_kind_and_every_acceleration_every_kind():
    kinds = ("uniform", "kt_gaussian", "kt_radial")
    grid = [[latin_kind(f, j, kinds) for j in range(3)] for f in range(6)]
    assert all(sorted(row) == sorted(kinds) for row in grid)  # each file: all kinds over the 3 accelerations
    for j in range(3):
        assert sorted(grid[f][j] for f in range(3)) == sorted(kinds)  # each acceleration: all kinds over files


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
         "nav": {"warmup_fraction": 0.1, "buffer_fraction": 0.1, "refit_fraction": 0.2, "restarts": 4}}
    exp = runspec.Experiment("moero-2x4", "m", model="moero-2x4")
    # fractions of the FIRST budget's samples (250 steps x 2): fitted by 20 % of it, refitted every 20 %
    assert runspec.nav_settings(p, exp) == {"warmup": 50, "buffer_size": 50, "refit_every": 100, "restarts": 4}
    assert runspec.nav_settings({**p, "budgets": [1000, 2000]}, exp)["warmup"] == 200
    assert runspec.nav_settings({**p, "nav": {"warmup": 7}}, exp) == {"warmup": 7}
    with pytest.raises(ValueError, match="budget_unit"):
        runspec.nav_settings({**p, "budget_unit": "epochs"}, exp)
    with pytest.raises(ValueError, match="at most 0.25"):  # a fit later than a quarter of the first budget
        runspec.nav_settings({**p, "nav": {"warmup_fraction": 0.2, "buffer_fraction": 0.1}}, exp)


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


# ---------------------------------------------------------------------------- subjects, intervals, Holm, verdicts
from moero.eval.stats import (  # noqa: E402
    VERDICTS,
    Comparison,
    crossed_interval,
    holm,
    judge_family,
    subject_differences,
    subject_means,
    subject_of,
    verdict,
)


def simulate(reps: int, seeds: int, subjects: int, sd_seed: float, sd_subject: float, sd_cell: float,
             effect: float, rng: np.random.Generator) -> np.ndarray:
    """``reps`` tables ``D[s, u] = effect + a_s + b_u + e_su`` with crossed normal seed and subject effects."""
    return (effect + rng.normal(0, sd_seed, (reps, seeds, 1)) + rng.normal(0, sd_subject, (reps, 1, subjects))
            + rng.normal(0, sd_cell, (reps, seeds, subjects)))


def true_se(seeds: int, subjects: int, sd_seed: float, sd_subject: float, sd_cell: float) -> float:
    return math.sqrt(sd_seed**2 / seeds + sd_subject**2 / subjects + sd_cell**2 / (seeds * subjects))


def fires(v: str) -> bool:
    return v in ("holds", "contradicts")


def test_subject_is_the_unit_files_averaged_first():
    a = [{"file": "MultiCoil/Cine/TrainingSet/FullSample/C1/V/P001/cine_sax.mat", "ssim": 0.5, "acceleration": 8.0},
         {"file": "MultiCoil/Cine/TrainingSet/FullSample/C1/V/P001/cine_sax.mat", "ssim": 0.7, "acceleration": 16.0},
         {"file": "MultiCoil/Mapping/TrainingSet/FullSample/C1/V/P001/T1map.mat", "ssim": 0.9},
         {"file": "x/C1/V/P002/cine_lax.mat", "ssim": 0.2, "subject": "C1/V/P002"}]
    assert subject_of(a[0]) == subject_of(a[2]) == "C1/V/P001"  # same subject across modalities
    assert subject_of(a[3]) == "C1/V/P002"
    # the two masks of cine_sax average to 0.6, then the subject's two files to 0.75
    assert subject_means(a) == {"C1/V/P001": pytest.approx(0.75), "C1/V/P002": pytest.approx(0.2)}
    assert subject_means(a, subject=lambda r: "all") == {"all": pytest.approx((0.6 + 0.9 + 0.2) / 3)}
    b = [{**r, "ssim": r["ssim"] - 0.1} for r in a]
    d, subjects = subject_differences([a, a], [b])  # a deterministic reference pairs with every seed
    assert subjects == ["C1/V/P001", "C1/V/P002"] and np.allclose(d, 0.1)
    with pytest.raises(ValueError, match="different subjects"):
        subject_differences([a, a[:3]], [b, b])


def test_crossed_interval_is_the_crossed_se_with_satterthwaite_t():
    rng = np.random.default_rng(1)
    d = rng.normal(0.01, 0.01, size=(5, 9))
    st = crossed_interval(d)
    vs, vu = d.mean(1).var(ddof=1) / 5, d.mean(0).var(ddof=1) / 9
    df = (vs + vu) ** 2 / (vs**2 / 4 + vu**2 / 8)
    assert st.se == pytest.approx(math.sqrt(vs + vu)) and st.df == pytest.approx(df)
    assert 4 <= st.df <= 12
    q = scipy_t.ppf(0.975, df)
    assert (st.ci_low, st.ci_high) == (pytest.approx(d.mean() - q * st.se), pytest.approx(d.mean() + q * st.se))
    assert st.p == pytest.approx(2 * scipy_t.sf(abs(d.mean()) / st.se, df))
    # the SE is the one of paired_difference (files there, subjects here)
    runs_a = [rows({f"f{j}": d[s, j] for j in range(9)}) for s in range(5)]
    runs_b = [rows({f"f{j}": 0.0 for j in range(9)})]
    assert paired_difference(runs_a, runs_b)["se"] == pytest.approx(st.se)
    one = crossed_interval(d[:1])
    assert math.isnan(one.se) and math.isnan(one.p) and one.seeds == 1
    with pytest.raises(ValueError, match="finite"):
        crossed_interval(np.array([[0.1, math.nan]]))


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, math.nan, 0.01])  # NaN (not testable) is no member of the family
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == [1.0, 1.0] and holm([]) == []


def test_verdict_is_one_of_four():
    assert verdict(0.02, 0.01, seeds=5, paper=0.01) == "holds"
    assert verdict(-0.02, 0.01, seeds=5, paper=0.01) == "contradicts"
    assert verdict(0.02, 0.2, seeds=5, paper=0.01) == "inconclusive at this scale"
    assert verdict(0.02, 0.001, seeds=3, paper=0.01) == "not testable at this scale (3 seeds; a verdict needs 5)"
    assert verdict(0.02, 0.001, seeds=5, paper=None) == "not testable at this scale (no paper value)"
    assert verdict(0.02, 0.001, seeds=5, paper=0.01, reason="routing not active") == \
        "not testable at this scale (routing not active)"
    # a parity claim (paper effect 0) is judged by its interval against an equivalence margin
    assert verdict(0.001, 0.5, seeds=5, paper=0.0, ci=(-0.004, 0.006), margin=0.01) == "holds"
    assert verdict(0.03, 0.0, seeds=5, paper=0.0, ci=(0.02, 0.04), margin=0.01) == "contradicts"
    assert verdict(0.01, 0.1, seeds=5, paper=0.0, ci=(-0.002, 0.02), margin=0.01) == "inconclusive at this scale"
    assert verdict(0.0, 0.5, seeds=5, paper=0.0, ci=(-0.1, 0.1)).startswith("not testable at this scale (a parity")
    for v in (verdict(0.02, 0.01, 5, 0.01), verdict(0.0, 0.5, 5, 0.01), verdict(0.0, 0.5, 1, 0.01)):
        assert v in VERDICTS[:3] or v.startswith(VERDICTS[3] + " (")


def test_no_effect_fires_at_most_five_percent():
    """No effect, variance components as measured at CPU scale (seed sd 0.005-0.01, subject sd 0.01-0.02
    SSIM; 5 seeds, 9-15 subjects): the rule says holds/contradicts at most 5 % of the time (+3 Monte Carlo
    SE). The former rule (|mean| > 2 SE, normal) fails the same bound where the seed term dominates."""
    rng = np.random.default_rng(0)
    reps = 1500
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    for setting in ((5, 9, 0.01, 0.01, 0.005), (5, 15, 0.005, 0.02, 0.005)):
        tables = simulate(reps, *setting, effect=0.0, rng=rng)
        new = old = 0
        for d in tables:
            st = crossed_interval(d)
            new += fires(verdict(st.mean, st.p, st.seeds, paper=0.01, subjects=st.subjects))
            old += abs(st.mean) > 2 * st.se
        assert new / reps <= bound, (setting, new / reps)
        if setting[2] >= setting[3]:  # seed-dominated: "2 SE" is no 5 % test
            assert old / reps > bound, (setting, old / reps)


def test_a_real_effect_is_found_and_signed():
    """An effect of 4 true SE is found (power >= 85 %; about 75 % at 3 SE) with the paper's sign as
    holds and against it as contradicts."""
    rng = np.random.default_rng(1)
    setting = (5, 12, 0.01, 0.015, 0.005)
    effect = 4 * true_se(*setting)
    tables = simulate(300, *setting, effect=effect, rng=rng)
    verdicts = [judge_family([Comparison("x", d, paper=0.01)])[0].verdict for d in tables]
    assert sum(v == "holds" for v in verdicts) / len(verdicts) >= 0.85
    assert not any(v == "contradicts" for v in verdicts)
    against = judge_family([Comparison("x", tables[0], paper=-0.01)])[0]
    assert against.verdict == "contradicts" or against.p_holm >= 0.05


def test_holm_keeps_the_family_wise_error_of_fourteen_null_verdicts():
    """14 comparisons without effect (the verdicts of chapters 06-09): with Holm at most 5 % of families
    (+3 MC SE) hold any false verdict; without the correction about half would."""
    rng = np.random.default_rng(2)
    reps, k = 200, 14
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    tables = simulate(reps * k, 5, 12, 0.008, 0.015, 0.005, effect=0.0, rng=rng).reshape(reps, k, 5, 12)
    family_errors = raw_errors = 0
    for fam in tables:
        judged = judge_family([Comparison(f"c{i}", d, paper=0.01) for i, d in enumerate(fam)])
        family_errors += any(fires(j.verdict) for j in judged)
        raw_errors += any(j.p < 0.05 for j in judged)
        assert all(j.p_holm >= j.p for j in judged)
    assert family_errors / reps <= bound
    assert raw_errors / reps > 0.3


def test_judge_family_rows_and_exclusions():
    rng = np.random.default_rng(3)
    strong = simulate(1, 5, 9, 0.002, 0.002, 0.001, effect=0.05, rng=rng)[0]
    few = strong[:3]
    judged = judge_family([
        Comparison("strong", strong, paper=0.01),
        Comparison("few seeds", few, paper=0.01),
        Comparison("not routed", strong, paper=0.01, reason="routing not active"),
        Comparison("parity", strong - 0.05, paper=0.0, margin=0.01),
    ])
    by = {j.name: j for j in judged}
    assert by["strong"].verdict == "holds" and by["strong"].ci_low > 0 and by["strong"].seeds == 5
    assert by["strong"].subjects == 9 and by["strong"].ci_low_holm <= by["strong"].ci_low
    assert by["few seeds"].verdict.startswith("not testable at this scale (3 seeds")
    assert math.isnan(by["few seeds"].p_holm)  # not a member of the family
    assert by["not routed"].verdict == "not testable at this scale (routing not active)"
    assert by["parity"].verdict == "holds"
    row = by["strong"].as_row()
    assert set(row) >= {"effect", "ci_low", "ci_high", "p", "p_holm", "seeds", "subjects", "paper", "verdict"}


def test_seed_interval_is_a_t_interval_on_seeds_minus_one_degrees_of_freedom():
    from moero.eval.stats import seed_interval

    values = [0.010, 0.014, 0.008, 0.012, 0.011]
    iv = seed_interval(values)
    se = np.std(values, ddof=1) / np.sqrt(5)
    half = scipy_t.ppf(0.975, 4) * se
    assert iv.df == 4 and iv.seeds == 5 and iv.mean == pytest.approx(np.mean(values))
    assert (iv.ci_low, iv.ci_high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    assert iv.p < 0.001 and math.isnan(seed_interval([0.3]).se)
    with pytest.raises(ValueError, match="finite"):
        seed_interval([0.1, float("nan")])
