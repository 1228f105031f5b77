"""Tests for aura.memory.store: schema, migrations, encoder check, crash safety, two processes."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.memory.store import MIGRATIONS, SCHEMA_VERSION, EpisodicStore, StoreBusyError

DIM = 8


def _vecs(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _open(path, **kw):
    return EpisodicStore(path, encoder_name="enc", dim=DIM, **kw)


def test_roundtrip_fields_and_embedding(tmp_path):
    with _open(tmp_path / "m.db", clock=lambda: 100.0) as s:
        v = _vecs(2)
        ids = s.add_many(
            ["hello there", "my cat is called Tom"],
            v,
            [
                {"session": "s1", "turn": 0, "speaker": "user", "event_time": 5.0},
                {"session": "s1", "turn": 1, "importance": 0.9, "ttl_s": 10},
            ],
        )
        a, b = s.get(ids)
        assert (a.session, a.turn, a.speaker, a.event_time, a.created_at) == (
            "s1",
            0,
            "user",
            5.0,
            100.0,
        )
        assert a.expires_at is None and b.expires_at == 110.0 and b.importance == 0.9
        assert a.state == "new" and a.kind == "turn" and a.access_count == 0
        np.testing.assert_array_equal(b.embedding, v[1])
        s.touch([ids[1]])
        assert s.get([ids[1]])[0].access_count == 1
        assert s.schema_version == SCHEMA_VERSION
        with pytest.raises(ValueError, match="embeddings"):
            s.add_many(["x"], np.zeros((1, DIM + 1)))


def test_lexical_uses_fts5_bm25_and_hides_dead(tmp_path):
    t = [0.0]
    with _open(tmp_path / "m.db", clock=lambda: t[0]) as s:
        ids = s.add_many(
            ["the cat sat on the mat", "dogs chase cats", "a bird sang", "cat cat cat food"],
            _vecs(4),
            [{}, {}, {}, {"ttl_s": 5}],
        )
        hits = s.lexical("Where is the cat?", 10)
        assert {i for i, _ in hits} == {ids[0], ids[1], ids[3]}  # porter: cats -> cat
        assert hits[0][0] == ids[3] and all(sc > 0 for _, sc in hits)
        t[0] = 6.0
        assert ids[3] not in dict(s.lexical("cat", 10))  # expired: hidden at once
        s.update([ids[0]], state="merged", merged_into=ids[1])
        assert dict(s.lexical("cat", 10)).keys() == {ids[1]}
        assert s.lexical("what is the", 10) == []  # stop words only
        assert s.lexical('"; DROP TABLE episodes; --', 10) == []


def test_encoder_mismatch_is_refused_naming_both(tmp_path):
    _open(tmp_path / "m.db").close()
    with pytest.raises(DataError, match=r"'enc' \(dim 8\).*'other' \(dim 16\)"):
        EpisodicStore(tmp_path / "m.db", encoder_name="other", dim=16)
    with pytest.raises(DataError, match=r"'enc' \(dim 8\).*'enc' \(dim 4\)"):
        EpisodicStore(tmp_path / "m.db", encoder_name="enc", dim=4)


def test_not_a_database(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not a usable AURA memory database"):
        _open(tmp_path / "junk.db")


def test_migrates_a_version_1_file(tmp_path):
    path = tmp_path / "old.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for stmt in MIGRATIONS[0]:
        c.execute(stmt)
    c.execute("INSERT INTO schema_version VALUES (1)")
    c.executemany("INSERT INTO meta VALUES (?, ?)", [("encoder_name", "enc"), ("encoder_dim", "8")])
    c.execute(
        "INSERT INTO episodes (text, event_time, created_at, accessed_at, embedding) "
        "VALUES ('old fact', 1, 1, 1, ?)",
        (_vecs(1).tobytes(),),
    )
    c.commit()
    c.close()
    with _open(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 2
        (e,) = s.episodes()
        assert e.text == "old fact" and e.kind == "turn"
        assert dict(s.lexical("fact", 5)).keys() == {e.id}


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from aura.memory.store import EpisodicStore
    s = EpisodicStore(sys.argv[1], encoder_name="enc", dim=8)
    v = np.ones((500, 8), np.float32) / np.sqrt(8)
    i = 0
    while True:
        s.add_many([f"row {i} {j}" for j in range(500)], v)
        i += 1
        print(i, flush=True)
    """
)


def test_kill_9_mid_write_never_corrupts(tmp_path):
    path = str(tmp_path / "m.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(5):  # let it commit a few batches, then kill it in the middle of one
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    c = sqlite3.connect(path)
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    c.execute("INSERT INTO episodes_fts(episodes_fts) VALUES ('integrity-check')")  # raises if bad
    c.close()
    with _open(path) as s:
        n = s.count()
        assert n >= 5 * 500 and n % 500 == 0  # whole transactions only
        assert len(s.lexical("row", 10_000)) == n


def test_two_processes_share_one_file(tmp_path):
    path = str(tmp_path / "m.db")
    _open(path).close()
    code = textwrap.dedent(
        """
        import sys, numpy as np
        from aura.memory.store import EpisodicStore
        s = EpisodicStore(sys.argv[1], encoder_name="enc", dim=8)
        for i in range(40):
            s.add(f"{sys.argv[2]} {i}", np.ones(8, np.float32))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, path, w]) for w in ("alpha", "beta")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with _open(path) as s:
        assert s.count() == 80
        assert len(s.lexical("alpha", 100)) == len(s.lexical("beta", 100)) == 40


def test_busy_writer_gets_a_clear_error(tmp_path):
    path = tmp_path / "m.db"
    with _open(path) as a:
        b = _open(path, busy_timeout_s=0.2)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            assert _open(path).count() == 0  # opening an existing file needs no write lock
            start = time.perf_counter()
            with pytest.raises(StoreBusyError, match="locked by another process"):
                b.add("x", _vecs(1)[0])
            assert time.perf_counter() - start >= 0.15
            assert a.count() == 0  # readers still work during the lock (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        b.add("x", _vecs(1)[0])
        assert a.count() == 1
        b.close()
