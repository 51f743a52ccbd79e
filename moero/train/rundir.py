"""Ownership of a run folder: one process at a time, and nothing of a previous run is ever deleted.

* :class:`RunLock`: an exclusive lock (``filelock``: ``flock`` on Unix, ``msvcrt`` on Windows) on
  ``.<run>.lock`` beside the run folder, held for the whole run. The operating system releases it when
  the process dies (even by ``kill -9``), so a lock can never go stale; ``.<run>.lock.pid`` holds the
  holder's PID, which a refused second process names. The lock file sits
  beside the folder, not in it, so that :func:`move_aside` can move the whole folder away while
  the lock is held.
  A parent folder where no file can be created (read-only) gets the lock inside the run folder instead:
  nothing can move the folder out of such a parent, so the lock cannot be separated from it.
* :func:`move_aside`: ``--overwrite`` renames an existing run folder to ``<run>.old-<UTC time>``.
* :func:`read_records`: the JSON lines of ``metrics.jsonl``; a torn last line (a writer killed mid-line)
  is dropped with a warning naming the file.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = ["RunLockedError", "RunLock", "lock_path", "move_aside", "read_records"]

INNER_LOCK = ".moero.lock"
# every lock held by this process: a RunLock that is dropped without release() keeps its lock until the
# process ends (as a descriptor would), instead of losing it when the garbage collector closes the file
_HELD: dict[int, Any] = {}


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock; the message names the folder and its PID."""


def lock_path(run_dir: str | Path) -> Path:
    """The lock file of ``run_dir``: ``.<name>.lock`` in its parent folder."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parent / f".{run_dir.name}.lock"


class RunLock:
    """Exclusive, non-blocking lock of a run folder (a context manager; :meth:`acquire` / :meth:`release`)."""

    def __init__(self, run_dir: str | Path, what: str = "run folder", hint: str = "use another run_dir") -> None:
        self.run_dir = Path(run_dir)
        self.path = lock_path(run_dir)
        self.what, self.hint = what, hint
        self._lock: Any = None

    @property
    def pid_path(self) -> Path:
        """The file naming the holder's PID, beside the lock file."""
        return self.path.with_name(self.path.name + ".pid")

    def _choose_path(self) -> None:
        """The lock file beside the folder, or inside it when its parent is read-only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666))
            return
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not self.run_dir.is_dir():
                raise
        self.path = self.run_dir / INNER_LOCK  # a read-only parent: the folder cannot be moved out of it

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming the holder's PID (never waits)."""
        from filelock import FileLock, Timeout

        self._choose_path()
        lock = FileLock(self.path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = self.pid_path.read_text(errors="replace").strip() or "?"
            except OSError:
                holder = "?"
            raise RunLockedError(f"{self.what} {self.run_dir} is in use by process {holder} "
                                 f"(lock {self.path}); wait for it to finish or {self.hint}") from None
        try:
            self.pid_path.write_text(f"{os.getpid()}\n")
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        _HELD[id(lock)] = lock
        return self

    def release(self) -> None:
        """Drop the lock (the lock file stays: deleting it would let two processes lock different files)."""
        if self._lock is not None:
            try:
                self.pid_path.write_text("")
            except OSError:
                pass
            self._lock.release()
            _HELD.pop(id(self._lock), None)
            self._lock = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def move_aside(run_dir: str | Path) -> Path:
    """Rename ``run_dir`` to ``<run_dir>.old-<UTC time>`` (a counter is added on a clash); returns the new path."""
    run_dir = Path(run_dir)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
        n += 1
    run_dir.rename(target)
    return target


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log (``metrics.jsonl``). A last line that is not JSON (a writer killed
    mid-line) is dropped with a warning naming the file; a bad line before it is a ``ValueError`` naming
    the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(numbered) - 1:
                warnings.warn(f"{path}, line {n}: dropped a torn last line (not JSON: {err.msg})", stacklevel=2)
                break
            raise ValueError(f"{path}, line {n}: not JSON ({err.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}, line {n}: a record must be a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return records
