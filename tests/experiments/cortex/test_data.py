"""Cortex data: the embedding cache is keyed by encoder + file hash; splits are by context."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.experiments.cortex import data as data_mod
from aura.experiments.cortex.data import embed_texts, prepare_data
from tests.experiments.cortex.fixtures import write_qa


class FakeEncoder:
    """Deterministic embeddings from each text's hash; records every encode call."""

    def __init__(self, name: str, calls: list):
        self.name, self.dim, self.calls = name, 8, calls

    def encode(self, texts, batch_size=64):
        self.calls.append((self.name, list(texts)))
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds])


@pytest.fixture
def calls(monkeypatch):
    log: list = []
    monkeypatch.setattr(data_mod, "load_sentence_encoder",
                        lambda path=None: FakeEncoder(path or "fake-a", log))  # fmt: skip
    return log


def _prep(qa, workdir, **kw):
    return prepare_data(str(qa), str(workdir), log=lambda s: None, **kw)


def test_embeddings_are_cached_by_encoder_and_file_hash(tmp_path, calls):
    qa = write_qa(tmp_path / "qa.jsonl")
    work = tmp_path / "w"
    first = _prep(qa, work)
    assert not first.cached and len(calls) == 1
    texts = calls[0][1]
    assert len(texts) == len(set(texts))  # each distinct text once (12 contexts, 12 questions...)
    assert first.ctx_emb.shape == (12, 8) and first.q_emb.shape == first.a_emb.shape == (24, 8)
    np.testing.assert_allclose(np.linalg.norm(first.a_emb, axis=1), 1.0, rtol=1e-6)
    again = _prep(qa, work)  # same file, same encoder: from the cache
    assert again.cached and len(calls) == 1 and again.key == first.key
    np.testing.assert_array_equal(again.q_emb, first.q_emb)
    other = _prep(qa, work, encoder="fake-b")  # another encoder: its own entry
    assert not other.cached and len(calls) == 2 and other.key != first.key
    with open(qa, "a") as f:  # a changed file: a new key
        f.write('{"id": "x", "context": "New text here.", "question": "Q?", "answer": "text"}\n')
    changed = _prep(qa, work)
    assert not changed.cached and len(calls) == 3 and changed.key not in (first.key, other.key)
    assert sorted(os.listdir(work / "embeddings")) == sorted(
        f"{n}-{d.key}.npz" for n, d in (("fake-a", first), ("fake-b", other), ("fake-a", changed))
    )
    (work / "embeddings" / f"fake-a-{changed.key}.npz").write_bytes(b"not an npz")
    assert not _prep(qa, work).cached and len(calls) == 4  # an unreadable cache is rebuilt


def test_splits_are_disjoint_by_context(tmp_path, calls):
    d = _prep(write_qa(tmp_path / "qa.jsonl", contexts=20, per=3), tmp_path / "w")
    sets = [set(d.split_contexts[s].tolist()) for s in ("train", "dev", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(map(len, sets)) == 20
    for s in ("train", "dev", "test"):
        assert set(d.q_ctx[d.split_questions[s]].tolist()) == set(d.split_contexts[s].tolist())
    assert sum(len(v) for v in d.split_questions.values()) == 60
    assert d.types[0] in ("alpha", "beta", "gamma")


def test_embed_texts_dedupes_and_keeps_order():
    seen = []

    def encode(texts):
        seen.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts])

    out = embed_texts(encode, ["bb", "a", "bb", "ccc"])
    assert seen == [["bb", "a", "ccc"]]
    np.testing.assert_allclose(out[0], out[2])
    np.testing.assert_allclose(out[1], np.array([1.0, 1.0]) / np.sqrt(2))


def test_too_few_contexts_is_a_data_error(tmp_path, calls):
    with pytest.raises(DataError, match=r"2 distinct context\(s\) cannot be split 3 ways"):
        _prep(write_qa(tmp_path / "qa.jsonl", contexts=2), tmp_path / "w")
