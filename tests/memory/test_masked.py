"""Tests for aura.memory.masked: the masking itself, and that the masked cue (real MiniLM) finds
the memory that answers the question where the plain cosine prefers small talk naming the
same person. The cue's fused score against a naive reference is in test_index.py."""

import numpy as np
import pytest

from aura.memory.index import FusionConfig, HippocampalIndex
from aura.memory.masked import MaskedKeys, mask_entities
from aura.memory.store import EpisodicStore
from aura.models.sentence_encoder import load_sentence_encoder


def test_mask_entities_replaces_only_the_given_capitalised_names():
    ents = frozenset({"mara", "porto"})
    text = "Actually, Mara's friend moved to Porto; mara and Lisbon stay."
    assert mask_entities(text, ents) == (
        "Actually, someone's friend moved to someone; mara and Lisbon stay."
    )
    assert mask_entities(text, frozenset()) == text


class _CountingEncoder:
    def __init__(self):
        self.texts = []

    def encode(self, texts, batch_size=64):
        self.texts += list(texts)
        return np.ones((len(texts), 4), np.float32) / 2.0


def test_masked_keys_are_cached_per_episode_and_entities():
    enc = _CountingEncoder()
    mk = MaskedKeys(enc)
    keys = np.zeros((3, 4), np.float32)
    texts = {1: "Mara lives in Lisbon.", 2: "Tea is nice.", 3: "Mara, Mara!"}
    fetched = []

    def texts_of(ids):
        fetched.append(list(ids))
        return {i: texts[i] for i in ids}

    out = mk.keys([1, 2, 3], keys, frozenset({"mara"}), [True, False, True], texts_of)
    assert enc.texts == ["someone lives in Lisbon.", "someone, someone!"]
    assert fetched == [[1, 3]]
    np.testing.assert_array_equal(out[1], keys[1])  # not naming Mara: the stored key
    assert np.all(out[[0, 2]] == 0.5)
    mk.keys([1, 3], keys[:2], frozenset({"mara"}), [True, True], texts_of)
    assert len(enc.texts) == 2 and len(fetched) == 1  # cached: no fetch, no encode
    mk.keys([1], keys[:1], frozenset({"lisbon"}), [True], texts_of)
    assert enc.texts[-1] == "Mara lives in someone."  # other entities: another entry
    assert mk.query("Where does Mara live?", frozenset({"mara"}), np.zeros(4))[0] == 0.5
    plain = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(mk.query("Where is it?", frozenset({"mara"}), plain), plain)


@pytest.fixture(scope="module")
def minilm():
    return load_sentence_encoder()


@pytest.mark.parametrize(
    "question,memories,answer",
    [
        (  # from the memory development set, where the plain cosine ranks small talk first
            "Which instrument does Freya play?",
            [
                "Freya practises the tuba every evening.",
                "I had lunch with Freya yesterday.",
                "I should call Freya this weekend.",
            ],
            0,
        ),
        (
            "What does Greta do for a living?",
            [
                "Greta's favourite drink is matcha.",
                "Greta works as a surveyor.",
                "Greta lives in Krakow.",
                "Greta plays rowing on weekends.",
            ],
            1,
        ),
    ],
)
def test_masked_cue_finds_what_the_question_asks(tmp_path, minilm, question, memories, answer):
    store = EpisodicStore(tmp_path / "m.db", encoder_name=minilm.name, dim=minilm.dim)
    fields = [{"event_time": 1000.0 + 60 * t, "speaker": "user"} for t in range(len(memories))]
    ids = store.add_many(memories, minilm.encode(memories), fields)
    index = HippocampalIndex(store, encoder=minilm)
    qv = minilm.encode([question])[0]
    plain = FusionConfig(masked=0.0, supersede=False)
    assert index.search(question, qv, k=1, fusion=plain, touch=False)[0].episode.id != ids[answer]
    masked = FusionConfig(supersede=False)  # the default weights
    (hit,) = index.search(question, qv, k=1, fusion=masked, touch=False)
    assert hit.episode.id == ids[answer]
    assert hit.components["masked"] != pytest.approx(hit.components["dense"], abs=1e-3)
    store.close()
