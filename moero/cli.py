"""Command line: ``python -m moero <command> --help``.

Commands: ``book`` (run the notebooks of a profile with papermill, build the HTML), ``train`` (any
registry model; torchrun for DDP), ``eval`` (score a checkpoint or the zero-filled reference by the
official CMRxRecon2025 protocol, or a submission folder), ``generate-data`` (the embedded synthetic
dataset), ``manifest`` (index a real tree), ``predict`` (write a challenge submission), ``plot``
(learning curves). Heavy modules are imported only by the command that uses them.

Errors end as one line, ``error: <what, naming the file, key, field or parameter>``, on stderr, with
exit code 2 for usage errors (bad options or values, :class:`UsageError`) and 1 for everything else
(bad data, a refused or diverged run, a failed notebook); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moero import __version__

__all__ = ["FIELD_HELP", "UsageError", "config_from_args", "with_default_data", "COMMANDS", "build_parser", "main"]


class UsageError(ValueError):
    """A bad command-line option or value (exit code 2); the message names the option or field."""

FIELD_HELP: dict[str, str] = {
    "run_dir": "folder of checkpoint.pt, metrics.jsonl and config.yaml",
    "seed": "seed of weights, data order, masks and augmentation",
    "device": "auto | cpu | cuda",
    "data_root": "a CMRxRecon2025 tree (default: the synthetic set of --dataset-size)",
    "dataset_size": "synthetic dataset size when data_root is empty: smoke | cpu | gpu | paper",
    "train_split": "manifest split used for training",
    "val_split": "manifest split used for validation ('' or none: no validation)",
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
    "resume": "continue from run_dir/checkpoint.pt (an error when there is none)",
    "resume_if_present": "continue from run_dir/checkpoint.pt when it exists, else start afresh",
    "overwrite": "start afresh in a run_dir that holds a run, moving that run aside to <run_dir>.old-<time>",
    "max_nonfinite": "stop as diverged after N consecutive non-finite losses or gradient norms",
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
        "--resume continues from <run_dir>/checkpoint.pt exactly where the last checkpoint left off; the\n"
        "model, data and optimisation fields must equal the checkpoint's. A run folder holding a run is\n"
        "never overwritten silently: give --resume, --overwrite (moves it aside) or another --run-dir.\n"
        "One process at a time owns a run folder (a lock beside it names the holder's PID).")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", help="YAML file of TrainConfig fields (overridden by the options below)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any field (value parsed as YAML); repeatable")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (file, options, --set) and exit without training")
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("config fields (each also settable as --set field=value)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if hints[f.name] is bool else {}
        group.add_argument(*flags, dest=f"field_{f.name}", default=argparse.SUPPRESS, metavar="VALUE",
                           help=f"{FIELD_HELP.get(f.name, '')} (default: {default!r})", **extra)


def config_from_args(args: argparse.Namespace) -> Any:
    """YAML file, then ``--field value`` options, then ``--set`` overrides; errors name the field.

    A resumed run (``--resume`` / ``--resume-if-present``) whose run folder holds a ``config.yaml``
    starts from that file, so ``train --run-dir D --resume`` continues with the run's own settings;
    what is given on the command line still wins (and is checked against the checkpoint)."""
    from moero.train.config import TrainConfig, parse_override, parse_value

    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("field_"):
            overrides[key[len("field_"):]] = parse_value(value) if isinstance(value, str) else value
    for text in args.set or []:
        name, value = parse_override(text)
        overrides[name] = value
    config = TrainConfig.from_yaml(args.config, overrides) if args.config else TrainConfig.from_dict(overrides)
    saved = Path(config.run_dir) / "config.yaml"
    if (config.resume or config.resume_if_present) and saved.is_file():
        import yaml

        given = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
        base = yaml.safe_load(saved.read_text()) or {}
        known = set(TrainConfig.field_names())
        known = known - {"resume", "resume_if_present", "overwrite"}  # how the saved run started, not settings
        config = TrainConfig.from_dict({**{k: v for k, v in base.items() if k in known}, **given, **overrides})
    return config


def with_default_data(config: Any, progress: bool = True) -> Any:
    """``config`` with ``data_root`` set: the synthetic set of ``dataset_size`` when none is given
    (generated once under the build folder)."""
    if config.data_root:
        return config
    from moero.data.synthetic import ensure_synthetic
    from moero.paths import default_data_root

    size = config.dataset_size
    root = ensure_synthetic(default_data_root(size), size=size, seed=0, progress=progress)
    return config.replace(data_root=str(root))


def _run_train(args: argparse.Namespace) -> int:
    from moero.train.trainer import train

    try:
        config = config_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if getattr(args, "print_config", False):
        print(config.to_yaml(), end="")
        return 0
    config = with_default_data(config, progress=int(os.environ.get("RANK", "0")) == 0)
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
    parser.add_argument("--submission", help="score a submission folder (written by `predict`) instead of a model")
    parser.add_argument("--ground-truth", help="with --submission: the tree of the fully sampled truth")
    parser.add_argument("--truth-range", action="store_true",
                        help="with --submission: the truth's maximum as data range for every file (the official "
                             "scorer takes the submission's for files with several frames)")
    parser.add_argument("--zero-filled", action="store_true", help="score the zero-filled reconstruction instead")
    parser.add_argument("--data-root", help="CMRxRecon2025 tree (default: the checkpoint config's data)")
    parser.add_argument("--splits", default=",".join(TEST_SPLITS), help="manifest splits to score, comma separated")
    parser.add_argument("--out", help="folder of the tables (default: <checkpoint folder>/eval)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--modalities", default="", help="score only these modalities, comma separated (default: all)")
    parser.add_argument("--max-files", type=int, default=0, help="score at most N files (0: all; >= 0)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a training-config field, e.g. accelerations=[8] or mask_kinds=[uniform]")


def _run_eval(args: argparse.Namespace) -> int:
    from moero.train.config import TrainConfig, parse_override
    from moero.train.runs import check_writable, evaluate_checkpoint

    if args.submission or args.ground_truth:
        return _run_eval_submission(args)
    if bool(args.checkpoint) == bool(args.zero_filled):
        raise UsageError("eval: give exactly one of --checkpoint, --zero-filled and --submission")
    if args.max_files < 0:
        raise UsageError(f"eval: --max-files must be >= 0 (0: all files), got {args.max_files}")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UsageError(f"eval: --checkpoint {args.checkpoint} does not exist")
    try:
        overrides = dict(parse_override(s) for s in args.set)
        TrainConfig.from_dict(overrides)  # the field names and values, before any work
    except ValueError as err:
        raise UsageError(f"eval: {err}") from err
    out = args.out or (str(Path(args.checkpoint).parent / "eval") if args.checkpoint else "_build/eval/zero-filled")
    check_writable(out)  # before the evaluation, not after it
    data_root = args.data_root
    if not data_root and args.zero_filled:  # a checkpoint knows its data; the reference takes the default set
        data_root = with_default_data(TrainConfig.from_dict(overrides)).data_root
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
        help="override a notebook parameter of the profile (value parsed as JSON when possible; checked against "
             "the type of the profile's value before any notebook runs)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_params",
                        help="override a notebook parameter, as train and eval do (same as -p KEY VALUE)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="run only these notebook stems")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when nothing changed")
    parser.add_argument("--no-html", action="store_true", help="run the notebooks but do not build the HTML")


def _run_book(args: argparse.Namespace) -> int:
    from moero.book.runner import build_html, coerce_param, run_notebooks, select_notebooks, split_params

    pairs = list(args.param)
    for text in args.set_params:
        if "=" not in text:
            raise UsageError(f"book: --set expects KEY=VALUE, got {text!r}")
        pairs.append(tuple(part.strip() for part in text.split("=", 1)))
    params = {key: coerce_param(value) for key, value in pairs}
    try:  # the -p values and --only names, before any data is generated or any kernel starts
        split_params(args.profile, [p.stem for p in select_notebooks(args.only)], params)
    except ValueError as err:
        raise UsageError(str(err)) from err
    results = run_notebooks(args.profile, data=args.data, params=params, only=args.only, force=args.force)
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
    parser.add_argument("--verify", action="store_true",
                        help="also check every file's SHA-256 against the stamp (sizes are always checked)")
    parser.add_argument("--test-phase", metavar="DIR", default=None,
                        help="also write the challenge's test phase of the test splits to DIR: UnderSample_<task> "
                             "(kus) and Mask_<task> (one challenge mask per file); the truth goes to --truth")
    parser.add_argument("--truth", metavar="DIR", default=None, help="with --test-phase: the fully sampled truth "
                                                                      "(default: <DIR>-truth)")
    parser.add_argument("--task", default="TaskR1", help="with --test-phase: the task folder suffix")


def _run_generate(args: argparse.Namespace) -> int:
    from moero.data.readers import read_manifest
    from moero.data.synthetic import STAMP_NAME, ensure_synthetic
    from moero.paths import default_data_root

    root = Path(args.root) if args.root else default_data_root(args.size)
    if args.force and (root / STAMP_NAME).is_file():
        (root / STAMP_NAME).write_text("{}")  # a stamp that matches nothing: regenerate
    ensure_synthetic(root, size=args.size, seed=args.seed, verify=args.verify)
    rows = read_manifest(root)
    print(f"{root}: {len(rows)} files, {len({r['subject'] for r in rows})} subjects")
    if args.test_phase:
        from moero.data.testphase import write_test_phase

        truth = args.truth or f"{Path(args.test_phase).as_posix().rstrip('/')}-truth"
        written = write_test_phase(root, args.test_phase, truth, task=args.task, seed=args.seed)
        print(f"{args.test_phase}: {len(written)} undersampled files of {args.task}; truth in {truth}")
    return 0


# ---------------------------------------------------------------------------- submissions
def _run_eval_submission(args: argparse.Namespace) -> int:
    from moero.eval.submission import score_submission, write_submission_tables

    if not (args.submission and args.ground_truth):
        raise UsageError("eval: --submission and --ground-truth go together")
    if args.checkpoint or args.zero_filled:
        raise UsageError("eval: --submission excludes --checkpoint and --zero-filled")
    for flag, value in (("--submission", args.submission), ("--ground-truth", args.ground_truth)):
        if not Path(value).is_dir():
            raise UsageError(f"eval: {flag} {value} is not a directory")
    out = args.out or str(Path(args.submission) / "scores")
    results = score_submission(args.submission, args.ground_truth, official_order=not args.truth_range)
    write_submission_tables(results, out)
    report = {"out": out, "overall": results["overall"], "splits": results["splits"],
              "missing": [m["truth"] for m in results["missing"]],
              "not_scored": [{"file": r["file"], "comment": r["comment"]} for r in results["files"] if r["comment"]]}
    print(json.dumps(report, indent=2, default=str))
    return 0


def _add_predict(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Reconstruct the undersampled files (UnderSample_<task>, masks in the file or in Mask_<task>) of a "
        "CMRxRecon2025 tree with a trained registry model and write the official submission: "
        "img4ranking files (MATLAB v5, x, y, slices[, frames]) and <out>/<task>.zip. Files already written "
        "are skipped; a bad input file is reported and skipped.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `train`, or its run folder")
    parser.add_argument("--data", required=True, help="the CMRxRecon2025 tree holding UnderSample_<task>")
    parser.add_argument("--task", required=True, help="task folder suffix, e.g. TaskR1 (UnderSample_TaskR1)")
    parser.add_argument("--out", required=True, help="submission folder")
    parser.add_argument("--device", default="auto", help="auto (GPU if present) | cpu | cuda")
    parser.add_argument("--no-zip", action="store_true", help="do not write <out>/<task>.zip")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_predict(args: argparse.Namespace) -> int:
    from moero.train.predict import predict

    checkpoint = Path(args.checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "checkpoint.pt"
    if not checkpoint.is_file():
        raise UsageError(f"predict: --checkpoint {args.checkpoint}: no checkpoint.pt there")
    if not Path(args.data).is_dir():
        raise UsageError(f"predict: --data {args.data} is not a directory")
    result = predict(checkpoint, args.data, args.task, args.out, args.device, progress=not args.no_progress,
                     make_zip=not args.no_zip)
    print(json.dumps({"written": len(result["written"]), "skipped": len(result["skipped"]),
                      "errors": result["errors"], "zip": result["zip"]}, indent=2))
    return 1 if result["errors"] else 0


def _add_manifest(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Index a CMRxRecon2025 tree by its folder layout (MultiCoil/<Modality>/<Set>/<FullSample|UnderSample_X|"
        "Mask_X>/<Center>/<Vendor>/<Pnnn>/) and write manifest.csv of its fully sampled files, with splits "
        "(train/val/test-total by subject, rare, fresh; see moero.data.layout).")
    parser.add_argument("root", help="the dataset root")
    parser.add_argument("--out", help="output file (default: <root>/manifest.csv)")
    parser.add_argument("--centres", help="CSV of centre roles (centre,role) or subjects (centre,vendor,subject,"
                                          "pathology|split)")


def _run_manifest(args: argparse.Namespace) -> int:
    from moero.data.layout import layout_index, write_manifest

    if not Path(args.root).is_dir():
        raise UsageError(f"manifest: {args.root} is not a directory")
    out = Path(args.out) if args.out else Path(args.root) / "manifest.csv"
    if out.resolve() == (Path(args.root) / "manifest.csv").resolve() and out.is_file():
        raise UsageError(f"manifest: {out} exists; remove it first or give --out")
    path = write_manifest(args.root, out, args.centres)
    rows = layout_index(args.root, args.centres)
    counts: dict[str, int] = {}
    for r in rows:
        counts[f"{r['kind']}:{r['split']}"] = counts.get(f"{r['kind']}:{r['split']}", 0) + 1
    print(json.dumps({"manifest": str(path), "files": counts}, indent=2))
    return 0


def _add_plot(parser: argparse.ArgumentParser) -> None:
    parser.description = "Draw learning curves (loss, validation SSIM, it/s) of runs from their metrics.jsonl."
    parser.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    parser.add_argument("--out", default=None, help="PNG file (default: <first run>/curves.png)")
    parser.add_argument("--smooth", type=int, default=1, help="running mean over N training records")


def _run_plot(args: argparse.Namespace) -> int:
    from moero.train.plot import plot_runs

    first = Path(args.runs[0])
    out = args.out or str((first if first.is_dir() else first.parent) / "curves.png")
    print(plot_runs(args.runs, out, args.smooth))
    return 0


# command -> (add arguments, run, one-line help)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "book": (_add_book, _run_book, "run the book's notebooks with papermill for a profile, then build the HTML"),
    "train": (_add_train, _run_train, "train a registry model (promptmr, vq-prompt, moero-CxK); torchrun for DDP"),
    "eval": (_add_eval, _run_eval, "score a checkpoint by the official CMRxRecon2025 protocol, write tables"),
    "generate-data": (_add_generate, _run_generate, "generate the embedded synthetic CMRxRecon-layout dataset"),
    "manifest": (_add_manifest, _run_manifest, "index a real CMRxRecon2025 tree by its layout, write manifest.csv"),
    "predict": (_add_predict, _run_predict, "reconstruct a task's undersampled files, write the submission + zip"),
    "plot": (_add_plot, _run_plot, "draw learning curves of runs (loss, val SSIM, it/s) to PNG"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moero", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"moero {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add, run, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
        p.set_defaults(_run=run)
    return parser


def error_line(err: BaseException) -> str:
    """One line for ``error: ...``: the message (its lines joined), with the type for unexplained errors."""
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, ValueError | RuntimeError | OSError) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit code (0 success, 1 failure, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and its own "error:" line (code 2), or --help (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
