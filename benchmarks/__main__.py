"""``python -m benchmarks [--smoke] [--threads N] [name ...]``: run every ``benchmarks/bench_*.py`` (or the
named ones) at ``N`` torch threads (default 1).

Each module exposes ``run(smoke=False) -> list[dict]`` and a ``TITLE``; results print as Markdown tables
after the load average and thread count they ran at, and are saved as JSON
(``{"machine": ..., "rows": ...}``) under ``_build/benchmarks/``. ``--smoke`` runs each at its smoke
size (what the test suite does).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import torch

import benchmarks
from benchmarks.common import print_machine, print_table


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {names})")
    parser.add_argument("--smoke", action="store_true", help="smoke sizes: one pair, tiny inputs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    unknown = [a for a in args.names if a not in names]
    if unknown:
        print(f"unknown benchmarks {unknown}; known: {names}", file=sys.stderr)
        return 2
    out = Path("_build/benchmarks")
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names or names:
        torch.set_num_threads(args.threads)
        mod = importlib.import_module(f"benchmarks.{name}")
        rows = mod.run(smoke=args.smoke)
        print_table(rows, getattr(mod, "TITLE", name))
        machine = print_machine()
        (out / f"{name}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
