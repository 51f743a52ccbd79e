"""Mutation check: apply each hand-made bug of ``tools/mutations.txt`` to a copy of the package and run its tests.

``python tools/mutate.py [--list FILE] [--only ID ...] [--timeout S] [--check]`` (``make mutate``).

The repository's ``moero/``, ``tests/``, ``notebooks/``, ``benchmarks/`` and project files are copied
once into a temporary folder; each bug is applied alone to that copy, the bug's own test files run
there with ``PYTHONPATH`` pointing at the copy (so the kernels of notebook tests import it too), and
the file is restored. A bug is *killed* when a test fails, *survives* when they all pass; a bug whose
text no longer occurs exactly once is *stale* (the list needs updating). Exit status 1 when any bug
survives or is stale. Nothing in CI runs this: it is a habit, not a gate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("moero", "tests", "notebooks", "benchmarks", "pyproject.toml", "_config.yml", "_toc.yml", "book")
SEP = " || "


@dataclass(frozen=True)
class Mutation:
    """One hand-made bug: replace ``old`` (occurring once) by ``new`` in ``file``; ``tests`` should catch it."""

    ident: str
    file: str
    tests: tuple[str, ...]
    old: str
    new: str
    why: str
    line: int


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n")


def read_mutations(path: Path) -> list[Mutation]:
    """Parse the list: ``id || file || tests || old || new || why`` per line (``\\n`` allowed in old/new)."""
    out: list[Mutation] = []
    seen: set[str] = set()
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        fields = raw.split(SEP)
        if len(fields) != 6:
            raise ValueError(f"{path}:{number}: expected 6 fields separated by {SEP!r}, got {len(fields)}")
        ident, file, tests, old, new, why = fields
        ident = ident.strip()
        if ident in seen:
            raise ValueError(f"{path}:{number}: duplicate mutation id {ident!r}")
        seen.add(ident)
        test_files = tuple(t.strip() for t in tests.split(",") if t.strip())
        if not test_files:
            raise ValueError(f"{path}:{number}: mutation {ident!r} names no test file")
        out.append(Mutation(ident, file.strip(), test_files, _unescape(old), _unescape(new), why.strip(), number))
    return out


def check(m: Mutation, root: Path) -> str | None:
    """Why ``m`` cannot be applied to the tree at ``root`` (None when it can)."""
    path = root / m.file
    if not path.is_file():
        return f"no file {m.file}"
    count = path.read_text().count(m.old)
    if count != 1:
        return f"text occurs {count} times in {m.file}"
    if m.old == m.new:
        return "replacement equals the original"
    for t in m.tests:
        if not (root / t).is_file():
            return f"no test file {t}"
    return None


def _pytest(tests: tuple[str, ...], work: Path, python: str, timeout: float, extra: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *extra, *tests]
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        return -1, "timeout"


def baseline_failures(tests: tuple[str, ...], work: Path, python: str, timeout: float) -> list[str]:
    """Node ids that already fail on the unmutated copy: a mutation is judged on the other tests only."""
    code, text = _pytest(tests, work, python, timeout, [])
    if code not in (0, 1):
        raise RuntimeError(f"the unmutated tests {list(tests)} do not run (pytest exit {code}): {text[-500:]}")
    return [ln.split()[1] for ln in text.splitlines() if ln.startswith("FAILED ")]


def run_one(m: Mutation, work: Path, python: str, timeout: float, known: list[str]) -> tuple[str, float, str]:
    """Apply ``m`` in ``work``, run its tests (less the ``known`` failures), restore.

    Returns (verdict, seconds, last output line)."""
    path = work / m.file
    original = path.read_text()
    path.write_text(original.replace(m.old, m.new, 1))
    start = time.perf_counter()
    try:
        code, text = _pytest(m.tests, work, python, timeout, ["-x", *(f"--deselect={k}" for k in known)])
    finally:
        path.write_text(original)
    seconds = time.perf_counter() - start
    last = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "")
    verdict = {0: "survived", 1: "killed", -1: "timeout"}.get(code, f"error (pytest exit {code})")
    return verdict, seconds, last


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", type=Path, default=ROOT / "tools" / "mutations.txt", help="the mutation list")
    ap.add_argument("--only", nargs="*", default=None, help="run only these mutation ids")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation's test run")
    ap.add_argument("--check", action="store_true", help="only check that every mutation still applies")
    args = ap.parse_args(argv)
    try:
        mutations = read_mutations(args.list)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.only is not None:
        unknown = sorted(set(args.only) - {m.ident for m in mutations})
        if unknown:
            print(f"error: unknown mutation ids {unknown}", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m.ident in args.only]
    stale = {m.ident: why for m in mutations if (why := check(m, ROOT)) is not None}
    for ident, why in stale.items():
        print(f"STALE     {ident}: {why}")
    if args.check:
        print(f"{len(mutations) - len(stale)} of {len(mutations)} mutations apply")
        return 1 if stale else 0
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="moero-mutate-") as tmp:
        work = Path(tmp)
        for name in COPY:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif src.is_file():
                shutil.copy2(src, work / name)
        known: dict[tuple[str, ...], list[str]] = {}
        for m in mutations:
            if m.ident in stale:
                continue
            if m.tests not in known:
                known[m.tests] = baseline_failures(m.tests, work, sys.executable, args.timeout)
                if known[m.tests]:
                    print(f"NOTE      already failing without any bug, left out: {known[m.tests]}")
            verdict, seconds, last = run_one(m, work, sys.executable, args.timeout, known[m.tests])
            results[m.ident] = verdict
            print(f"{verdict.upper():9} {m.ident} ({seconds:.0f} s): {m.why}" + ("" if verdict == "killed" else
                                                                                   f"\n          {last}"))
            sys.stdout.flush()
    survived = [k for k, v in results.items() if v != "killed"]
    print(f"\n{sum(v == 'killed' for v in results.values())} killed, {len(survived)} not killed "
          f"{survived}, {len(stale)} stale {sorted(stale)} of {len(mutations)} mutations")
    return 1 if survived or stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
