"""Result tables: rows of dicts written as CSV (full precision) and Markdown, shown as HTML tables in Jupyter
and as numbered MyST list-tables in the book.

The displayed views: headers carry units (``psnr`` -> ``PSNR (dB)``,
``peak_memory_mib`` -> ``peak memory (MiB)``), numbers are rounded per quantity (SSIM and NMSE to 4
decimals, PSNR to 2, speeds to 3 significant digits) and the paper's columns (``paper_*``) are grouped
at the right under a shaded "paper (reported)" header, apart from ours. The CSV keeps every digit.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Table", "PAPER_PREFIX", "column_header", "format_value", "parse_cell", "myst_inline"]

PAPER_PREFIX = "paper_"
# metric names written in capitals in headers
_ACRONYMS = {"ssim": "SSIM", "psnr": "PSNR", "nmse": "NMSE", "ari": "ARI", "nmi": "NMI", "pca": "PCA",
             "snr": "SNR", "psf": "PSF", "se": "SE", "cg": "CG", "ddp": "DDP", "acs": "ACS", "val": "val.", "vq": "VQ"}
# unit suffixes of column names -> (words dropped from the label, unit shown)
_SUFFIX_UNITS: tuple[tuple[str, str], ...] = (
    ("_iterations_per_s", "it/s"), ("iterations_per_s", "it/s"), ("it_per_s", "it/s"), ("s_per_it", "s/it"),
    ("_mib", "MiB"), ("_gib", "GiB"), ("_gb", "GB"), ("_mb", "MB"), ("_bytes", "bytes"), ("_db", "dB"),
    ("_ms", "ms"), ("_s", "s"), ("_pct", "%"),
)
# background of the paper's columns: translucent, so it reads in the light and the dark theme alike
_PAPER_STYLE = "background: rgba(128, 96, 192, 0.10);"
_PAPER_FIRST = "border-left: 2px solid rgba(128, 96, 192, 0.55);"


def _base(column: str) -> tuple[str, bool]:
    """``(name without the paper prefix, whether it is a paper column)``."""
    if column.startswith(PAPER_PREFIX):
        return column[len(PAPER_PREFIX):], True
    return column, False


def column_header(column: str, units: Mapping[str, str] | None = None) -> str:
    """Reader-facing header of ``column``: words, metric acronyms and the unit in brackets
    (``units`` overrides the unit a column name implies; PSNR is in dB)."""
    name, _ = _base(column)
    unit = (units or {}).get(column) or (units or {}).get(name)
    label = name
    if unit is None:
        for suffix, implied in _SUFFIX_UNITS:
            if name.endswith(suffix) and name != suffix.lstrip("_"):
                label, unit = name[: -len(suffix)] or name, implied
                break
            if name == suffix.lstrip("_"):
                label, unit = "", implied
                break
    if unit is None and name.split("_")[0] == "psnr":
        unit = "dB"
    if label == "r_eff":  # the effective acceleration, a symbol rather than two words
        return "R_eff" + (f" ({unit})" if unit else "")
    words = [_ACRONYMS.get(w, w) for w in label.split("_") if w]
    text = " ".join(words)
    if unit:
        text = f"{text} ({unit})" if text else unit
    return text


def format_value(column: str, value: Any) -> str:
    """``value`` at the precision its quantity deserves: SSIM/NMSE/ARI/NMI 4 decimals, PSNR and dB 2,
    memory 1, other floats 4 significant digits; NaN and None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    name, _ = _base(column)
    parts = name.split("_")
    if parts[0] in ("ssim", "nmse", "ari", "nmi", "silhouette") or name in ("val_ssim_first", "val_ssim_last"):
        return f"{value:.4f}"
    if parts[0] == "psnr" or name.endswith("_db"):
        return f"{value:.2f}"
    if name.endswith(("_mib", "_gb", "_gib", "_mb")):
        return f"{value:.1f}"
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def parse_cell(text: str) -> Any:
    """A CSV cell back as ``int``, ``float``, ``bool``, ``None`` (empty) or the string itself."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Table:
    """Rows of a result table; displays as one HTML table in notebooks and the book.

    ``units`` maps a column to its unit when the name does not say it (e.g. ``{"forward": "s"}``)."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, caption: str = "",
                 units: Mapping[str, str] | None = None, name: str = ""):
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = []
            for row in self.rows:
                columns += [c for c in row if c not in columns]
        self.columns = list(columns)
        self.caption = caption
        self.units = dict(units or {})
        self.name = name  # the book's label of this table (``{numref}`name```); empty: unlabelled

    @classmethod
    def from_csv(cls, text: str, caption: str = "", units: Mapping[str, str] | None = None, name: str = "") -> Table:
        """A table read back from :meth:`to_csv` text (cells parsed by :func:`parse_cell`)."""
        reader = csv.DictReader(io.StringIO(text))
        rows = [{k: parse_cell(v) for k, v in row.items()} for row in reader]
        return cls(rows, reader.fieldnames or [], caption, units, name)

    @staticmethod
    def _fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="raise", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()

    def to_markdown(self) -> str:
        """GitHub Markdown (for the results folder; the book shows :meth:`_repr_markdown_`)."""
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        for row in self.rows:
            lines.append("| " + " | ".join(self._fmt(row.get(c)).replace("|", "\\|") for c in self.columns) + " |")
        return "\n".join(lines) + "\n"

    def display_columns(self) -> tuple[list[str], list[str]]:
        """``(ours, paper's)``: the columns in display order, the paper's grouped after ours."""
        ours = [c for c in self.columns if not _base(c)[1]]
        theirs = [c for c in self.columns if _base(c)[1]]
        return ours, theirs

    def _repr_html_(self) -> str:
        ours, theirs = self.display_columns()
        cols = ours + theirs

        def style(c: str) -> str:
            if c not in theirs:
                return ""
            return f' style="{_PAPER_STYLE}{_PAPER_FIRST if c == theirs[0] else ""}"'

        def align(c: str) -> str:
            numeric = any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in self.rows)
            return ' class="text-right"' if numeric else ""

        head = ""
        if theirs:
            head += (f'<tr><th colspan="{len(ours)}"></th>'
                     f'<th colspan="{len(theirs)}" style="{_PAPER_STYLE}{_PAPER_FIRST}">paper (reported)</th></tr>')
        head += "<tr>" + "".join(
            f"<th{style(c)}{align(c)}>{html.escape(column_header(c, self.units))}</th>" for c in cols) + "</tr>"
        body = "".join(
            "<tr>" + "".join(f"<td{style(c)}{align(c)}>{html.escape(format_value(c, r.get(c)))}</td>" for c in cols)
            + "</tr>"
            for r in self.rows
        )
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="table moero-table">{cap}<thead>{head}</thead><tbody>{body}</tbody></table>')

    def _repr_markdown_(self) -> str:
        """The book's view: a MyST ``list-table`` (numbered and captioned by Sphinx, labelled ``name``), the
        paper's columns after ours with ``, paper`` in their header. Jupyter shows :meth:`_repr_html_`."""
        ours, theirs = self.display_columns()
        cols = ours + theirs
        headers = [column_header(c, self.units) + (", paper" if c in theirs else "") for c in cols]
        lines = [f"```{{list-table}} {myst_inline(self.caption)}".rstrip(), ":header-rows: 1", ":class: moero-table"]
        if self.name:
            lines.append(f":name: {self.name}")
        lines.append("")
        for row in [headers] + [[format_value(c, r.get(c)) for c in cols] for r in self.rows]:
            lines.append(f"* - {_myst_cell(row[0])}")
            lines += [f"  - {_myst_cell(v)}" for v in row[1:]]
        lines.append("```")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"Table({len(self.rows)} rows: {', '.join(self.columns)})"


_MARKDOWN_SPECIAL = set("\\`*_[]<>#|~!{}$")


def myst_inline(text: str) -> str:
    """``text`` as literal MyST inline text: Markdown punctuation escaped, one line."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in " ".join(str(text).split()))


def _myst_cell(text: str) -> str:
    """A list-table cell that reads as the text itself (never a nested list, heading or empty marker)."""
    out = myst_inline(text)
    if not out:
        return " "
    if out[0] in "-+" and out[1:2] in (" ", ""):
        out = "\\" + out
    head = out.split(" ", 1)[0]
    if head[:-1].isdigit() and head[-1:] in ".)":  # "3." would start an ordered list
        out = out[: len(head) - 1] + "\\" + out[len(head) - 1 :]
    return out
