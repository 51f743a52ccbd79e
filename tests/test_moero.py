"""Moero branch grid (reference section 3): shared VQ blocks, routed experts, sparse DDP synchronisation."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from moero.models.moero import Moero
from moero.models.promptmr import preset
from moero.models.registry import build_model, model_config, parse_model_name
from moero.models.vq import VectorQuantizer
from moero.physics.fft import fft2c
from moero.physics.phantom import coil_maps, shepp_logan
from moero.train.distributed import free_port

STEPS = 3
LR = 1e-3


def scans(batch: int, h: int = 16, w: int = 16, coils: int = 2, frames: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` undersampled phantom scans, each rolled and scaled differently, and their masks."""
    maps = coil_maps(coils, h, w, seed=1)
    images = []
    for b in range(batch):
        img = shepp_logan(h, w).roll((3 * b, -2 * b), dims=(0, 1)) * (1.0 + 0.5 * b)
        images.append(torch.stack([img * (1 + 0.1 * f) for f in range(frames)]))
    x = torch.stack(images)  # (B, F, H, W)
    mask = torch.zeros(batch, frames, h, w, dtype=torch.bool)
    mask[..., ::2] = True
    mask[..., w // 2 - 3 : w // 2 + 3] = True
    kspace = fft2c(maps * x[:, :, None]) * mask[:, :, None]
    return kspace, mask


def tiny_moero(experts: int = 3, **nav_kwargs) -> Moero:
    torch.manual_seed(0)
    config = model_config("moero-2x2", "tiny", checkpoint=False)
    nav = {"warmup": 0, "buffer_size": 1000, "imbalance_ratio": 1e30, **nav_kwargs}
    return Moero(config, experts, nav_kwargs=nav)


def spread_codebooks(model: Moero, kspace: torch.Tensor, mask: torch.Tensor) -> None:
    """Codebooks drawn from the features they quantise (a random init collapses onto one code, and all
    histograms would agree): each quantiser in turn, given the ones before it."""
    gen = torch.Generator().manual_seed(0)
    for vq in [m for m in model.modules() if isinstance(m, VectorQuantizer)]:
        seen: list[torch.Tensor] = []
        handle = vq.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0].detach()))
        with torch.no_grad():
            model(kspace, mask)
        handle.remove()
        rows = torch.cat([z.movedim(1, -1).reshape(-1, vq.dim) for z in seen])
        pick = torch.randint(0, rows.shape[0], (vq.num_codes,), generator=gen)
        vq._set_codebook(rows[pick] + 1e-3 * torch.randn(vq.num_codes, vq.dim, generator=gen))


def fix_centres(model: Moero, kspace: torch.Tensor, mask: torch.Tensor) -> None:
    """Centres = the routing histograms of the first K-1 samples (so they part ways wherever their
    histograms differ) and a zero last centre, which no histogram ever picks (cosine similarity 0,
    the others are >= 0 and positive at the sample's own codes): the last expert stays unused."""
    model.eval()
    spread_codebooks(model, kspace, mask)
    for k, nav in enumerate(model.navs):
        with torch.no_grad():  # cascade k's input histogram under the centres fixed so far
            hist = model(kspace, mask).histograms[k]
        nav.centres.zero_()
        nav.centres[: nav.num_experts - 1] = hist[: nav.num_experts - 1]
        nav.fitted.fill_(True)


def train_steps(model: torch.nn.Module, core: Moero, kspace: torch.Tensor, mask: torch.Tensor, steps: int,
                routes: list[torch.Tensor] | None = None) -> list[dict[str, torch.Tensor | None]]:
    """AdamW steps on ``mean |image|^2 + vq_loss`` (batch mean); returns the gradients of each step."""
    opt = torch.optim.AdamW(core.parameters(), lr=LR, weight_decay=0.1)
    grads = []
    routes = routes if routes is not None else []
    for step in range(steps):
        out = model(kspace, mask)
        routes.append(out.routes)
        loss = out.image.pow(2).mean() + out.vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        core.after_backward(step)
        grads.append({n: (p.grad.clone() if p.grad is not None else None) for n, p in core.named_parameters()})
        opt.step()
    return grads


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Equal up to float round-off relative to the tensor's size (batched and split convolutions differ)."""
    return bool((a - b).norm() <= rtol * b.norm() + 1e-9)



def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        kspace, mask = scans(world)
        model = tiny_moero()
        fix_centres(model, kspace, mask)
        model.train()
        DDP._set_params_and_buffers_to_ignore_for_model(model, model.ddp_ignored_parameters())
        wrapped = DDP(model, broadcast_buffers=False)  # find_unused_parameters stays False
        routes: list[torch.Tensor] = []
        grads = train_steps(wrapped, model, kspace[rank : rank + 1], mask[rank : rank + 1], STEPS, routes)
        torch.save({"state": model.state_dict(), "grads": grads[-1], "routes": routes},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_presets_and_grid_structure() -> None:
    spec = parse_model_name("moero-12x4")
    config = model_config("moero-12x4", "paper")
    assert (config.num_cascades, spec.num_experts, config.vq_prompt) == (12, 4, True)
    for bad in ("moero-12", "moero-0x2", "moero-12x0", "promptmr+vq", "baseline"):
        with pytest.raises(ValueError, match="unknown model|must be >= 1"):
            parse_model_name(bad)
    built = build_model("moero-3x2", "tiny")
    assert isinstance(built, Moero) and len(built.experts) == 3 and len(built.experts[0]) == 2
    assert not build_model("promptmr", "tiny").config.vq_prompt and build_model("vq-prompt", "tiny").config.vq_prompt
    model = tiny_moero(experts=2)
    assert len(model.experts) == 2 and all(len(row) == 2 for row in model.experts)
    for k, row in enumerate(model.experts):
        assert row[0].denoiser.vq is row[1].denoiser.vq is model.vq_blocks[k]  # one shared VQ-PromptBlock
        assert row[0].denoiser.stem.weight is not row[1].denoiser.stem.weight
    assert model.navs[0].num_codes == model.config.sens_num_codes and model.navs[1].num_codes == model.config.num_codes
    # DDP must ignore exactly the expert parameters (+ routing buffers): every name exists, no shared VQ weight
    names = model.ddp_ignored_parameters()
    known = dict(model.named_parameters()) | dict(model.named_buffers())
    assert set(names) <= set(known)
    ignored_params = {id(known[n]) for n in names if isinstance(known[n], torch.nn.Parameter)}
    assert ignored_params == {id(p) for row in model.expert_parameters() for ps in row for p in ps}
    assert not ignored_params & {id(p) for p in model.vq_blocks.parameters()}
    with pytest.raises(ValueError, match="num_experts"):
        Moero(preset("tiny"), 0)


def test_batch_routing_equals_running_each_sample_alone() -> None:
    kspace, mask = scans(3)
    model = tiny_moero()
    fix_centres(model, kspace, mask)
    model.eval()
    with torch.no_grad():
        together = model(kspace, mask)
        alone = [model(kspace[i : i + 1], mask[i : i + 1]) for i in range(3)]
    assert together.routes[1, :2].tolist() == [0, 1]  # mixed routes: each expert runs on its own group
    assert torch.equal(together.routes, torch.cat([a.routes for a in alone], dim=1))
    assert torch.allclose(together.image, torch.cat([a.image for a in alone]), rtol=1e-4, atol=1e-6)
    # training routes (balance rule from zero counts, per sample in order) match one-by-one routing too
    fresh = tiny_moero(imbalance_ratio=3.0)
    single = copy.deepcopy(fresh)
    fresh.train(), single.train()
    with torch.no_grad():
        routes = fresh(kspace, mask).routes
        one_by_one = torch.cat([single(kspace[i : i + 1], mask[i : i + 1]).routes for i in range(3)], dim=1)
    assert routes[0].tolist() == [0, 1, 2] and torch.equal(routes, one_by_one)


def test_unused_expert_is_untouched_and_checkpointing_agrees() -> None:
    kspace, mask = scans(2)
    plain = tiny_moero()
    fix_centres(plain, kspace, mask)
    plain.train()
    ckpt = copy.deepcopy(plain)
    ckpt.config = preset("tiny", vq_prompt=True, checkpoint=True)
    before = copy.deepcopy(plain.state_dict())
    grads_plain = train_steps(plain, plain, kspace, mask, 1)
    grads_ckpt = train_steps(ckpt, ckpt, kspace, mask, 1)
    # the same gradients up to float32 round-off: accumulation order differs when a split batch is recomputed
    assert [n for n, g in grads_plain[0].items() if g is None] == [n for n, g in grads_ckpt[0].items() if g is None]
    names = [n for n, g in grads_plain[0].items() if g is not None]
    assert close(torch.cat([grads_plain[0][n].flatten() for n in names]),
                 torch.cat([grads_ckpt[0][n].flatten() for n in names]), 1e-5)
    for vq_a, vq_b in zip(plain.vq_blocks, ckpt.vq_blocks, strict=True):  # statistics counted once
        assert torch.allclose(vq_a.quantizer.codebook, vq_b.quantizer.codebook, atol=1e-6)
        assert torch.equal(vq_a.quantizer.cluster_size, vq_b.quantizer.cluster_size)
    grads_plain += train_steps(plain, plain, kspace, mask, 1)
    for k in range(len(plain.experts)):
        for name, p in plain.experts[k][2].named_parameters(prefix=f"experts.{k}.2"):
            if ".vq." not in name:  # the shared VQ-PromptBlock runs for every expert
                assert all(g[name] is None for g in grads_plain)  # no gradient: AdamW skips it, no decay
                assert torch.equal(p, before[name]), name


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path) -> None:
    kspace, mask = scans(2)
    reference = tiny_moero()
    fix_centres(reference, kspace, mask)
    before = copy.deepcopy(reference.state_dict())
    reference.train()
    ref_routes_list: list[torch.Tensor] = []
    ref_grads = train_steps(reference, reference, kspace, mask, STEPS, ref_routes_list)[-1]

    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    ref_state = reference.state_dict()
    for r, res in enumerate(results):
        for name, value in ref_state.items():
            if ".recent_" in name:  # the VQ restart pool keeps evenly spaced rows of each rank's own batch
                continue
            got = res["state"][name]
            if value.is_floating_point():
                # AdamW turns round-off in a near-zero gradient into a step of up to lr (m / sqrt(v) ~ +-1), which
                # depends on thread counts and batch splits; a wrong synchronisation shows in the gradients below
                assert close(got, value, 1e-4) or (got - value).abs().max() <= 2 * LR * STEPS, f"rank {r}: {name}"
            else:
                assert torch.equal(got, value), f"rank {r}: {name}"
        for name, g in ref_grads.items():
            got = res["grads"][name]
            assert (g is None) == (got is None), f"rank {r}: grad of {name}"
            if g is not None:  # e.g. a PReLU weight's gradient (~1e-7) is a sum of cancelling terms
                assert close(got, g, 1e-2), f"rank {r}: grad of {name}"
    # routes (cascades, samples) per step: same as the single process; some expert ran on one rank only
    ref_routes = torch.stack(ref_routes_list)
    frozen = {n for n, p in reference.named_parameters() if not p.requires_grad}  # the frozen prompts never move
    ddp_routes = torch.cat([torch.stack(res["routes"]) for res in results], dim=2)
    assert torch.equal(ddp_routes, ref_routes)
    assert bool((ref_routes[..., 0] != ref_routes[..., 1]).any())
    for k in range(ref_routes.shape[1]):
        for j in range(3):
            prefix = f"experts.{k}.{j}."
            ran = bool((ref_routes[:, k] == j).any())
            for name, value in results[0]["state"].items():
                if name.startswith(prefix) and ".vq." not in name and name not in frozen:
                    # never routed on any rank: bitwise unchanged (no gradient, so no AdamW decay)
                    assert torch.equal(value, before[name]) != ran, name
    assert not bool((ref_routes == 2).any())  # the zero centre is never chosen


def _calibration_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        kspace, mask = scans(4)
        model = tiny_moero(2, calibration=2, balance=True)
        fix_centres(model, kspace, mask)
        mine = slice(2 * rank, 2 * rank + 2)  # each rank is (wrongly) handed other examples
        model.calibrate_routing(lambda n: [((kspace[mine], mask[mine]), {})])
        torch.save({n: b for n, b in model.navs.named_buffers()}, os.path.join(out_dir, f"nav{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_calibration_leaves_every_rank_with_rank_zeros_navigators(tmp_path) -> None:
    """``calibrate_routing`` under several processes ends with rank 0's navigators on every rank (one broadcast),
    even where ranks computed different histograms, and that state is what one process computes from rank 0's
    examples."""
    kspace, mask = scans(4)
    single = tiny_moero(2, calibration=2, balance=True)
    fix_centres(single, kspace, mask)
    single.calibrate_routing(lambda n: [((kspace[:2], mask[:2]), {})])
    mp.spawn(_calibration_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    navs = [torch.load(tmp_path / f"nav{r}.pt", weights_only=True) for r in range(2)]
    expected = dict(single.navs.named_buffers())
    assert int(expected["0.calibrations"]) == 1
    for name, value in expected.items():
        for r in range(2):
            assert torch.equal(navs[r][name], value), (r, name)
