"""A tiny model and dataset with the engine's example format, so the trainer's tests do not depend on
the size of the real PromptMR (shared by tests/test_train.py, test_checkpoint.py, test_distributed.py)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from moero.models.io import ReconOutput
from moero.models.vq import VectorQuantizer
from moero.physics.fft import fft2c, ifft2c
from moero.physics.masks import MaskSampler


class TinyNet(nn.Module):
    """Zero-filled RSS per frame -> conv -> (VQ) -> dropout -> conv, residual on the centre frame."""

    def __init__(self, frames: int = 3, width: int = 6, vq: bool = True, dropout: float = 0.2) -> None:
        super().__init__()
        self.frames = frames
        self.conv1 = nn.Conv2d(frames, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 1, 3, padding=1)
        self.drop = nn.Dropout(dropout)  # draws from the global RNG: exact resume must restore it
        self.vq = VectorQuantizer(8, width, seed=0) if vq else None

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies=None) -> ReconOutput:
        zf = ifft2c(masked_kspace).abs().pow(2).sum(dim=2).sqrt()  # (B, F, H, W)
        x = F.relu(self.conv1(zf))
        vq_loss = x.new_zeros(())
        if self.vq is not None:
            q = self.vq(x)
            x, vq_loss = x + 0.1 * q.quantized, q.loss
        x = self.drop(x)
        image = (zf[:, self.frames // 2] + self.conv2(x)[:, 0]).abs()
        return ReconOutput(image, vq_loss)


class TinySlices(Dataset):
    """``n`` examples from ``n // per_file`` "files": k-space of smooth random images, masks drawn by
    ``MaskSampler`` from ``(seed, epoch, index)``, optional ``augment(example, generator)``."""

    def __init__(self, n: int = 8, per_file: int = 2, frames: int = 3, coils: int = 2, h: int = 24, w: int = 20,
                 seed: int = 0, augment=None) -> None:
        self.n, self.per_file, self.frames, self.coils, self.h, self.w = n, per_file, frames, coils, h, w
        self.seed, self.epoch, self.augment = seed, 0, augment
        self.masks = MaskSampler(kinds=("uniform", "kt_gaussian"), accelerations=(2, 4), acs=4)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(1000 + index)  # content depends on the index only
        low = torch.randn(self.frames, self.coils, 6, 5, dtype=torch.complex64, generator=gen)
        image = F.interpolate(torch.view_as_real(low).permute(0, 1, 4, 2, 3).reshape(-1, 2, 6, 5),
                              size=(self.h, self.w), mode="bilinear", align_corners=False)
        image = torch.complex(image[:, 0], image[:, 1]).reshape(self.frames, self.coils, self.h, self.w)
        kspace = fft2c(image)
        mask_seed = (self.seed * 1_000_003 + self.epoch) * 100_003 + index
        mask, info = self.masks.sample((self.frames, self.h, self.w), seed=mask_seed)
        example = {"kspace": kspace, "mask": mask,
                   "meta": {"file": f"vol{index // self.per_file}", "slice": index,
                            "acceleration": float(info["acceleration"])}}
        if self.augment is not None:
            example = self.augment(example, torch.Generator().manual_seed(mask_seed))
        full = ifft2c(example["kspace"][self.frames // 2])
        example["target"] = full.abs().pow(2).sum(0).sqrt()
        example["masked_kspace"] = example["kspace"] * example["mask"].unsqueeze(1)
        del example["kspace"]
        return example


class SelfSyncedNet(TinyNet):
    """Takes ``conv2`` out of DDP and averages its gradients itself (the Moero experts' pattern)."""

    def ddp_ignored_parameters(self) -> list[str]:
        return ["conv2.weight", "conv2.bias"]

    local_grad_steps = 0  # steps whose conv2 gradients still differed between ranks (DDP left them alone)

    def after_backward(self, step: int) -> None:
        if dist.is_initialized() and dist.get_world_size() > 1:
            grads = [torch.zeros_like(self.conv2.bias.grad) for _ in range(dist.get_world_size())]
            dist.all_gather(grads, self.conv2.bias.grad)
            self.local_grad_steps += int(not all(torch.equal(grads[0], g) for g in grads[1:]))
            for p in (self.conv2.weight, self.conv2.bias):  # fixed order on every rank
                dist.all_reduce(p.grad)
                p.grad.div_(dist.get_world_size())


def make_net(kind: str) -> TinyNet:
    torch.manual_seed(0)
    return (SelfSyncedNet if kind == "self_synced" else TinyNet)(dropout=0.0)


def ddp_config(run_dir: str, batch_size: int):
    from moero.train.config import TrainConfig

    return TrainConfig(run_dir=run_dir, device="cpu", batch_size=batch_size, epochs=2, lr=3e-3, grad_clip=0.5,
                       checkpoint_every=0, progress=False, seed=5)


def ddp_worker(rank: int, world: int, port: int, run_dir: str, kinds: list[str], out: str) -> None:
    """One rank of gloo DDP runs over ``TinySlices`` (batch 2 per rank), one per model kind; rank 0 saves."""
    from moero.train.distributed import cleanup_distributed, init_distributed
    from moero.train.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    results = {}
    for kind in kinds:
        trainer = Trainer(ddp_config(f"{run_dir}/{kind}", 2), make_net(kind), TinySlices(n=8),
                          TinySlices(n=6, seed=1), dist_info=info)
        summary = trainer.fit()
        val = [r for r in trainer.history if r["kind"] == "val"]
        results[kind] = {"state": trainer.model.state_dict(), "val": val, "summary": summary,
                         "vq_steps": int(trainer.model.vq.steps),
                         "local_grad_steps": getattr(trainer.model, "local_grad_steps", -1)}
    if rank == 0:
        torch.save(results, out)
    cleanup_distributed()
