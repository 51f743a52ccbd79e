"""Ownership of a run folder: one process at a time, and nothing of a previous run is ever deleted.

* :class:`RunLock`: an exclusive ``flock`` on ``.<run>.lock`` beside the run folder, held for the whole
  run. The operating system releases it when the process dies (even by ``kill -9``), so a lock can never
  go stale; the file holds the holder's PID, which a refused second process names. The lock file sits
  beside the folder, not in it, so that :func:`move_aside` can move the whole folder away while
  the lock is held.
* :func:`move_aside`: ``--overwrite`` renames an existing run folder to ``<run>.old-<UTC time>``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

__all__ = ["RunLockedError", "RunLock", "lock_path", "move_aside"]


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock; the message names the folder and its PID."""


def lock_path(run_dir: str | Path) -> Path:
    """The lock file of ``run_dir``: ``.<name>.lock`` in its parent folder."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parent / f".{run_dir.name}.lock"


class RunLock:
    """Exclusive, non-blocking ``flock`` of a run folder (a context manager; :meth:`acquire` / :meth:`release`)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = lock_path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming the holder's PID (never waits)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLockedError(f"run folder {self.run_dir} is in use by process {holder} "
                                 f"(lock {self.path}); wait for it to finish or use another run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it would let two processes lock different files)."""
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

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
