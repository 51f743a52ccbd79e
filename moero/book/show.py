"""What a results chapter displays: where its results come from, tables and figures read back from
disk, computed admonitions and verdict rows (chapters 06-09)."""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moero.book.display import BookFigure, Outputs, label_for, unique_label
from moero.book.paper import CLAIMS
from moero.book.runspec import MissingResultError
from moero.eval.stats import Comparison, judge_family
from moero.eval.tables import Table
from moero.paths import build_dir, repo_root

__all__ = ["ResultsSource", "results_source", "require_result", "read_table", "show_result",
           "RESULTS_CHAPTERS", "CHAPTER_ALPHA", "judged_rows", "untested_rows", "measured_verdict", "admonition",
           "show_source", "chapter_folder"]

@dataclass(frozen=True)
class ResultsSource:
    """Where a chapter's displayed results come from: ``folder``, ``kind`` (``gpu`` or the run's profile) and a
    sentence saying so."""
    folder: Path
    kind: str
    note: str


def results_source(notebook: str, run: Any, gpu_root: str | Path | None = None, other: bool = False) -> ResultsSource:
    """The committed GPU results of ``notebook`` (``book/results/gpu/<notebook>``, complete provenance) when
    they exist, else this run's own results folder (``other``: ``notebook`` is another chapter than the
    running one, whose folder is then :func:`chapter_folder`)."""
    gpu = Path(gpu_root) if gpu_root else repo_root() / "book" / "results" / "gpu"
    prov = gpu / notebook / "provenance.json"
    if run.profile.name != "gpu" and prov.is_file():
        meta = json.loads(prov.read_text())
        if meta.get("complete"):
            card = meta.get("environment", {}).get("gpu", "GPU")
            return ResultsSource(gpu / notebook, "gpu",
                                 f"Shown: the gpu-profile results committed under book/results/gpu/{notebook} "
                                 f"(commit {meta.get('commit', '?')}, {card}); "
                                 f"this run's {run.profile.name}-profile results are in {_shown_path(run)}.")
    if other:
        folder = chapter_folder(run.profile.name, notebook)
        return ResultsSource(folder, run.profile.name, f"Shown: this run's {run.profile.name}-profile results of "
                                                        f"{notebook}.")
    return ResultsSource(run.results_dir, run.profile.name,
                         f"Shown: this run's {run.profile.name}-profile results ({_shown_path(run)}); no gpu-profile "
                         f"results are committed under book/results/gpu/{notebook}.")


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


def show_result(folder: str | Path, stem: str) -> Any:
    """Display a produced table (``<stem>.csv``, a :class:`~moero.eval.tables.Table` with the caption and units
    its provenance records) or figure (``<stem>.png``, a :class:`~moero.book.display.BookFigure`) from disk,
    failing if it is missing. Both are numbered and captioned in the book, labelled by the folder's chapter."""
    folder = Path(folder)
    notebook = folder.name.split(".staging-")[0]
    prov = folder / "provenance.json"
    files = json.loads(prov.read_text()).get("files", {}) if prov.is_file() else {}
    if (folder / f"{stem}.png").exists() or not (folder / f"{stem}.csv").exists():
        path = require_result(folder, f"{stem}.png")
        return BookFigure(path, files.get(path.name, {}).get("caption", ""),
                          unique_label(label_for("fig", notebook, stem)))
    path = require_result(folder, f"{stem}.csv")
    entry = files.get(path.name, {})
    return Table.from_csv(path.read_text(), caption=entry.get("caption", ""), units=entry.get("units"),
                          name=unique_label(label_for("tab", notebook, stem)))


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


def admonition(text: str, title: str = "Note", kind: str = "note") -> Any:
    """A computed statement shown as the book's admonition box (wrapped text, never a cut print line)."""
    from IPython.display import HTML

    return HTML(f'<div class="admonition {html.escape(kind)}"><p class="admonition-title">{html.escape(title)}</p>'
                f"<p>{html.escape(text)}</p></div>")


def show_source(src: ResultsSource, run: Any, stem: str) -> Any:
    """Say where the chapter's results come from; repeat table ``stem`` only when it is not this run's own
    (committed gpu-profile results), so no table is shown twice."""
    from IPython.display import HTML

    box = admonition(src.note, title=f"Results shown: {src.kind} profile").data
    if Path(src.folder).resolve() == Path(run.results_dir).resolve():
        return HTML(box)
    return Outputs(HTML(box), show_result(src.folder, stem))
