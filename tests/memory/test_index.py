"""Tests for aura.memory.index: fused scoring against a naive numpy reference, chunking, sync."""

import dataclasses
import subprocess
import sys
import textwrap
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.memory.entities import entities
from aura.memory.index import CUES, FusionConfig, HippocampalIndex, _dense_topk
from aura.memory.interference import states_change
from aura.memory.masked import mask_entities
from aura.memory.store import EpisodicStore
from aura.memory.supersede import LinkConfig, link_new
from aura.nn import hopfield

DIM = 16
WORDS = ["cat", "dog", "Lisbon", "Porto", "tea", "coffee", "piano", "violin", "Mara", "blue", "now"]


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
    pairs = rng.choice(n, size=(120, 2))  # random supersession links, some to dead rows
    store.add_links([(int(min(a, b)) + 1, int(max(a, b)) + 1, 0.5) for a, b in pairs if a != b])
    return store, t


class _HashEncoder:
    """A deterministic stand-in encoder: a unit vector seeded by the text's CRC."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts, batch_size=64):
        self.calls += len(texts)
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=DIM) for t in texts]
        v = np.asarray(rows, np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _masked_key(e, q_ents, encoder):
    masked = mask_entities(e.text, q_ents)
    if encoder is None or masked == e.text:
        return e.embedding
    return encoder.encode([masked])[0]


def _naive(store, query, qv, fusion, k, now, encoder=None):
    """Every live episode scored with every cue, fused, top-k: ids and scores."""
    eps = [
        e for e in store.episodes("state != 'merged'") if e.expires_at is None or e.expires_at > now
    ]
    lex = dict(store.lexical(query, 10_000, now=now))
    best = max(lex.values(), default=0.0)
    q_ents = entities(query)
    mq = encoder.encode([mask_entities(query, q_ents)])[0] if encoder and q_ents else qv
    mkeys = {e.id: _masked_key(e, q_ents, encoder) for e in eps}
    s = {
        "dense": np.array([float(e.embedding @ qv) for e in eps]),
        "lexical": np.array([lex.get(e.id, 0.0) / best if best else 0.0 for e in eps]),
        "recency": np.array([np.exp(-max(now - e.event_time, 0) / fusion.tau_s) for e in eps]),
        "importance": np.array([e.importance for e in eps]),
        "entity": np.array(
            [len(entities(query) & entities(e.text)) / max(1, len(entities(query))) for e in eps]
        ),
        "masked": np.array([float(mkeys[e.id] @ mq) for e in eps]),
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
    if fusion.supersede:  # a confirmed linked successor j puts i just below j's score
        where = {e.id: n for n, e in enumerate(eps)}
        links = store.links([e.id for e in eps])
        before, fused = fused, fused.copy()
        for i, e in enumerate(eps):
            ok = [
                where[j]
                for j, _ in links.get(e.id, ())
                if j in where
                and eps[where[j]].event_time >= e.event_time
                and float(e.embedding @ eps[where[j]].embedding)
                + before[where[j]]
                - before[i]
                + fusion.change_bonus * (states_change(eps[where[j]].text) - states_change(e.text))
                >= fusion.supersede_threshold
            ]
            if ok and before[i] >= max(before[j] for j in ok):
                fused[i] = np.nextafter(max(before[j] for j in ok), -np.inf)
    top = np.argsort(-fused, kind="stable")[:k]
    return [eps[i].id for i in top], fused[top]


@pytest.mark.parametrize(
    "method,supersede,masked,change_bonus",
    [
        ("weighted", False, False, 0.0),
        ("weighted", True, False, 0.0),
        ("rrf", False, False, 0.0),
        ("weighted", True, True, 1.0),
        ("rrf", False, True, 0.0),
    ],
)
def test_search_matches_naive_reference(filled, method, supersede, masked, change_bonus):
    store, t = filled
    encoder = _HashEncoder() if masked else None
    index = HippocampalIndex(store, encoder=encoder, chunk_size=64, min_capacity=16)
    fusion = FusionConfig(
        supersede=supersede,
        supersede_threshold=0.2,
        change_bonus=change_bonus,
        method=method,
        lexical=0.5,
        recency=0.3,
        importance=0.2,
        entity=0.3,
        masked=0.7 if masked else 0.0,
        tau_s=3000.0,
        candidates=400,
    )
    for seed in range(5):
        qv = _vecs(1, seed=100 + seed)[0]
        query = f"{WORDS[seed]} and {WORDS[seed + 3]}, Mara?"
        hits = index.search(query, qv, k=10, fusion=fusion, touch=False)
        want_ids, want_scores = _naive(store, query, qv, fusion, 10, t[0], encoder)
        assert [h.episode.id for h in hits] == want_ids
        np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=1e-5, atol=1e-6)
        for h in hits:
            assert h.components["dense"] == pytest.approx(float(h.episode.embedding @ qv), abs=1e-5)
    if masked:  # the masked cue really re-embedded the episodes that name the query's entities
        assert encoder.calls > 0
        differ = [h for h in hits if abs(h.components["masked"] - h.components["dense"]) > 1e-3]
        assert differ


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


def test_supersession_lets_the_confirmed_later_memory_win(tmp_path):
    store = EpisodicStore(tmp_path / "m.db", encoder_name="e", dim=DIM, clock=lambda: 100.0)
    e = np.eye(DIM, dtype=np.float32)
    stale = e[0] * 0.8 + e[1] * 0.6  # "Mara lives in Lisbon"
    update = e[0] * 0.8 + e[2] * 0.6  # "Mara moved to Porto": same subject, said later
    job = e[0] * 0.6 + e[4] * 0.8  # "Mara works as a nurse": same subject, other attribute
    other = e[3]  # "Tea is nice.": no entity, never linked
    texts = ["Mara lives in Lisbon.", "Actually, Mara moved to Porto.", "Mara is a nurse.", "Tea."]
    vecs = np.stack([stale, update, job, other])
    fields = [{"event_time": float(t), "speaker": "user"} for t in range(4)]
    ids = store.add_many(texts, vecs, fields)
    index = HippocampalIndex(store)
    links = link_new(store, index, ids, LinkConfig(min_cos=0.3))
    assert {(o, n) for o, n, _ in links} == {(ids[0], ids[1]), (ids[0], ids[2]), (ids[1], ids[2])}
    q = e[0] * 0.9 + e[1] * 0.436  # "Where does Mara live?", worded like the stale fact
    q = q / np.linalg.norm(q)
    plain = FusionConfig(supersede=False, entity=0.0, masked=0.0)
    off = [h.episode.id for h in index.search("", q, k=3, fusion=plain)]
    assert off == [ids[0], ids[1], ids[2]]
    # cos(stale, update) 0.64 + fused(update) 0.72 - fused(stale) 0.98 = 0.38 >= 0.35 confirms
    # the update; the job's links fail: 0.48 + 0.54 - 0.98 = 0.04 and 0.48 + 0.54 - 0.72 = 0.30
    sup = FusionConfig(entity=0.0, masked=0.0, supersede_threshold=0.35, change_bonus=0.0)
    on = index.search("", q, k=3, fusion=sup)
    assert [h.episode.id for h in on] == [ids[1], ids[0], ids[2]]
    assert on[1].components["superseded_by"] == ids[1]  # kept, one rank below its successor
    assert on[1].score < on[0].score
    # at a stricter threshold the update's change wording ("Actually", "moved") decides: 0.38 +
    # 0.1 >= 0.45, while the job (no change wording) still fails
    strict = FusionConfig(entity=0.0, masked=0.0, supersede_threshold=0.45, change_bonus=0.0)
    assert [h.episode.id for h in index.search("", q, k=3, fusion=strict)] == off
    bonus = dataclasses.replace(strict, change_bonus=0.1)
    assert [h.episode.id for h in index.search("", q, k=3, fusion=bonus)] == [
        ids[1],
        ids[0],
        ids[2],
    ]
    store.delete([ids[1]])  # forgetting the update brings the old value back
    again = index.search("", q, k=1, fusion=sup)
    assert again[0].episode.id == ids[0]


def test_links_need_a_shared_entity_the_same_speaker_and_an_older_episode(tmp_path):
    store = EpisodicStore(tmp_path / "m.db", encoder_name="e", dim=DIM)
    v = np.tile(_vecs(1)[0], (4, 1))  # identical keys: only the rules decide
    ids = store.add_many(
        ["Mara lives in Lisbon.", "Tomas lives in Lisbon too.", "Mara moved.", "Mara moved!"],
        v,
        [{"speaker": "user"}, {"speaker": "user"}, {"speaker": "assistant"}, {"speaker": "user"}],
    )
    index = HippocampalIndex(store)
    got = {(o, n) for o, n, _ in link_new(store, index, ids)}
    # 1 -> 0 share "lisbon"; 3 -> 0 share "mara"; 2 is the assistant's; nothing links forward
    assert got == {(ids[0], ids[1]), (ids[0], ids[3])}
    (succ,) = store.links([ids[0]]).values()
    assert [j for j, _ in succ] == [ids[1], ids[3]] and succ[0][1] == pytest.approx(1.0)


def test_change_wording_of_the_older_memory_counts_against_replacing_it(tmp_path):
    store = EpisodicStore(tmp_path / "m.db", encoder_name="e", dim=DIM, clock=lambda: 100.0)
    e = np.eye(DIM, dtype=np.float32)
    texts = ["Mara moved to Lisbon now.", "Mara likes Porto."]  # only the older one says "now"
    vecs = np.stack([e[0] * 0.8 + e[1] * 0.6, e[0] * 0.8 + e[2] * 0.6])
    ids = store.add_many(texts, vecs, [{"event_time": float(t), "speaker": "u"} for t in range(2)])
    index = HippocampalIndex(store)
    link_new(store, index, ids, LinkConfig(min_cos=0.3))
    q = e[0] * 0.9 + e[1] * 0.436
    q = q / np.linalg.norm(q)
    # 0.64 + 0.72 - 0.98 = 0.38: confirmed at 0.35 without the bonus, not with it (0.28)
    base = FusionConfig(entity=0.0, masked=0.0, supersede_threshold=0.35, change_bonus=0.0)
    assert [h.episode.id for h in index.search("", q, k=2, fusion=base)] == [ids[1], ids[0]]
    bonus = dataclasses.replace(base, change_bonus=0.1)
    assert [h.episode.id for h in index.search("", q, k=2, fusion=bonus)] == [ids[0], ids[1]]
