"""Run directories: local or ``gs://`` paths, one writer at a time, files never half-written,
and a graceful stop on SIGTERM/SIGINT that every process of a run takes at the same step.

Paths go through ``etils.epath`` (:func:`as_path`): a local path is made absolute, an object-store
URL (``gs://bucket/run``, :func:`is_remote`) is kept as it is (``Path(...).absolute()`` would
mangle it into ``/cwd/gs:/bucket/run``).

:class:`RunLock` takes an exclusive OS lock (``fcntl.flock``) on ``<dir>/.lock`` for as long as a
run writes into ``<dir>``. The kernel drops the lock when the process dies, so ``kill -9`` never
leaves a stale lock; a second writer is refused at once with a message naming the holder's pid.
Readers (``chat``, ``inspect``) never take the lock, so they keep working while a run writes.
Object stores have no such lock, and a lock object would outlive a ``kill -9`` (the case the OS
lock exists for), so a ``gs://`` directory is not locked: one writer per workdir is then the
launcher's contract (a pod job owns its workdir; ``launch/``), and orbax's commit files keep
every checkpoint step all-or-nothing whatever happens.

:func:`write_json_atomic` and :func:`write_text_atomic` write to a temporary sibling, fsync and
rename (local), or write the object in one request (object stores: an object is replaced
atomically), so a crash leaves either the old file or the new one, never a torn one.

:class:`PreemptionGuard` turns SIGTERM (schedulers send it before they kill a job) and SIGINT
(Ctrl-C) into a stop that the loop polls at step boundaries with ``should_stop(step)``; the run
saves and exits 0 and the same command resumes. A second Ctrl-C raises ``KeyboardInterrupt``.
With several processes it uses JAX's preemption service instead of a collective per step: JAX's
coordination service catches SIGTERM in any process, agrees on a step all processes reach, and
``jax.experimental.multihost_utils.reached_preemption_sync_point(step)`` (what orbax's
``CheckpointManager.reached_preemption`` calls) turns true there on every process, so they save
the same step together; a Ctrl-C is turned into a SIGTERM to join the same protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import Any

import jax
from etils import epath
from jax.experimental import multihost_utils

from aura.train.metrics import to_jsonable

__all__ = [
    "LOCK_NAME",
    "PreemptionGuard",
    "RunLock",
    "RunLockedError",
    "as_path",
    "is_remote",
    "write_json_atomic",
    "write_text_atomic",
]

LOCK_NAME = ".lock"


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an object-store URL (``gs://``, ``s3://``, ...), not a local path."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """``path`` as an ``epath.Path``: absolute when local, unchanged when a ``gs://`` URL."""
    return epath.Path(path) if is_remote(path) else epath.Path(os.path.abspath(path))


class RunLockedError(RuntimeError):
    """Another live process writes the run directory (a user error: exit 2, nothing touched)."""


class RunLock:
    """Exclusive writer lock on a run directory; a context manager.

    Only process 0 of a multi-host run takes it (the other processes write nothing of their
    own there). Creating the lock creates the directory.
    """

    def __init__(self, directory: str | os.PathLike, *, what: str = "run directory") -> None:
        self.directory = as_path(directory)
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
        if is_remote(self.directory):  # no lock on object stores (module docstring)
            self.directory.mkdir(parents=True, exist_ok=True)
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


def write_text_atomic(path: str | os.PathLike, text: str) -> epath.Path:
    """Writes ``text`` to ``path`` through a temporary sibling (fsynced, then renamed), or as
    one object write on an object store."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(path):
        path.write_text(text)
        return path
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


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> epath.Path:
    """Writes ``obj`` as JSON (numpy/jax values converted) through a temporary name.

    With several processes only process 0 writes.
    """
    if jax.process_index() != 0:
        return as_path(path)
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, sort_keys=True)
    return write_text_atomic(path, text + "\n")


class PreemptionGuard:
    """Context manager that records SIGTERM/SIGINT in `requested` instead of dying."""

    def __init__(
        self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT), *, verbose: bool = True
    ) -> None:
        """Prepares the guard (handlers are installed by `__enter__`).

        Args:
          signals: signals that request a stop.
          verbose: print one line to stderr when a stop is requested.
        """
        self.signals = tuple(signals)
        self.verbose = verbose
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._multihost = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Second Ctrl-C: the user wants out now.
        if not self.requested and self.verbose:
            how = "; press Ctrl-C again to quit at once" if signal.SIGINT in self.signals else ""
            print(
                f"received {signal.Signals(signum).name}: stopping after this step and saving a "
                f"checkpoint{how}",
                file=sys.stderr,
                flush=True,
            )
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self._multihost:  # join JAX's preemption protocol (its SIGTERM handler is in C++)
            signal.raise_signal(signal.SIGTERM)

    def request(self) -> None:
        """Requests a stop without a signal (e.g. a time budget ran out)."""
        self.requested = True

    def should_stop(self, step: int | None = None) -> bool:
        """Whether to stop after ``step``.

        With several processes every process must call it at every step with the same ``step``
        (JAX's preemption sync point: no collective unless a process was signalled).
        """
        if jax.process_count() == 1 or step is None:
            return self.requested
        return bool(multihost_utils.reached_preemption_sync_point(int(step)))

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            # Python only lets the main thread install handlers; the loop then simply never stops
            # early, which is the behaviour without a guard.
            warnings.warn(
                "PreemptionGuard outside the main thread: SIGTERM/SIGINT are not intercepted",
                RuntimeWarning,
                stacklevel=2,
            )
            return self
        self._multihost = jax.process_count() > 1
        for sig in self.signals:
            if self._multihost and sig == signal.SIGTERM:
                continue  # left to JAX's preemption notifier (installed by jax.distributed)
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._previous.items():
            # None means the old handler was installed from C; the default is the closest match.
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()
