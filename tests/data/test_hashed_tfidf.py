"""Hashed TF-IDF features: the TF-IDF baseline's numbers, sparse top-k rows, the saved idf."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.data.hashed_tfidf import HashedTfidf, ngrams

TEXTS = [
    "Open a socket and send bytes over the socket.",
    "Parse an XML document; the parser returns an element tree.",
    "Send an email message with SMTP; the message has headers.",
    "Create a socket server that handles each request in a thread.",
]


def test_ngrams_are_lowercased_words_of_two_or_more_characters_and_bigrams():
    assert ngrams("A Socket, a_b x2 I") == ["socket", "a_b", "x2", "socket a_b", "a_b x2"]


def test_rows_match_scikit_learns_tfidf_vectorizer_when_no_bucket_collides():
    text = pytest.importorskip("sklearn.feature_extraction.text")
    vec = text.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    ref = vec.fit_transform(TEXTS[:3]).toarray()  # [N, vocabulary]
    F = 1 << 20
    buckets = [zlib.crc32(t.encode()) % F for t in vec.get_feature_names_out()]
    assert len(set(buckets)) == len(buckets)  # a collision would make this a different test
    tfidf = HashedTfidf.fit(TEXTS[:3], F)
    ids, vals = tfidf.transform(TEXTS, top_k=64)
    dense = np.zeros((len(TEXTS), F))
    np.add.at(dense, (np.arange(len(TEXTS))[:, None], ids), vals)
    np.testing.assert_allclose(dense[:, buckets], vec.transform(TEXTS).toarray(), atol=1e-6)
    np.testing.assert_allclose(dense[:3, buckets], ref, atol=1e-6)
    assert np.count_nonzero(dense) == np.count_nonzero(vec.transform(TEXTS).toarray())


def test_top_k_keeps_the_largest_weights_of_the_normalised_row():
    tfidf = HashedTfidf.fit(TEXTS, 1 << 16)
    ids_all, vals_all = tfidf.transform(TEXTS[:1], top_k=100)
    ids, vals = tfidf.transform(TEXTS[:1], top_k=3)
    assert ids.shape == vals.shape == (1, 3) and ids.dtype == np.int32
    assert np.isclose(np.sum(vals_all**2), 1.0)  # normalised over every n-gram, then cut
    np.testing.assert_array_equal(vals[0], np.sort(vals_all[0])[::-1][:3])
    nothing = tfidf.transform(["zz qq"], top_k=3)  # n-grams no training text has: weight 0
    assert not nothing[1].any()


def test_saved_idf_reloads_and_a_wrong_size_is_named(tmp_path):
    tfidf = HashedTfidf.fit(TEXTS, 1024)
    path = tmp_path / "idf.npy"
    tfidf.save(path)
    again = HashedTfidf.load(path, 1024)
    for a, b in zip(tfidf.transform(TEXTS, 8), again.transform(TEXTS, 8), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match=r"\(2048,\)"):
        HashedTfidf.load(path, 2048)
    with pytest.raises(DataError, match="does not exist"):
        HashedTfidf.load(tmp_path / "missing.npy", 1024)
