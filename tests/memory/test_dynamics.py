"""Tests for consolidation (TTL deletion, merging, importance, summaries) and working memory."""

import numpy as np
import pytest

from aura.memory.consolidate import consolidate
from aura.memory.index import FusionConfig, HippocampalIndex
from aura.memory.store import EpisodicStore
from aura.memory.working import WMItem, WorkingMemory

DIM = 8


def _unit(i, j=None, mix=0.0):
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    if j is not None:
        v[j] = mix
    return v / np.linalg.norm(v)


@pytest.fixture
def store(tmp_path):
    t = [1000.0]
    s = EpisodicStore(tmp_path / "m.db", encoder_name="e", dim=DIM, clock=lambda: t[0])
    s.t = t
    yield s
    s.close()


def test_consolidation_deletes_expired_merges_duplicates_and_summarises(store):
    a = store.add("my sister lives in Lisbon", _unit(0), session="s1", turn=0)
    b = store.add("we had tea", _unit(1), session="s1", turn=1)
    c = store.add("my sister lives in Lisbon!", _unit(0, 1, 0.05), session="s1", turn=2)
    tmp = store.add("door code 1234", _unit(2), session="s1", turn=3, ttl_s=10)
    store.update([a], importance=0.9)
    index = HippocampalIndex(store)
    store.t[0] += 11
    assert tmp not in [h.episode.id for h in index.search("door code", _unit(2), k=10)]
    assert store.get([tmp])  # hidden, not yet deleted
    report = consolidate(store, summary_turns=2)
    assert report.expired_deleted == 1 and not store.get([tmp])
    assert report.merged == 1
    old, kept = store.get([a, c])
    assert old.state == "merged" and old.merged_into == c  # the later restatement is kept
    assert kept.importance == pytest.approx(0.9)  # and inherits the higher importance
    assert report.summaries_written == 1
    (summary,) = store.episodes("kind = 'summary'")
    assert summary.session == "s1" and summary.text.startswith("Summary of session s1:")
    assert "we had tea" in summary.text
    assert {e.state for e in store.episodes("kind = 'turn'")} == {"merged", "consolidated"}
    ids = [h.episode.id for h in index.search("sister Lisbon", _unit(0), k=10)]
    assert c in ids and a not in ids and b in ids
    # nothing new: a second pass changes nothing and keeps one summary per session
    again = consolidate(store)
    assert (again.expired_deleted, again.merged, again.summaries_written) == (0, 0, 0)
    assert len(store.episodes("kind = 'summary'")) == 1


def test_consolidation_raises_importance_of_often_retrieved(store):
    hot = store.add("favourite colour is teal", _unit(3))
    cold = store.add("weather was fine", _unit(4))
    index = HippocampalIndex(store)
    for _ in range(3):
        store.t[0] += 1
        index.search("favourite colour", _unit(3), k=1)
    report = consolidate(store, access_threshold=3, importance_step=0.2)
    assert report.importance_raised == 1
    assert store.get([hot])[0].importance == pytest.approx(0.7)
    assert store.get([cold])[0].importance == pytest.approx(0.5)
    assert consolidate(store, access_threshold=3).importance_raised == 0  # no new retrievals


def test_summary_uses_the_encoder_when_given(store):
    store.add_many(
        ["a", "b", "c"], np.stack([_unit(0), _unit(1), _unit(0, 1, 0.5)]), [{"session": "x"}] * 3
    )
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.stack([_unit(5)] * len(texts))

    consolidate(store, embed=embed, summary_turns=1)
    (summary,) = store.episodes("kind = 'summary'")
    assert calls == [[summary.text]]
    np.testing.assert_array_equal(summary.embedding, _unit(5))


def test_working_memory_priority_refresh_and_eviction(store):
    evicted = []
    wm = WorkingMemory(3, tau_s=100.0, on_evict=evicted.append)
    wm.add(WMItem("important", _unit(0), importance=0.9), now=0.0)
    wm.add(WMItem("chatter one", _unit(1), importance=0.1), now=1.0)
    wm.add(WMItem("chatter two", _unit(2), importance=0.1), now=2.0)
    # priority = relevance x exp(-age / tau) + importance
    pr = wm.priorities(_unit(1), now=2.0)
    np.testing.assert_allclose(pr, [0.9, np.exp(-1 / 100) + 0.1, 0.1])
    ((top, p),) = wm.recall(_unit(2), k=1, now=10.0)  # refreshes "chatter two"
    assert top.text == "chatter two" and top.last_access == 10.0 and top.uses == 1
    assert p == pytest.approx(np.exp(-8 / 100) + 0.1)
    # the new item is equally relevant to both chatters: the refreshed one decayed less
    out = wm.add(WMItem("new", _unit(1, 2, 1.0), importance=0.0), now=60.0)
    assert [it.text for it in out] == ["chatter one"] == [it.text for it in evicted]
    assert [it.text for it in wm.items] == ["important", "chatter two", "new"]
    assert len(wm) == 3 and len(wm.flush()) == 3 and len(evicted) == 4


def test_working_memory_evicts_into_the_store(store):
    def to_store(item):
        if item.episode_id is None:
            item.episode_id = store.add(
                item.text, item.embedding, importance=item.importance, **item.fields
            )
        else:
            store.touch([item.episode_id])

    wm = WorkingMemory(1, on_evict=to_store)
    wm.add(WMItem("first", _unit(0), fields={"session": "s", "turn": 0}), now=0.0)
    wm.add(WMItem("second", _unit(1), fields={"session": "s", "turn": 1}), now=1.0)
    (e,) = store.episodes()
    assert (e.text, e.session, e.turn) == ("first", "s", 0)
    hits = HippocampalIndex(store).search("first", _unit(0), k=1, fusion=FusionConfig())
    assert hits[0].episode.text == "first"
    with pytest.raises(ValueError, match="capacity"):
        WorkingMemory(0)
