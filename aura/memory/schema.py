"""The episodic store's SQLite schema, as the list of migrations that builds it.

``MIGRATIONS[v]`` takes a file from schema version ``v`` to ``v + 1``; `EpisodicStore` applies the
missing ones in one transaction when it opens a file (and refuses a file newer than this code).
Append a step to change the schema; never edit a released one.

    schema_version(version)                         one row per applied step
    meta(key, value)                                encoder_name, encoder_dim, generation, ...
    episodes(id, session, turn, speaker, text, event_time, created_at, accessed_at,
             access_count, importance, expires_at, state, merged_into, embedding, kind)
    episodes_fts(text)                              FTS5, external content = episodes
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: episodes, their lexical index, metadata
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE episodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session TEXT NOT NULL DEFAULT '',
            turn INTEGER,
            speaker TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL,
            event_time REAL NOT NULL,
            created_at REAL NOT NULL,
            accessed_at REAL NOT NULL,
            access_count INTEGER NOT NULL DEFAULT 0,
            importance REAL NOT NULL DEFAULT 0.5,
            expires_at REAL,
            state TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'consolidated', 'merged')),
            merged_into INTEGER,
            embedding BLOB NOT NULL)""",
        "CREATE INDEX episodes_session ON episodes(session, turn)",
        """CREATE VIRTUAL TABLE episodes_fts USING fts5(
            text, content='episodes', content_rowid='id', tokenize='porter unicode61')""",
        """CREATE TRIGGER episodes_ai AFTER INSERT ON episodes BEGIN
            INSERT INTO episodes_fts(rowid, text) VALUES (new.id, new.text); END""",
        """CREATE TRIGGER episodes_ad AFTER DELETE ON episodes BEGIN
            INSERT INTO episodes_fts(episodes_fts, rowid, text) VALUES ('delete', old.id, old.text);
            END""",
    ),
    (  # 2: episode kinds (turn / note / summary), so summaries can be told apart and replaced
        "ALTER TABLE episodes ADD COLUMN kind TEXT NOT NULL DEFAULT 'turn'",
        "CREATE INDEX episodes_kind ON episodes(kind, session)",
    ),
)
