"""2-process gloo DDP on CPU equals one process on the concatenated batches; rank helpers."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from engine_helpers import TinySlices, ddp_config, ddp_worker, make_net

from moero.train import distributed as mdist
from moero.train.distributed import free_port
from moero.train.trainer import Trainer

KINDS = ["plain", "self_synced"]  # self_synced: conv2 ignored by DDP, averaged by the model's after_backward


def test_two_process_ddp_equals_one_process_on_concatenated_batches(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "ddp"), KINDS, str(out)), nprocs=2, join=True)
    results = torch.load(out, weights_only=True)
    for kind in KINDS:
        ddp = results[kind]
        single = Trainer(ddp_config(str(tmp_path / "single" / kind), 4), make_net(kind), TinySlices(n=8),
                         TinySlices(n=6, seed=1), dist_info=mdist.DistInfo(0, 1, 0, torch.device("cpu"), None))
        summary = single.fit()
        assert summary["step"] == ddp["summary"]["step"] == 4  # 8 examples, 4 per step, 2 epochs
        moved = 0
        start = make_net(kind).state_dict()
        for name, value in single.model.state_dict().items():
            if "recent_" in name:
                continue  # the VQ's pool of recent inputs for re-seeding is a sample (rank 0's), not a statistic
            # float32 sums in another order (2 ranks x 2 vs 4 examples): equal to rounding, relative to the size
            torch.testing.assert_close(ddp["state"][name], value, rtol=2e-6, atol=1e-6, msg=f"{kind}: {name}")
            moved += int(not torch.equal(value, start[name]))
        assert moved >= 4  # the comparison is not between untouched weights
        assert ddp["vq_steps"] == int(single.model.vq.steps) == 4  # VQ statistics synced once per step
        # DDP left the ignored parameters to the model: their gradients reached after_backward unreduced
        assert ddp["local_grad_steps"] == (4 if kind == "self_synced" else -1)
        val_single = [r for r in single.history if r["kind"] == "val"]
        assert [v["images"] for v in ddp["val"]] == [v["images"] for v in val_single] == [6, 6]  # gathered
        for a, b in zip(ddp["val"], val_single, strict=True):
            assert a["files"] == b["files"] and abs(a["ssim"] - b["ssim"]) < 1e-6
            assert abs(a["psnr"] - b["psnr"]) < 1e-4
        # rank 0 alone wrote the run's files
        names = sorted(p.name for p in (tmp_path / "ddp" / kind).iterdir())
        assert names == ["checkpoint.pt", "config.yaml", "metrics.jsonl"]


def test_single_process_helpers_are_no_ops(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = mdist.init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(mdist.all_reduce_mean(t), torch.tensor([1.0, 2.0]))
    assert mdist.all_gather_objects({"a": 1}) == [{"a": 1}] and mdist.broadcast_object(3) == 3
    # every (seed, rank) pair of a grid gets its own seed; without a process group the rank is 0
    pairs = [(s, r) for s in range(16) for r in range(8)]
    assert len({mdist.rank_seed(s, r) for s, r in pairs}) == len(pairs)
    assert mdist.rank_seed(7) == mdist.rank_seed(7, 0)
    assert mdist.seed_everything(4) == mdist.rank_seed(4, 0) and mdist.seed_everything(4, per_rank=False) == 4
    mdist.seed_everything(4)
    a = torch.rand(2)
    mdist.seed_everything(4)
    assert torch.equal(a, torch.rand(2))
    mdist.seed_everything(5)
    assert not torch.equal(a, torch.rand(2))


def test_bad_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        mdist.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            mdist.init_distributed("cuda")
