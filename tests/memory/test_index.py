"""Tests for aura.memory.index: fused scoring against a naive numpy reference, chunking, sync."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.memory.index import CUES, FusionConfig, HippocampalIndex, _dense_topk
from aura.memory.store import EpisodicStore
from aura.nn import hopfield

DIM = 16
WORDS = ["cat", "dog", "lisbon", "porto", "tea", "coffee", "piano", "violin", "red", "blue"]


def _vecs(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def filled(tmp_path):
    rng = np.random.default_rng(1)
    t = [10_000.0]
    store = EpisodicStore(tmp_path / "m.db", encoder_name="e", dim=DIM, clock=lambda: t[0])
    n = 300
    texts = [" ".join(rng.choice(WORDS, size=3)) + f" item{i}" for i in range(n)]
    fields = [
        {
            "event_time": float(rng.uniform(0, 10_000)),
            "importance": float(rng.uniform()),
            **({"ttl_s": float(rng.uniform(-50, 50))} if i % 7 == 0 else {}),
        }
        for i in range(n)
    ]
    store.add_many(texts, _vecs(n), fields)
    store.update([5, 6], state="merged", merged_into=7)
    store.delete([8])
    return store, t


def _naive(store, query, qv, fusion, k, now):
    """Every live episode scored with every cue, fused, top-k: ids and scores."""
    eps = [
        e for e in store.episodes("state != 'merged'") if e.expires_at is None or e.expires_at > now
    ]
    lex = dict(store.lexical(query, 10_000, now=now))
    best = max(lex.values(), default=0.0)
    s = {
        "dense": np.array([float(e.embedding @ qv) for e in eps]),
        "lexical": np.array([lex.get(e.id, 0.0) / best if best else 0.0 for e in eps]),
        "recency": np.array([np.exp(-max(now - e.event_time, 0) / fusion.tau_s) for e in eps]),
        "importance": np.array([e.importance for e in eps]),
    }
    w = fusion.weights()
    if fusion.method == "weighted":
        fused = sum(w[c] * s[c] for c in CUES)
    else:
        fused = np.zeros(len(eps))
        for c in CUES:
            rank = np.empty(len(eps))
            rank[np.argsort(-s[c], kind="stable")] = np.arange(1, len(eps) + 1)
            part = w[c] / (fusion.rrf_k + rank)
            if c == "lexical":
                part = np.where([e.id in lex for e in eps], part, 0.0)
            fused += part
    if fusion.supersede > 0:  # a later episode among the 2k best supersedes an earlier one
        near = np.argsort(-fused, kind="stable")[: 2 * k]
        before, fused = fused, fused.copy()
        for i in near:
            for j in near:
                later = eps[j].event_time > eps[i].event_time
                sim = float(eps[i].embedding @ eps[j].embedding)
                if later and sim + before[j] - before[i] >= fusion.supersede_threshold:
                    fused[i] -= fusion.supersede
                    break
    top = np.argsort(-fused, kind="stable")[:k]
    return [eps[i].id for i in top], fused[top]


@pytest.mark.parametrize("method,supersede", [("weighted", 0.0), ("weighted", 0.1), ("rrf", 0.0)])
def test_search_matches_naive_reference(filled, method, supersede):
    store, t = filled
    index = HippocampalIndex(store, chunk_size=64, min_capacity=16)
    fusion = FusionConfig(
        supersede=supersede,
        supersede_threshold=0.2,
        method=method,
        lexical=0.5,
        recency=0.3,
        importance=0.2,
        tau_s=3000.0,
        candidates=400,
    )
    for seed in range(5):
        qv = _vecs(1, seed=100 + seed)[0]
        query = f"{WORDS[seed]} and {WORDS[seed + 3]}"
        hits = index.search(query, qv, k=10, fusion=fusion, touch=False)
        want_ids, want_scores = _naive(store, query, qv, fusion, 10, t[0])
        assert [h.episode.id for h in hits] == want_ids
        np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=1e-5, atol=1e-6)
        for h in hits:
            assert h.components["dense"] == pytest.approx(float(h.episode.embedding @ qv), abs=1e-5)


def test_dense_candidates_are_the_exact_live_top_c(filled):
    store, t = filled
    index = HippocampalIndex(store, chunk_size=48)  # 48 does not divide the capacity
    qv = _vecs(3, seed=7)
    slots, cos = index.dense_candidates(qv, 20, t[0])
    live = index._live(t[0])
    keys = np.stack([e.embedding for e in store.get(index.ids.tolist())])
    for b in range(3):
        ref = np.where(live, keys @ qv[b], -np.inf)
        want = np.argsort(-ref, kind="stable")[:20]
        got = slots[b][slots[b] >= 0][:20]
        assert sorted(got.tolist()) == sorted(want.tolist())
        np.testing.assert_allclose(np.sort(cos[b][slots[b] >= 0])[::-1][:20], ref[want], atol=1e-5)
    assert not np.any(np.isin(index.ids[slots[slots >= 0]], [5, 6, 8]))  # merged, deleted


def test_ttl_hides_at_once(filled):
    store, t = filled
    index = HippocampalIndex(store)
    qv = _vecs(1, seed=3)[0]
    new = store.add("the secret code is 4711", qv, ttl_s=60, importance=1.0)
    assert index.search("secret code", qv, k=1)[0].episode.id == new
    t[0] += 61
    assert all(h.episode.id != new for h in index.search("secret code", qv, k=50))


def test_index_follows_another_process(filled, tmp_path):
    store, t = filled
    index = HippocampalIndex(store, min_capacity=16)
    before = len(index.ids)
    code = textwrap.dedent(
        """
        import sys, numpy as np
        from aura.memory.store import EpisodicStore
        s = EpisodicStore(sys.argv[1], encoder_name="e", dim=16)
        v = np.zeros(16, np.float32); v[0] = 1.0
        s.add("zebra crossing remembered elsewhere", v, event_time=10000.0)
        s.delete([1, 2, 3])
        """
    )
    subprocess.run([sys.executable, "-c", code, store.path], check=True)
    qv = np.zeros(DIM, np.float32)
    qv[0] = 1.0
    hits = index.search("zebra", qv, k=5, fusion=FusionConfig(lexical=1.0))
    assert hits[0].episode.text == "zebra crossing remembered elsewhere"
    assert len(index.ids) == before + 1
    assert not {1, 2, 3} & {h.episode.id for h in index.search("cat", qv, k=300)}


def test_grows_past_capacity_and_empty_index(tmp_path):
    store = EpisodicStore(tmp_path / "m.db", encoder_name="e", dim=DIM)
    index = HippocampalIndex(store, min_capacity=16)
    assert index.search("anything", _vecs(1)[0]) == []
    v = _vecs(100, seed=4)
    for i in range(0, 100, 10):
        store.add_many([f"t{j}" for j in range(i, i + 10)], v[i : i + 10])
        hits = index.search("x", v[i], k=1, fusion=FusionConfig(recency=0.0, importance=0.0))
        assert hits[0].episode.text == f"t{i}"
    assert index.memory.patterns.shape[0] == 128
    store.delete(list(range(1, 101)))
    assert index.search("x", v[0]) == [] and len(index) == 0


def test_million_keys_need_no_n_by_d_temporaries():
    """1M x 384 keys: compiled dense retrieval's scratch is O(chunk x D), not O(B x N x D)."""
    n, d, b, k, chunk = 1 << 20, 384, 4, 64, 4096
    mem = hopfield.HopfieldMemory(
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.int32),
    )
    q = jax.ShapeDtypeStruct((b, d), jnp.float32)
    compiled = _dense_topk.lower(mem, q, k=k, chunk_size=chunk).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    # a [chunk, D] key slice (plus a copy) and [B, chunk] logits; not even one [B, N] f32 array
    bound = 2 * chunk * d * 4 + 8 * b * chunk * 4
    assert temp < bound < b * n * 4


def test_supersession_lets_the_later_of_two_similar_memories_win(tmp_path):
    store = EpisodicStore(tmp_path / "m.db", encoder_name="e", dim=DIM, clock=lambda: 100.0)
    e = np.eye(DIM, dtype=np.float32)
    stale = e[0] * 0.8 + e[1] * 0.6  # "Mara lives in Lisbon"
    update = e[0] * 0.8 + e[2] * 0.6  # "Mara moved to Porto": same subject, said later
    other = e[3]  # said later still, about something else
    ids = store.add_many(
        ["Mara lives in Lisbon.", "Mara moved to Porto.", "Tea is nice."],
        np.stack([stale, update, other]),
        [{"event_time": 1.0}, {"event_time": 2.0}, {"event_time": 3.0}],
    )
    index = HippocampalIndex(store)
    q = e[0] * 0.9 + e[1] * 0.436  # the question is worded like the stale fact
    q = q / np.linalg.norm(q)
    off = [h.episode.id for h in index.search("", q, k=2, fusion=FusionConfig(supersede=0.0))]
    # cos(stale, update) 0.64 + fused(update) 0.72 - fused(stale) 0.98 = 0.38 >= 0.3
    sup = FusionConfig(supersede=0.3, supersede_threshold=0.3)
    on = [h.episode.id for h in index.search("", q, k=2, fusion=sup)]
    assert off == [ids[0], ids[1]] and on == [ids[1], ids[0]]
