"""What a reader of the book sees: HTML tables with units, verdicts, quiet measurements, API pages, downloads."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from moero.book import show
from moero.book.run import start_run
from moero.book.runner import hide_injected_parameters, toc_files
from moero.book.sphinx_pages import api_markdown, executed_notebook, public_modules
from moero.eval.tables import Table, column_header, format_value

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("physics", "data", "augment", "models", "eval", "train", "book")


def test_headers_carry_units_and_metric_names():
    assert column_header("psnr") == "PSNR (dB)"
    assert column_header("peak_memory_mib") == "peak memory (MiB)"
    assert column_header("train_iterations_per_s") == "train (it/s)"
    assert column_header("it_per_s") == "it/s"
    assert column_header("ssim_total") == "SSIM total"
    assert column_header("paper_memory_gb") == "memory (GB)"
    assert column_header("forward", {"forward": "s"}) == "forward (s)"


def test_numbers_at_the_precision_of_their_quantity():
    assert format_value("ssim", 0.123456) == "0.1235"
    assert format_value("paper_psnr", 30.4) == "30.40"
    assert format_value("peak_memory_mib", 12.345) == "12.3"
    assert format_value("it_per_s", 1.23456) == "1.235"
    assert format_value("files", 3) == "3"
    assert format_value("ssim", float("nan")) == format_value("ssim", None) == "–"


def test_table_renders_one_html_table_with_the_paper_columns_grouped_apart():
    rows = [{"method": "a", "paper_ssim": 0.8, "ssim": 0.5, "psnr": 30.0}]
    tab = Table(rows, caption="Tab. 1 counterpart")
    html = tab._repr_html_()
    assert html.count("<table") == 1 and "<caption>Tab. 1 counterpart</caption>" in html
    assert "```{list-table}" in tab._repr_markdown_(), "the book's view is a MyST list-table, never '|' text"
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert headers[:2] == ["", "paper (reported)"]  # the group row: ours, then the paper's
    assert headers[2:] == ["method", "SSIM", "PSNR (dB)", "SSIM"]  # paper column moved after ours
    paper_cells = re.findall(r"<td style=\"[^\"]*border-left[^\"]*\"[^>]*>([^<]*)</td>", html)
    assert paper_cells == ["0.8000"]


def test_csv_keeps_every_digit_and_reads_back():
    tab = Table([{"m": "x", "ssim": 0.123456789, "n": 3, "none": None}])
    back = Table.from_csv(tab.to_csv())
    assert back.rows == [{"m": "x", "ssim": 0.123456789, "n": 3, "none": None}]


def test_show_result_shows_the_recorded_table_as_html_with_caption_and_units(tmp_path):
    run = start_run("09_efficiency", profile="smoke", results_dir=tmp_path)
    run.table([{"model": "promptmr", "forward": 0.5}], "stages", caption="Seconds per stage", units={"forward": "s"})
    shown = show.show_result(tmp_path, "stages")
    html = shown._repr_html_()
    assert "<caption>Seconds per stage</caption>" in html and "forward (s)" in html
    assert json.loads((tmp_path / "provenance.json").read_text())["files"]["stages.csv"]["units"] == {"forward": "s"}


def test_verdict_rows_and_admonitions():
    """A chapter's verdict rows: judged per chapter at 0.05 / 4 (Holm within), one of the four verdicts, the
    paper's value (or its direction only) beside our interval."""
    import numpy as np

    from moero.eval.stats import Comparison, judge_family

    rng = np.random.default_rng(0)
    strong = 0.05 + rng.normal(0, 0.005, size=(5, 10))
    rows = show.judged_rows([Comparison("strong", strong, 0.01), Comparison("against", -strong, 0.01),
                             Comparison("direction", strong, 1.0), Comparison("few seeds", strong[:3], 0.01)],
                            direction_only=["direction"])
    by = {r["comparison"]: r for r in rows}
    assert by["strong"]["verdict"] == "holds" and by["strong"]["ci_low"] > 0 and by["strong"]["paper"] == "+0.01"
    assert by["against"]["verdict"] == "contradicts"
    assert by["direction"]["paper"] == "+ (direction only)" and by["direction"]["verdict"] == "holds"
    assert by["few seeds"]["verdict"] == "not testable at this scale (3 seeds; a verdict needs 5)"
    # the same effect at the edge: significant at 0.05 alone, not at the chapter's 0.05 / 4 with Holm
    edge = 0.0025 + rng.normal(0, 0.004, size=(5, 10))
    alone = judge_family([Comparison("e", edge, 0.01)], alpha=0.05)[0]
    if alone.p < 0.05 and alone.p > show.CHAPTER_ALPHA:
        assert show.judged_rows([Comparison("e", edge, 0.01)])[0]["verdict"] == "inconclusive at this scale"
    assert show.measured_verdict(-0.2, (-0.3, -0.1), -0.23) == "holds"
    assert show.measured_verdict(0.2, (0.1, 0.3), -0.23) == "contradicts"
    assert show.measured_verdict(-0.05, (-0.1, 0.02), -0.23) == "inconclusive at this scale"
    assert show.measured_verdict(-0.2, (-0.3, -0.1), None).startswith("not testable")
    box = show.admonition("a < b", title="Verdict").data
    assert 'class="admonition note"' in box and "a &lt; b" in box


def test_tables_and_figures_render_as_numbered_myst_with_escaped_cells(tmp_path):
    """The book takes the MyST rendering: a list-table (caption, label, a cell per value, Markdown escaped so a
    value never becomes a list, emphasis or a heading) and a figure with a path relative to notebooks/."""
    md = Table([{"method": "- a *b*", "ssim": 0.71234, "note": "3.", "empty": ""}], caption="Tab. 2 *x*",
               name="tab-x")._repr_markdown_()
    assert md.startswith("```{list-table} Tab. 2 \\*x\\*\n") and ":name: tab-x" in md
    cells = [line[4:] for line in md.splitlines() if line.startswith(("* - ", "  - "))]
    assert cells == ["method", "SSIM", "note", "empty", "\\- a \\*b\\*", "0.7123", "3\\.", " "]
    run = start_run("06_training", profile="smoke", results_dir=tmp_path / "06_training")
    import matplotlib.pyplot as plt

    fig = run.figure(plt.figure(), "curve", caption="A curve")
    text = fig._repr_markdown_()
    assert text.startswith("```{figure} ") and ":name: fig-06_training-curve" in text and "A curve" in text
    assert fig.name.startswith("fig-06_training-curve")
    path = text.splitlines()[0].split(" ", 1)[1]
    assert not Path(path).is_absolute() and (Path(__file__).resolve().parents[1] / "notebooks" / path).is_file()
    assert "data:image/png;base64," in fig._repr_html_()


def test_papermills_injected_parameters_cell_is_hidden():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = 'cpu'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["injected-parameters"]}),
    ])
    hide_injected_parameters(nb)
    assert "remove-cell" not in nb.cells[0].metadata["tags"]
    assert "remove-cell" in nb.cells[1].metadata["tags"]


def test_quiet_native_output_holds_back_native_stderr_unless_the_block_fails(capfd):
    from moero.train.efficiency import quiet_native_output

    with quiet_native_output():
        os.write(2, b"USDT:profiler_start\n")
    assert "USDT" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), quiet_native_output():
        os.write(2, b"the reason it failed\n")
        raise RuntimeError("boom")
    sys.stderr.flush()
    assert "the reason it failed" in capfd.readouterr().err


def test_peak_memory_prints_no_profiler_lines(capfd):
    import torch

    from moero.train.efficiency import peak_memory

    assert peak_memory(lambda: torch.ones(256, 256) @ torch.ones(256, 256)) > 0
    captured = capfd.readouterr()
    assert "USDT" not in captured.err + captured.out


def test_api_pages_cover_every_subpackage_and_every_public_module():
    toc = toc_files(ROOT)
    for sub in SUBPACKAGES:
        assert f"book/api/{sub}" in toc, f"book/api/{sub} is not in _toc.yml"
        page = (ROOT / "book" / "api" / f"{sub}.md").read_text()
        assert f"<!-- moero-api: moero.{sub} -->" in page
        text = api_markdown(f"moero.{sub}")
        modules = public_modules(f"moero.{sub}")
        assert modules and all(f".. automodule:: {m}" in text for m in modules)
        on_disk = {p.stem for p in (ROOT / "moero" / sub).glob("*.py") if not p.stem.startswith("_")}
        on_disk |= {p.parent.name for p in (ROOT / "moero" / sub).glob("*/__init__.py")}  # packages (data.synthetic)
        assert {m.rsplit(".", 1)[1] for m in modules} == on_disk


def test_download_finds_the_execution_of_this_source_only(tmp_path):
    src = "# %%\nx = 1\n"
    import hashlib

    for name, text in (("a.ipynb", src), ("b.ipynb", src + "y = 2\n")):
        meta = {"moero": {"source_sha256": hashlib.sha256(text.encode()).hexdigest()}}
        (tmp_path / name).write_text(json.dumps({"metadata": meta, "cells": []}))
    assert executed_notebook(src, tmp_path) == tmp_path / "a.ipynb"
    assert executed_notebook("# %%\nz = 3\n", tmp_path) is None


def test_bibliography_holds_the_works_the_issue_lists_and_every_citation_resolves():
    bib = (ROOT / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))
    assert len(keys) >= 14
    cited = set()
    for path in [*ROOT.glob("book/*.md"), *ROOT.glob("notebooks/*.py")]:
        for group in re.findall(r"\{cite\}`([^`]+)`", path.read_text()):
            cited |= {k.strip() for k in group.split(",")}
    assert cited and cited <= keys, cited - keys
    assert "li2025branch" in cited


def test_version_is_one_number_in_package_pyproject_citation_and_cli():
    import subprocess

    import moero

    version = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert moero.__version__ == version
    assert re.search(rf"^version: {re.escape(version)}$", (ROOT / "CITATION.cff").read_text(), re.M)
    out = subprocess.run([sys.executable, "-m", "moero", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"moero {version}"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_download_menu_offers_the_books_pdf_once_make_pdf_wrote_it(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from moero.book import sphinx_pages

    monkeypatch.setenv("MOERO_BUILD_DIR", str(tmp_path / "_build"))
    app = SimpleNamespace(builder=SimpleNamespace(format="html"), outdir=str(tmp_path / "html"))

    def context():
        return {"pathto": lambda name, resource: f"../{name}",
                "header_buttons": [{"label": "download-buttons", "buttons": [{"label": "download-source-button"}]}]}

    before = context()
    sphinx_pages._offer_book_pdf(app, "notebooks/06_training", "page.html", before, None)
    assert len(before["header_buttons"][0]["buttons"]) == 1  # no PDF yet: nothing offered
    sphinx_pages.book_pdf().parent.mkdir(parents=True)
    sphinx_pages.book_pdf().write_bytes(b"%PDF-1.4 book")
    after = context()
    sphinx_pages._offer_book_pdf(app, "notebooks/06_training", "page.html", after, None)
    assert after["header_buttons"][0]["buttons"][-1]["url"] == "../_static/moero.pdf"
    sphinx_pages._copy_book_pdf(app, None)
    assert (tmp_path / "html" / "_static" / "moero.pdf").read_bytes() == b"%PDF-1.4 book"
