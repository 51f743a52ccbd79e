"""End to end: the smoke book builds with warnings as errors, and renders offline in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moero.book.runner import build_html, run_notebooks, toc_files

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory) -> Path:
    """Run every notebook for the smoke profile and build the HTML into a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOERO_BUILD_DIR", str(out / "_build"))
        run_notebooks("smoke")
        html = build_html("smoke", out=out, strict=True)
    return html


def test_every_toc_page_has_html(smoke_book):
    for entry in toc_files(ROOT):
        page = smoke_book / (str(Path(entry).with_suffix("")) + ".html")
        assert page.exists(), f"{entry} produced no HTML"
        assert page.stat().st_size > 1000


def test_every_declared_result_file_exists_with_complete_provenance(smoke_book):
    results = smoke_book.parents[1] / "_build" / "results" / "smoke"
    provs = sorted(results.glob("*/provenance.json"))
    heavy = [e for e in toc_files(ROOT) if e.startswith("notebooks/") and e != "notebooks/00_profiles"]
    assert len(provs) == len(heavy), (provs, heavy)
    for prov_path in provs:
        prov = json.loads(prov_path.read_text())
        assert prov["complete"], prov_path
        assert prov["profile"] == "smoke" and prov["commit"]
        for name in prov["files"]:
            assert (prov_path.parent / name).stat().st_size > 0, f"{prov_path.parent.name}/{name} missing"


def test_html_loads_no_remote_scripts_or_styles(smoke_book):
    for page in smoke_book.rglob("*.html"):
        text = page.read_text(errors="replace")
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?:)?//[^"]+"', text)
        assert not remote, f"{page.relative_to(smoke_book)} loads remote assets: {remote}"


PROBE = """
<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var imgs = Array.from(document.images).map(function (i) {
      return {src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight, complete: i.complete};
    });
    var displays = Array.from(document.querySelectorAll('div.math'));
    var out = document.createElement('pre');
    out.id = 'moero-probe';
    out.textContent = JSON.stringify({
      mathjax: document.querySelectorAll('mjx-container').length,
      displays: displays.length,
      typeset_displays: displays.filter(function (d) { return d.querySelector('mjx-container'); }).length,
      math_errors: document.querySelectorAll('mjx-merror').length,
      widgets: document.querySelectorAll('.jupyter-widgets').length,
      unboxed_wide_tables: (function () {
        var art = document.querySelector('article') || document.body;
        return Array.from(art.querySelectorAll('table')).filter(function (t) {
          for (var e = t.parentElement; e && e !== art; e = e.parentElement) {
            var ox = getComputedStyle(e).overflowX;
            if (ox === 'auto' || ox === 'scroll') { return false; }
          }
          var cols = t.rows.length ? t.rows[t.rows.length - 1].cells.length : 0;
          return cols > 10 || t.getBoundingClientRect().width > art.clientWidth + 1;
        }).length;
      })(),
      images: imgs
    });
    document.body.appendChild(out);
  }, 5000);
});
</script>
"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def probe(page: Path) -> dict:
    """Load ``page`` from disk in headless Chromium with networking off; report MathJax and images."""
    browser = chromium()
    probe_page = page.with_name("_probe_" + page.name)
    profile_dir = page.parent / f".chromium-profile-{page.stem}"  # one per page: probes may run in parallel
    probe_page.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
        "--allow-file-access-from-files", f"--user-data-dir={profile_dir}",
        "--virtual-time-budget=20000", "--window-size=1280,2000", "--dump-dom", probe_page.as_uri(),
    ]
    # a private network namespace takes the network away for real where we may create one
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    probe_page.unlink()
    shutil.rmtree(profile_dir, ignore_errors=True)
    match = re.search(r'<pre id="moero-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"probe did not run; chromium said: {proc.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(match.group(1)))


def test_browser_typesets_maths_and_decodes_figures_offline(smoke_book):
    if chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); browser check not run")
    intro = probe(smoke_book / "book" / "intro.html")
    assert intro["mathjax"] >= 10, intro
    figure_pages = [
        p for p in sorted((smoke_book / "notebooks").glob("*.html"))
        if not p.name.startswith("_probe_") and re.search(r"<img[^>]+src=\"[^\"]*\.png\"", p.read_text())
    ]
    assert figure_pages, "no executed notebook page shows a figure"
    report = probe(figure_pages[0])
    pngs = [i for i in report["images"] if (i["src"] or "").endswith(".png")]
    assert pngs and all(i["w"] > 0 and i["h"] > 0 for i in pngs), report


def test_browser_renders_widget_snapshots_offline(smoke_book):
    if chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); browser check not run")
    pages = [
        p for p in sorted((smoke_book / "notebooks").glob("*.html"))
        if not p.name.startswith("_probe_") and "application/vnd.jupyter.widget-view+json" in p.read_text()
    ]
    assert pages, "no executed notebook page carries a widget snapshot"
    for page in pages:
        assert probe(page)["widgets"] > 0, f"{page.name}: widget snapshot not rendered"


# ---------------------------------------------------------------------------- every page, as a reader sees it
RESULTS_CHAPTERS = ("06_training", "07_augmentation_ablation", "08_model_ablation", "09_efficiency")
JUNK = ("USDT", "Traceback", "Warning:", "it/s]")


def toc_pages(html_root: Path) -> list[Path]:
    """The HTML page of every ``_toc.yml`` entry (the API pages included)."""
    return [html_root / (entry + ".html") for entry in toc_files(ROOT)]


def _soup(path: Path):
    from bs4 import BeautifulSoup

    return BeautifulSoup(path.read_text(errors="replace"), "html.parser")


def page_problems(page: Path, html_root: Path, ids: dict[Path, set[str]]) -> list[str]:
    """What a reader would trip over on ``page``, read from its HTML: Markdown tables left as text, junk in
    outputs, labelled equations without a number, internal links (``{eq}``, ``{cite}``, ``{doc}``) to
    nowhere."""
    soup = _soup(page)
    name = page.relative_to(html_root).as_posix()
    problems = []
    main = soup.find("article") or soup.body
    for tag in main.find_all(["pre", "script", "style"]):
        tag.decompose()
    text = main.get_text(" ")
    for needle in ("| ---", "|---|"):
        if needle in text:
            problems.append(f"{name}: {needle!r} outside <pre> (a Markdown table left as text)")
    soup = _soup(page)
    outputs = " ".join(o.get_text(" ") for o in soup.select("div.cell_output"))
    problems += [f"{name}: {junk!r} in a cell output" for junk in JUNK if junk in outputs]
    if re.search(r"\d+%\|", outputs):
        problems.append(f"{name}: a progress bar in a cell output")
    # figures and tables of the chapters: numbered and captioned by Sphinx (moero.book.display, Table)
    for img in soup.select("div.cell_output img"):
        fig = img.find_parent("figure")
        if fig is None or not fig.select_one("figcaption span.caption-number"):
            problems.append(f"{name}: a figure ({img.get('src', '')[-40:]}) without a numbered caption")
    for table in soup.select("div.cell_output table"):
        if not table.select_one("caption span.caption-number"):
            problems.append(f"{name}: a table without a numbered caption")
    page_text = page.read_text(errors="replace")
    for leak in {str(ROOT), str(html_root.parent)}:
        if leak in page_text:
            problems.append(f"{name}: the build machine's path {leak} appears in the page")
    if "reference section" in page_text or "reference.md" in page_text:
        problems.append(f"{name}: points to 'reference section' (a document outside the book)")
    for div in soup.select("div.math[id^=equation-]"):
        if not div.select_one("span.eqno"):
            problems.append(f"{name}: labelled equation {div['id']} has no number")
    for a in soup.select("article a.reference.internal[href]"):
        href = a["href"]
        target, _, frag = href.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.is_file():
            problems.append(f"{name}: link {href} points to a missing page")
            continue
        if frag:
            if path not in ids:
                ids[path] = {t["id"] for t in _soup(path).find_all(id=True)}
            if frag not in ids[path]:
                problems.append(f"{name}: link {href} points to a missing anchor")
    return problems


def test_every_page_reads_as_a_reader_expects(smoke_book):
    ids: dict[Path, set[str]] = {}
    problems = []
    for page in toc_pages(smoke_book):
        problems += page_problems(page, smoke_book, ids)
    assert not problems, "\n".join(problems)


def test_equation_and_citation_links_resolve_to_numbered_equations_and_the_bibliography(smoke_book):
    intro = _soup(smoke_book / "book" / "intro.html")
    numbers = [s.get_text(strip=True).rstrip("#\uf0c1¶") for s in intro.select("div.math[id^=equation-] span.eqno")]
    assert [n[: n.index(")") + 1] for n in numbers] == [f"({i})" for i in range(1, 11)], numbers
    eq_links = cite_links = 0
    for page in toc_pages(smoke_book):
        soup = _soup(page)
        eq_links += len(soup.select('article a[href*="#equation-"]'))
        cite_links += len(soup.select('article a[href*="references.html#"]'))
    assert eq_links >= 10 and cite_links >= 10, (eq_links, cite_links)
    refs = _soup(smoke_book / "book" / "references.html").get_text(" ").lower()  # the style lowercases titles
    for work in ("Branch Learning", "PromptMR", "Rethinking Deep Unrolled", "fastMRI", "End-to-End Variational",
                 "CMRxRecon2024", "CMRxRecon2025", "ESPIRiT", "Sensitivity Encoding", "Neural Discrete",
                 "Sparsely-Gated", "Switch Transformers", "papermill", "Jupyter Book"):
        assert work.lower() in refs, f"{work} missing from the References page"


def test_results_chapters_show_html_tables(smoke_book):
    for stem in RESULTS_CHAPTERS:
        soup = _soup(smoke_book / "notebooks" / f"{stem}.html")
        assert soup.select("div.cell_output table"), f"{stem}: no HTML table in its outputs"


def test_chapters_offer_their_executed_notebook_for_download(smoke_book):
    for entry in toc_files(ROOT):
        if not entry.startswith("notebooks/"):
            continue
        page = smoke_book / f"{entry}.html"
        text = page.read_text()
        assert f"_sources/{entry}.ipynb" in text and f"_sources/{entry}.py" in text, f"{entry}: no .ipynb download"
        nb = json.loads((smoke_book / "_sources" / f"{entry}.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert outputs, f"{entry}: the downloadable notebook is not an executed one"


def test_parameters_cell_is_shown_once(smoke_book):
    for stem in RESULTS_CHAPTERS:
        text = (smoke_book / "notebooks" / f"{stem}.html").read_text()
        assert text.count("profile</span> <span class=\"o\">=</span>") == 1, f"{stem}: parameters shown twice"


def test_browser_typesets_every_equation_decodes_every_image_and_fits_every_table(smoke_book):
    """Every page at 1280 px: display equations typeset, images decoded, and no table wider than the text column
    or over 10 columns unless it sits in its own scroll box (Sphinx tables do; the stylesheet fixes their first
    column)."""
    if chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); browser check not run")
    from concurrent.futures import ThreadPoolExecutor

    pages = toc_pages(smoke_book)
    with ThreadPoolExecutor(max_workers=3) as pool:
        reports = dict(zip(pages, pool.map(probe, pages), strict=True))
    problems = []
    for page, rep in reports.items():
        name = page.relative_to(smoke_book).as_posix()
        if rep["typeset_displays"] != rep["displays"] or rep["math_errors"]:
            problems.append(f"{name}: {rep['typeset_displays']} of {rep['displays']} display equations typeset, "
                            f"{rep['math_errors']} MathJax errors")
        bad = [i["src"] for i in rep["images"] if not (i["w"] > 0 and i["h"] > 0)]
        if bad:
            problems.append(f"{name}: images not decoded: {bad}")
        if rep["unboxed_wide_tables"]:
            problems.append(f"{name}: {rep['unboxed_wide_tables']} table(s) wider than the column outside a scroll box")
    assert not problems, "\n".join(problems)
    assert sum(r["displays"] for r in reports.values()) >= 20


def test_papermill_runs_a_chapter_source_through_jupytext_into_the_same_results_folder(tmp_path):
    """The documented route for a GPU user: ``jupytext --to ipynb -o - <chapter>.py | papermill - out.ipynb``
    (about 30 s: the chapter generates the smoke data itself)."""
    build = tmp_path / "_build"
    bindir = Path(sys.executable).parent
    stem = "03_image_augmentation"
    cmd = (f"{bindir / 'jupytext'} --to ipynb -o - notebooks/{stem}.py "
           f"| {bindir / 'papermill'} - {tmp_path / 'out.ipynb'} -p profile smoke --no-progress-bar")
    env = {**os.environ, "MOERO_BUILD_DIR": str(build)}
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prov = json.loads((build / "results" / "smoke" / stem / "provenance.json").read_text())
    assert prov["complete"] and prov["profile"] == "smoke" and prov["files"]
    for name in prov["files"]:
        assert (build / "results" / "smoke" / stem / name).stat().st_size > 0


def test_reproduction_page_lists_the_profiles_as_profiles_yaml_defines_them(smoke_book):
    """The profile table of the reproduction page is generated from moero/book/profiles.yaml (no stale sizes)."""
    from moero.book.profiles import PROFILES

    soup = _soup(smoke_book / "book" / "reproduction.html")
    table = next(t for t in soup.select("article table") if "model preset" in t.get_text())
    rows = {tr.find_all("td")[0].get_text(strip=True): [td.get_text(strip=True) for td in tr.find_all("td")]
            for tr in table.select("tbody tr") if tr.find_all("td")}
    for name, prof in PROFILES.items():
        assert name in rows, sorted(rows)
        assert rows[name][4] == prof.results["train"]["preset"], (name, rows[name])
        assert rows[name][5] == str(len(prof.results["seeds"])), (name, rows[name])


def test_reproduction_page_states_measured_wall_times_and_chapters_show_published_results(smoke_book):
    """The wall-time table holds this build's smoke run and every committed profile; each results chapter shows
    the committed results of a heavier profile (with provenance) when there are any, else says there are none,
    and the claims page names the profile per row."""
    import csv

    from moero.book.show import published_results

    soup = _soup(smoke_book / "book" / "reproduction.html")
    table = next(t for t in soup.select("article table") if "wall time" in t.get_text() and "machine" in t.get_text())
    rows = {tr.find_all("td")[0].get_text(strip=True): [td.get_text(strip=True) for td in tr.find_all("td")]
            for tr in table.select("tbody tr") if tr.find_all("td")}
    assert rows["smoke"][1] == "this build" and rows["smoke"][3].endswith(" min"), rows
    committed = sorted(p.name for p in (ROOT / "book" / "results").glob("*") if p.is_dir())
    for name in committed:
        assert rows[name][1] == "committed" and rows[name][3].endswith(" min"), rows[name]
    claims = list(csv.DictReader(open(smoke_book.parents[1] / "_build" / "results" / "smoke" / "claims" /
                                      "claims.csv")))
    for stem in ("06_training", "07_augmentation_ablation", "08_model_ablation", "09_efficiency"):
        text = _soup(smoke_book / "notebooks" / f"{stem}.html").get_text(" ")
        src = published_results(stem, "smoke")
        if src is None:
            assert "Published results: none" in text
            continue
        assert f"Published results: {src.kind} profile" in text and str(src.meta["commit"])[:10] in text
        assert "Sign check" in text
        for reading in src.meta.get("readings", []):  # what the published run concluded, in its own words
            assert f"{reading['title']} ({src.kind} run)" in text and " ".join(reading["text"].split()[:8]) in text
        assert {r["profile"] for r in claims if r["chapter"] == stem} == {src.kind}


def test_build_pdf_prints_the_single_page_book_with_chromium(tmp_path, monkeypatch):
    """``build_pdf`` prints the single-page build (written as book/intro.html, styles linked from the top folder)
    with Chromium into ``_build/pdf/moero.pdf`` and copies it into the HTML build; the full book is what
    ``make pdf`` prints (measured by hand: it takes minutes, so the suite prints a two-chapter stand-in)."""
    if chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); PDF not printed")
    from moero.book import runner

    single = tmp_path / "_build" / "singlehtml"
    (single / "book").mkdir(parents=True)
    (single / "_static").mkdir()
    (single / "_static" / "style.css").write_text("h1 { color: rgb(10, 20, 30); }")
    chapters = "".join(f'<section id="document-notebooks/{c}"><h1>{c}</h1>' + "<p>text</p>" * 300 + "</section>"
                       for c in ("06_training", "08_model_ablation"))
    (single / "book" / "intro.html").write_text(
        f'<html><head><link rel="stylesheet" href="_static/style.css"/></head><body>{chapters}</body></html>')
    monkeypatch.setattr(runner, "build_html", lambda *a, **k: single)
    html = tmp_path / "_build" / "html"
    html.mkdir()
    pdf = runner.build_pdf("smoke", out=tmp_path, html=html)
    data = pdf.read_bytes()
    assert pdf == tmp_path / "_build" / "pdf" / "moero.pdf" and data[:5] == b"%PDF-"
    assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 4
    assert (html / "_static" / "moero.pdf").read_bytes() == data
