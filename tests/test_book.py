"""End to end: the smoke book builds with warnings as errors, and renders offline in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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
      return {src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight};
    });
    var out = document.createElement('pre');
    out.id = 'moero-probe';
    out.textContent = JSON.stringify({
      mathjax: document.querySelectorAll('mjx-container').length,
      widgets: document.querySelectorAll('.jupyter-widgets').length,
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
    probe_page.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
        "--allow-file-access-from-files", f"--user-data-dir={page.parent / '.chromium-profile'}",
        "--virtual-time-budget=20000", "--dump-dom", probe_page.as_uri(),
    ]
    # a private network namespace takes the network away for real where we may create one
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
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
