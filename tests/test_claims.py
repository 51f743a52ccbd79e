"""The claims page and what feeds it: the run order of chapters that read each other's results, the claim
keys of the verdict tables, the content test of Moero's routes and centred routing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moero.book import paper, show
from moero.book.toc import run_order, select_notebooks
from moero.eval.specialisation import excess_nmi
from moero.eval.stats import Comparison
from moero.models.routing import BranchNav

ROOT = Path(__file__).resolve().parents[1]


def test_run_order_moves_a_chapter_after_what_it_needs_and_refuses_a_circle():
    a, b, c, d = (Path(f"{s}.py") for s in "abcd")
    assert run_order([(a, []), (b, ["c"]), (c, []), (d, [])]) == [a, c, b, d]
    assert run_order([(a, ["x"]), (b, [])]) == [a, b]  # a need outside the selection counts as done
    with pytest.raises(ValueError, match="circle"):
        run_order([(a, ["b"]), (b, ["a"])])


def test_the_book_runs_chapter_9_before_8_and_the_claims_page_after_the_results_chapters():
    stems = [p.stem for p in select_notebooks(root=ROOT)]
    assert stems.index("09_efficiency") < stems.index("08_model_ablation")
    results = ("06_training", "07_augmentation_ablation", "08_model_ablation", "09_efficiency")
    assert all(stems.index(r) < stems.index("claims") for r in results)  # the claims page reads all four
    assert stems.index("06_training") < stems.index("07_augmentation_ablation")


def test_every_claim_has_one_key_a_results_chapter_and_a_paper_figure():
    # that each chapter gives each of its claims exactly one verdict row is asserted by the claims page itself,
    # which the smoke book build runs (tests/test_book.py)
    keys = [c.key for c in paper.CLAIMS]
    assert len(keys) == len(set(keys)) and len(keys) >= 12
    chapters = {"06_training", "07_augmentation_ablation", "08_model_ablation", "09_efficiency"}
    for claim in paper.CLAIMS:
        assert claim.chapter in chapters and claim.paper and claim.statement


def test_verdict_rows_carry_claim_keys_and_untestable_claims_their_reason():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.05, 0.01, size=(5, 6))
    rows = show.judged_rows([Comparison("gain", diffs, 0.04), Comparison("other", diffs, 0.04)],
                            claims={"gain": "vq-prompt-total"})
    assert [r["claim"] for r in rows] == ["vq-prompt-total", ""] and rows[0]["verdict"] == "holds"
    with pytest.raises(KeyError, match="never"):
        show.judged_rows([Comparison("gain", diffs, 0.04)], claims={"never": "speed"})
    (row,) = show.untested_rows({"moero-x4-12": "no 4-expert Moero"})
    assert row["claim"] == "moero-x4-12" and row["verdict"] == "not testable at this scale (no 4-expert Moero)"


def test_a_parity_claim_holds_only_inside_its_margin():
    rng = np.random.default_rng(1)
    tight = rng.normal(0.0, 0.002, size=(5, 8))
    shifted = rng.normal(0.03, 0.002, size=(5, 8))
    rows = show.judged_rows([Comparison("flat", tight, 0.0, margin=paper.PARITY_MARGIN),
                             Comparison("moved", shifted, 0.0, margin=paper.PARITY_MARGIN)])
    assert [r["verdict"] for r in rows] == ["holds", "contradicts"] and rows[0]["paper"] == "0 (parity)"


def test_excess_nmi_is_large_for_routes_that_follow_the_label_and_near_zero_for_random_routes():
    rng = np.random.default_rng(2)
    files = np.repeat(np.arange(40), 5)  # 40 files of 5 images, one modality per file
    labels = np.where(files % 2 == 0, "cine", "lge")
    following = (labels == "cine").astype(int)
    random = rng.integers(0, 2, size=files.size)
    assert excess_nmi([following], labels, files)["excess"] > 0.8
    assert abs(excess_nmi([random], labels, files)["excess"]) < 0.05
    # the largest over cascades: one cascade that follows the label is enough
    assert excess_nmi([random, following], labels, files)["nmi"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="different labels"):
        excess_nmi([following], labels, np.zeros(files.size))


def test_centred_routing_follows_what_differs_between_histograms_not_their_common_part():
    gen = torch.Generator().manual_seed(3)
    common = torch.zeros(8)
    common[0] = 50.0  # a background code every image shares
    group = torch.arange(40) % 2
    hist = common + torch.rand(40, 8, generator=gen) * 0.2
    hist[group == 0, 1] += 1.0
    hist[group == 1, 2] += 1.0
    nav = BranchNav(2, 8, buffer_size=40, warmup=0, restarts=2, center=True)
    nav.train()
    nav(hist)  # fills the buffer and fits
    assert bool(nav.fitted) and torch.allclose(nav.offset, hist.mean(0))
    routes = nav.assign(hist)
    assert torch.equal(routes, group) or torch.equal(routes, 1 - group)
    # raw cosines are all ~1: the centred ones separate the groups
    assert nav.cos_now(hist) > 0.5
    state = nav.state_dict()
    again = BranchNav(2, 8, buffer_size=40, warmup=0, restarts=2, center=True)
    again.load_state_dict(state)
    assert torch.equal(again.assign(hist), routes)
