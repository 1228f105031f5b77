"""Run directories: one writer at a time, and files that are never half-written.

:class:`RunLock` takes an exclusive OS lock (``fcntl.flock``) on ``<dir>/.lock`` for as long as a
run writes into ``<dir>``. The kernel drops the lock when the process dies, so ``kill -9`` never
leaves a stale lock; a second writer is refused at once with a message naming the holder's pid.
Readers (``chat``, ``inspect``) never take the lock, so they keep working while a run writes.

:func:`write_json_atomic` and :func:`write_text_atomic` write to a temporary sibling, fsync and
rename, so a crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import jax

from aura.train.metrics import to_jsonable

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "write_json_atomic", "write_text_atomic"]

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process writes the run directory (a user error: exit 2, nothing touched)."""


class RunLock:
    """Exclusive writer lock on a run directory; a context manager.

    Only process 0 of a multi-host run takes it (the other processes write nothing of their
    own there). Creating the lock creates the directory.
    """

    def __init__(self, directory: str | Path, *, what: str = "run directory") -> None:
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Takes the lock.

        Raises:
          RunLockedError: another process holds it (naming its pid).
          NotADirectoryError / OSError: the directory cannot be created (e.g. it is a file).
        """
        if jax.process_index() != 0 or self._fd is not None:
            return self
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(
                f"{self.what} {self.directory} exists and is not a directory; pass a directory"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"{self.what} {self.directory} is in use by another run (pid {holder}); wait for "
                "it to finish or stop it, or pass another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drops the lock (idempotent). The lock file stays; it is harmless without the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
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


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` through a temporary sibling (fsynced, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Writes ``obj`` as JSON (numpy/jax values converted) through a temporary name.

    With several processes only process 0 writes.
    """
    if jax.process_index() != 0:
        return Path(path)
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, sort_keys=True)
    return write_text_atomic(path, text + "\n")
