"""How the book shows a figure: numbered and captioned by Sphinx, the same PNG in Jupyter.

A :class:`BookFigure` displays as HTML (the image inline with its caption) in Jupyter and as a MyST
``{figure}`` directive in the book (the build prefers ``text/markdown`` outputs, ``_config.yml``), so Sphinx
numbers it ("Figure 6.3"), prints the caption under it and lets the prose cite it with ``{numref}``. Tables
do the same through ``moero.eval.tables.Table._repr_markdown_``.

Labels are global in a Sphinx project, so :func:`unique_label` makes every label of one kernel distinct.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from moero.eval.tables import myst_inline
from moero.paths import repo_root

__all__ = ["BookFigure", "Outputs", "unique_label", "label_for"]

_USED_LABELS: set[str] = set()


def label_for(kind: str, notebook: str, stem: str) -> str:
    """The label of result ``stem`` of ``notebook``: ``fig-06_training-ssim_by_mask`` (``kind`` fig or tab)."""
    return f"{kind}-{notebook}-{stem}"


def unique_label(label: str) -> str:
    """``label``, or ``label-2``, ``label-3``... when this kernel has shown it before (a result shown twice)."""
    name, k = label, 1
    while name in _USED_LABELS:
        k += 1
        name = f"{label}-{k}"
    _USED_LABELS.add(name)
    return name


class BookFigure:
    """A PNG written to disk, shown with its caption.

    ``path`` is where the image lies when the book is built (for a runner's staged run, the final results
    folder, not the staging one); ``source`` is where it can be read now (default ``path``)."""

    def __init__(self, path: str | Path, caption: str = "", name: str = "", source: str | Path | None = None,
                 width: str = "100%") -> None:
        self.path, self.caption, self.name = Path(path), caption, name
        self.source = Path(source) if source is not None else self.path
        self.width = width

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.source.read_bytes()).decode("ascii")
        cap = f"<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure><img src="data:image/png;base64,{data}" style="max-width: {self.width}"/>{cap}</figure>'

    def _repr_markdown_(self) -> str:
        """A MyST figure whose image path is relative to the chapters' folder (``notebooks/``): no absolute
        path of the build machine reaches the page."""
        rel = Path(os.path.relpath(self.path.resolve(), repo_root() / "notebooks")).as_posix()
        lines = [f"```{{figure}} {rel}", f":width: {self.width}"]
        if self.name:
            lines.append(f":name: {self.name}")
        lines += ["", myst_inline(self.caption) if self.caption else "", "```"]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"BookFigure({self.path.name!r})"


class Outputs:
    """Several displayable objects shown one after another (each keeps its own book rendering)."""

    def __init__(self, *items: Any) -> None:
        self.items = [i for i in items if i is not None]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        for item in self.items:
            display(item)
