"""Result tables: rows of dicts rendered as CSV and Markdown (numbers at a fixed precision)."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from typing import Any

__all__ = ["Table"]


class Table:
    """Rows of a result table; displays as HTML in notebooks and the book."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, caption: str = ""):
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = []
            for row in self.rows:
                columns += [c for c in row if c not in columns]
        self.columns = list(columns)
        self.caption = caption

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
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        for row in self.rows:
            lines.append("| " + " | ".join(self._fmt(row.get(c)).replace("|", "\\|") for c in self.columns) + " |")
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return (f"**{self.caption}**\n\n" if self.caption else "") + self.to_markdown()

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(self._fmt(r.get(c)))}</td>" for c in self.columns) + "</tr>"
            for r in self.rows
        )
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return f"<table class='table'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
