"""Sphinx extension: serve MathJax and the ipywidgets embed scripts from the built site itself.

At build time the pinned packages are fetched from the npm registry with ``npm pack``, cached in
``$MOERO_CACHE/assets`` (default ``~/.cache/moero/assets``, never committed), and added to
``html_static_path``, so the HTML renders maths and widget snapshots with no network.
``_config.yml`` points ``mathjax_path`` and ``nb_ipywidgets_js`` at these local copies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

__all__ = ["ASSETS", "cache_dir", "install_assets", "setup"]

# package spec -> (folder inside the tarball, destination under _static)
ASSETS: dict[str, tuple[str, str]] = {
    "mathjax@3.2.2": ("package/es5", "mathjax"),
    "@jupyter-widgets/html-manager@1.0.15": ("package/dist", "jupyter-widgets"),
    "requirejs@2.3.7": ("package", "requirejs"),
}


def cache_dir() -> Path:
    """Downloads shared by builds and tests: ``$MOERO_CACHE`` or ``~/.cache/moero``."""
    return Path(os.environ.get("MOERO_CACHE", Path.home() / ".cache" / "moero"))


def install_assets(dest: Path | None = None) -> Path:
    """Fetch and unpack :data:`ASSETS` into ``dest`` (default ``<cache>/assets``); idempotent."""
    dest = dest or cache_dir() / "assets"
    stamp = dest / ".installed"
    wanted = "\n".join(sorted(ASSETS))
    if stamp.exists() and stamp.read_text() == wanted:
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("building the book needs npm (Node.js) to fetch MathJax and the widget scripts")
    staging = Path(tempfile.mkdtemp(prefix="moero-assets-"))
    try:
        for spec, (inner, target) in ASSETS.items():
            proc = subprocess.run(
                [npm, "pack", spec, "--silent", "--pack-destination", str(staging)],
                capture_output=True, text=True, cwd=staging,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"npm pack {spec} failed: {proc.stderr.strip()}")
            tgz = staging / proc.stdout.strip().splitlines()[-1]
            unpack = staging / target
            with tarfile.open(tgz) as tar:
                tar.extractall(unpack, filter="data")
            out = dest / target
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(unpack / inner, out, ignore=shutil.ignore_patterns("*.map"))
        stamp.write_text(wanted)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _builder_inited(app) -> None:
    if app.builder.format != "html":
        return
    app.config.html_static_path = [*app.config.html_static_path, str(install_assets())]


def setup(app):
    app.connect("builder-inited", _builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
