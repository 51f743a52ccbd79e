"""The bibliography's labels as the text cites: "Li et al., 2025" (pybtex plugins for sphinxcontrib-bibtex).

The chapters cite author-year (``bibtex_reference_style: author_year``); pybtex's ``plain`` style would list
the same works as [1]-[14]. :func:`register` adds the label style ``moero_author_year`` and the formatting
style of the same name (``plain`` with those labels), which ``_config.yml`` selects as
``bibtex_default_style``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

__all__ = ["STYLE", "AuthorYearLabels", "AuthorYearStyle", "author_year", "register"]

STYLE = "moero_author_year"


def author_year(entry: Any) -> str:
    """``Surname, year``, ``A and B, year`` or ``Surname et al., year``; the organisation for an author without a
    person name (a key ``organization`` or the title), as the in-text citations read."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    # "van den Oord": the von part belongs to the surname, as the in-text citations print it
    names = [" ".join([*p.prelast_names, *p.last_names]) or " ".join(p.first_names) for p in people]
    if not names:
        names = [entry.fields.get("organization") or entry.fields.get("title", "Anon.")]
    who = names[0] if len(names) == 1 else f"{names[0]} and {names[1]}" if len(names) == 2 else f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    """Author-year labels; equal ones get a, b, ... after the year."""

    def format_labels(self, sorted_entries: Iterable[Any]) -> Iterator[str]:
        entries = list(sorted_entries)
        labels = [author_year(e) for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                yield f"{label}{chr(ord('a') + seen[label] - 1)}"
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = STYLE


def register() -> None:
    """Make both plugins known to pybtex (idempotent)."""
    for group, plugin in (("pybtex.style.labels", AuthorYearLabels), ("pybtex.style.formatting", AuthorYearStyle)):
        try:
            register_plugin(group, STYLE, plugin)
        except Exception as err:  # registered already in this process (pybtex refuses a second registration)
            if "already registered" not in str(err):
                raise
