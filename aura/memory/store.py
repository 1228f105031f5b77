"""The episodic store: every remembered episode in one SQLite file (stdlib ``sqlite3``).

An episode is one conversation turn, a note (``/remember``) or a consolidation summary. A row
keeps who said what and when (``session``, ``turn``, ``speaker``, ``text``, ``event_time``), how it
has been used (``created_at``, ``accessed_at``, ``access_count``, ``importance``), how long it lives
(``expires_at``, NULL = forever) and what consolidation did with it (``state``: ``new`` ->
``consolidated``, or ``merged`` into the row ``merged_into``), plus its sentence embedding as a
float32 blob. An FTS5 table over ``text`` (external content, kept in step by triggers, Porter
stemming) gives the lexical side: SQLite's own ``bm25()``.

Durability and sharing: the file is in WAL mode with ``synchronous=NORMAL``; each write is one
transaction, so a process killed mid-write (kill -9) loses at most the transaction in flight and
never corrupts the file (only a power cut could lose the last commits). Several processes may
open one file: SQLite's locks serialise writers, a writer waits up to ``busy_timeout_s`` and then
raises `StoreBusyError` with the path and what to do.

The schema is versioned (table ``schema_version``); `MIGRATIONS` lists the steps from an empty
file to the current version and opening an older file applies the missing ones in one
transaction. Table ``meta`` records the encoder (``encoder_name``, ``encoder_dim``) whose
embeddings the file holds: opening it with another encoder is refused, naming both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from aura.data.errors import DataError
from aura.memory.schema import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Episode",
    "EpisodicStore",
    "StoreBusyError",
    "fts_query",
]

SCHEMA_VERSION = len(MIGRATIONS)
_COLUMNS = (
    "id, session, turn, speaker, text, event_time, created_at, accessed_at, access_count, "
    "importance, expires_at, state, merged_into, kind, embedding"
)
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by did do does for from had has have he her him his how i in is it "
        "its me my of on or our she so than that the their them they this to was we were what when "
        "where which who whom why will with you your",
    )
)


class StoreBusyError(DataError):
    """Another process held the database's write lock for longer than the busy timeout."""


@dataclasses.dataclass(frozen=True)
class Episode:
    """One stored episode (a row of ``episodes``); ``embedding`` is ``[D]`` float32."""

    id: int
    session: str
    turn: int | None
    speaker: str
    text: str
    event_time: float
    created_at: float
    accessed_at: float
    access_count: int
    importance: float
    expires_at: float | None
    state: str
    merged_into: int | None
    kind: str
    embedding: np.ndarray

    @classmethod
    def from_row(cls, row: tuple) -> Episode:
        *fields, blob = row
        return cls(*fields, embedding=np.frombuffer(blob, np.float32))


def fts_query(text: str) -> str:
    """An FTS5 MATCH expression: the text's words (stop words dropped), quoted, OR-ed."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in _STOPWORDS]
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


class EpisodicStore:
    """One SQLite episode file. Use as a context manager or call `close`.

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

    def __enter__(self) -> EpisodicStore:
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

    # -- writes ---------------------------------------------------------------------------------
    def add(self, text: str, embedding: np.ndarray, **fields) -> int:
        """Stores one episode and returns its id (see `add_many` for the fields)."""
        return self.add_many([text], np.asarray(embedding)[None], [fields])[0]

    def add_many(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray,
        fields: Sequence[dict] | None = None,
    ) -> list[int]:
        """Stores episodes in one transaction; returns their ids (increasing).

        Args:
          texts: episode texts.
          embeddings: ``[N, D]`` embeddings (cast to float32).
          fields: per episode, any of ``session`` (str), ``turn`` (int), ``speaker`` (str),
            ``event_time`` (s, default now), ``importance`` (default 0.5), ``ttl_s`` (seconds
            to live; default forever), ``kind`` ("turn", "note" or "summary").

        Raises:
          ValueError: a length or width mismatch, or an unknown field.
        """
        emb = np.asarray(embeddings, np.float32)
        fields = list(fields) if fields is not None else [{}] * len(texts)
        if emb.ndim != 2 or emb.shape[1] != self.dim or not len(texts) == len(emb) == len(fields):
            raise ValueError(
                f"{len(texts)} texts need [{len(texts)}, {self.dim}] embeddings and as many field "
                f"dicts; got embeddings {emb.shape} and {len(fields)} field dicts"
            )
        allowed = {"session", "turn", "speaker", "event_time", "importance", "ttl_s", "kind"}
        now = self.clock()
        rows = []
        for text, vec, f in zip(texts, emb, fields, strict=True):
            if set(f) - allowed:
                raise ValueError(f"unknown episode fields {sorted(set(f) - allowed)}")
            ttl = f.get("ttl_s")
            rows.append(
                (str(f.get("session", "")), f.get("turn"), str(f.get("speaker", "")), str(text))
                + (float(f.get("event_time", now)), now, now, float(f.get("importance", 0.5)))
                + (None if ttl is None else now + float(ttl), f.get("kind", "turn"), vec.tobytes())
            )
        with self._write() as c:
            first = c.execute("SELECT coalesce(max(id), 0) FROM episodes").fetchone()[0]
            c.executemany(
                "INSERT INTO episodes (session, turn, speaker, text, event_time, created_at, "
                "accessed_at, importance, expires_at, kind, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            ids = [r[0] for r in c.execute("SELECT id FROM episodes WHERE id > ?", (first,))]
        return ids

    def touch(self, ids: Sequence[int]) -> None:
        """Records a retrieval: ``access_count += 1`` and ``accessed_at = now``."""
        if ids:
            with self._write() as c:
                c.executemany(
                    "UPDATE episodes SET access_count = access_count + 1, accessed_at = ? "
                    "WHERE id = ?",
                    [(self.clock(), int(i)) for i in ids],
                )

    def update(self, ids: Sequence[int], **values) -> None:
        """Sets columns (``importance``, ``state``, ``merged_into``, ``expires_at``) of rows."""
        allowed = {"importance", "state", "merged_into", "expires_at"}
        if set(values) - allowed or not values:
            raise ValueError(f"update sets some of {sorted(allowed)}, got {sorted(values)}")
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._write() as c:
            self._bump(c)
            c.executemany(
                f"UPDATE episodes SET {cols} WHERE id = ?",
                [(*values.values(), int(i)) for i in ids],
            )

    def delete(self, ids: Sequence[int]) -> int:
        """Deletes episodes (and their lexical entries); returns how many existed."""
        with self._write() as c:
            self._bump(c)
            cur = c.executemany("DELETE FROM episodes WHERE id = ?", [(int(i),) for i in ids])
            return cur.rowcount

    def set_meta(self, key: str, value: str) -> None:
        """Sets a metadata entry (the encoder keys are reserved)."""
        if key in ("encoder_name", "encoder_dim", "generation"):
            raise ValueError(f"meta key {key!r} is managed by the store")
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    # -- reads ----------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A metadata entry, or ``default``."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def get(self, ids: Sequence[int]) -> list[Episode]:
        """The episodes with these ids, in the given order (missing ids are left out)."""
        rows = {}
        for start in range(0, len(ids), 500):
            part = [int(i) for i in ids[start : start + 500]]
            marks = ",".join("?" * len(part))
            q = f"SELECT {_COLUMNS} FROM episodes WHERE id IN ({marks})"
            rows.update((r[0], r) for r in self._conn.execute(q, part))
        return [Episode.from_row(rows[int(i)]) for i in ids if int(i) in rows]

    def episodes(self, where: str = "1", params: Sequence = ()) -> list[Episode]:
        """Episodes matching a SQL condition on ``episodes`` columns, ordered by id."""
        q = f"SELECT {_COLUMNS} FROM episodes WHERE {where} ORDER BY id"
        return [Episode.from_row(r) for r in self._conn.execute(q, tuple(params))]

    def last_turn(self, session: str) -> int | None:
        """The highest turn number stored for a session (None when it has none)."""
        q = "SELECT max(turn) FROM episodes WHERE session = ?"
        return self._conn.execute(q, (session,)).fetchone()[0]

    def checkpoint(self) -> None:
        """Copies the WAL into the database file and truncates it (SQLite also does this when
        the last connection closes)."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def count(self) -> int:
        """Number of stored rows (merged and expired ones included)."""
        return self._conn.execute("SELECT count(*) FROM episodes").fetchone()[0]

    def snapshot(
        self, after_id: int = 0, *, with_keys: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Rows past ``after_id`` for the index: ``(ids [N], keys [N, D] or None, attrs [N, 4])``.

        ``attrs`` columns: event_time, importance, expires_at (inf when none), merged (0/1).
        """
        cols = "id, event_time, importance, coalesce(expires_at, 9e999), state = 'merged'"
        cols += ", embedding" if with_keys else ""
        q = f"SELECT {cols} FROM episodes WHERE id > ? ORDER BY id"
        rows = self._conn.execute(q, (after_id,)).fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        attrs = np.array([r[1:5] for r in rows], np.float64).reshape(-1, 4)
        if not with_keys:
            return ids, None, attrs
        keys = np.frombuffer(b"".join(r[5] for r in rows), np.float32).reshape(-1, self.dim)
        return ids, keys, attrs

    def version(self) -> tuple[int, int]:
        """``(max id, generation)``: the index reloads when either changes.

        Adding rows raises the max id; `update` and `delete` (from any process) bump the
        generation. `touch` changes neither: access counts do not move keys.
        """
        max_id = self._conn.execute("SELECT coalesce(max(id), 0) FROM episodes").fetchone()[0]
        gen = self._conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return max_id, int(gen[0]) if gen else 0

    def lexical(self, query: str, k: int, *, now: float | None = None) -> list[tuple[int, float]]:
        """Top-k live episodes by FTS5 bm25: ``[(id, score)]``, score = -bm25 (higher better).

        Merged and expired episodes are left out. An empty query (only stop words) matches
        nothing.
        """
        match = fts_query(query)
        if not match or k < 1:
            return []
        now = self.clock() if now is None else now
        q = (
            "SELECT e.id, -bm25(episodes_fts) FROM episodes_fts JOIN episodes e "
            "ON e.id = episodes_fts.rowid WHERE episodes_fts MATCH ? AND e.state != 'merged' "
            "AND (e.expires_at IS NULL OR e.expires_at > ?) ORDER BY bm25(episodes_fts) LIMIT ?"
        )
        return [(int(i), float(s)) for i, s in self._conn.execute(q, (match, now, int(k)))]
