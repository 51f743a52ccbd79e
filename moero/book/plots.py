"""The book's matplotlib style: legible at the book's width, no offset text colliding with titles.

:func:`apply_style` is applied by :func:`moero.book.run.start_run`, so every chapter's figures share
it. Figures are saved at 110 dpi and shown at most ~750 px wide: a 7 inch figure is shown at about
its natural size, so 9 pt is the smallest text on any figure.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MIN_FONT_PT", "STYLE", "apply_style"]

MIN_FONT_PT = 9.0

STYLE: dict[str, Any] = {
    "font.size": 10.0,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10.0,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "figure.titlesize": 11.5,
    # no "1e-3 + 0.25" offset text above colorbars and axes: it overlapped titles
    "axes.formatter.useoffset": False,
    "axes.formatter.limits": (-3, 4),
    "axes.titlepad": 5.0,
    "savefig.facecolor": "white",
}


def apply_style() -> None:
    """Set :data:`STYLE` on matplotlib's global parameters (idempotent)."""
    import matplotlib

    matplotlib.rcParams.update(STYLE)
