"""Command line: ``python -m moero <command> --help``.

Commands: ``book`` (run the notebooks of a profile with papermill, build the HTML), ``train`` (any
registry model; torchrun for DDP), ``eval`` (score a checkpoint or the zero-filled reference by the
official CMRxRecon2025 protocol, or a submission folder), ``generate-data`` (the embedded synthetic
dataset), ``manifest`` (index a real tree), ``predict`` (write a challenge submission), ``plot``
(learning curves). Importing :mod:`moero` loads the science layers (and torch) anyway, so every module
is imported here at the top; only optional extras (papermill, jupytext, matplotlib) load when used.

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
import tempfile
import traceback
import typing
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from moero import __version__
from moero.book.profiles import PROFILES
from moero.book.runner import build_html, build_pdf, coerce_param, run_notebooks, select_notebooks, split_params
from moero.data.layout import layout_index, write_manifest
from moero.data.readers import read_manifest
from moero.data.synthetic import SIZES, STAMP_NAME, ensure_synthetic
from moero.data.testphase import TEST_RULES, check_outputs, write_test_phase
from moero.eval.evaluate import TEST_ACCELERATIONS, TEST_SPLITS
from moero.eval.submission import score_submission, write_submission_tables
from moero.paths import default_data_root
from moero.physics.fastmri_masks import FASTMRI_KINDS
from moero.physics.masks import ACS_REFERENCE_PE, acs_width
from moero.train.config import LEGACY_FIELDS, TrainConfig, parse_override, parse_value
from moero.train.fastmri_predict import is_fastmri_folder, predict_fastmri
from moero.train.plot import plot_runs
from moero.train.predict import predict
from moero.train.runs import check_writable, evaluate_checkpoint
from moero.train.scoring import EVAL_SEED, Protocol
from moero.train.trainer import train

__all__ = ["UsageError", "config_from_args", "with_default_data", "COMMANDS", "build_parser", "main"]


class UsageError(ValueError):
    """A bad command-line option or value (exit code 2); the message names the option or field."""


# ---------------------------------------------------------------------------- train
def _add_train(parser: argparse.ArgumentParser) -> None:
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
        _add_field(group, f.name, hints[f.name], f.metadata.get("help", ""), default)
        if dataclasses.is_dataclass(default):  # a section: --augment-probability, --nav-warmup, ...
            sub_hints = typing.get_type_hints(type(default))
            for sf in dataclasses.fields(default):
                _add_field(group, f"{f.name}.{sf.name}", sub_hints[sf.name], sf.metadata.get("help", ""),
                           getattr(default, sf.name))


def _add_field(group: Any, name: str, hint: Any, text: str, default: Any) -> None:
    """``--<name>`` (dots and underscores as dashes; ``--<name_with_underscores>`` too) for config field ``name``."""
    dashed = name.replace(".", "-").replace("_", "-")
    flags = [f"--{dashed}"] + ([f"--{name.replace('.', '-')}"] if "_" in name else [])
    extra: dict[str, Any] = {"nargs": "?", "const": "true"} if hint is bool else {}
    shown = "see the fields below" if dataclasses.is_dataclass(default) else repr(default)
    group.add_argument(*flags, dest=f"field_{name}", default=argparse.SUPPRESS, metavar="VALUE",
                       help=f"{text} (default: {shown})", **extra)


def config_from_args(args: argparse.Namespace) -> Any:
    """YAML file, then ``--field value`` options, then ``--set`` overrides; errors name the field.

    A resumed run (``--resume`` / ``--resume-if-present``) whose run folder holds a ``config.yaml``
    starts from that file, so ``train --run-dir D --resume`` continues with the run's own settings;
    what is given on the command line still wins (and is checked against the checkpoint)."""
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("field_"):
            overrides[key[len("field_"):]] = parse_value(value) if isinstance(value, str) else value
    for text in args.set or []:
        name, value = parse_override(text)
        overrides[name] = value
    if args.config:
        _read_yaml(args.config)  # a broken file is an error naming it
    config = TrainConfig.from_yaml(args.config, overrides) if args.config else TrainConfig.from_dict(overrides)
    saved = Path(config.run_dir) / "config.yaml"
    if (config.resume or config.resume_if_present) and saved.is_file():
        given = _read_yaml(args.config) if args.config else {}
        base = _read_yaml(saved)
        known = {*TrainConfig.field_names(), *LEGACY_FIELDS}
        known = known - {"resume", "resume_if_present", "overwrite"}  # how the saved run started, not settings
        config = TrainConfig.from_dict({**{k: v for k, v in base.items() if k in known}, **given, **overrides})
    check_acs(config)
    return config


def _read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML file; a ``ValueError`` naming the file when it is unreadable, not UTF-8, not
    YAML (a truncated file) or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"config file {path} is not readable YAML: {reason}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def check_acs(config: Any) -> None:
    """``acs`` must leave lines to undersample: its width on the phase-encode matrix (``image_shape``'s W,
    else the challenge's 246 lines it is defined on) stays below the matrix width."""
    width = int(config.image_shape[1]) if config.image_shape else ACS_REFERENCE_PE
    if acs_width(width, int(config.acs)) >= width:
        raise ValueError(f"config field 'acs': {config.acs} calibration lines (per {ACS_REFERENCE_PE} phase-encode "
                         f"lines) fill the whole {width}-line matrix, so nothing would be undersampled; give less "
                         f"than {ACS_REFERENCE_PE}")


def with_default_data(config: Any, progress: bool = True) -> Any:
    """``config`` with ``data_root`` set: the synthetic set of ``dataset_size`` when none is given
    (generated once under the build folder)."""
    if config.data_root:
        return config
    size = config.dataset_size
    root = ensure_synthetic(default_data_root(size), size=size, seed=0, progress=progress)
    return config.replace(data_root=str(root))


def _run_train(args: argparse.Namespace) -> int:
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
    parser.description = (
        "Score a checkpoint of any registry model (or the zero-filled reference) by the official "
        "CMRxRecon2025 protocol and write the tables eval_files, eval_groups, eval_splits (CSV and Markdown).")
    parser.add_argument("--checkpoint", help="checkpoint.pt written by `train` (omit with --zero-filled)")
    parser.add_argument("--submission", help="score a submission folder or Submission.zip (written by `predict`) "
                                             "instead of a model")
    parser.add_argument("--ground-truth", help="with --submission: the tree of the fully sampled truth "
                                               "(FullSample or the organisers' FullSample_<Task> folders)")
    parser.add_argument("--centres", help="CSV of centre roles (centre,role) or subjects, as for `manifest`: the "
                                          "splits (fresh, rare) of the scored tree's layout")
    parser.add_argument("--truth-range", action="store_true",
                        help="with --submission: the truth's maximum as data range for every file (the official "
                             "scorer takes the submission's for files with several frames)")
    parser.add_argument("--zero-filled", action="store_true", help="score the zero-filled reconstruction instead")
    parser.add_argument("--data-root", help="CMRxRecon2025 tree (default: the checkpoint config's data)")
    parser.add_argument("--splits", default=",".join(TEST_SPLITS), help="manifest splits to score, comma separated")
    parser.add_argument("--out", help="folder of the tables (default: <checkpoint folder>/eval)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--modalities", default="", help="score only these modalities, comma separated (default: all)")
    parser.add_argument("--max-files", type=int, default=0, help="score at most N files per split (0: all; >= 0)")
    parser.add_argument("--test-grid", nargs="?", const=",".join(f"{a:g}" for a in TEST_ACCELERATIONS), default="",
                        metavar="R,R,...",
                        help="the book's test grid: every file at every acceleration (default 8,16,24), the mask "
                             "kind by a Latin square; without it one mask per image is drawn from the run's kinds "
                             "and accelerations")
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED,
                        help=f"seed of every evaluation mask, the same for all models (default: {EVAL_SEED})")
    parser.add_argument("--eval-shape", default="", metavar="H,W",
                        help="crop/pad every image to H,W before reconstruction (default: native size)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a training-config field, e.g. accelerations=[8] or mask_kinds=[uniform]")


def _run_eval(args: argparse.Namespace) -> int:
    if args.submission or args.ground_truth:
        return _run_eval_submission(args)
    if bool(args.checkpoint) == bool(args.zero_filled):
        raise UsageError("eval: give exactly one of --checkpoint, --zero-filled and --submission")
    if args.max_files < 0:
        raise UsageError(f"eval: --max-files must be >= 0 (0: all files), got {args.max_files}")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UsageError(f"eval: --checkpoint {args.checkpoint} does not exist")
    if args.centres and not Path(args.centres).is_file():
        raise UsageError(f"eval: --centres {args.centres} does not exist")
    try:
        overrides = dict(parse_override(s) for s in args.set)
        check_acs(TrainConfig.from_dict(overrides))  # the field names and values, before any work
        shape = tuple(int(n) for n in args.eval_shape.split(",")) if args.eval_shape else None
        if shape is not None and (len(shape) != 2 or min(shape) < 8):
            raise ValueError(f"--eval-shape must be H,W with H, W >= 8, got {args.eval_shape!r}")
        grid = [float(a) for a in args.test_grid.split(",") if a.strip()] if args.test_grid else []
        protocol = Protocol(accelerations=tuple(grid), seed=args.eval_seed, shape=shape, centres=args.centres)
    except ValueError as err:
        raise UsageError(f"eval: {err}") from err
    out = args.out or (str(Path(args.checkpoint).parent / "eval") if args.checkpoint else "_build/eval/zero-filled")
    check_writable(out)  # before the evaluation, not after it
    data_root = args.data_root
    if not data_root and args.zero_filled:  # a checkpoint knows its data; the reference takes the default set
        data_root = with_default_data(TrainConfig.from_dict(overrides)).data_root
    results = evaluate_checkpoint(args.checkpoint, data_root, [s for s in args.splits.split(",") if s], out,
                                  args.device, overrides, args.max_files,
                                  modalities=[m for m in args.modalities.split(",") if m], protocol=protocol)
    print(json.dumps({"out": out, "splits": results["splits"]}, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- book
def _add_book(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--pdf", action="store_true",
                        help="also print the whole book to one PDF (_build/pdf/moero.pdf; needs Chromium)")
    parser.add_argument("--log-output", action="store_true",
                        help="stream each cell's output to stderr as it runs, lines prefixed [<notebook>], with a "
                             "line 'cell N/M: <first comment>' as each cell starts (for headless runs)")
    parser.add_argument("--cell-timeout", type=int, default=None, metavar="SECONDS",
                        help="limit of one cell (0: none; default: $MOERO_CELL_TIMEOUT, else smoke 600, cpu 3600, "
                             "gpu and paper none); a cell over it fails the run, named with its time")


def _run_book(args: argparse.Namespace) -> int:
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
    if args.cell_timeout is not None and args.cell_timeout < 0:
        raise UsageError(f"book: --cell-timeout must be >= 0 seconds (0: no limit), got {args.cell_timeout}")
    if args.data is not None and not args.data.is_dir():
        raise UsageError(f"book: --data {args.data} is not a directory")
    results = run_notebooks(args.profile, data=args.data, params=params, only=args.only, force=args.force,
                            log_output=args.log_output, timeout=args.cell_timeout)
    for res in results:
        state = "unchanged" if res.skipped else f"{res.wall_time_s:.1f} s"
        print(f"{res.notebook}: {state} -> {res.executed}")
    if not args.no_html:
        if args.pdf:  # first, so that the HTML build finds it and offers it in the download menu
            print(f"PDF book: {build_pdf(args.profile)}")
        html = build_html(args.profile)
        print(f"HTML book: {html / 'index.html'}")
    elif args.pdf:
        raise UsageError("book: --pdf prints the HTML book; drop --no-html")
    return 0


def _add_publish(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Copy a profile's results of chapters 06-09 and the claims page (tables as CSV/MD, figures as PNG up to "
        "1 MB, provenance) from _build/results/<profile> to book/results/<profile>, where a book built with a "
        "lighter profile shows them as the chapters' main results. Every chapter must be complete, from a clean "
        "commit, and intact; nothing is written otherwise.")
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES), help="the profile whose results to "
                                                                                   "commit (cpu-long, gpu)")
    parser.add_argument("--force", action="store_true", help="replace results already under book/results/<profile>")


def _run_publish(args: argparse.Namespace) -> int:
    from moero.book.publish import publish

    print(json.dumps(publish(args.profile, force=args.force), indent=2))
    return 0


# ---------------------------------------------------------------------------- generate-data
def _add_generate(parser: argparse.ArgumentParser) -> None:
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
                             "(kus) and Mask_<task> (one challenge mask per file, --rules); the truth goes to "
                             "--truth (TestSet/FullSample_<task>, as the organisers keep it)")
    parser.add_argument("--truth", metavar="DIR", default=None, help="with --test-phase: the fully sampled truth "
                                                                      "(default: <DIR>-truth)")
    parser.add_argument("--task", default="TaskR1", help="with --test-phase: the task folder suffix")
    parser.add_argument("--rules", default="2025", choices=sorted(TEST_RULES),
                        help="with --test-phase: the test phase's patterns (2025, default: Uniform, ktGaussian "
                             "and ktRadial at R 8/16/24; 2024: Uniform 4/8/10, kt patterns 4-24)")
    parser.add_argument("--from-tree", metavar="TREE", default=None,
                        help="with --test-phase: make the test phase of this CMRxRecon2025 tree (its test splits, "
                             "from manifest.csv or the layout) instead of the synthetic set")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --test-phase: write into non-empty DIR and truth folders, replacing files of "
                             "the same names (refused otherwise)")


def _run_generate(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise UsageError(f"generate-data: --seed must be >= 0, got {args.seed}")
    if (args.overwrite or args.from_tree) and not args.test_phase:
        raise UsageError("generate-data: --overwrite and --from-tree go with --test-phase")
    if args.from_tree and not Path(args.from_tree).is_dir():
        raise UsageError(f"generate-data: --from-tree {args.from_tree} is not a directory")
    root = Path(args.from_tree) if args.from_tree else Path(args.root) if args.root else default_data_root(args.size)
    if args.test_phase:  # before any data is generated
        try:
            check_outputs(root, args.test_phase, _truth_dir(args), args.overwrite)
        except ValueError as err:
            raise UsageError(f"generate-data: {err}") from err
    if args.force and (root / STAMP_NAME).is_file() and not args.from_tree:
        (root / STAMP_NAME).write_text("{}")  # a stamp that matches nothing: regenerate
    if not args.from_tree:
        ensure_synthetic(root, size=args.size, seed=args.seed, verify=args.verify)
    rows = read_manifest(root)
    print(f"{root}: {len(rows)} files, {len({r['subject'] for r in rows})} subjects")
    if args.test_phase:
        truth = _truth_dir(args)
        written = write_test_phase(root, args.test_phase, truth, task=args.task, seed=args.seed,
                                   overwrite=args.overwrite, rules=args.rules)
        drawn = sorted({f"{w['pattern']}{w['acceleration']}" for w in written})
        print(f"{args.test_phase}: {len(written)} undersampled files of {args.task} ({args.rules} rules: "
              f"{', '.join(drawn)}); truth in {truth}")
    return 0


def _truth_dir(args: argparse.Namespace) -> str:
    return args.truth or f"{Path(args.test_phase).as_posix().rstrip('/')}-truth"


# ---------------------------------------------------------------------------- submissions
def _run_eval_submission(args: argparse.Namespace) -> int:
    if not (args.submission and args.ground_truth):
        raise UsageError("eval: --submission and --ground-truth go together")
    if args.checkpoint or args.zero_filled:
        raise UsageError("eval: --submission excludes --checkpoint and --zero-filled")
    is_zip = Path(args.submission).is_file() and zipfile.is_zipfile(args.submission)
    for flag, value in (("--submission", args.submission), ("--ground-truth", args.ground_truth)):
        if not Path(value).is_dir() and not (flag == "--submission" and is_zip):
            raise UsageError(f"eval: {flag} {value} is not a directory" + (" or a zip file" if flag == "--submission"
                                                                              else ""))
    if args.centres and not Path(args.centres).is_file():
        raise UsageError(f"eval: --centres {args.centres} does not exist")
    out = args.out or str(Path(args.submission).parent / "scores" if is_zip else Path(args.submission) / "scores")
    with tempfile.TemporaryDirectory(prefix="moero-submission-") as tmp:
        folder = args.submission
        if is_zip:  # Submission.zip as uploaded: its <Task>/MultiCoil/... entries, read from a temporary folder
            folder = _extract_zip(Path(args.submission), Path(tmp))
        results = score_submission(folder, args.ground_truth, official_order=not args.truth_range,
                                   centres=args.centres)
    write_submission_tables(results, out)
    report = {"out": out, "overall": results["overall"], "splits": results["splits"],
              "missing": [m["truth"] for m in results["missing"]],
              "not_scored": [{"file": r["file"], "comment": r["comment"]} for r in results["files"] if r["comment"]]}
    print(json.dumps(report, indent=2, default=str))
    return 0


def _extract_zip(archive: Path, into: Path) -> Path:
    """Extract ``archive`` into ``into``; a ``ValueError`` naming the archive for an entry that would land
    outside it (an absolute path or ``..``)."""
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{archive}: entry {name!r} is not a plain path inside the archive")
        zf.extractall(into)
    return into


def _add_predict(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Reconstruct the undersampled files (UnderSample_<task>, masks in the file or in Mask_<task>) of a "
        "CMRxRecon2025 tree with a trained registry model and write the official submission: "
        "img4ranking files (MATLAB v5, x, y, slices[, frames]) under <out>/<task>/MultiCoil/... and "
        "<out>/Submission.zip holding every task written to --out. Files this checkpoint "
        "wrote for this input tree are verified (SHA-256) and skipped; an --out written for another checkpoint "
        "or tree, or holding files predict did not write, is refused; a bad input file is reported and skipped. "
        "A fastMRI folder (*.h5) gets fastMRI's leaderboard format instead: <out>/reconstructions/<file>.h5 "
        "with 'reconstruction' (slices, 320, 320).")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `train`, or its run folder")
    parser.add_argument("--data", required=True, help="the CMRxRecon2025 tree holding UnderSample_<task> (or a "
                                                      "fastMRI folder of *.h5 files)")
    parser.add_argument("--task", default=None, help="task folder suffix, e.g. TaskR1 (UnderSample_TaskR1); "
                                                     "default: every task of the tree")
    parser.add_argument("--out", required=True, help="submission folder")
    parser.add_argument("--device", default="auto", help="auto (GPU if present) | cpu | cuda")
    parser.add_argument("--no-zip", action="store_true", help="do not write <out>/Submission.zip")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--mask-kind", default="fastmri_random", choices=FASTMRI_KINDS,
                        help="fastMRI folders: the mask of a file that has none of its own (default: fastmri_random)")
    parser.add_argument("--acceleration", type=float, default=4.0,
                        help="fastMRI folders: R of that mask (default 4, centre fraction 0.08; 8 takes 0.04)")


def _run_predict(args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "checkpoint.pt"
    if not checkpoint.is_file():
        raise UsageError(f"predict: --checkpoint {args.checkpoint}: no checkpoint.pt there")
    if not Path(args.data).is_dir():
        raise UsageError(f"predict: --data {args.data} is not a directory")
    if is_fastmri_folder(args.data):
        if args.acceleration <= 1:
            raise UsageError(f"predict: --acceleration must be > 1, got {args.acceleration:g}")
        report = predict_fastmri(checkpoint, args.data, args.out, args.device, progress=not args.no_progress,
                                 kind=args.mask_kind, acceleration=args.acceleration)
        print(json.dumps({"written": len(report["written"]), "errors": report["errors"],
                          "reconstructions": str(Path(args.out) / "reconstructions"),
                          "masked_here": report["masked"]}, indent=2))
        return 1 if report["errors"] else 0
    tasks = [args.task] if args.task else sorted({r["task"] for r in layout_index(args.data) if r["kind"] == "kus"})
    if not tasks:
        raise UsageError(f"predict: --data {args.data} holds no UnderSample_<task> file of the CMRxRecon2025 layout")
    written, skipped, errors, archive = 0, 0, [], None
    for task in tasks:
        result = predict(checkpoint, args.data, task, args.out, args.device, progress=not args.no_progress,
                         make_zip=not args.no_zip)
        written, skipped = written + len(result["written"]), skipped + len(result["skipped"])
        errors += result["errors"]
        archive = result["zip"] or archive
    print(json.dumps({"tasks": tasks, "written": written, "skipped": skipped, "errors": errors, "zip": archive},
                     indent=2))
    return 1 if errors else 0


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
    first = Path(args.runs[0])
    out = args.out or str((first if first.is_dir() else first.parent) / "curves.png")
    print(plot_runs(args.runs, out, args.smooth))
    return 0


# command -> (add arguments, run, one-line help)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "book": (_add_book, _run_book, "run the book's notebooks with papermill for a profile, then build the HTML"),
    "publish": (_add_publish, _run_publish, "copy a profile's results of chapters 06-09 to book/results/<profile> "
                                            "(committed, shown by lighter builds)"),
    "train": (_add_train, _run_train, "train a registry model (promptmr, vq-prompt, moero-CxK); torchrun for DDP"),
    "eval": (_add_eval, _run_eval, "score a checkpoint by the official CMRxRecon2025 protocol, write tables"),
    "generate-data": (_add_generate, _run_generate, "generate the embedded synthetic CMRxRecon-layout dataset"),
    "manifest": (_add_manifest, _run_manifest, "index a real CMRxRecon2025 tree by its layout, write manifest.csv"),
    "predict": (_add_predict, _run_predict, "reconstruct the undersampled files, write Submission.zip (or fastMRI "
                                            "reconstructions/*.h5)"),
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


MAX_ERROR = 293  # characters of the message: "error: " + message stays within 300


def error_line(err: BaseException) -> str:
    """One line for ``error: ...``: the message (its lines joined), with the type for unexplained errors."""
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if not (isinstance(err, ValueError | RuntimeError | OSError) and text):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 3] + "..."


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
