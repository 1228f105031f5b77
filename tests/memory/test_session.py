"""Tests for aura.memory.session: per-turn use, commands, and persistence across processes."""

import subprocess
import sys
import textwrap

import pytest

from aura.data.errors import DataError
from aura.memory.session import MemorySession
from aura.memory.store import EpisodicStore

ENCODER = textwrap.dedent(
    """
    import re
    import numpy as np

    class HashEncoder:
        name, dim = "hash-bow", 64

        def encode(self, texts, batch_size=64):
            out = np.zeros((len(texts), self.dim), np.float32)
            for i, t in enumerate(texts):
                for w in re.findall(r"\\w+", t.lower()):
                    out[i, sum(map(ord, w)) * 7919 % self.dim] += 1.0
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    """
)
_ns = {}
exec(ENCODER, _ns)
HashEncoder = _ns["HashEncoder"]


def _session(path, **kw):
    return MemorySession.open(path, encoder=HashEncoder(), **kw)


def test_turns_notes_recall_and_forget(tmp_path):
    mem = _session(tmp_path / "m.db", session="alice", wm_capacity=2)
    mem.observe("user", "my sister lives in Lisbon")
    mem.observe("assistant", "Lisbon is lovely")
    for i in range(3):
        mem.observe("user", f"unrelated chatter number {i}")
    note = mem.remember("the spare key is under the blue pot")
    hits = mem.recall("where is the spare key", k=3)
    assert hits[0].id == note and hits[0].source == "index" and "dense" in hits[0].components
    assert mem.last == hits
    assert any(r.text == "my sister lives in Lisbon" for r in mem.recall("sister Lisbon", k=2))
    assert len(mem.working) == 2  # capacity holds; the rest went (were already) to the store
    assert mem.forget(note) and not mem.forget(note)
    assert all(r.id != note for r in mem.recall("spare key blue pot", k=10))
    (e,) = mem.store.episodes("text = 'my sister lives in Lisbon'")
    assert (e.session, e.turn, e.speaker) == ("alice", 0, "user")
    report = mem.close()
    assert report.summaries_written == 1


def test_persistence_across_processes(tmp_path):
    path = str(tmp_path / "m.db")
    writer = ENCODER + textwrap.dedent(
        """
        import sys
        from aura.memory.session import MemorySession
        mem = MemorySession.open(sys.argv[1], encoder=HashEncoder(), session="s1")
        mem.observe("user", "my dog is called Biscuit")
        mem.observe("user", "the weather is grey today")
        mem.close()
        """
    )
    subprocess.run([sys.executable, "-c", writer, path], check=True, timeout=120)
    mem = _session(path, session="s2")
    top = mem.recall("what is my dog called", k=1)[0]
    assert top.text == "my dog is called Biscuit"
    assert mem.turn == 0 and _session(path, session="s1").turn == 2  # turn numbers continue
    mem.close(consolidate_store=False)


def test_other_encoder_is_refused(tmp_path):
    _session(tmp_path / "m.db").close()

    class Other(HashEncoder):
        name = "other-model"

    with pytest.raises(DataError, match="'hash-bow' \\(dim 64\\).*'other-model' \\(dim 64\\)"):
        MemorySession.open(tmp_path / "m.db", encoder=Other())
    with EpisodicStore(tmp_path / "m.db", encoder_name="hash-bow", dim=64) as s:
        assert s.count() == 0
