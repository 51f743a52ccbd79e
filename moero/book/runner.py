"""Run the book's notebooks headless with papermill, then build the HTML with Jupyter Book 1.

``python -m moero book --profile NAME`` converts each Jupytext ``py:percent`` source listed in
``_toc.yml`` in memory, executes it with the papermill API into
``_build/executed/<profile>/<stem>.ipynb`` and builds ``_build/html``. The book renders those
executed notebooks (see :func:`read_notebook`) without running them again; notebooks marked
``light`` in their Jupytext header are executed by Jupyter Book at build time instead.

Results are replaced atomically: the notebook's :class:`moero.book.run.Run` writes into a staging
folder, swapped in only when the notebook completed, so a failed or killed run leaves the last good
results, provenance and executed notebook byte-identical. A rerun is skipped only when the source,
parameters and package are unchanged *and* every results folder is intact (complete provenance, every
recorded file present with its SHA-256). ``-p`` values are checked against the types of the profile's
values (:func:`moero.book.params.split_params`) before any notebook runs. One run per (profile, notebook)
at a time: a second is refused with an error naming the holder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moero.book.execute import CellWatch, PrefixWriter, cell_label, cell_timeout, register_engine
from moero.book.params import check_param_type, coerce_param, split_params
from moero.book.profiles import get_profile
from moero.book.run import STAGING_ENV, changed_files, file_sha256, sources_hash
from moero.book.toc import NOTEBOOK_FMT, is_light, needs, read_source, select_notebooks, toc_files, toc_notebooks
from moero.data.synthetic import ensure_synthetic
from moero.paths import build_dir, default_data_root, repo_root
from moero.train.rundir import RunLock

__all__ = [
    "NotebookFailed",
    "NotebookResult",
    "toc_files",
    "toc_notebooks",
    "build_pdf",
    "run_notebook",
    "run_notebooks",
    "select_notebooks",
    "results_intact",
    "build_html",
    "read_notebook",
    "hide_injected_parameters",
    "coerce_param",
    "check_param_type",
    "split_params",
]

KERNEL = "python3"


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the failing cell and where the partial output is."""

    def __init__(self, notebook: str, exec_count: int | None, source: str, ename: str, evalue: str, partial: Path):
        self.notebook, self.exec_count, self.source, self.ename, self.evalue, self.partial = (
            notebook, exec_count, source, ename, evalue, partial,
        )
        super().__init__(
            f"notebook {notebook} failed in cell In [{exec_count}] ({cell_label(source)!r}) with {ename}: {evalue}\n"
            f"partial executed notebook kept at {partial}"
        )


@dataclass
class NotebookResult:
    notebook: str
    executed: Path
    skipped: bool
    wall_time_s: float


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_hash() -> str:
    """Hash of the package sources: a change in ``moero`` re-runs the notebooks."""
    pkg = Path(__file__).resolve().parents[1]  # the whole package, not only moero/book
    return sources_hash([pkg], pkg)


def run_notebook(
    path: Path,
    profile: str,
    out_dir: Path,
    parameters: dict[str, Any] | None = None,
    force: bool = False,
    progress_bar: bool = True,
    log_output: bool = False,
    timeout: int | None = None,
    status: Any = None,
) -> NotebookResult:
    """Execute one Jupytext notebook with papermill; skip when its source, parameters and package are unchanged.

    ``log_output``, ``timeout`` (seconds per cell) and ``status`` (gets ``"cell N/M: label"``): see
    :mod:`moero.book.execute`.

    One run per (profile, notebook) at a time: a lock ``<out_dir>/.<stem>.lock`` is held throughout, and a
    second run is refused with an error naming the holder's PID (:class:`moero.train.rundir.RunLockedError`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir / path.stem, what=f"notebook {path.stem} of profile {profile!r}",
                 hint="run another chapter"):
        watch = CellWatch(path.stem, 0, log_output, status)
        return _run_notebook(path, profile, out_dir, parameters, force, progress_bar, watch, timeout)


def _file_state(path: Path) -> str:
    """SHA-256 of a file's bytes ("" when it does not exist)."""
    return file_sha256(path) if path.is_file() else ""


def _run_notebook(path: Path, profile: str, out_dir: Path, parameters: dict[str, Any] | None, force: bool,
                  progress_bar: bool, watch: CellWatch, timeout: int | None) -> NotebookResult:
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    text, nb = read_source(path)
    stem = path.stem
    parameters = dict(parameters or {})
    parameters.setdefault("profile", profile)
    # a chapter that reads others' results (moero: needs) reruns when their provenance changed
    upstream = {need: _file_state(build_dir() / "results" / profile / need / "provenance.json") for need in needs(nb)}
    key = _sha256(json.dumps([_sha256(text.encode()), parameters, package_hash(), upstream], sort_keys=True).encode())
    final = out_dir / f"{stem}.ipynb"
    if final.exists() and not force:
        try:
            old = json.loads(final.read_text()).get("metadata", {}).get("moero", {})
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key and "results" in old and all(results_intact(Path(f)) for f in old["results"]):
            return NotebookResult(stem, final, True, 0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    nb.metadata["moero"] = {
        **nb.metadata.get("moero", {}),
        "source_sha256": _sha256(text.encode()),
        "profile": profile,
        "parameters": parameters,
        "key": key,
    }
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    partial = out_dir / f"{stem}.partial.ipynb"
    registry = out_dir / f".{stem}.staging.jsonl"  # the kernel's Run records its staging folders here
    registry.write_text("")
    t0 = time.perf_counter()
    watch.total = len(nb.cells) + 1  # papermill adds the injected-parameters cell
    limit = cell_timeout(profile, timeout)
    streams = {"stdout_file": PrefixWriter(stem), "stderr_file": PrefixWriter(stem)} if watch.log_output else {}
    env_backup = {name: os.environ.get(name) for name in ("MPLBACKEND", STAGING_ENV)}
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ[STAGING_ENV] = str(registry.resolve())
    try:
        papermill.execute_notebook(
            nb,
            str(partial),
            parameters=parameters,
            kernel_name=KERNEL,
            progress_bar=progress_bar,
            cwd=str(path.parent.parent),
            log_output=False,
            execution_timeout=limit,
            engine_name=register_engine(),
            watch=watch,
            **streams,
        )
    except PapermillExecutionError as err:
        raise NotebookFailed(stem, err.exec_count, err.source, err.ename, err.evalue, partial) from None
    except CellTimeoutError:
        raise NotebookFailed(stem, (watch.index or 0) + 1, watch.source, "CellTimeoutError",
                             f"{watch.describe()} ran out of time after {watch.elapsed():.0f} s (limit {limit} s per "
                             "cell: --cell-timeout SECONDS or $MOERO_CELL_TIMEOUT, 0 for none)", partial) from None
    finally:
        for name, value in env_backup.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    # the notebook completed: swap its results in, then record them in the executed notebook and publish it
    folders = _swap_in_results(registry)
    done = json.loads(partial.read_text())
    done.setdefault("metadata", {}).setdefault("moero", {})["results"] = [str(f) for f in folders]
    partial.write_text(json.dumps(done, indent=1, ensure_ascii=False) + "\n")
    os.replace(partial, final)
    registry.unlink(missing_ok=True)
    return NotebookResult(stem, final, False, time.perf_counter() - t0)


def _swap_in_results(registry: Path) -> list[Path]:
    """Replace each final results folder named in ``registry`` by its staging folder (old one renamed
    aside first, then removed); remove stale staging folders of earlier failed runs. Returns the finals."""
    pairs: dict[str, str] = {}
    for line in registry.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            pairs[rec["final"]] = rec["staging"]  # a notebook that started two runs into one folder: the last wins
    finals = []
    for final_name, staging_name in pairs.items():
        final, staging = Path(final_name), Path(staging_name)
        if not staging.is_dir():
            continue
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        for stale in final.parent.glob(f"{final.name}.staging-*"):  # partials of failed runs
            shutil.rmtree(stale, ignore_errors=True)
        finals.append(final)
    return finals


def results_intact(folder: Path) -> bool:
    """Whether ``folder`` holds a complete ``provenance.json`` whose every recorded file is present with
    its recorded SHA-256 (the skip check of :func:`run_notebook`)."""
    try:
        prov = json.loads((folder / "provenance.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(prov.get("complete")) and not changed_files(folder, prov.get("files", {}))


def run_notebooks(
    profile: str = "cpu",
    data: str | Path | None = None,
    params: dict[str, Any] | None = None,
    only: list[str] | None = None,
    force: bool = False,
    root: Path | None = None,
    log_output: bool = False,
    timeout: int | None = None,
) -> list[NotebookResult]:
    """Execute the book's (non-light) notebooks for ``profile``, in run order
    (:func:`moero.book.toc.run_order`); the progress bar shows the running cell (``log_output``, ``timeout``:
    :func:`run_notebook`)."""
    from tqdm.auto import tqdm

    prof = get_profile(profile)
    root = root or repo_root()
    out_dir = build_dir() / "executed" / profile
    # names and parameter types first: a bad -p value fails before any data is generated or kernel starts
    notebooks = select_notebooks(only, root)
    per_notebook = split_params(profile, [p.stem for p in notebooks], params or {})
    if data is None:
        # the embedded synthetic data of the profile, generated once (a stamp makes reruns instant)
        ensure_synthetic(default_data_root(prof.dataset), size=prof.dataset, seed=0)
    results = []
    bar = tqdm(notebooks, desc=f"notebooks [{profile}]", unit="nb", dynamic_ncols=True)
    for path in bar:
        bar.set_postfix_str(path.stem)
        parameters: dict[str, Any] = {"profile": profile, "params": per_notebook[path.stem]}
        if data is not None:
            parameters["data_root"] = str(data)

        def status(text: str, stem: str = path.stem) -> None:
            bar.set_postfix_str(f"{stem} {text}")

        results.append(run_notebook(path, profile, out_dir, parameters, force=force, progress_bar=False,
                                    log_output=log_output, timeout=timeout, status=status))
    return results


def build_html(profile: str = "cpu", root: Path | None = None, out: Path | None = None, strict: bool = True,
               builder: str = "html") -> Path:
    """Build the HTML book (Jupyter Book 1, warnings as errors) from the executed notebooks of ``profile``
    (``builder`` ``singlehtml``: the whole book as one page, what :func:`build_pdf` prints)."""
    root = root or repo_root()
    out = out or build_dir().parent
    env = dict(os.environ)
    env["MOERO_PROFILE"] = profile
    env["MOERO_BUILD_DIR"] = str(build_dir())
    jb = "from jupyter_book.cli.main import main; main()"
    # --all: Sphinx's incremental build tracks the .py sources only, not the executed notebooks the reader
    # serves, so a re-executed chapter whose source did not change would keep its stale page
    cmd = [sys.executable, "-c", jb, "build", str(root), "--path-output", str(out), "--builder", builder, "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, env=env, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see the warnings above")
    return out / "_build" / builder


def build_pdf(profile: str = "cpu", root: Path | None = None, out: Path | None = None, html: Path | None = None
              ) -> Path:
    """One PDF of the whole book: the single-page HTML build printed by headless Chromium (figures, tables and
    MathJax equations as the browser renders them, offline), written to ``<out>/_build/pdf/moero.pdf``. An HTML
    build made after it offers the PDF in every page's download menu (``moero.book.sphinx_pages``); ``html``: an
    HTML build made before, to copy it into now."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        raise RuntimeError("make pdf needs Chromium (apt-get install chromium) to print the book")
    single = build_html(profile, root, out, builder="singlehtml")
    # the single page is written as the root document (book/intro.html) but links its styles and images from
    # the build's top folder, so it is printed from there
    page = single / "moero-book.html"
    page.write_text((single / "book" / "intro.html").read_text())
    pdf = single.parent / "pdf" / "moero.pdf"
    pdf.parent.mkdir(parents=True, exist_ok=True)
    tmp = pdf.with_suffix(".tmp.pdf")
    with tempfile.TemporaryDirectory(prefix="moero-chromium-") as profile_dir:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", f"--user-data-dir={profile_dir}", "--allow-file-access-from-files",
               "--virtual-time-budget=60000", "--no-pdf-header-footer", f"--print-to-pdf={tmp}",
               page.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size < 10_000:
        raise RuntimeError(f"Chromium did not print the book to PDF (exit {proc.returncode}): {proc.stderr[-1500:]}")
    os.replace(tmp, pdf)
    if html is not None and html.is_dir():
        (html / "_static").mkdir(exist_ok=True)
        shutil.copyfile(pdf, html / "_static" / "moero.pdf")
    return pdf


def hide_injected_parameters(nb: Any) -> Any:
    """Tag papermill's ``injected-parameters`` cell ``remove-cell``, so a page shows one parameters cell
    (the chapter's own; the values a run used are in its ``provenance.json``)."""
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    return nb


def read_notebook(text: str, **kwargs: Any):
    """myst-nb reader for ``notebooks/*.py``: the executed notebook of this source, else the source.

    The executed notebook is looked up in ``$MOERO_BUILD_DIR/executed/$MOERO_PROFILE`` by the hash of
    the source text, so a stale execution is never shown. A light notebook without an execution is
    returned as is (Jupyter Book executes it); a heavy one without an execution is an error.
    """
    import jupytext
    import nbformat

    nb = jupytext.reads(text, fmt=NOTEBOOK_FMT)
    if is_light(nb):
        return nb
    profile = os.environ.get("MOERO_PROFILE", "cpu")
    executed = build_dir() / "executed" / profile
    sha = _sha256(text.encode())
    for path in sorted(executed.glob("*.ipynb")):
        if path.name.endswith(".partial.ipynb"):
            continue
        meta = json.loads(path.read_text()).get("metadata", {}).get("moero", {})
        if meta.get("source_sha256") == sha:
            done = nbformat.read(path, as_version=4)
            done.metadata.setdefault("mystnb", {})["execution_mode"] = "off"
            hide_injected_parameters(done)
            return done
    title = next((c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source), "?")
    raise RuntimeError(
        f"notebook {title!r} has no up-to-date execution for profile {profile!r} in {executed}; "
        f"run: python -m moero book --profile {profile}"
    )
