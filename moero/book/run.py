"""Results of a notebook run: figures (PNG) and tables (CSV + Markdown) with provenance.

Every figure and table of the book is written through a :class:`Run`, which records what produced
it (git commit, profile, parameters, device, library versions, wall time, and each file's SHA-256)
in ``provenance.json`` next to the files.

Atomic results. Under the book runner (``$MOERO_RESULTS_STAGING`` names a registry file), a run
writes into a fresh staging folder ``<results>.staging-<pid>`` beside its results folder and records
the pair in the registry; the runner swaps the staging folder in only when the notebook completed
(:func:`moero.book.runner.run_notebook`), so a failed or killed run leaves the last good results and
provenance untouched. Outside the runner (an interactive session) results are written in place.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from moero.book.display import BookFigure, label_for, unique_label
from moero.book.plots import apply_style
from moero.book.profiles import Profile, get_profile, notebook_params
from moero.data.digest import file_sha256
from moero.data.synthetic import ensure_synthetic
from moero.eval.tables import Table
from moero.paths import build_dir, default_data_root, repo_root
from moero.train.distributed import resolve_device

__all__ = ["Run", "start_run", "git_commit", "environment", "file_sha256", "code_hashes", "sources_hash",
           "changed_files", "STAGING_ENV", "SCIENCE_LAYERS"]

STAGING_ENV = "MOERO_RESULTS_STAGING"
# the layers whose code decides what a result is (the book wing only presents it): a change here makes
# committed results stale, a change in moero/book does not
SCIENCE_LAYERS = ("physics", "data", "augment", "models", "eval", "train")
HISTORY = 8  # earlier executions a provenance keeps (besides the first, always kept)


def _staging_folder(final: Path) -> Path:
    """A fresh staging folder for ``final`` when the runner asks for one (``$MOERO_RESULTS_STAGING``),
    else ``final`` itself."""
    registry = os.environ.get(STAGING_ENV)
    if not registry:
        return final
    staging = final.with_name(f"{final.name}.staging-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    with open(registry, "a") as fh:
        fh.write(json.dumps({"final": str(final.resolve()), "staging": str(staging.resolve())}) + "\n")
    return staging






def git_commit(root: Path | None = None) -> str:
    """``HEAD``'s hash with ``+dirty`` when tracked files changed; ``unknown`` outside git."""
    root = root or repo_root()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")




def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Versions and hardware that a result depends on."""
    import numpy

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cpu_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info




def sources_hash(folders: Sequence[Path], root: Path) -> str:
    """SHA-256 over every ``.py`` file under ``folders``, by its path relative to ``root`` and its bytes."""
    import hashlib

    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def code_hashes(notebook: str, root: Path | None = None) -> dict[str, str]:
    """SHA-256 of the code a result of ``notebook`` comes from: the chapter's source
    (``notebooks/<notebook>.py``; "" when absent) and the package's science layers
    (:data:`SCIENCE_LAYERS`, :func:`sources_hash`)."""
    source = (root or repo_root()) / "notebooks" / f"{notebook}.py"
    pkg = Path(__file__).resolve().parents[1]
    return {"chapter": file_sha256(source) if source.is_file() else "",
            "science": sources_hash([pkg / layer for layer in SCIENCE_LAYERS], pkg)}


def changed_files(folder: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    """The names in ``files`` (a provenance's file entries) missing from ``folder`` or whose bytes no longer
    have the SHA-256 recorded for them."""
    return [name for name, entry in files.items() if not (folder / name).is_file()
            or ("sha256" in entry and file_sha256(folder / name) != entry["sha256"])]


def _history(final: Path, profile: str) -> list[dict[str, Any]]:
    """The executions recorded in ``final``'s provenance (same profile): its own history plus itself, as
    commit, start, wall time and code hashes; the first execution (the one that trained, in a fresh build
    folder) is always kept, then the last :data:`HISTORY`."""
    try:
        old = json.loads((final / "provenance.json").read_text())
    except (OSError, ValueError):
        return []
    if old.get("profile") != profile or not old.get("complete"):
        return list(old.get("history", [])) if old.get("profile") == profile else []
    past = [*old.get("history", []), {k: old.get(k) for k in ("commit", "started", "wall_time_s", "code")}]
    return past if len(past) <= HISTORY + 1 else [past[0], *past[-HISTORY:]]


class Run:
    """One execution of a notebook: its parameters, device and results folder."""

    def __init__(
        self,
        notebook: str,
        profile: Profile,
        params: dict[str, Any],
        results_dir: Path,
        device: torch.device,
        data_root: Path | None = None,
        seed: int = 0,
    ):
        self.notebook = notebook
        self.profile = profile
        self.params = params
        self.final_dir = results_dir  # where the results live once the runner swaps them in
        self.history = _history(Path(results_dir), profile.name)  # before anything is written
        results_dir = _staging_folder(results_dir)
        self.results_dir = results_dir  # where this run writes (the staging folder under the runner)
        self.device = device
        self.data_root = data_root
        self.seed = seed
        self.files: dict[str, dict[str, str]] = {}
        self.statements: dict[str, str] = {}
        self.readings: list[dict[str, str]] = []
        self.code = code_hashes(notebook)
        self._t0 = time.perf_counter()
        self._started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        results_dir.mkdir(parents=True, exist_ok=True)
        self.write_provenance(complete=False)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def path(self, name: str) -> Path:
        """A file in this run's results folder."""
        return self.results_dir / name

    def figure(self, fig: Any, stem: str, caption: str = "", dpi: int = 110) -> BookFigure:
        """Save a matplotlib figure as ``<stem>.png``, record it and close it; returns what displays it (numbered
        and captioned in the book, labelled ``fig-<notebook>-<stem>``)."""
        import matplotlib.pyplot as plt

        out = self.path(f"{stem}.png")
        fig.savefig(out, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.files[out.name] = {"kind": "figure", "caption": caption}
        self.write_provenance(complete=False)
        return BookFigure(Path(self.final_dir) / out.name, caption, unique_label(label_for("fig", self.notebook, stem)),
                          source=out)

    def table(
        self, rows: Sequence[dict[str, Any]], stem: str, caption: str = "", columns: Sequence[str] | None = None,
        units: dict[str, str] | None = None,
    ) -> Table:
        """Save rows as ``<stem>.csv`` and ``<stem>.md``, record them, return a displayable table
        (``units``: a column's unit where its name does not imply one; kept in the provenance for
        :func:`moero.book.show.show_result`)."""
        if columns is not None:  # a view of wider rows: those columns only, each present in some row
            missing = [c for c in columns if not any(c in r for r in rows)]
            if missing:
                raise ValueError(f"table {stem!r}: columns {missing} are in no row")
            rows = [{c: r.get(c) for c in columns} for r in rows]
        tab = Table(rows, columns, caption, units, name=unique_label(label_for("tab", self.notebook, stem)))
        self.path(f"{stem}.csv").write_text(tab.to_csv())
        self.path(f"{stem}.md").write_text(tab.to_markdown())
        entry: dict[str, Any] = {"kind": "table", "caption": caption, **({"units": dict(units)} if units else {})}
        self.files[f"{stem}.csv"] = entry
        self.files[f"{stem}.md"] = dict(entry)
        self.write_provenance(complete=False)
        return tab

    def statement(self, key: str, text: str) -> str:
        """Record a computed statement (``"setting"``: the chapter's scale) in the provenance, so a page
        showing these results elsewhere can state it; returns ``text``."""
        self.statements[key] = text
        self.write_provenance(complete=False)
        return text

    def reading(self, title: str, text: str, kind: str = "note") -> str:
        """Record a computed reading of the results (an admonition's title, kind and text) in the provenance,
        in the order the chapter makes them (a reading of the same title is replaced), so a page showing
        these results elsewhere can show what the chapter concluded from them; returns ``text``."""
        self.readings = [r for r in self.readings if r["title"] != title]
        self.readings.append({"title": title, "kind": kind, "text": text})
        self.write_provenance(complete=False)
        return text

    def provenance(self, complete: bool) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "profile": self.profile.name,
            "commit": git_commit(),
            "parameters": self.params,
            "seed": self.seed,
            "data_root": str(self.data_root) if self.data_root else None,
            "environment": environment(self.device),
            "started": self._started,
            "wall_time_s": round(time.perf_counter() - self._t0, 3),
            "complete": complete,
            "files": self.files,
            "code": self.code,
            "statements": self.statements,
            "readings": self.readings,
            "history": self.history,
        }

    def write_provenance(self, complete: bool) -> dict[str, Any]:
        """Write ``provenance.json`` atomically (a crash never leaves half a file); return its content.

        Each recorded file's SHA-256 is (re)computed, so the book runner can verify the folder later."""
        for name, entry in self.files.items():
            if self.path(name).is_file():
                entry["sha256"] = file_sha256(self.path(name))
        prov = self.provenance(complete)
        out = self.path("provenance.json")
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(prov, indent=2, sort_keys=True, default=str))
        os.replace(tmp, out)
        return json.loads(out.read_text())

    def finish(self) -> dict[str, Any]:
        """Mark the run complete; call in the notebook's last cell."""
        return self.write_provenance(complete=True)

    def dataset_root(self) -> Path:
        """The CMRxRecon-layout tree to read: ``data_root`` if given, else the profile's synthetic set."""
        if self.data_root is not None:
            return self.data_root
        # no progress bar: a tqdm widget in a chapter is chatter, not a result
        return ensure_synthetic(default_data_root(self.profile.dataset), size=self.profile.dataset, seed=0,
                                progress=False)


def start_run(
    notebook: str,
    profile: str = "cpu",
    params: dict[str, Any] | None = None,
    results_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
) -> Run:
    """Set up a notebook run: resolve the profile's parameters, the device and the results folder."""
    prof = get_profile(profile)
    apply_style()  # one figure style for every chapter (legible at the book's width)
    resolved = notebook_params(notebook, profile, params)
    out = Path(results_dir) if results_dir else build_dir() / "results" / profile / notebook
    dev = resolve_device(device or prof.device)
    torch.manual_seed(seed)
    return Run(notebook, prof, resolved, out, dev, Path(data_root) if data_root else None, seed)
