"""Sphinx extension: the API pages and the executed-notebook downloads of the book.

* **API pages.** A page holding the line ``<!-- moero-api: moero.physics -->`` gets, in its place, one
  section per public module of that subpackage (``automodule`` with the members of its ``__all__``), so
  a module added to the package appears in the API reference without editing the page.
* **Profiles.** The line ``<!-- moero-profiles -->`` becomes the table of profiles read from
  ``moero/book/profiles.yaml`` (:func:`profiles_markdown`), so the reproduction page never lists stale sizes;
  ``<!-- moero-wall-times -->`` the measured wall time of each profile's results
  (:func:`moero.book.publish.wall_times_markdown`).
* **The book's PDF.** When ``make pdf`` has printed the book (:func:`book_pdf`), every page's download menu
  offers it and the HTML build carries a copy in ``_static``.
* **Downloads.** Every chapter built from ``notebooks/*.py`` offers, beside the ``.py`` source, the
  executed ``.ipynb`` that the page shows: the papermill execution of the profile being built
  (``$MOERO_BUILD_DIR/executed/$MOERO_PROFILE``) or, for a light chapter, the notebook Jupyter Book
  executed (``jupyter_execute/``).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
from pathlib import Path
from typing import Any

from moero.book.bibstyle import register as register_bibliography_style
from moero.book.publish import wall_times_markdown
from moero.paths import build_dir

__all__ = ["API_MARKER", "PROFILES_MARKER", "WALL_TIMES_MARKER", "public_modules", "api_markdown", "profiles_markdown",
           "executed_notebook", "book_pdf", "setup"]

API_MARKER = re.compile(r"^<!-- moero-api: ([\w.]+) -->$", re.M)
PROFILES_MARKER = re.compile(r"^<!-- moero-profiles -->$", re.M)
WALL_TIMES_MARKER = re.compile(r"^<!-- moero-wall-times -->$", re.M)


def public_modules(package: str) -> list[str]:
    """Dotted names of the public (not ``_private``) modules of ``package``, sorted."""
    pkg = importlib.import_module(package)
    return sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def api_markdown(package: str) -> str:
    """MyST text of the API page of ``package``: its docstring, then one section per public module."""
    parts = ["```{eval-rst}", f".. automodule:: {package}", "   :no-members:", "```", ""]
    for module in public_modules(package):
        parts += [f"## `{module}`", "", "```{eval-rst}", f".. automodule:: {module}", "```", ""]
    return "\n".join(parts)


def profiles_markdown() -> str:
    """The reproduction page's table of profiles, read from ``moero/book/profiles.yaml``: what each is for, its
    data and device, and the scale of the runs chapters 06-08 share."""
    from moero.book.profiles import PROFILES

    lines = ["| profile | what for | data (or `--data`) | device | model preset | seeds | Tab. 2 budgets "
             "| Moero experts |", "|---|---|---|---|---|---|---|---|"]
    for p in PROFILES.values():
        res = p.results
        unit = res.get("budget_unit", "steps")
        lines.append(f"| `{p.name}` | {p.description} | synthetic `{p.dataset}` | "
                     f"{p.device} | `{res.get('train', {}).get('preset', '-')}` | {len(res.get('seeds', []))} | "
                     f"{', '.join(map(str, res.get('budgets', [])))} {unit} | "
                     f"{', '.join(map(str, res.get('experts', [])))} |")
    return "\n".join(lines)


def _fill_api(app: Any, docname: str, source: list[str]) -> None:
    source[0] = API_MARKER.sub(lambda m: api_markdown(m.group(1)), source[0])
    source[0] = PROFILES_MARKER.sub(lambda m: profiles_markdown(), source[0])
    source[0] = WALL_TIMES_MARKER.sub(lambda m: wall_times_markdown(), source[0])


def executed_notebook(source_text: str, executed_dir: Path) -> Path | None:
    """The papermill execution in ``executed_dir`` whose recorded source hash is that of ``source_text``."""
    import hashlib

    sha = hashlib.sha256(source_text.encode()).hexdigest()
    for path in sorted(executed_dir.glob("*.ipynb")):
        if path.name.endswith(".partial.ipynb"):
            continue
        try:
            meta = json.loads(path.read_text()).get("metadata", {}).get("moero", {})
        except ValueError:
            continue
        if meta.get("source_sha256") == sha:
            return path
    return None


def _offer_ipynb(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Copy the executed notebook of a ``notebooks/*.py`` page to ``_sources/<page>.ipynb`` and hand it to the
    theme's download menu (sphinx-book-theme offers ``context["ipynb_source"]`` next to the source)."""
    if not pagename.startswith("notebooks/") or doctree is None:
        return
    source = Path(app.env.doc2path(pagename))
    if source.suffix != ".py":
        return
    executed = build_dir() / "executed" / os.environ.get("MOERO_PROFILE", "cpu")
    found = executed_notebook(source.read_text(), executed)
    if found is None:  # a light chapter: the notebook Jupyter Book executed for this page
        candidate = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
        found = candidate if candidate.is_file() else None
    if found is None:
        return
    dest = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found, dest)
    context["ipynb_source"] = f"{pagename}.ipynb"


def book_pdf() -> Path:
    """Where ``make pdf`` writes the book as one PDF (``<build>/pdf/moero.pdf``)."""
    return build_dir() / "pdf" / "moero.pdf"


def _offer_book_pdf(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Put the whole book's PDF in every page's download menu, when ``make pdf`` has written it."""
    if app.builder.format != "html" or not book_pdf().is_file():
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].append({"type": "link", "url": context["pathto"]("_static/moero.pdf", 1),
                                     "text": "book (.pdf)", "icon": "fas fa-book", "label": "download-book-pdf-button",
                                     "tooltip": "The whole book as one PDF (make pdf)"})


def _copy_book_pdf(app: Any, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html" and book_pdf().is_file():
        (Path(app.outdir) / "_static").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(book_pdf(), Path(app.outdir) / "_static" / "moero.pdf")


def setup(app: Any) -> dict[str, Any]:
    register_bibliography_style()  # before sphinxcontrib-bibtex formats the references page
    app.connect("source-read", _fill_api)
    # before sphinx-book-theme builds its header buttons (priority 501)
    app.connect("html-page-context", _offer_ipynb, priority=500)
    # after sphinx-book-theme has built its download menu (priority 501)
    app.connect("html-page-context", _offer_book_pdf, priority=510)
    app.connect("build-finished", _copy_book_pdf)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
