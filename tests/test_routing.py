"""BranchNav routing (reference section 3, eq. (9)), spherical k-means, dispatch and specialisation scores."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import moero.models.routing as routing
from moero.eval.specialisation import contingency, expert_usage, specialisation, trace_routing, usage_over_training
from moero.models.routing import AUTHORS_NAV, BranchNav, cosine_assign, dispatch, spherical_kmeans

CODES = 32


def clustered_histograms(k: int, per_cluster: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token histograms around ``k`` well-separated prototypes (each peaked on its own codes)."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.full((k, CODES), 0.05)
    for j in range(k):
        protos[j, j * (CODES // k) : (j + 1) * (CODES // k)] = 1.0
    labels = torch.arange(k).repeat_interleave(per_cluster)
    counts = torch.poisson(protos[labels] * 40, generator=gen) + 1e-3
    hist = counts / counts.sum(1, keepdim=True)
    perm = torch.randperm(labels.numel(), generator=gen)
    return hist[perm], labels[perm]


def fitted_nav(**kwargs) -> BranchNav:
    """A 2-expert navigator whose centres point at code 0 and code 1."""
    nav = BranchNav(2, CODES, buffer_size=4, warmup=0, **kwargs)
    nav.centres.zero_()
    nav.centres[0, 0] = 1.0
    nav.centres[1, 1] = 1.0
    nav.fitted.fill_(True)
    return nav


def onehot(code: int, n: int = 1) -> torch.Tensor:
    h = torch.zeros(n, CODES)
    h[:, code] = 1.0
    return h


def test_kmeans_recovers_separated_clusters_and_is_deterministic_by_seed() -> None:
    hist, labels = clustered_histograms(4, 60)
    centres, assigned, score = spherical_kmeans(hist, 4, restarts=8, max_iter=100, seed=42)
    assert adjusted_rand_score(labels.numpy(), assigned.numpy()) > 0.95
    assert torch.allclose(centres.norm(dim=1), torch.ones(4, dtype=centres.dtype))
    assert torch.equal(cosine_assign(hist, centres), assigned)
    again = spherical_kmeans(hist, 4, restarts=8, max_iter=100, seed=42)
    assert torch.equal(again[0], centres) and again[2] == score
    # the winning restart is the best one: a single restart never scores higher
    assert all(spherical_kmeans(hist, 4, restarts=1, seed=s)[2] <= score + 1e-9 for s in range(4))


def test_kmeans_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must"):
        spherical_kmeans(torch.rand(3, 4), 5)
    with pytest.raises(ValueError, match="x must"):
        spherical_kmeans(torch.rand(3), 1)


def test_round_robin_before_centres_and_imbalance_rule() -> None:
    nav = BranchNav(3, CODES, warmup=0, buffer_size=1000)
    nav.train()
    routes = [int(nav(onehot(0))[0]) for _ in range(7)]
    assert routes == [0, 1, 2, 0, 1, 2, 0]
    assert nav.counts.tolist() == [3, 2, 2]

    nav = fitted_nav()
    nav.train()
    nav.counts.copy_(torch.tensor([5, 2]))  # ratio 2.5 <= 3: the centres decide
    assert int(nav(onehot(0))[0]) == 0
    nav.counts.copy_(torch.tensor([7, 2]))  # ratio 3.5 > 3: least-used overrides the centre
    assert int(nav(onehot(0))[0]) == 1
    nav.counts.copy_(torch.tensor([3, 0]))  # min 0: ratio 3 / 1e-13, overridden
    assert nav.imbalanced() and int(nav(onehot(0))[0]) == 1


def test_batch_mode_routes_the_batch_by_the_mode() -> None:
    nav = fitted_nav(route_by="batch")
    nav.train()
    nav.counts.copy_(torch.tensor([4, 4]))
    hist = torch.cat([onehot(1, 3), onehot(0, 1)])
    assert nav(hist).tolist() == [1, 1, 1, 1]
    assert nav.counts.tolist() == [4, 8]


def test_per_sample_routing_equals_routing_samples_one_by_one() -> None:
    hist, _ = clustered_histograms(2, 10, seed=3)
    for counts in ([0, 0], [9, 3], [5, 4]):
        batch_nav = fitted_nav()
        batch_nav.counts.copy_(torch.tensor(counts))
        single_nav = copy.deepcopy(batch_nav)
        batch_nav.train(), single_nav.train()
        together = batch_nav(hist)
        alone = torch.cat([single_nav(hist[i : i + 1]) for i in range(hist.shape[0])])
        assert torch.equal(together, alone)
        assert torch.equal(batch_nav.counts, single_nav.counts)


def test_dispatch_equals_running_each_sample_alone() -> None:
    torch.manual_seed(0)
    experts = [torch.nn.Linear(5, 3) for _ in range(3)]
    x = torch.randn(7, 5, requires_grad=True)
    routes = torch.tensor([2, 0, 0, 1, 2, 2, 0])
    out = dispatch(experts, routes, x)
    ref = torch.cat([experts[int(r)](x[i : i + 1]) for i, r in enumerate(routes)])
    assert torch.allclose(out, ref)
    # gradients reach each expert through its own samples only
    out.sum().backward()
    assert torch.allclose(x.grad, torch.stack([experts[int(r)].weight.sum(0) for r in routes]))
    # tuple outputs are scattered back element-wise
    pair = dispatch([lambda t, j=j: (t * j, t + j) for j in range(3)], routes, x)
    assert torch.allclose(pair[0], x * routes[:, None]) and torch.allclose(pair[1], x + routes[:, None])
    with pytest.raises(ValueError, match="routes must lie"):
        dispatch(experts, torch.tensor([0, 3, 0, 0, 0, 0, 0]), x)


def test_epoch_warmup_then_buffer_fill_then_single_fit() -> None:
    hist, labels = clustered_histograms(2, 8, seed=1)
    nav = BranchNav(2, CODES, buffer_size=8, warmup="epoch", restarts=2)
    nav.train()
    nav(hist[:4])
    assert int(nav.fill) == 0 and not nav.collecting  # epoch 0: nothing buffered
    nav.set_epoch(1)
    nav(hist[:5])
    assert int(nav.fill) == 5 and torch.equal(nav.buffer[:5], hist[:5])
    nav(hist[5:11])  # overflows: the buffer takes what fits, then k-means is fitted once
    assert int(nav.fill) == 8 and bool(nav.fitted) and torch.equal(nav.buffer, hist[:8])
    centres = nav.centres.clone()
    nav(hist[11:])
    assert torch.equal(nav.centres, centres) and int(nav.fill) == 8
    assert adjusted_rand_score(labels[:8].numpy(), nav.assign(hist[:8]).numpy()) == 1.0


def test_sample_count_warmup_skips_the_first_samples() -> None:
    hist, _ = clustered_histograms(2, 8, seed=2)
    nav = BranchNav(2, CODES, buffer_size=100, warmup=5)
    nav.train()
    for i in range(9):
        nav(hist[i : i + 1])
    assert int(nav.counts.sum()) == 9
    assert int(nav.fill) == 4 and torch.equal(nav.buffer[:4], hist[5:9])


def test_eval_nearest_is_history_free_and_paper_mode_depends_on_history() -> None:
    nav = fitted_nav()
    nav.counts.copy_(torch.tensor([20, 1]))  # heavily imbalanced training history
    nav.eval()
    state = copy.deepcopy(nav.state_dict())
    hist = torch.cat([onehot(0, 3), onehot(1, 2)])
    first = nav(hist)
    assert first.tolist() == [0, 0, 0, 1, 1] and torch.equal(nav(hist.flip(0)), first.flip(0))
    assert all(torch.equal(v, state[k]) for k, v in nav.state_dict().items())  # evaluation changes nothing

    unfitted = BranchNav(3, CODES, warmup=0)
    unfitted.counts.copy_(torch.tensor([4, 3, 4]))
    unfitted.eval()
    assert unfitted(hist).tolist() == [1] * 5  # fallback: argmin of the frozen training counts

    paper = fitted_nav(eval_mode="paper")
    paper.counts.copy_(torch.tensor([20, 1]))
    paper.eval()
    assert paper(onehot(0)).tolist() == [1]  # balance rule overrides the nearest centre
    assert paper.counts.tolist() == [20, 2]  # and evaluation routes enter the history


def test_checkpoint_round_trip_gives_identical_routing() -> None:
    hist, _ = clustered_histograms(2, 40, seed=4)
    nav = BranchNav(2, CODES, buffer_size=16, warmup=4, restarts=2)
    nav.train()
    for i in range(30):
        nav(hist[i : i + 1])
    assert bool(nav.fitted)
    blob = io.BytesIO()
    torch.save(nav.state_dict(), blob)
    blob.seek(0)
    restored = BranchNav(2, CODES, buffer_size=16, warmup=4, restarts=2)
    restored.load_state_dict(torch.load(blob, weights_only=True))
    restored.train()
    for i in range(30, 80):
        assert torch.equal(nav(hist[i : i + 1]), restored(hist[i : i + 1]))
    nav.eval(), restored.eval()
    assert torch.equal(nav(hist), restored(hist))


def test_sync_payloads_sum_counts_and_gather_buffers_in_rank_order() -> None:
    """Two navigators as two ranks: summing their payloads (what all_reduce does) syncs them exactly."""
    hist, _ = clustered_histograms(2, 6, seed=5)
    ranks = [BranchNav(2, CODES, buffer_size=6, warmup=0, restarts=2, gather_per_step=2) for _ in range(2)]
    for nav in ranks:
        nav.train()
    for step in range(3):
        # route without self-sync: feed step counts and queue as a distributed forward would
        for r, nav in enumerate(ranks):
            nav.step_counts += torch.tensor([1, 0]) if r == 0 else torch.tensor([0, 1])
            nav._queue.append(hist[2 * step + r : 2 * step + r + 1])
        payloads = [nav.sync_payload(r, 2) for r, nav in enumerate(ranks)]
        summed = payloads[0] + payloads[1]
        for nav in ranks:
            nav.apply_sync(summed.clone(), 2)
    a, b = ranks
    assert a.counts.tolist() == [3, 3]
    assert int(a.fill) == 6 and torch.equal(a.buffer, hist[:6])
    assert bool(a.fitted)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="eval_mode"):
        BranchNav(2, CODES, eval_mode="closest")
    with pytest.raises(ValueError, match="warmup"):
        BranchNav(2, CODES, warmup="week")
    with pytest.raises(ValueError, match="hist must"):
        BranchNav(2, CODES)(torch.rand(1, CODES + 1))
    with pytest.raises(ValueError, match="no centres"):
        BranchNav(2, CODES).assign(torch.rand(1, CODES))


def test_specialisation_scores_and_usage() -> None:
    routes = np.array([0, 0, 1, 1, 2, 2])
    scores = {row["label"]: row for row in specialisation(routes, {
        "contrast": ["lax", "lax", "sax", "sax", "t1", "t1"],  # same partition, other names
        "vendor": ["a", "b", "a", "b", "a", "b"],  # independent of the routes
    })}
    assert scores["contrast"]["ari"] == pytest.approx(1.0) and scores["contrast"]["nmi"] == pytest.approx(1.0)
    assert scores["vendor"]["ari"] < 0.0 + 1e-9 and scores["vendor"]["nmi"] < 0.2
    assert expert_usage(routes, 4).tolist() == [1 / 3, 1 / 3, 1 / 3, 0.0]
    assert usage_over_training([1, 0, 1], 2).tolist() == [[0, 1], [1, 1], [1, 2]]
    table, names = contingency(routes, ["x", "x", "y", "y", "y", "x"], 3)
    assert names == ["x", "y"] and table.tolist() == [[2, 0, 1], [0, 2, 1]]
    with pytest.raises(ValueError, match="labels\\['v'\\]"):
        specialisation(routes, {"v": ["a"]})


def test_trace_routing_records_each_rule_of_eq9() -> None:
    nav = BranchNav(2, CODES, buffer_size=4, warmup=0, restarts=2)
    first = torch.cat([onehot(0, 2), onehot(1, 2)])
    rows = trace_routing(nav, torch.cat([first, onehot(0, 6)]))
    assert [r["route"] for r in rows[:4]] == [0, 1, 0, 1]
    assert {r["rule"] for r in rows[:4]} == {"least-used: no centres"} and rows[3]["fitted"]
    home = int(nav.assign(onehot(0))[0])  # the expert whose centre is code 0
    assert rows[4]["rule"] == "nearest centre" and rows[4]["route"] == home
    # code 0 keeps coming: once max n / min n > 3 the least-used expert takes the sample instead
    overrides = [r for r in rows if r["overridden"]]
    assert overrides and all(r["rule"] == "least-used: imbalance" and r["route"] == 1 - home for r in overrides)
    assert rows[-1]["counts"] == nav.counts.tolist() and sum(rows[-1]["counts"]) == 10


def test_authors_preset_counts_the_warmup_per_rank(monkeypatch) -> None:
    nav = BranchNav(2, 4, **{**AUTHORS_NAV, "warmup": 6, "buffer_size": 4})
    assert (nav.eval_mode, nav.route_by, nav.warmup_scope, nav.seed) == ("paper", "batch", "rank", 42)
    global_nav = BranchNav(2, 4, warmup=6, buffer_size=4)
    for n in (nav, global_nav):
        n.counts.fill_(3)  # 6 samples routed in all
    assert nav.warmed_up and global_nav.warmed_up  # one process: per rank = in all
    monkeypatch.setattr(routing, "distributed_world", lambda *args: (0, 2))
    assert global_nav.warmed_up and not nav.warmed_up  # two ranks: each has routed only 3 of its 6
    nav.counts.fill_(6)
    assert nav.warmed_up
    with pytest.raises(ValueError, match="warmup_scope"):
        BranchNav(2, 4, warmup_scope="node")


def test_balance_rule_is_strict_and_survives_an_unused_branch():
    """Eq. (9): the rule fires when ``max n / (min n + 1e-13) > 3``; at exactly 3 it does not."""
    nav = BranchNav(2, 16)
    assert nav.imbalance_ratio == 3.0
    # 1024 + 1e-13 == 1024 in float64, so the ratio below is exactly 3
    assert not nav.imbalanced(torch.tensor([3072, 1024])) and nav.imbalanced(torch.tensor([3073, 1024]))
    assert nav.imbalanced(torch.tensor([1, 0]))  # the epsilon keeps an unused branch finite, and it fires
    assert not nav.imbalanced(torch.tensor([0, 0]))


def test_kmeans_defaults_are_the_authors_seed_and_restarts():
    """k-means of the navigator: seed 42, 8 restarts, at most 100 iterations (reference section 3)."""
    x = torch.rand(300, 16, generator=torch.Generator().manual_seed(0)) ** 4
    default = spherical_kmeans(x, 4)
    explicit = spherical_kmeans(x, 4, restarts=8, max_iter=100, seed=42)
    assert torch.equal(default[0], explicit[0]) and default[2] == explicit[2]
    assert not torch.equal(default[0], spherical_kmeans(x, 4, seed=0)[0])  # the seed matters on this data
    single = spherical_kmeans(x, 4, restarts=1)
    assert default[2] > single[2]  # the best of 8 restarts beats the first alone here
    nav = BranchNav(4, 16)
    assert (nav.seed, nav.restarts, nav.max_iter) == (42, 8, 100)


# ---------------------------------------------------------------------------- routing that stays current


def test_match_centres_maps_permuted_centres_back() -> None:
    gen = torch.Generator().manual_seed(0)
    old = torch.rand(4, CODES, generator=gen)
    perm = torch.tensor([2, 0, 3, 1])
    noisy = old[perm] * 3.0 + 0.01 * torch.rand(4, CODES, generator=gen)  # other norms, a little noise
    back = routing.match_centres(noisy, old)
    assert torch.equal(perm[back], torch.arange(4))  # new[back[j]] is old centre j


def test_refit_keeps_expert_identities() -> None:
    """A refit on the same data finds the same clusters in k-means' own order; the Hungarian matching puts
    them back in the slots of the old centres, whatever that order was."""
    hist, labels = clustered_histograms(3, 20, seed=6)
    nav = BranchNav(3, CODES, buffer_size=60, warmup=0, restarts=2, refit_every=5)
    nav._append(hist)
    nav.fit()
    perm = torch.tensor([1, 2, 0])
    nav.centres.copy_(nav.centres[perm].clone())  # identities in another order than k-means gives
    expected = nav.centres.clone()
    routes_before = nav.assign(hist)
    new_labels = nav.fit()  # a refit
    assert int(nav.refits) == 1
    assert torch.allclose(nav.centres, expected, atol=1e-6)
    assert torch.equal(nav.assign(hist), routes_before)
    assert torch.equal(new_labels, routes_before)
    assert adjusted_rand_score(labels.numpy(), routes_before.numpy()) == pytest.approx(1.0)


def test_refit_on_schedule_follows_drifting_histograms() -> None:
    """After the first fit the buffer is a ring of the latest histograms; every refit_every routed samples
    the centres are refitted, so routing follows clusters that moved (a codebook that kept changing)."""
    hist, labels = clustered_histograms(2, 40, seed=7)
    moved = hist.roll(3, dims=1)  # the same clusters on other codes, as after codebook updates
    nav = BranchNav(2, CODES, buffer_size=16, warmup=0, restarts=2, refit_every=16, imbalance_ratio=1e30)
    nav.train()
    for i in range(16):
        nav(hist[i : i + 1])
    assert bool(nav.fitted) and int(nav.fitted_at) == 16 and int(nav.refits) == 0
    for i in range(40):
        nav(moved[i : i + 1])
    assert int(nav.refits) == 2 and int(nav.last_fit_at) == 48 and int(nav.fitted_at) == 16
    nav.eval()
    assert adjusted_rand_score(labels.numpy(), nav(moved).numpy()) == pytest.approx(1.0)
    assert nav.cos_now(moved) > 0.8
    fixed = BranchNav(2, CODES, buffer_size=16, warmup=0, restarts=2, imbalance_ratio=1e30)  # fit once
    fixed.train()
    for i in range(16):
        fixed(hist[i : i + 1])
    for i in range(40):
        fixed(moved[i : i + 1])
    assert int(fixed.refits) == 0 and fixed.cos_now(moved) < nav.cos_now(moved)


def test_cos_now_equals_fit_similarity_on_the_buffer() -> None:
    hist, _ = clustered_histograms(2, 10, seed=8)
    nav = BranchNav(2, CODES, buffer_size=20, warmup=0, restarts=2)
    assert np.isnan(nav.cos_now(hist))
    nav.train()
    nav(hist)
    assert bool(nav.fitted)
    assert nav.cos_now() == pytest.approx(float(nav.fit_similarity), abs=1e-5)
    assert nav.cos_now(hist) == pytest.approx(float(nav.fit_similarity), abs=1e-5)


def test_cosine_routing_ignores_centre_norms() -> None:
    """Centres of unequal norms: the largest dot product would pick the long centre, cosine picks the aligned one."""
    centres = torch.zeros(2, CODES)
    centres[0, 0] = 10.0
    centres[1, 1] = 0.1
    x = torch.zeros(1, CODES)
    x[0, 0], x[0, 1] = 0.3, 1.0
    assert int((x @ centres.t()).argmax()) == 0
    assert int(cosine_assign(x, centres)[0]) == 1
    nav = fitted_nav()
    nav.centres.copy_(centres)
    nav.eval()
    assert int(nav(x)[0]) == 1
    nav.train()
    assert int(nav(x)[0]) == 1


def test_batch_routing_goes_to_the_least_used_expert_before_centres_and_while_imbalanced() -> None:
    nav = BranchNav(3, CODES, buffer_size=100, warmup=0, route_by="batch")
    nav.train()
    nav.counts.copy_(torch.tensor([2, 0, 1]))
    assert nav(onehot(0, 4)).tolist() == [1, 1, 1, 1]  # no centres: argmin n_j for the whole batch
    assert nav.counts.tolist() == [2, 4, 1]
    nav = fitted_nav(route_by="batch")
    nav.train()
    nav.counts.copy_(torch.tensor([10, 2]))  # 10 / 2 > 3: the balance rule, although every sample is nearest 0
    assert nav(onehot(0, 3)).tolist() == [1, 1, 1]
    nav.counts.copy_(torch.tensor([5, 2]))  # 5 / 2 <= 3: the mode of the nearest centres
    assert nav(onehot(0, 3)).tolist() == [0, 0, 0]


def test_capacity_caps_the_share_since_the_fit() -> None:
    """Every sample nearest centre 0: without capacity expert 0 takes all (the balance ratio allows it
    until 3:1); with capacity 1.5 no expert exceeds 1.5 / K of the samples since the fit (plus one)."""
    for route_by in ("sample", "batch"):
        nav = fitted_nav(capacity=1.5, route_by=route_by, imbalance_ratio=1e30)
        nav.train()
        for _ in range(40):
            nav(onehot(0))
        since = nav.counts - nav.fit_counts
        assert since.tolist() == [30, 10]
        nav = fitted_nav(route_by=route_by, imbalance_ratio=1e30)
        nav.train()
        for _ in range(40):
            nav(onehot(0))
        assert nav.counts.tolist() == [40, 0]
    nav = fitted_nav(capacity=1.5, imbalance_ratio=1e30)
    nav.train()
    routes = nav(onehot(0, 40))
    assert torch.bincount(routes, minlength=2).tolist() == [30, 10]
    nav.eval()  # evaluation routes by the centres alone
    assert nav(onehot(0, 5)).tolist() == [0] * 5
    with pytest.raises(ValueError, match="capacity"):
        BranchNav(2, CODES, capacity=0.5)
    with pytest.raises(ValueError, match="refit_every"):
        BranchNav(2, CODES, refit_every=-1)
    with pytest.raises(ValueError, match="freeze_codebook"):
        BranchNav(2, CODES, freeze_codebook="always")


def test_freeze_due_after_the_fit_or_from_the_buffer() -> None:
    hist, _ = clustered_histograms(2, 10, seed=11)
    navs = {rule: BranchNav(2, CODES, buffer_size=4, warmup=3, freeze_codebook=rule)
            for rule in ("never", "fit", "buffer")}
    due = {rule: [] for rule in navs}
    for rule, nav in navs.items():
        nav.train()
        for i in range(8):
            due[rule].append(nav.freeze_due)
            nav(hist[i : i + 1])
    assert due["never"] == [False] * 8
    assert due["buffer"] == [False] * 3 + [True] * 5  # warm-up over after 3 routed samples
    assert due["fit"] == [False] * 7 + [True]  # fitted once 4 histograms are buffered (after sample 7)


def test_checkpoint_round_trip_with_refits_and_old_checkpoints() -> None:
    hist, _ = clustered_histograms(2, 60, seed=9)
    kwargs = dict(buffer_size=12, warmup=4, restarts=2, refit_every=10, capacity=1.5)
    nav = BranchNav(2, CODES, **kwargs)
    nav.train()
    for i in range(41):
        nav(hist[i : i + 1])
    assert int(nav.refits) >= 1 and int(nav.head) != 0
    blob = io.BytesIO()
    torch.save(nav.state_dict(), blob)
    blob.seek(0)
    restored = BranchNav(2, CODES, **kwargs)
    restored.load_state_dict(torch.load(blob, weights_only=True))
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in nav.state_dict().items())
    restored.train()
    for i in range(41, 120):
        assert torch.equal(nav(hist[i : i + 1]), restored(hist[i : i + 1]))
    assert int(nav.refits) == int(restored.refits) >= 3
    assert torch.equal(nav.centres, restored.centres)
    old = {k: v for k, v in nav.state_dict().items() if k not in BranchNav._ADDED_BUFFERS}
    legacy = BranchNav(2, CODES, buffer_size=12, warmup=4)
    legacy.load_state_dict(old)  # a checkpoint from before refit/capacity still loads
    assert int(legacy.fitted_at) == -1 and torch.equal(legacy.centres, nav.centres)


def test_sync_payloads_keep_ranks_equal_through_refits() -> None:
    """Two ranks with refit_every: summed payloads (what all_reduce does) keep the state identical, ring included."""
    hist, _ = clustered_histograms(2, 30, seed=10)
    ranks = [BranchNav(2, CODES, buffer_size=6, warmup=0, restarts=2, gather_per_step=2, refit_every=8)
             for _ in range(2)]
    for nav in ranks:
        nav.train()
    for step in range(15):
        for r, nav in enumerate(ranks):
            nav.step_counts += torch.tensor([1, 0]) if r == 0 else torch.tensor([0, 1])
            if nav.collecting:
                nav._queue.append(hist[2 * step + r : 2 * step + r + 1])
        payloads = [nav.sync_payload(r, 2) for r, nav in enumerate(ranks)]
        for nav in ranks:
            nav.apply_sync(payloads[0] + payloads[1], 2)
    a, b = ranks
    assert int(a.refits) == 3 and int(a.fitted_at) == 6  # fits at 6 samples, refits at 14, 22, 30
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_frozen_codebook_stops_ema_and_restarts() -> None:
    from moero.models.vq import VectorQuantizer

    vq = VectorQuantizer(8, 4, restart_after=1, seed=0)
    vq.train()
    z = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    vq(z)
    vq.update()
    moving = vq.codebook.clone()
    vq(z + 1.0)
    vq.update()
    assert not torch.equal(vq.codebook, moving)  # EMA and restarts move an unfrozen codebook
    vq.frozen.fill_(True)
    frozen = vq.codebook.clone()
    steps = int(vq.steps)
    for shift in (2.0, -3.0, 5.0):
        vq(z + shift)
        vq.update()
    assert torch.equal(vq.codebook, frozen) and torch.equal(vq.embed_sum, vq.embed_sum)
    assert int(vq.steps) == steps + 3 and not vq.has_pending  # usage statistics still run
    state = vq.state_dict()
    del state["frozen"]
    fresh = VectorQuantizer(8, 4, restart_after=1, seed=0)
    fresh.load_state_dict(state)  # a checkpoint from before the flag
    assert not bool(fresh.frozen)


def test_moero_freezes_the_codebook_its_navigator_reads_after_the_fit() -> None:
    """freeze_codebook="fit": once navigator k is fitted, the quantiser whose tokens it reads (coil-map
    net for k = 0, cascade k-1 for k >= 1) stops moving; the others keep learning."""
    from moero.models.moero import Moero
    from moero.models.registry import model_config

    torch.manual_seed(0)
    config = model_config("moero-2x2", "tiny", checkpoint=False)
    model = Moero(config, 2, nav_kwargs={"warmup": 0, "buffer_size": 2, "freeze_codebook": "fit"})
    gen = torch.Generator().manual_seed(0)
    kspace = torch.randn(1, config.frames, 2, 16, 16, dtype=torch.complex64, generator=gen)
    mask = torch.zeros(1, config.frames, 16, 16, dtype=torch.bool)
    mask[..., ::2] = True
    mask[..., 6:10] = True
    model.train()
    read = [model.routing_quantizer(k) for k in range(2)]
    other = model.vq_blocks[1].quantizer  # read by no navigator
    for step in range(4):
        out = model(kspace * (1 + step), mask)
        out.image.sum().backward()
        if step == 1:
            assert all(bool(nav.fitted) for nav in model.navs)
            before = [vq.codebook.clone() for vq in (*read, other)]
        model.after_backward()
    assert all(bool(vq.frozen) for vq in read) and not bool(other.frozen)
    assert torch.equal(read[0].codebook, before[0]) and torch.equal(read[1].codebook, before[1])
    assert not torch.equal(other.codebook, before[2])
    assert model.routing_state()["codebook_frozen"] == [True, True]


def test_bias_balancing_spreads_training_and_evaluation_routes() -> None:
    """Histograms e0 + a e1 with a in (0.2, 0.9) are all nearest the centre at code 0; routing biases learnt
    in training (sign steps towards the mean load) move the boundary so that evaluation splits them too."""
    a = torch.linspace(0.2, 0.9, 40)
    hist = torch.zeros(40, CODES)
    hist[:, 0], hist[:, 1] = 1.0, a
    plain = fitted_nav(imbalance_ratio=1e30)
    plain.eval()
    assert plain(hist).tolist() == [0] * 40
    nav = fitted_nav(imbalance_ratio=1e30, bias_rate=0.005)
    nav.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        nav(hist[torch.randint(0, 40, (2,), generator=gen)])
    assert float(nav.bias[1]) > float(nav.bias[0])
    nav.eval()
    shares = torch.bincount(nav(hist), minlength=2).double() / 40
    assert float(shares.max()) <= 0.75
    again = nav(hist)
    assert torch.equal(again, nav(hist))  # evaluation is deterministic and leaves the biases alone
    with pytest.raises(ValueError, match="bias_rate"):
        BranchNav(2, CODES, bias_rate=-1.0)


def test_sync_payloads_keep_ranks_equal_with_bias_balancing() -> None:
    hist, _ = clustered_histograms(2, 30, seed=12)
    ranks = [BranchNav(2, CODES, buffer_size=6, warmup=0, restarts=2, gather_per_step=2, refit_every=8,
                       bias_rate=0.01) for _ in range(2)]
    for nav in ranks:
        nav.train()
    with torch.no_grad():
        for step in range(15):
            for r, nav in enumerate(ranks):
                x = hist[2 * step + r : 2 * step + r + 1]
                nav.step_counts += torch.tensor([1, 0]) if r == 0 else torch.tensor([0, 1])
                if bool(nav.fitted):  # what a distributed forward records: this rank's preferences
                    pref = int((routing.cosine_similarities(x, nav.centres) + nav.bias).argmax())
                    nav.step_prefs[pref] += 1
                if nav.collecting:
                    nav._queue.append(x)
            payloads = [nav.sync_payload(r, 2) for r, nav in enumerate(ranks)]
            assert payloads[0].numel() == ranks[0].sync_numel(2)
            for nav in ranks:
                nav.apply_sync(payloads[0] + payloads[1], 2)
    a, b = ranks
    assert int(a.refits) >= 1 and float(a.bias.abs().sum()) > 0 and int(a.step_prefs.sum()) == 0
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_freeze_codebook_after_fit_is_the_fit_rule() -> None:
    assert BranchNav(2, CODES, freeze_codebook_after_fit=True).freeze_codebook == "fit"
    assert BranchNav(2, CODES, freeze_codebook_after_fit=True, freeze_codebook="buffer").freeze_codebook == "buffer"
    assert BranchNav(2, CODES).freeze_codebook == "never"


@pytest.mark.parametrize("k", [2, 3, 5])
def test_balanced_biases_split_skewed_similarities_equally(k: int) -> None:
    """Rows all nearest centre 0 (a common part dominates): the biases give no centre more than ceil(N/K)
    rows; the same input gives the same bytes."""
    gen = torch.Generator().manual_seed(k)
    for n in (k, 37, 101):
        sims = torch.rand(n, k, generator=gen, dtype=torch.float64) * 0.01
        sims[:, 0] += 0.05
        bias = routing.balanced_biases(sims)
        counts = torch.bincount((sims + bias).argmax(dim=1), minlength=k)
        assert int(counts.max()) <= -(-n // k), counts.tolist()
        assert torch.equal(bias, routing.balanced_biases(sims.clone()))
    one = routing.balanced_biases(torch.rand(5, 1, dtype=torch.float64))
    assert torch.equal(one, torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="sims must be"):
        routing.balanced_biases(torch.zeros(4))


def test_balanced_fit_moves_the_boundary_into_the_bulk() -> None:
    """k-means splits one outlier off a bulk of near-equal histograms; ``balance=True`` sets biases that split
    the buffer equally, and evaluation on fresh histograms of the same bulk follows that split."""
    gen = torch.Generator().manual_seed(0)

    def bulk(n: int) -> torch.Tensor:
        h = torch.tensor([0.65, 0.2, 0.12, 0.03]).repeat(n, 1) + 0.02 * torch.rand(n, 4, generator=gen)
        return torch.cat([h, torch.zeros(n, CODES - 4)], dim=1)

    data = bulk(40)
    data[0] = onehot(7)[0]
    plain = BranchNav(2, CODES, buffer_size=40, warmup=0, restarts=2)
    plain.train()
    plain(data)
    assert sorted(torch.bincount(plain.eval()(data), minlength=2).tolist()) == [1, 39]
    balanced = BranchNav(2, CODES, buffer_size=40, warmup=0, restarts=2, balance=True)
    balanced.train()
    balanced(data)
    assert torch.bincount(balanced.eval()(data), minlength=2).tolist() == [20, 20]
    fresh = torch.bincount(balanced(bulk(400)), minlength=2)
    assert int(fresh.max()) <= 0.75 * 400, fresh.tolist()  # the 1.5/K bar of the book
    with pytest.raises(ValueError, match="balance and bias_rate"):
        BranchNav(2, CODES, balance=True, bias_rate=0.01)


def test_calibrate_refits_on_given_histograms_and_keeps_identities() -> None:
    """``calibrate`` refits on the histograms it is given (not the buffer), keeps expert j on the centre nearest
    its old one, counts itself, and refuses to run before the first fit."""
    nav = fitted_nav(calibration=8)  # centres at code 0 (expert 0) and code 1 (expert 1)
    hist = torch.cat([onehot(1, 4) + 0.1 * onehot(2, 4), onehot(0, 4) + 0.1 * onehot(3, 4)])
    labels = nav.calibrate(hist)
    assert labels.tolist() == [1] * 4 + [0] * 4 and int(nav.calibrations) == 1
    assert int(nav.centres[0].argmax()) == 0 and int(nav.centres[1].argmax()) == 1
    assert torch.allclose(nav.centres[1], torch.nn.functional.normalize(hist[0], dim=0).to(nav.centres.dtype))
    fresh = BranchNav(2, CODES, buffer_size=4, warmup=0, calibration=8)
    with pytest.raises(ValueError, match="needs fitted centres"):
        fresh.calibrate(hist)
    with pytest.raises(ValueError, match="calibration must be"):
        BranchNav(2, CODES, calibration=1)


def test_moero_calibrates_each_cascade_on_its_current_histograms() -> None:
    """``Moero.calibrate_routing``: each navigator is refitted on the histograms the network computes now for
    the calibration inputs (cascade by cascade), with balanced biases, so evaluation splits those inputs
    equally; nothing is drawn from the global generator; ``calibration = 0`` changes nothing."""
    from moero.models.moero import Moero
    from moero.models.registry import model_config

    torch.manual_seed(0)
    config = model_config("moero-2x2", "tiny", checkpoint=False)
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for i in range(4):
        kspace = torch.randn(2, config.frames, 2, 32, 32, dtype=torch.complex64, generator=gen) * (1 + i)
        mask = torch.zeros(2, config.frames, 32, 32, dtype=torch.bool)
        mask[..., :: 2 + i % 2] = True
        mask[..., 14:18] = True
        inputs.append(((kspace, mask), {}))

    def trained(calibration: int) -> Moero:
        torch.manual_seed(0)
        model = Moero(config, 2, nav_kwargs={"warmup": 0, "buffer_size": 2, "balance": True,
                                             "calibration": calibration})
        model.train()
        for (kspace, mask), _ in inputs[:2]:
            model(kspace, mask).image.abs().mean().backward()
            model.after_backward()
        assert all(bool(nav.fitted) for nav in model.navs)
        return model

    off = trained(0)
    before = copy.deepcopy(off.state_dict())
    off.calibrate_routing(lambda n: inputs)
    assert all(torch.equal(v, off.state_dict()[k]) for k, v in before.items())

    model = trained(8)
    received: list[torch.Tensor] = []
    for nav in model.navs:  # record what each navigator is calibrated on
        nav.calibrate = (lambda f: lambda hist: received.append(hist.clone()) or f(hist))(nav.calibrate)
    rng = torch.get_rng_state()
    asked = []
    model.calibrate_routing(lambda n: asked.append(n) or inputs)
    assert asked == [8, 8] and torch.equal(rng, torch.get_rng_state()) and model.training
    assert [int(nav.calibrations) for nav in model.navs] == [1, 1]
    model.eval()
    with torch.no_grad():  # the network as it is now, routed by the calibrated navigators
        outs = [model(*args) for args, _ in inputs]
    for k in range(2):
        assert torch.equal(received[k], torch.cat([o.histograms[k] for o in outs]))
    # cascade 0's histograms are all alike at this size; cascade 1's take 3 distinct values (4, 3 and 1
    # copies, the single one nearer the 4): the best split a boundary can make is 5/3, not 8/0
    routes = torch.cat([o.routes for o in outs], dim=1)
    assert sorted(torch.bincount(routes[1], minlength=2).tolist()) == [3, 5], routes[1].tolist()
