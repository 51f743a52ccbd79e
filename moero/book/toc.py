"""The book's chapters and the order they run in: ``_toc.yml`` order, except that a chapter runs after the
chapters it reads results from (``moero: {needs: [...]}`` in its Jupytext header, e.g. the claims page
after chapters 06-09, chapter 08 after chapter 09 whose timings it shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moero.paths import repo_root

__all__ = ["NOTEBOOK_FMT", "toc_files", "toc_notebooks", "read_source", "is_light", "needs", "run_order",
           "select_notebooks"]

NOTEBOOK_FMT = "py:percent"


def toc_files(root: Path | None = None) -> list[str]:
    """Every ``file:`` entry of ``_toc.yml``, in order (without suffix)."""
    import yaml

    root = root or repo_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    out.append(str(node[key]))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return out


def toc_notebooks(root: Path | None = None) -> list[Path]:
    """Jupytext notebooks of ``_toc.yml`` (``notebooks/*.py``), in book order."""
    root = root or repo_root()
    paths = []
    for entry in toc_files(root):
        path = root / (entry if entry.endswith(".py") else entry + ".py")
        if path.parent.name == "notebooks" and path.exists():
            paths.append(path)
    return paths


def read_source(path: Path) -> tuple[str, Any]:
    """The text of a Jupytext source and the notebook it converts to (in memory)."""
    import jupytext

    text = path.read_text()
    return text, jupytext.reads(text, fmt=NOTEBOOK_FMT)


def is_light(nb: Any) -> bool:
    """Light notebooks are executed by Jupyter Book at build time, not by the runner."""
    return bool(nb.metadata.get("moero", {}).get("light", False))


def needs(nb: Any) -> list[str]:
    """Stems of the chapters whose results this notebook reads (``moero: {needs: [...]}``)."""
    return [str(s) for s in nb.metadata.get("moero", {}).get("needs", [])]


def run_order(notebooks: list[tuple[Path, list[str]]]) -> list[Path]:
    """``(path, needs)`` pairs in book order -> the order to run them: book order, each notebook moved just
    after the last of the selected notebooks it needs (needs outside the selection are taken as done; a
    circle is a ``ValueError`` naming its notebooks)."""
    stems = {p.stem for p, _ in notebooks}
    pending = [(p, [s for s in deps if s in stems and s != p.stem]) for p, deps in notebooks]
    done: list[Path] = []
    while pending:
        ready = next((i for i, (_, deps) in enumerate(pending) if all(s in {d.stem for d in done} for s in deps)),
                     None)
        if ready is None:
            raise ValueError(f"notebooks need each other in a circle: {sorted(p.stem for p, _ in pending)}")
        done.append(pending.pop(ready)[0])
    return done


def select_notebooks(only: list[str] | None = None, root: Path | None = None) -> list[Path]:
    """The (non-light) book notebooks to run, in run order (:func:`run_order`); ``only`` names stems (an
    unknown one is a ``ValueError`` naming it)."""
    chosen = []
    for path in toc_notebooks(root or repo_root()):
        if only and path.stem not in only:
            continue
        _, nb = read_source(path)
        if not is_light(nb):
            chosen.append((path, needs(nb)))
    if only:
        missing = set(only) - {p.stem for p, _ in chosen}
        if missing:
            raise ValueError(f"--only names notebooks that are not (non-light) book chapters: {sorted(missing)}")
    return run_order(chosen)
