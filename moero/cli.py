"""Command line: ``python -m moero <command> --help``.

Commands: ``book`` (run the notebooks of a profile with papermill, build the HTML), ``train`` (any
registry model; torchrun for DDP), ``eval`` (score a checkpoint or the zero-filled reference by the
official CMRxRecon2025 protocol), ``generate-data`` (the embedded synthetic dataset). Heavy modules
are imported only by the command that uses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moero import __version__

__all__ = ["FIELD_HELP", "config_from_args", "with_default_data", "COMMANDS", "build_parser", "main"]

FIELD_HELP: dict[str, str] = {
    "run_dir": "folder of checkpoint.pt, metrics.jsonl and config.yaml",
    "seed": "seed of weights, data order, masks and augmentation",
    "device": "auto | cpu | cuda",
    "data_root": "a CMRxRecon2025 tree (default: the synthetic set of --dataset-profile)",
    "dataset_profile": "synthetic dataset size when data_root is empty: smoke | cpu | gpu | paper",
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
    "model": "registry name: promptmr | vq-prompt | moero-<C>x<K> (e.g. moero-12x2)",
    "nav": "BranchNav settings of a Moero model, e.g. {warmup: 64, buffer_size: 256}",
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


# ---------------------------------------------------------------------------- train
def _add_train(parser: argparse.ArgumentParser) -> None:
    from moero.train.config import TrainConfig

    parser.description = (
        "Train a registry model from a YAML config with command-line overrides.\n\n"
        "  python -m moero train --model moero-4x2 --preset small --epochs 2\n"
        "  torchrun --nproc_per_node N -m moero train --config run.yaml   # DDP: nccl on GPU, gloo on CPU\n\n"
        "--resume continues from <run_dir>/checkpoint.pt exactly where the last checkpoint left off.")
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


def config_from_args(args: argparse.Namespace) -> Any:
    """YAML file, then ``--field value`` options, then ``--set`` overrides; errors name the field."""
    from moero.train.config import TrainConfig, parse_override, parse_value

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


def with_default_data(config: Any, progress: bool = True) -> Any:
    """``config`` with ``data_root`` set: the synthetic set of ``dataset_profile`` when none is given
    (generated once under the build folder)."""
    if config.data_root:
        return config
    from moero.data.synthetic import ensure_synthetic
    from moero.paths import default_data_root

    size = config.dataset_profile
    root = ensure_synthetic(default_data_root(size), profile=size, seed=0, progress=progress)
    return config.replace(data_root=str(root))


def _run_train(args: argparse.Namespace) -> int:
    from moero.train.trainer import train

    config = with_default_data(config_from_args(args), progress=int(os.environ.get("RANK", "0")) == 0)
    summary = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- eval
def _add_eval(parser: argparse.ArgumentParser) -> None:
    from moero.eval.evaluate import TEST_SPLITS

    parser.description = (
        "Score a checkpoint of any registry model (or the zero-filled reference) by the official "
        "CMRxRecon2025 protocol and write the tables eval_files, eval_groups, eval_splits (CSV and Markdown).")
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


def _run_eval(args: argparse.Namespace) -> int:
    from moero.train.config import TrainConfig, parse_override
    from moero.train.runs import evaluate_checkpoint

    if bool(args.checkpoint) == bool(args.zero_filled):
        raise ValueError("eval: give exactly one of --checkpoint and --zero-filled")
    overrides = dict(parse_override(s) for s in args.set)
    data_root = args.data_root
    if not data_root and args.zero_filled:  # a checkpoint knows its data; the reference takes the default set
        data_root = with_default_data(TrainConfig.from_dict(overrides)).data_root
    out = args.out or (str(Path(args.checkpoint).parent / "eval") if args.checkpoint else "_build/eval/zero-filled")
    results = evaluate_checkpoint(args.checkpoint, data_root, [s for s in args.splits.split(",") if s], out,
                                  args.device, overrides, args.max_files,
                                  modalities=[m for m in args.modalities.split(",") if m])
    print(json.dumps({"out": out, "splits": results["splits"]}, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- book
def _add_book(parser: argparse.ArgumentParser) -> None:
    from moero.book.profiles import PROFILES

    parser.description = "Run the book's notebooks for a profile with papermill, then build the HTML book."
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="sizes to run (default: cpu)")
    parser.add_argument("--data", type=Path, default=None, help="a CMRxRecon2025 tree to use instead of synthetic data")
    parser.add_argument(
        "-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
        help="override a notebook parameter of the profile (value parsed as JSON when possible)",
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="run only these notebook stems")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when nothing changed")
    parser.add_argument("--no-html", action="store_true", help="run the notebooks but do not build the HTML")


def _run_book(args: argparse.Namespace) -> int:
    from moero.book.runner import NotebookFailed, build_html, coerce_param, run_notebooks

    params = {key: coerce_param(value) for key, value in args.param}
    try:
        results = run_notebooks(args.profile, data=args.data, params=params, only=args.only, force=args.force)
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for res in results:
        state = "unchanged" if res.skipped else f"{res.wall_time_s:.1f} s"
        print(f"{res.notebook}: {state} -> {res.executed}")
    if not args.no_html:
        html = build_html(args.profile)
        print(f"HTML book: {html / 'index.html'}")
    return 0


# ---------------------------------------------------------------------------- generate-data
def _add_generate(parser: argparse.ArgumentParser) -> None:
    from moero.data.synthetic import SIZES

    parser.description = "Generate the embedded synthetic dataset in the CMRxRecon2025 layout."
    parser.add_argument("--root", default=None, help="output folder (default: _build/data/<size>)")
    parser.add_argument("--size", "--profile", dest="size", default="cpu", choices=sorted(SIZES),
                        help="dataset size")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same arrays)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the tree is up to date")


def _run_generate(args: argparse.Namespace) -> int:
    from moero.data.readers import read_manifest
    from moero.data.synthetic import STAMP_NAME, ensure_synthetic
    from moero.paths import default_data_root

    root = Path(args.root) if args.root else default_data_root(args.size)
    if args.force and (root / STAMP_NAME).is_file():
        (root / STAMP_NAME).write_text("{}")  # a stamp that matches nothing: regenerate
    ensure_synthetic(root, profile=args.size, seed=args.seed)
    rows = read_manifest(root)
    print(f"{root}: {len(rows)} files, {len({r['subject'] for r in rows})} subjects")
    return 0


# command -> (add arguments, run, one-line help)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "book": (_add_book, _run_book, "run the book's notebooks with papermill for a profile, then build the HTML"),
    "train": (_add_train, _run_train, "train a registry model (promptmr, vq-prompt, moero-CxK); torchrun for DDP"),
    "eval": (_add_eval, _run_eval, "score a checkpoint by the official CMRxRecon2025 protocol, write tables"),
    "generate-data": (_add_generate, _run_generate, "generate the embedded synthetic CMRxRecon-layout dataset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moero", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"moero {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add, run, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
