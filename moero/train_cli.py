"""``python -m moero train``: train a model from a YAML config with command-line overrides.

Single process: ``python -m moero train --config run.yaml --epochs 12 --set lr=1e-4``.
Several GPUs or CPU processes: ``torchrun --nproc_per_node N -m moero train --config run.yaml``
(DDP: nccl on GPU, gloo on CPU; rank 0 writes the log and checkpoints). ``--resume`` continues from
``<run_dir>/checkpoint.pt`` exactly where the last checkpoint left off.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from typing import Any

from moero.train import TrainConfig, parse_override, parse_value

FIELD_HELP: dict[str, str] = {
    "run_dir": "folder of checkpoint.pt, metrics.jsonl and config.yaml",
    "seed": "seed of weights, data order, masks and augmentation",
    "device": "auto | cpu | cuda",
    "data_root": "a CMRxRecon2025 tree (default: the synthetic set of --dataset-profile)",
    "dataset_profile": "synthetic dataset size: smoke | cpu | gpu",
    "train_split": "manifest split used for training",
    "val_split": "manifest split used for validation ('' for none)",
    "batch_size": "examples per step and rank",
    "num_workers": "data loader worker processes",
    "balanced": "draw files by the sample-balancing weight of eq. (10)",
    "mask_kinds": "mask kinds drawn per example, e.g. [uniform,kt_gaussian]",
    "accelerations": "accelerations drawn per example, e.g. [4,8,12]",
    "acs": "fully sampled calibration lines",
    "image_shape": "[H,W] centre crop/pad so batches stack ([] keeps native sizes)",
    "augment": "none | kspace | image | dual (DualSpace-CMR)",
    "augment_probability": "augmentation ratio",
    "preset": "model preset: tiny | small | medium | paper",
    "vq_prompt": "use VQ-Prompt blocks",
    "gradient_checkpointing": "recompute cascades in backward to save memory",
    "epochs": "training epochs",
    "max_steps": "total optimiser steps (0: epochs decide)",
    "max_steps_this_run": "stop after this many steps of this invocation, with a checkpoint (0: no limit)",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "schedule": "step | cosine | constant",
    "lr_step_epoch": "epoch where the step schedule multiplies the rate by lr_gamma (-1: the last)",
    "lr_gamma": "factor of the step schedule",
    "warmup_steps": "linear warm-up steps",
    "grad_clip": "gradient norm clipping (0: off)",
    "amp": "auto (bf16 on GPU) | bf16 | fp16 | off",
    "vq_weight": "weight of the VQ commitment losses",
    "ssim_window": "SSIM loss window: uniform | gaussian",
    "checkpoint_every": "checkpoint every N steps (0: per epoch)",
    "val_every": "validate every N epochs (0: never)",
    "max_val_examples": "validate on at most N examples (0: all)",
    "val_crop": "official centre crop in validation metrics",
    "log_every": "log a training record every N steps",
    "resume": "continue from run_dir/checkpoint.pt",
    "progress": "show a progress bar",
    "ddp_broadcast_buffers": "let DDP broadcast rank 0's buffers every forward",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", help="YAML file of TrainConfig fields (overridden by the options below)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any field (value parsed as YAML); repeatable")
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("config fields (each also settable as --set field=value)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if hints[f.name] is bool else {}
        group.add_argument(*flags, dest=f"field_{f.name}", default=argparse.SUPPRESS, metavar="VALUE",
                           help=f"{FIELD_HELP.get(f.name, '')} (default: {default!r})", **extra)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """YAML file, then ``--field value`` options, then ``--set`` overrides; errors name the field."""
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("field_"):
            overrides[key[len("field_"):]] = parse_value(value) if isinstance(value, str) else value
    for text in args.set or []:
        name, value = parse_override(text)
        overrides[name] = value
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    return TrainConfig.from_dict(overrides)


def run(args: argparse.Namespace) -> int:
    from moero.train import train

    config = config_from_args(args)
    summary = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2, default=str))
    return 0
