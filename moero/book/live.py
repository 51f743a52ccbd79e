"""Drive a chapter's widgets in a live kernel, as a browser does, for tests and benchmarks.

:class:`LiveNotebook` executes a Jupytext chapter with nbclient, keeps its kernel running, and moves a
widget by sending the comm message a Jupyter front end sends when a slider is dragged
(``{"method": "update", "state": {"value": ...}}`` to the widget's model id, ipywidgets protocol 2).
It returns what the kernel answered on IOPub: the ``update_display_data`` messages (figures and
readouts redrawn in place), any new ``display_data`` and the seconds until the kernel was idle again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moero.book.runner import KERNEL, NOTEBOOK_FMT

__all__ = ["Update", "LiveNotebook"]


@dataclass
class Update:
    """The kernel's answer to one widget move."""

    seconds: float
    updates: list[dict[str, Any]] = field(default_factory=list)  # update_display_data contents
    displays: list[dict[str, Any]] = field(default_factory=list)  # new display_data contents
    errors: list[dict[str, Any]] = field(default_factory=list)  # error contents (tracebacks)
    streams: list[str] = field(default_factory=list)

    def by_mime(self, mime: str) -> list[Any]:
        """The ``mime`` payloads of the in-place updates, in arrival order."""
        return [u["data"][mime] for u in self.updates if mime in u.get("data", {})]


class LiveNotebook:
    """A chapter executed in a kernel that stays alive: ``with LiveNotebook(path, params) as nb: nb.move(...)``.

    ``parameters`` are injected after the cell tagged ``parameters`` (as papermill does); ``cwd`` is the
    kernel's working folder; ``timeout`` bounds each cell and each widget move, in seconds.
    """

    def __init__(self, path: Path, parameters: dict[str, Any] | None = None, cwd: Path | None = None,
                 timeout: float = 300.0) -> None:
        import jupytext
        import nbformat
        from nbclient import NotebookClient

        nb = jupytext.reads(Path(path).read_text(), fmt=NOTEBOOK_FMT)
        tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
        where = tagged[0] + 1 if tagged else 0
        source = "\n".join(f"{k} = {v!r}" for k, v in (parameters or {}).items())
        nb.cells.insert(where, nbformat.v4.new_code_cell(source))
        self.nb, self.timeout = nb, float(timeout)
        self.client = NotebookClient(nb, kernel_name=KERNEL, timeout=int(timeout),
                                     resources={"metadata": {"path": str(cwd or Path(path).parent)}})
        self._loop = asyncio.new_event_loop()
        self._context: Any = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LiveNotebook:
        self._context = self.client.async_setup_kernel()
        self._run(self._context.__aenter__())
        try:
            for index, cell in enumerate(self.nb.cells):
                self._run(self.client.async_execute_cell(cell, index))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._context is not None:
            self._run(self._context.__aexit__(None, None, None))
            self._context = None
        self._loop.close()

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    # ------------------------------------------------------------------ widgets
    def widgets(self) -> dict[str, dict[str, Any]]:
        """``model id -> state`` of every widget the notebook created (as nbclient recorded them)."""
        return dict(self.client.widget_state)

    def find(self, model: str, description: str) -> str:
        """Model id of the widget of class ``model`` (e.g. ``FloatSliderModel``) with that ``description``."""
        ids = [k for k, s in self.widgets().items()
               if s.get("_model_name") == model and s.get("description") == description]
        if len(ids) != 1:
            raise LookupError(f"expected one {model} described {description!r}, found {len(ids)}")
        return ids[0]

    def outputs(self) -> list[dict[str, Any]]:
        """Every output of the executed cells, in order."""
        return [o for c in self.nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]

    def move(self, model_id: str, value: Any) -> Update:
        """Set a widget's ``value`` as a browser does and collect the kernel's answer until it is idle."""
        return self._run(self._move(model_id, value))

    async def _move(self, model_id: str, value: Any) -> Update:
        kc = self.client.kc
        data = {"method": "update", "state": {"value": value}, "buffer_paths": []}
        msg = kc.session.msg("comm_msg", {"comm_id": model_id, "data": data})
        start = time.perf_counter()
        kc.shell_channel.send(msg)
        answer = Update(0.0)
        while True:
            reply = await kc.get_iopub_msg(timeout=self.timeout)
            if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind, content = reply["msg_type"], reply["content"]
            if kind == "status" and content["execution_state"] == "idle":
                answer.seconds = time.perf_counter() - start
                return answer
            if kind == "update_display_data":
                answer.updates.append(content)
            elif kind in ("display_data", "execute_result"):
                answer.displays.append(content)
            elif kind == "error":
                answer.errors.append(content)
            elif kind == "stream":
                answer.streams.append(content["text"])
