"""Committed results: copy a heavier profile's results of the results chapters into ``book/results/<profile>``,
and the wall times the reproduction page states.

A book built with a lighter profile shows the committed results as the chapters' main results
(:func:`moero.book.show.published_results`). Only small files travel (tables as CSV and Markdown, figures as
PNG up to :data:`MAX_FILE_BYTES`), each with the SHA-256 its run recorded; the provenance keeps the commit,
profile, device, versions, code hashes and wall time of the run, and lists what was left behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moero.book.run import changed_files
from moero.paths import build_dir, repo_root

__all__ = ["PUBLISHED_CHAPTERS", "MAX_FILE_BYTES", "publish", "first_execution", "chapter_minutes", "wall_time_rows",
           "machine", "wall_times_markdown"]

PUBLISHED_CHAPTERS = ("06_training", "07_augmentation_ablation", "08_model_ablation", "09_efficiency", "claims")
MAX_FILE_BYTES = 1_000_000  # the reconstruction galleries (~2 MB each) stay in the build folder
SUFFIXES = (".csv", ".md", ".png")


def publish(profile: str, dest: str | Path | None = None, source: str | Path | None = None,
            chapters: Sequence[str] = PUBLISHED_CHAPTERS, force: bool = False,
            max_file_bytes: int = MAX_FILE_BYTES) -> dict[str, Any]:
    """Copy ``<source>/<chapter>`` (default ``_build/results/<profile>``) to ``<dest>/<chapter>`` (default
    ``book/results/<profile>``) for every chapter. Every chapter is checked first: a complete provenance of
    ``profile`` from a clean commit, and every recorded file intact; nothing is written unless all pass,
    and an existing destination is replaced only with ``force``. Returns what was copied and left out."""
    src_root = Path(source) if source else build_dir() / "results" / profile
    dst_root = Path(dest) if dest else repo_root() / "book" / "results" / profile
    plans = []
    for chapter in chapters:
        folder = src_root / chapter
        prov_path = folder / "provenance.json"
        if not prov_path.is_file():
            raise FileNotFoundError(f"{prov_path}: no results of chapter {chapter} for profile {profile!r}; run "
                                    f"python -m moero book --profile {profile} first")
        meta = json.loads(prov_path.read_text())
        commit = str(meta.get("commit", ""))
        if meta.get("profile") != profile:
            raise ValueError(f"{prov_path}: field 'profile' is {meta.get('profile')!r}, not {profile!r}")
        if not meta.get("complete"):
            raise ValueError(f"{prov_path}: field 'complete' is false: the chapter did not finish")
        if not commit or commit == "unknown" or commit.endswith("+dirty"):
            raise ValueError(f"{prov_path}: field 'commit' is {commit!r}: published results must come from a "
                             "clean commit")
        broken = changed_files(folder, meta.get("files", {}))
        if broken:
            raise ValueError(f"{folder / broken[0]}: missing or changed since its run recorded it")
        kept, omitted = {}, {}
        for name, entry in meta.get("files", {}).items():
            path = folder / name
            if not name.endswith(SUFFIXES):
                omitted[name] = "not a table or figure"
            elif path.stat().st_size > max_file_bytes:
                omitted[name] = f"{path.stat().st_size:,} bytes, over {max_file_bytes:,}"
            else:
                kept[name] = entry
        target = dst_root / chapter
        if target.exists() and not force:
            raise FileExistsError(f"{target} exists; pass --force to replace the committed results")
        plans.append((folder, target, meta, kept, omitted))
    report: dict[str, Any] = {}
    for folder, target, meta, kept, omitted in plans:
        tmp = target.with_name(f".{target.name}.publishing-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name in kept:
            shutil.copyfile(folder / name, tmp / name)
        out = {**meta, "files": kept, "omitted": omitted}
        (tmp / "provenance.json").write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # the folder appears whole or not at all
        report[folder.name] = {"copied": sorted(kept), "omitted": omitted, "commit": meta["commit"]}
    return report


def first_execution(meta: dict[str, Any]) -> dict[str, Any]:
    """The first execution recorded in a provenance (its history's first entry, else the provenance itself):
    commit, start, wall time and code hashes."""
    return (meta.get("history") or [meta])[0]


def chapter_minutes(meta: dict[str, Any]) -> float:
    """Minutes the first recorded execution of a results folder took: for a chapter that trains, in a fresh
    build folder, the time to produce its results from scratch."""
    return float(first_execution(meta).get("wall_time_s") or 0.0) / 60.0


def wall_time_rows(folder: str | Path) -> dict[str, Any] | None:
    """Wall time of the results of one profile in ``folder`` (``<folder>/<chapter>/provenance.json``): the sum
    over its chapters of their first execution, with the chapters, commits, dates and machine; None when no
    chapter there has a complete provenance."""
    metas = {}
    for prov in sorted(Path(folder).glob("*/provenance.json")):
        meta = json.loads(prov.read_text())
        if meta.get("complete"):
            metas[prov.parent.name] = meta
    if not metas:
        return None
    firsts = [first_execution(m) for m in metas.values()]
    env = next(iter(metas.values())).get("environment", {})
    return {"minutes": sum(chapter_minutes(m) for m in metas.values()), "chapters": sorted(metas),
            "commits": sorted({str(f.get("commit", "?"))[:10] for f in firsts}),
            "dates": sorted({str(f.get("started", "?"))[:10] for f in firsts}), "machine": machine(env)}


def machine(env: dict[str, Any]) -> str:
    """Where a result ran, from its provenance's ``environment``: the GPU, else the device and its threads."""
    threads = env.get("cpu_threads", "?")
    return env.get("gpu") or f"{env.get('device', 'cpu')}, {threads} thread{'' if threads == 1 else 's'}"


def wall_times_markdown(profile: str | None = None) -> str:
    """The reproduction page's table of measured wall times: every profile with committed results
    (``book/results/<profile>``) and the profile this book was built with (its build folder), each the sum
    of its chapters' first executions (the commands that reproduce them are on the page)."""
    profile = profile or os.environ.get("MOERO_PROFILE", "cpu")
    lines = ["| profile | results | chapters | wall time | machine | commit | date |", "|---|---|---|---|---|---|---|"]
    sources = [(p.name, p, "committed") for p in sorted((repo_root() / "book" / "results").glob("*"))
               if p.is_dir()]
    sources.append((profile, build_dir() / "results" / profile, "this build"))
    for name, folder, kind in sources:
        row = wall_time_rows(folder)
        if row is None:
            continue
        chapters = ", ".join(c.split("_")[0] for c in row["chapters"])
        lines.append(f"| `{name}` | {kind} | {chapters} | {row['minutes']:.0f} min | {row['machine']} | "
                     f"{', '.join(row['commits'])} | {', '.join(row['dates'])} |")
    return "\n".join(lines)
