"""Shared test set-up: small thread count so the 2-core CI machine is not oversubscribed, and the smoke
synthetic dataset generated once per session.

``smoke_data`` is shared by every test that reads it, so it is read-only: a test that adds, changes or
removes files in a dataset tree takes ``smoke_copy`` (a private copy) instead. The session fixture
checks at teardown that no test changed the shared tree.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from moero.data.synthetic import ensure_synthetic

# under pytest-xdist (`make test` runs 2 workers) every worker and the kernels and processes it starts use one
# thread: two workers of 2 OpenMP threads each on 2 cores spin against each other and run many times slower
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every file under ``root``."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The smoke synthetic CMRxRecon2025 tree (seed 0), generated once per session; read-only."""
    root = ensure_synthetic(tmp_path_factory.mktemp("smoke-data") / "smoke", size="smoke", seed=0, progress=False)
    before = _tree_state(root)
    yield root
    after = _tree_state(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared smoke dataset (use smoke_copy): {changed[:5]}"


@pytest.fixture()
def smoke_copy(smoke_data: Path, tmp_path: Path) -> Path:
    """A private copy of the smoke dataset, for a test that changes files in it."""
    return Path(shutil.copytree(smoke_data, tmp_path / "smoke"))
