"""``python -m moero eval``: score a checkpoint (or the zero-filled baseline) by the official
CMRxRecon2025 protocol and write the result tables (CSV and Markdown) that the results chapters use.

Only the images the protocol scores are reconstructed (central slices, frames by modality); each file
gets the mean over its images, then groups (centre, vendor) and the Tab. 2 splits (total, rare,
fresh) are means over files. Tables: ``eval_files``, ``eval_groups``, ``eval_splits`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moero.metrics import central_slices, group_means, score_images, selected_frames, split_aggregates

__all__ = ["ZeroFilled", "evaluate", "evaluate_checkpoint", "write_tables", "add_arguments", "run"]

TEST_SPLITS = ("test-total", "rare", "fresh")


class ZeroFilled(nn.Module):
    """The zero-filled reference: RSS of the inverse FFT of the centre frame's masked k-space."""

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from moero.fft import ifft2c
        from moero.physics import rss

        return rss(ifft2c(masked_kspace[:, masked_kspace.shape[1] // 2]), dim=1)


def protocol_indices(dataset: Any) -> list[int]:
    """Example indices of a ``SliceDataset`` that the official protocol scores (order: file, frame, slice)."""
    wanted: dict[int, set[tuple[int, int]]] = {}
    for f, rec in enumerate(dataset.records):
        frames = selected_frames(rec["modality"], rec["num_frames"])
        slices = central_slices(rec["num_slices"], rec["modality"])
        wanted[f] = {(t, z) for t in frames for z in slices}
    out = []
    for i in range(len(dataset)):
        f, z, t = dataset.locate(i)
        if (t, z) in wanted[f]:
            out.append(i)
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Any, device: str | torch.device = "cpu", progress: bool = True,
    max_files: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Per-file, per-group and per-split official metrics of ``model`` on a ``SliceDataset``."""
    from tqdm import tqdm

    from moero.train import _output_parts, collate_examples, model_inputs

    device = torch.device(device)
    model = model.to(device).eval()
    acs = int(getattr(getattr(dataset, "mask_sampler", None), "acs", 20))
    indices = protocol_indices(dataset)
    if max_files:
        indices = [i for i in indices if dataset.locate(i)[0] < max_files]
    per_file: dict[int, list[dict[str, float]]] = {}
    for i in tqdm(indices, desc="eval", disable=not progress, mininterval=10.0, ncols=100):
        f = dataset.locate(i)[0]
        batch = collate_examples([dataset[i]])
        args, kwargs = model_inputs(model, {k: v.to(device) if isinstance(v, torch.Tensor) else v
                                            for k, v in batch.items()}, acs)
        out = model(*args, **kwargs)
        image, _ = _output_parts(out)
        scores = score_images(batch["target"].to(device).float(), image.float())
        per_file.setdefault(f, []).append({k: float(v[0]) for k, v in scores.items()})
    files = []
    for f, rows in sorted(per_file.items()):
        rec = dataset.records[f]
        meta = {k: rec.get(k, "") for k in ("file", "modality", "centre", "vendor", "pathology", "split")}
        files.append({**meta, "images": len(rows),
                      **{m: sum(r[m] for r in rows) / len(rows) for m in ("ssim", "psnr", "nmse")}})
    if not files:
        raise ValueError("evaluate: the dataset holds no example the protocol scores")
    splits = split_aggregates(files)
    return {"files": files, **group_means(files), "splits": [{"split": k, **v} for k, v in splits.items()]}


def write_tables(results: dict[str, list[dict[str, Any]]], out: str | Path, label: str = "") -> list[Path]:
    """Write ``eval_files``, ``eval_groups``, ``eval_splits`` as CSV and Markdown; returns the paths."""
    from moero.results import Table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("files", "groups", "splits"):
        rows = [{"model": label, **r} if label else r for r in results[name]]
        table = Table(rows, caption=f"{label} {name}".strip())
        for suffix, text in (("csv", table.to_csv()), ("md", table.to_markdown())):
            path = out / f"eval_{name}.{suffix}"
            path.write_text(text)
            written.append(path)
    return written


def evaluate_checkpoint(
    checkpoint: str | Path | None,
    data_root: str | None = None,
    splits: Sequence[str] = TEST_SPLITS,
    out: str | Path | None = None,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    max_files: int = 0,
    progress: bool = True,
    modalities: Sequence[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Load ``checkpoint`` (None: the zero-filled reference), evaluate on ``splits`` (and ``modalities``),
    write the tables to ``out``."""
    from moero.checkpoint import load_checkpoint, load_module_buffers
    from moero.dataset import SliceDataset
    from moero.masks import MaskSampler
    from moero.results import resolve_device
    from moero.train import TrainConfig, _dataset_root, build_model

    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        config = TrainConfig.from_dict({**state["config"], **(overrides or {})})
        model = build_model(config)
        model.load_state_dict(state["model"])
        load_module_buffers(model, state["buffers"], checkpoint)
        frames = int(model.config.frames)
        label = Path(checkpoint).parent.name
    else:
        config = TrainConfig.from_dict(overrides or {})
        model, frames, label = ZeroFilled(), 1, "zero-filled"
    if data_root:
        config = config.replace(data_root=data_root)
    root = _dataset_root(config)
    masks = MaskSampler(kinds=tuple(config.mask_kinds), accelerations=tuple(config.accelerations), acs=config.acs)
    dataset = SliceDataset(root, split=list(splits), frames=frames, mask_sampler=masks, seed=config.seed + 2,
                           modalities=list(modalities) if modalities else None)
    if len(dataset) == 0:
        raise ValueError(f"no examples of splits {list(splits)} under {root}")
    results = evaluate(model, dataset, resolve_device(device), progress=progress, max_files=max_files)
    if out is not None:
        write_tables(results, out, label)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", help="checkpoint.pt written by `train` (omit with --zero-filled)")
    parser.add_argument("--zero-filled", action="store_true", help="score the zero-filled reconstruction instead")
    parser.add_argument("--data-root", help="CMRxRecon2025 tree (default: the checkpoint config's data)")
    parser.add_argument("--splits", default=",".join(TEST_SPLITS), help="manifest splits to score, comma separated")
    parser.add_argument("--out", help="folder of the tables (default: <checkpoint folder>/eval)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--modalities", default="", help="score only these modalities, comma separated (default: all)")
    parser.add_argument("--max-files", type=int, default=0, help="score at most N files (0: all)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a training-config field, e.g. accelerations=[8] or mask_kinds=[uniform]")


def run(args: argparse.Namespace) -> int:
    from moero.train import parse_override

    if bool(args.checkpoint) == bool(args.zero_filled):
        raise ValueError("eval: give exactly one of --checkpoint and --zero-filled")
    overrides = dict(parse_override(s) for s in args.set)
    out = args.out or (str(Path(args.checkpoint).parent / "eval") if args.checkpoint else "_build/eval/zero-filled")
    results = evaluate_checkpoint(args.checkpoint, args.data_root, [s for s in args.splits.split(",") if s], out,
                                  args.device, overrides, args.max_files,
                                  modalities=[m for m in args.modalities.split(",") if m])
    print(json.dumps({"out": out, "splits": results["splits"]}, indent=2, default=str))
    return 0
