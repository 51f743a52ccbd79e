"""Where things live: the checkout, the build folder and the default synthetic data root.

Only the book machinery and the command line use this module; the science layers take every path
as an argument.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "build_dir", "default_data_root"]


def repo_root() -> Path:
    """The checkout holding ``_toc.yml`` (the package's parent), else the working directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "_toc.yml").exists() else Path.cwd()


def build_dir() -> Path:
    """Where generated data, executed notebooks and results go (``$MOERO_BUILD_DIR`` or ``_build``)."""
    env = os.environ.get("MOERO_BUILD_DIR")
    return Path(env).resolve() if env else repo_root() / "_build"


def default_data_root(size: str) -> Path:
    """Folder of the embedded synthetic dataset of ``size`` (``smoke``, ``cpu``, ``gpu``, ``paper``)."""
    return build_dir() / "data" / size
