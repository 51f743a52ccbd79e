"""VectorQuantizer (reference section 2) and the token histogram of eq. (8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from moero.models.blocks import VQPromptBlock
from moero.models.vq import (
    VectorQuantizer,
    code_perplexity,
    frozen_statistics,
    image_patches,
    patches_to_image,
    set_auto_update,
    sync_vq_modules,
    token_histogram,
    train_codebook,
)


def _features(seed: int, b: int = 2, d: int = 8, h: int = 5, w: int = 4) -> torch.Tensor:
    return torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))


def test_straight_through_gradient_is_identity() -> None:
    vq = VectorQuantizer(16, 8).train()
    z = _features(0).requires_grad_(True)
    upstream = _features(1)
    (vq(z).quantized * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)


def test_commitment_loss_value_and_gradient() -> None:
    vq = VectorQuantizer(16, 8, commitment=1.0).eval()
    z = _features(2).requires_grad_(True)
    out = vq(z)
    codes = vq.codebook[out.indices].movedim(-1, 1)
    torch.testing.assert_close(out.loss, F.mse_loss(z, codes))
    out.loss.backward()
    torch.testing.assert_close(z.grad, 2 * (z - codes).detach() / z.numel())


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_quantized_vectors_are_nearest_codebook_rows(distance: str) -> None:
    vq = VectorQuantizer(32, 8, distance=distance).eval()
    z = _features(3)
    out = vq(z)
    flat = z.movedim(1, -1).reshape(-1, 8)
    if distance == "euclidean":
        expected = torch.cdist(flat, vq.codebook).argmin(1)
        quantized = out.quantized.movedim(1, -1).reshape(-1, 8)
        torch.testing.assert_close(quantized, vq.codebook[expected])
    else:
        expected = (F.normalize(flat, dim=1) @ F.normalize(vq.codebook, dim=1).t()).argmax(1)
    assert torch.equal(out.indices.reshape(-1), expected)
    assert out.indices.shape == (2, 5, 4)


def test_ema_update_follows_the_decay_rule() -> None:
    decay, eps, k = 0.9, 1e-5, 8
    vq = VectorQuantizer(k, 4, decay=decay, eps=eps, auto_update=False).train()
    z = _features(4, d=4)
    size0, sum0 = vq.cluster_size.clone(), vq.embed_sum.clone()
    codebook0 = vq.codebook.clone()
    idx = vq(z).indices.reshape(-1)
    torch.testing.assert_close(vq.codebook, codebook0)  # forward only accumulates
    flat = z.movedim(1, -1).reshape(-1, 4)
    counts = torch.bincount(idx, minlength=k).float()
    sums = torch.zeros(k, 4).index_add_(0, idx, flat)
    vq.update()
    size1 = decay * size0 + (1 - decay) * counts
    sum1 = decay * sum0 + (1 - decay) * sums
    n = size1.sum()
    expected = sum1 / ((size1 + eps) / (n + k * eps) * n)[:, None]
    torch.testing.assert_close(vq.cluster_size, size1)
    torch.testing.assert_close(vq.codebook, expected)
    assert float(vq.step_counts.sum()) == 0.0  # consumed


def test_default_ema_constants_are_the_papers_and_drive_one_update() -> None:
    """Reference section 2: EMA decay 0.99, eps 1e-5, commitment weight 1; one update moves 1% of the way."""
    k, d = 8, 4
    vq = VectorQuantizer(k, d, auto_update=False).train()
    assert (vq.decay, vq.eps, vq.commitment) == (0.99, 1e-5, 1.0)
    z = _features(6, d=d)
    size0, sum0 = vq.cluster_size.clone(), vq.embed_sum.clone()
    out = vq(z)
    idx = out.indices.reshape(-1)
    flat = z.movedim(1, -1).reshape(-1, d)
    codes = vq.codebook[idx]
    torch.testing.assert_close(out.loss, F.mse_loss(flat, codes))  # weight 1
    counts = torch.bincount(idx, minlength=k).float()
    sums = torch.zeros(k, d).index_add_(0, idx, flat)
    vq.update()
    size1 = 0.99 * size0 + 0.01 * counts
    torch.testing.assert_close(vq.cluster_size, size1)
    torch.testing.assert_close(vq.embed_sum, 0.99 * sum0 + 0.01 * sums)
    n = size1.sum()
    smoothed = (size1 + 1e-5) / (n + k * 1e-5) * n
    torch.testing.assert_close(vq.codebook, (0.99 * sum0 + 0.01 * sums) / smoothed[:, None])


def test_ema_moves_used_codes_toward_their_assigned_mean() -> None:
    vq = VectorQuantizer(4, 2, decay=0.8, auto_update=False).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]]))
    vq.embed_sum.copy_(vq.codebook)
    points = torch.tensor([[1.0, 1.0], [1.5, 0.5], [9.0, 9.5], [9.5, 10.5]]).t().reshape(1, 2, 4, 1)
    targets = torch.tensor([[1.25, 0.75], [9.25, 10.0]])
    gaps = []
    for _ in range(30):
        vq(points)
        vq.update()
        gaps.append(float((vq.codebook[:2] - targets).norm()))
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 0.05 * gaps[0]


def test_auto_update_defers_to_next_training_forward() -> None:
    vq = VectorQuantizer(8, 8).train()
    before = vq.codebook.clone()
    vq(_features(5))
    torch.testing.assert_close(vq.codebook, before)  # same codebook for a checkpoint recomputation
    assert vq.has_pending
    vq(_features(6))
    assert not torch.equal(vq.codebook, before)
    vq.eval()
    pending = vq.step_counts.clone()
    vq(_features(7))
    assert torch.equal(vq.step_counts, pending)  # eval never collects


def test_frozen_statistics_blocks_accumulation() -> None:
    vq = VectorQuantizer(8, 8, auto_update=False).train()
    with frozen_statistics():
        vq(_features(8))
    assert float(vq.step_counts.sum()) == 0.0
    vq(_features(8))
    assert float(vq.step_counts.sum()) == 2 * 5 * 4


def test_dead_code_restart_revives_unused_codes() -> None:
    gen = torch.Generator().manual_seed(9)
    data = 5.0 + 0.1 * torch.randn(4, 4, 6, 6, generator=gen)  # one tight cluster far from the codes

    def train(restart_after: int | None) -> VectorQuantizer:
        vq = VectorQuantizer(16, 4, restart_after=restart_after, restart_pool=64, auto_update=False, dead_after=3)
        vq.train()
        for _ in range(12):
            vq(data)
            vq.update()
        return vq

    plain, restarted = train(None), train(3)
    used_plain = int((plain.eval()(data).indices.unique()).numel())
    used_restarted = int((restarted.eval()(data).indices.unique()).numel())
    assert used_plain == 1  # collapse: every input maps to the same code
    assert used_restarted > 4
    assert restarted.perplexity > plain.perplexity
    assert plain.dead_fraction == 15 / 16 and restarted.dead_fraction < plain.dead_fraction
    centre = data.mean(dim=(0, 2, 3))
    # re-seeded codes sit on the data, not where the random init put them
    assert int(((restarted.codebook - centre).norm(dim=1) < 1.0).sum()) > 4
    assert int(((plain.codebook - centre).norm(dim=1) < 1.0).sum()) == 1


def test_kmeans_init_lowers_quantisation_error_and_is_seeded() -> None:
    data = _features(10, b=4, d=4, h=8, w=8) * 3 + 2
    plain = VectorQuantizer(16, 4).eval()
    err_random = float(plain(data).loss)
    a = VectorQuantizer(16, 4, kmeans_init=True, seed=1).train()
    b = VectorQuantizer(16, 4, kmeans_init=True, seed=1).train()
    a(data), b(data)
    assert torch.equal(a.codebook, b.codebook)
    assert bool(a.initialized)
    assert float(a.eval()(data).loss) < 0.5 * err_random


def test_sync_vq_modules_updates_each_shared_quantizer_once() -> None:
    block = VQPromptBlock(8, 8, num_res_blocks=1, auto_update=False)
    model = nn.ModuleList([nn.ModuleDict({"vq": block}), nn.ModuleDict({"vq": block}), VectorQuantizer(4, 8)])
    set_auto_update(model, False)
    assert not model[2].auto_update
    model.train()
    block(_features(11))
    model[2](_features(12))
    reference = VectorQuantizer(8, 8, auto_update=False).train()
    reference.load_state_dict(block.quantizer.state_dict())
    reference.update()
    assert sync_vq_modules(model) == 2
    torch.testing.assert_close(block.quantizer.codebook, reference.codebook)
    assert int(model[2].steps) == 1 and int(block.quantizer.steps) == 1


def test_token_histogram_sums_to_one_and_matches_direct_count() -> None:
    gen = torch.Generator().manual_seed(13)
    indices = torch.randint(0, 10, (3, 5, 4, 6), generator=gen)
    hist = token_histogram(indices, 10)
    assert hist.shape == (3, 10)
    torch.testing.assert_close(hist.sum(1), torch.ones(3))
    for b in range(3):
        for k in range(10):
            assert hist[b, k] == pytest.approx(float((indices[b] == k).sum()) / indices[b].numel())
    per_frame = torch.stack([token_histogram(indices[:, f], 10) for f in range(5)]).mean(0)
    torch.testing.assert_close(hist, per_frame)  # eq. (8) averaged over frames
    assert float(code_perplexity(torch.full((10,), 0.1))) == pytest.approx(10.0)


def test_bad_inputs_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="indices"):
        token_histogram(torch.rand(2, 3), 4)
    with pytest.raises(ValueError, match="num_codes"):
        token_histogram(torch.tensor([[0, 5]]), 4)
    with pytest.raises(ValueError, match="z must be"):
        VectorQuantizer(4, 8)(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="distance"):
        VectorQuantizer(4, 8, distance="l1")
    with pytest.raises(ValueError, match="restart_after"):
        VectorQuantizer(4, 8, restart_after=0)


def test_patches_round_trip_and_train_codebook_is_seeded() -> None:
    images = torch.rand(3, 8, 12, generator=torch.Generator().manual_seed(14))
    patches = image_patches(images, 4)
    assert patches.shape == (3, 16, 2, 3)
    torch.testing.assert_close(patches[1, :, 1, 2], images[1, 4:8, 8:12].reshape(-1))
    torch.testing.assert_close(patches_to_image(patches, 4), images)
    with pytest.raises(ValueError, match="patch"):
        image_patches(images, 5)
    runs = []
    for _ in range(2):
        vq = VectorQuantizer(8, 16, auto_update=False, restart_after=2, seed=3)
        runs.append(train_codebook(vq, patches, steps=6, batch_size=2, seed=5))
    assert runs[0] == runs[1]
    assert len(runs[0]) == 6 and runs[0][-1]["loss"] < runs[0][0]["loss"]


def _ddp_worker(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = nn.ModuleList([VectorQuantizer(8, 4, kmeans_init=True, restart_after=1, auto_update=False, seed=2),
                               VectorQuantizer(6, 4, auto_update=False, seed=3)]).train()
        for step in range(3):
            data = _features(100 + 10 * step + rank, d=4)  # each rank sees other data
            model[0](data), model[1](data)
            sync_vq_modules(model)
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sync_vq_modules_keeps_ranks_identical_under_ddp(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, msg=key)
    # the second quantiser must match a single process that sees both ranks' data each step
    ref = VectorQuantizer(6, 4, auto_update=False, seed=3).train()
    for step in range(3):
        ref(_features(100 + 10 * step, d=4)), ref(_features(101 + 10 * step, d=4))
        ref.update()
    assert int(states[0]["1.steps"]) == 3
    torch.testing.assert_close(states[0]["1.cluster_size"], ref.cluster_size)
    torch.testing.assert_close(states[0]["1.codebook"], ref.codebook)
    assert bool(states[0]["0.initialized"])


def test_authors_zero_cluster_size_start_strands_unused_codes() -> None:
    data = _features(21, b=2, d=4, h=4, w=4)
    runs = {}
    for start in (1.0, 0.0):
        vq = VectorQuantizer(32, 4, auto_update=False, seed=5, init_cluster_size=start).train()
        initial = vq.codebook.clone()
        used = torch.zeros(32, dtype=torch.bool)
        used[vq(data).indices.unique()] = True
        vq.update()
        runs[start] = (vq.codebook[~used].norm(dim=1) / initial[~used].norm(dim=1), used)
    ours, authors = runs[1.0][0], runs[0.0][0]
    assert runs[1.0][1].sum() < 32  # some codes went unused in the first step
    assert float(ours.max()) < 2.0  # ours: unused codes keep their scale
    assert float(authors.min()) > 1e3  # the authors' start: they are blown out of reach
    with pytest.raises(ValueError, match="init_cluster_size"):
        VectorQuantizer(4, 4, init_cluster_size=-1.0)
