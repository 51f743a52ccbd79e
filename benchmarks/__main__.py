"""``python -m benchmarks [name ...]``: run every ``benchmarks/bench_*.py`` (or the named ones).

Each module exposes ``run() -> list[dict]`` and a ``TITLE``; results print as Markdown tables and
are saved as JSON under ``_build/benchmarks/``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import benchmarks
from benchmarks.common import print_table


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    if argv:
        unknown = [a for a in argv if a not in names]
        if unknown:
            print(f"unknown benchmarks {unknown}; known: {names}", file=sys.stderr)
            return 2
        names = argv
    out = Path("_build/benchmarks")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        rows = mod.run()
        print_table(rows, getattr(mod, "TITLE", name))
        (out / f"{name}.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
