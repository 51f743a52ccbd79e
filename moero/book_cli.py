"""``python -m moero book``: run notebooks for a profile with papermill and build the HTML book."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moero.book import NotebookFailed, _coerce, build_html, run_notebooks
from moero.profiles import PROFILES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="sizes to run (default: cpu)")
    parser.add_argument("--data", type=Path, default=None, help="a CMRxRecon2025 tree to use instead of synthetic data")
    parser.add_argument(
        "-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
        help="override a notebook parameter of the profile (value parsed as JSON when possible)",
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="run only these notebook stems")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when nothing changed")
    parser.add_argument("--no-html", action="store_true", help="run the notebooks but do not build the HTML")


def run(args: argparse.Namespace) -> int:
    params = {key: _coerce(value) for key, value in args.param}
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
