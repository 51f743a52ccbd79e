"""What a results chapter displays: where its results come from, tables and figures read back from
disk, computed admonitions and verdict rows (chapters 06-09)."""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moero.book.display import BookFigure, Outputs, label_for, unique_label
from moero.book.paper import CLAIMS
from moero.book.publish import chapter_minutes, first_execution, machine
from moero.book.run import SCIENCE_LAYERS, code_hashes
from moero.book.runspec import MissingResultError
from moero.eval.stats import Comparison, judge_family
from moero.eval.tables import Table
from moero.paths import build_dir, repo_root

__all__ = ["ResultsSource", "results_source", "published_results", "published_root", "PUBLISHED_PROFILES",
           "staleness", "show_published", "sign_check", "number", "effect_text", "require_result", "read_table",
           "show_result", "RESULTS_CHAPTERS", "CHAPTER_ALPHA", "judged_rows", "untested_rows", "measured_verdict",
           "admonition", "reading", "chapter_folder"]

# profiles whose results may be committed under book/results/<profile>/<notebook>, heaviest first: a chapter
# shows the first of them with complete committed results that is heavier than the profile it runs with
PUBLISHED_PROFILES = ("gpu", "cpu-long")


@dataclass(frozen=True)
class ResultsSource:
    """Where a chapter's displayed results come from: ``folder``, ``kind`` (the profile that produced them), a
    sentence saying so, and for committed results their provenance (``meta``)."""
    folder: Path
    kind: str
    note: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def published(self) -> bool:
        """True for committed results of a heavier profile (not this build's own run)."""
        return bool(self.meta)


def published_root() -> Path:
    """The folder of committed results: ``book/results`` of the checkout."""
    return repo_root() / "book" / "results"


def published_results(notebook: str, profile: str, root: str | Path | None = None) -> ResultsSource | None:
    """The committed results of ``notebook`` that a run of ``profile`` shows as the chapter's main results: the
    first of :data:`PUBLISHED_PROFILES` heavier than ``profile`` whose ``provenance.json`` is complete; None
    when there are none (or ``profile`` is itself the heaviest with results)."""
    base = Path(root) if root else published_root()
    for heavier in PUBLISHED_PROFILES:
        if heavier == profile:
            return None
        prov = base / heavier / notebook / "provenance.json"
        if not prov.is_file():
            continue
        meta = json.loads(prov.read_text())
        if not meta.get("complete"):
            continue
        env = meta.get("environment", {})
        where = machine(env)
        date = str(meta.get("started", "?"))[:10]
        note = (f"The {heavier} profile's results, committed under book/results/{heavier}/{notebook}: commit "
                f"{str(meta.get('commit', '?'))[:10]}, run on {date} ({where}; torch "
                f"{env.get('torch', '?')}, Python {env.get('python', '?')}).")
        first = first_execution(meta)
        if first.get("commit") != meta.get("commit"):  # a later execution re-read the runs an earlier one made
            note += (f" The chapter was first executed at commit {str(first.get('commit'))[:10]} on "
                     f"{str(first.get('started', '?'))[:10]}; later executions reuse the runs kept on disk when "
                     "their configuration is unchanged.")
        return ResultsSource(base / heavier / notebook, heavier, note, meta)
    return None


def results_source(notebook: str, run: Any, root: str | Path | None = None, other: bool = False) -> ResultsSource:
    """The committed results of a heavier profile for ``notebook`` (:func:`published_results`) when they exist,
    else this run's own results folder (``other``: ``notebook`` is another chapter than the running one, whose
    folder is then :func:`chapter_folder`)."""
    found = published_results(notebook, run.profile.name, root)
    if found is not None:
        return found
    if other:
        folder = chapter_folder(run.profile.name, notebook)
        return ResultsSource(folder, run.profile.name, f"Shown: this run's {run.profile.name}-profile results of "
                                                        f"{notebook}.")
    return ResultsSource(run.results_dir, run.profile.name,
                         f"Shown: this run's {run.profile.name}-profile results ({_shown_path(run)}); no results "
                         f"of a heavier profile are committed under book/results/<profile>/{notebook}.")


def staleness(src: ResultsSource, notebook: str) -> str:
    """Why committed results may not be what the current code gives ("" when their recorded code hashes match
    the chapter's source and the package's science layers now)."""
    recorded = src.meta.get("code") or {}
    if not recorded:
        return (f"These {src.kind} results record no code hashes: it cannot be checked that the current code "
                "still produces them.")
    now = code_hashes(notebook)
    parts = {"chapter": f"this chapter's code (notebooks/{notebook}.py)",
             "science": "the package's science layers (" + ", ".join(SCIENCE_LAYERS) + ")"}
    changed = [text for what, text in parts.items() if recorded.get(what) != now[what]]
    if not changed:
        return ""
    return (f"These {src.kind} results come from an older version of {' and of '.join(changed)} than this build "
            f"has (they were produced at commit {str(src.meta.get('commit', '?'))[:10]}): rerun the {src.kind} "
            "profile to bring them up to date. This build's own run, further down, uses the current code.")


def show_published(notebook: str, run: Any, stems: Sequence[str], root: str | Path | None = None) -> Any:
    """The chapter's main results when a heavier profile's are committed (:func:`published_results`): where they
    come from, their scale (the chapter's recorded Setting), a warning when they come from older code, then
    the tables and figures ``stems`` read back from them; otherwise a note that this build's run is the
    chapter's result."""
    from IPython.display import HTML

    src = published_results(notebook, run.profile.name, root)
    if src is None:
        return admonition(f"No results of a heavier profile are committed for this chapter (book/results/<profile>/"
                          f"{notebook}): the results below, from this build's {run.profile.name} run, are the "
                          "chapter's results.", title="Published results: none", kind="note")
    setting = src.meta.get("statements", {}).get("setting", "")
    minutes = chapter_minutes(src.meta)
    text = src.note + (f" Its first execution took {minutes:.0f} min of wall time." if minutes >= 1 else "")
    items = [HTML(admonition(text + (f" Scale: {setting}" if setting else ""),
                             title=f"Published results: {src.kind} profile").data)]
    stale = staleness(src, notebook)
    if stale:
        items.append(HTML(admonition(stale, title="Older code", kind="warning").data))
    items += [show_result(src.folder, stem, label="published") for stem in stems
              if (src.folder / f"{stem}.csv").is_file() or (src.folder / f"{stem}.png").is_file()]
    # what the chapter concluded from these results, as that run computed it (Run.reading)
    items += [HTML(admonition(r["text"], title=f"{r['title']} ({src.kind} run)", kind=r.get("kind", "note")).data)
              for r in src.meta.get("readings", [])]
    return Outputs(*items)


def sign_check(src: ResultsSource, run: Any, stem: str = "verdicts") -> Any:
    """Set this build's verdict table beside the committed one (when the chapter shows committed results): per
    comparison both effects and verdicts and whether the signs agree, a check that the current code still
    points the same way. For this build's own results, only the box saying where they come from."""
    from IPython.display import HTML

    box = admonition(src.note, title=f"Results shown: {src.kind} profile").data
    if not src.published:
        return HTML(box)
    published = {r["comparison"]: r for r in read_table(src.folder, stem)}
    rows, agree, compared = [], 0, 0
    for r in read_table(run.results_dir, stem):
        p = published.get(r["comparison"])
        if p is None:
            continue
        ours, theirs = number(r.get("ours")), number(p.get("ours"))
        same = "" if math.isnan(ours) or math.isnan(theirs) else ("yes" if (ours > 0) == (theirs > 0) else "no")
        compared += same != ""
        agree += same == "yes"
        rows.append({"comparison": r["comparison"], src.kind: theirs, f"{src.kind} verdict": p["verdict"],
                     run.profile.name: ours, f"{run.profile.name} verdict": r["verdict"], "same sign": same})
    summary = (f"{agree} of {compared} comparisons measured in both point the same way in this build's "
               f"{run.profile.name} run as in the committed {src.kind} results (the verdicts shown in the chapter's "
               f"main results are the {src.kind} ones).")
    table = Table(rows, caption=f"Sign check: the committed {src.kind} results beside this build's "
                                f"{run.profile.name} run, comparison by comparison",
                  name=unique_label(label_for("tab", run.notebook, "sign-check")))
    return Outputs(HTML(box), HTML(admonition(summary, title="Sign check", kind="note").data), table)


def number(text: Any) -> float:
    """A number read back from a table ("" or "nan": not measured)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def effect_text(row: dict[str, Any]) -> str:
    """A verdict row's effect as the book writes it: the difference and its interval ("+0.0072 [-0.0099,
    +0.0244]"), the difference alone when the row has no interval, "not measured" when it has no number."""
    ours, lo, hi = number(row.get("ours")), number(row.get("ci_low")), number(row.get("ci_high"))
    if math.isnan(ours):
        return "not measured"
    return f"{ours:+.4f}" + ("" if math.isnan(lo) else f" [{lo:+.4f}, {hi:+.4f}]")


def _shown_path(run: Any) -> str:
    """Where the run's results live once the runner has swapped them in (not the staging folder it writes to):
    relative to the checkout when inside it, else to the build folder."""
    final = Path(getattr(run, "final_dir", run.results_dir)).resolve()
    # never an absolute path of the build machine on a page: relative to the checkout, else to the build folder
    for base, prefix in ((repo_root(), ""), (build_dir(), "$MOERO_BUILD_DIR/")):
        try:
            return prefix + final.relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            continue
    return f"the results folder {final.name}"


def require_result(folder: str | Path, name: str) -> Path:
    """The result file ``folder/name``; a :class:`MissingResultError` naming it when no run produced it (and,
    when the folder has a provenance, when that provenance does not list it)."""
    folder = Path(folder)
    path = folder / name
    if not path.is_file() or path.stat().st_size == 0:
        raise MissingResultError(f"result file {path} was referred to but no run produced it")
    prov = folder / "provenance.json"
    if prov.is_file() and name not in json.loads(prov.read_text()).get("files", {}):
        raise MissingResultError(f"result file {path} is not recorded in {prov}: no run of this notebook produced it")
    return path


def chapter_folder(profile: str, notebook: str) -> Path:
    """The results folder of chapter ``notebook`` for ``profile`` (``_build/results/<profile>/<notebook>``),
    for a chapter that shows another's measurement (one source); read it with :func:`read_table`."""
    return build_dir() / "results" / profile / notebook


def read_table(folder: str | Path, stem: str) -> list[dict[str, str]]:
    """Rows of ``<stem>.csv`` (a produced result, see :func:`require_result`)."""
    with open(require_result(folder, f"{stem}.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def show_result(folder: str | Path, stem: str, label: str = "") -> Any:
    """Display a produced table (``<stem>.csv``, a :class:`~moero.eval.tables.Table` with the caption and units
    its provenance records) or figure (``<stem>.png``, a :class:`~moero.book.display.BookFigure`) from disk,
    failing if it is missing. Both are numbered and captioned in the book, labelled by the folder's chapter
    (``label``: a prefix of the stem in the label, so committed results never take this run's labels)."""
    folder = Path(folder)
    notebook = folder.name.split(".staging-")[0]
    key = f"{label}-{stem}" if label else stem
    prov = folder / "provenance.json"
    files = json.loads(prov.read_text()).get("files", {}) if prov.is_file() else {}
    if (folder / f"{stem}.png").exists() or not (folder / f"{stem}.csv").exists():
        path = require_result(folder, f"{stem}.png")
        return BookFigure(path, files.get(path.name, {}).get("caption", ""),
                          unique_label(label_for("fig", notebook, key)))
    path = require_result(folder, f"{stem}.csv")
    entry = files.get(path.name, {})
    return Table.from_csv(path.read_text(), caption=entry.get("caption", ""), units=entry.get("units"),
                          name=unique_label(label_for("tab", notebook, key)))


# verdicts are judged per chapter with Holm at 0.05 / 4: over the four results chapters (06-09) the
# family-wise error stays at 0.05 (Bonferroni across chapters, Holm within; book/conventions.md)
RESULTS_CHAPTERS = 4
CHAPTER_ALPHA = 0.05 / RESULTS_CHAPTERS


def judged_rows(comparisons: Sequence[Comparison], direction_only: Sequence[str] = (),
                claims: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A chapter's verdict table: :func:`moero.eval.stats.judge_family` of its comparisons at
    :data:`CHAPTER_ALPHA`, one row each with our effect and 95 % interval beside the paper's effect, the
    Holm-adjusted p-value, the seeds and subjects behind it and the verdict (one of the four).
    ``direction_only``: names of claims the paper states without a number (their ``paper`` is a sign);
    ``claims``: comparison name -> the key of the paper's claim it judges (``moero.book.paper.CLAIMS``), the
    ``claim`` column that the claims page reads."""
    rows = []
    for j in judge_family(comparisons, alpha=CHAPTER_ALPHA):
        if j.paper is None:
            paper = "none"
        elif j.name in direction_only:
            paper = f"{'+' if j.paper > 0 else '-'} (direction only)"
        elif j.paper == 0.0:
            paper = "0 (parity)"
        else:
            paper = f"{j.paper:+.4g}"
        # the verdict next to the comparison: a reader on a narrow page sees both before anything else
        rows.append({"comparison": j.name, "verdict": j.verdict, "ours": j.effect, "ci_low": j.ci_low,
                     "ci_high": j.ci_high, "paper": paper, "seeds": j.seeds, "subjects": j.subjects,
                     "p_holm": j.p_holm, "claim": (claims or {}).get(j.name, "")})
    unknown = set(claims or {}) - {r["comparison"] for r in rows}
    if unknown:
        raise KeyError(f"claims name comparisons that were not judged: {sorted(unknown)}")
    return rows


def untested_rows(reasons: dict[str, str]) -> list[dict[str, Any]]:
    """Verdict rows for claims a profile cannot test at all (no run of the kind exists): claim key -> reason,
    in the columns of :func:`judged_rows`."""
    known = {c.key: c for c in CLAIMS}
    return [{"comparison": known[key].statement, "verdict": f"not testable at this scale ({reason})", "ours": math.nan,
             "ci_low": math.nan, "ci_high": math.nan, "paper": known[key].paper, "seeds": 0, "subjects": 0,
             "p_holm": math.nan, "claim": key} for key, reason in reasons.items()]


def measured_verdict(effect: float, ci: tuple[float, float], paper: float | None, reason: str | None = None) -> str:
    """The verdict on a measurement without seeds (a timing ratio minus 1 with its interval ``ci`` at the
    chapter's family level): holds / contradicts when ``ci`` excludes 0 with the paper's sign / the
    opposite sign, else inconclusive; not testable with a ``reason`` or no paper value."""
    if reason:
        return f"not testable at this scale ({reason})"
    if paper is None or not math.isfinite(float(paper)) or float(paper) == 0.0:
        return "not testable at this scale (no paper value)"
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0.0 <= hi:
        return "inconclusive at this scale"
    return "holds" if (effect > 0) == (float(paper) > 0) else "contradicts"


def reading(run: Any, text: str, title: str, kind: str = "note") -> Any:
    """A computed reading of the chapter's results: recorded in the run's provenance (``Run.reading``), so a
    page showing these results as published results repeats it, and shown as an :func:`admonition`."""
    return admonition(run.reading(title, text, kind), title=title, kind=kind)


def admonition(text: str, title: str = "Note", kind: str = "note") -> Any:
    """A computed statement shown as the book's admonition box (wrapped text, never a cut print line)."""
    from IPython.display import HTML

    return HTML(f'<div class="admonition {html.escape(kind)}"><p class="admonition-title">{html.escape(title)}</p>'
                f"<p>{html.escape(text)}</p></div>")
