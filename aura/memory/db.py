"""The SQLite file under the episodic store: connection, durability, schema migrations, encoder.

`MemoryDB` opens one SQLite file in WAL mode with ``synchronous=NORMAL``; each write is one
transaction (`MemoryDB._write`, ``BEGIN IMMEDIATE``), so a process killed mid-write (kill -9) loses
at most the transaction in flight and never corrupts the file (only a power cut could lose the
last commits). Several processes may open one file: SQLite's locks serialise writers, a writer
waits up to ``busy_timeout_s`` and then raises `StoreBusyError` with the path and what to do.

The schema is versioned (table ``schema_version``); `aura.memory.schema.MIGRATIONS` lists the
steps from an empty file to the current version and opening an older file applies the missing
ones in one transaction. Table ``meta`` records the encoder (``encoder_name``, ``encoder_dim``)
whose embeddings the file holds: opening it with another encoder is refused, naming both.
`aura.memory.store.EpisodicStore` adds the episodes on top.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator

from aura.data.errors import DataError
from aura.memory.schema import MIGRATIONS

__all__ = ["SCHEMA_VERSION", "MemoryDB", "StoreBusyError"]

SCHEMA_VERSION = len(MIGRATIONS)


class StoreBusyError(DataError):
    """Another process held the database's write lock for longer than the busy timeout."""


class MemoryDB:
    """One SQLite memory file (see the module docstring). Use as a context manager or call
    `close`.

    Args:
      path: the database file (created with its directory when missing).
      encoder_name: name of the encoder whose embeddings this file holds.
      dim: embedding width D.
      busy_timeout_s: how long a write waits for another process's lock.
      clock: wall clock in seconds (tests pass a fake one).

    Raises:
      DataError: the file is not a SQLite database, is newer than this code, or was made with
        another encoder (the message names both).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoder_name: str,
        dim: int,
        busy_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        self.path = os.fspath(path)
        self.dim = int(dim)
        self.encoder_name = encoder_name
        self.busy_timeout_s = busy_timeout_s
        self.clock = clock
        if os.path.dirname(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self._check_encoder()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise self._busy(e) from e
            raise DataError(
                f"{self.path} is not a usable AURA memory database ({e}); "
                "pass another --memory_db path or move this file away"
            ) from e

    # -- plumbing -------------------------------------------------------------------------------
    def _busy(self, e: Exception) -> StoreBusyError:
        return StoreBusyError(
            f"{self.path} is locked by another process (waited {self.busy_timeout_s:g} s: {e}); "
            "retry, raise busy_timeout_s, or give each process its own --memory_db"
        )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front (BEGIN IMMEDIATE)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._busy(e) from e
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            self._conn.execute("ROLLBACK")
            raise self._busy(e) from e

    def _read_version(self, c: sqlite3.Connection) -> int:
        has = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        return (
            (c.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0) if has else 0
        )

    def _migrate(self) -> None:
        if self._read_version(self._conn) == SCHEMA_VERSION:
            return  # up to date: no write lock needed (another process may hold it)
        with self._write() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = self._read_version(c)
            if version > SCHEMA_VERSION:
                raise DataError(
                    f"{self.path} has schema version {version}, newer than this AURA "
                    f"({SCHEMA_VERSION}); upgrade AURA to open it"
                )
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    c.execute(stmt)
                c.execute("INSERT INTO schema_version(version) VALUES (?)", (v + 1,))

    def _check_encoder(self) -> None:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if "encoder_name" not in meta:
            with self._write() as c:
                c.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('encoder_name', ?), "
                    "('encoder_dim', ?)",
                    (self.encoder_name, str(self.dim)),
                )
                meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
        have = (meta["encoder_name"], int(meta["encoder_dim"]))
        if have != (self.encoder_name, self.dim):
            raise DataError(
                f"{self.path} holds embeddings of encoder {have[0]!r} (dim {have[1]}), but this "
                f"run uses {self.encoder_name!r} (dim {self.dim}); pass the same --encoder as "
                "when it was written, or another --memory_db"
            )

    @staticmethod
    def _bump(c: sqlite3.Connection) -> None:
        c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0')")
        c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def close(self) -> None:
        """Closes the connection (idempotent)."""
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The file's schema version."""
        return self._conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]

    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    def set_meta(self, key: str, value: str) -> None:
        """Sets a metadata entry (the encoder keys are reserved)."""
        if key in ("encoder_name", "encoder_dim", "generation"):
            raise ValueError(f"meta key {key!r} is managed by the store")
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A metadata entry, or ``default``."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def checkpoint(self) -> None:
        """Copies the WAL into the database file and truncates it (SQLite also does this when
        the last connection closes)."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
