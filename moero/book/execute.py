"""Executing one notebook with papermill so that a headless run can be watched.

* :class:`CellWatch` follows the running cell (papermill's ``cell_start`` hook, through the ``moero``
  engine registered here): its number, its label (:func:`cell_label`: the cell's first comment, else
  its first line) and when it started. The runner shows that label beside its progress bar, and with
  ``log_output`` prints ``[<notebook>] cell N/M: <label>`` when each cell starts and every line the cell
  prints, prefixed ``[<notebook>]`` (stdout and stderr of the kernel go to the runner's stderr).
* A cell that runs out of time (:func:`cell_timeout`: ``--cell-timeout``, else ``$MOERO_CELL_TIMEOUT``,
  else the profile's :data:`CELL_TIMEOUT_S`) is named by its number and label with the time it ran.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["CELL_TIMEOUT_S", "CellWatch", "cell_label", "cell_timeout", "PrefixWriter", "register_engine"]

# Per-cell limit by profile, so a stalled cell fails the run instead of blocking it forever; the gpu and
# paper profiles train inside a cell for hours (paper: days), so they have none.
CELL_TIMEOUT_S: dict[str, int | None] = {"smoke": 600, "cpu": 3600, "gpu": None, "paper": None}
ENGINE = "moero"


def cell_timeout(profile: str, override: int | None = None) -> int | None:
    """Seconds a cell of ``profile`` may run: ``override`` (``--cell-timeout``), else
    ``$MOERO_CELL_TIMEOUT``, else :data:`CELL_TIMEOUT_S`; 0 or less means no limit."""
    if override is not None:
        return int(override) if int(override) > 0 else None
    env = os.environ.get("MOERO_CELL_TIMEOUT")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"$MOERO_CELL_TIMEOUT must be whole seconds, got {env!r}") from None
        return value if value > 0 else None
    return CELL_TIMEOUT_S.get(profile)


def cell_label(source: str, width: int = 70) -> str:
    """What a cell does, in one line: its first comment (``# Train the model``), else its first line."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    comment = next((line.lstrip("#").strip() for line in lines
                    if line.startswith("#") and not line.startswith(("# %%", "#|", "#!")) and line.lstrip("#").strip()),
                   None)
    label = comment or (lines[0] if lines else "(empty cell)")
    return label if len(label) <= width else label[: width - 3] + "..."


class PrefixWriter:
    """A text stream that writes each line to ``stream``, prefixed with ``[<name>]`` and a space."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name, self.stream, self._open = name, stream or sys.stderr, False

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if not self._open:
                self.stream.write(f"[{self.name}] ")
            self.stream.write(piece)
            self._open = not piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class CellWatch:
    """The running cell of one notebook (module docstring); ``status`` gets ``"cell N/M: label"``."""

    def __init__(self, notebook: str, total: int, log_output: bool = False,
                 status: Callable[[str], None] | None = None, stream: TextIO | None = None) -> None:
        self.notebook, self.total, self.log_output, self.status = notebook, total, log_output, status
        self.stream = stream or sys.stderr
        self.index: int | None = None
        self.label = ""
        self.source = ""
        self.started = time.monotonic()

    def start(self, cell: Any, index: int | None) -> None:
        if getattr(cell, "cell_type", "code") != "code":
            return
        self.index, self.source, self.started = index, str(cell.source), time.monotonic()
        self.label = cell_label(self.source)
        text = f"cell {(index or 0) + 1}/{self.total}: {self.label}"
        if self.status is not None:
            self.status(text)
        if self.log_output:
            self.stream.write(f"[{self.notebook}] {text}\n")
            self.stream.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def describe(self) -> str:
        """``cell N (label)`` of the running cell."""
        return f"cell {(self.index or 0) + 1} ({self.label!r})" if self.index is not None else "a cell"


def register_engine() -> str:
    """Register the ``moero`` papermill engine (papermill's nbclient engine with the :class:`CellWatch`
    hook; pass ``watch=`` to ``papermill.execute_notebook``) and return its name."""
    from papermill.engines import NBClientEngine, papermill_engines

    class WatchedEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            watch: CellWatch | None = kwargs.pop("watch", None)
            if watch is not None:
                start = nb_man.cell_start

                def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    watch.start(cell, cell_index)
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, WatchedEngine)
    return ENGINE
