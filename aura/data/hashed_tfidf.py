"""Hashed word n-gram TF-IDF features (the "wide" input of a wide-and-deep text classifier).

Shapes: N texts, K kept features per text, F hash buckets.

The features are those of the TF-IDF + logistic-regression baseline (scikit-learn's
``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)``): lower-cased words of two or more
word characters (its default ``token_pattern``), unigrams and bigrams, sublinear term frequency
``1 + ln(count)``, smoothed idf ``ln((1 + N) / (1 + df)) + 1`` from the training texts, and an
L2-normalised row. Instead of a vocabulary, every n-gram is hashed (CRC-32, stable across
processes and machines, unlike Python's ``hash``) into ``F`` buckets, so the only fitted state is
the idf vector f32 [F] (saved as ``.npy``; no pickle). A bucket no training text has gets idf 0,
so unseen n-grams carry no weight, as words outside the baseline's vocabulary do.

A row is stored sparse and fixed-size: the ``K`` largest weights (bucket ids int32 [N, K],
weights f32 [N, K], padded with bucket 0 and weight 0), the shape a jitted model wants.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from aura.data.errors import DataError

WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


def ngrams(text: str, max_n: int = 2) -> list[str]:
    """Lower-cased words and their 2..``max_n``-grams (space-joined), in text order."""
    words = WORD.findall(text.lower())
    out = list(words)
    for n in range(2, max_n + 1):
        out.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return out


def bucket_counts(text: str, num_buckets: int, max_n: int = 2) -> Counter:
    """{bucket id: count} of a text's n-grams (CRC-32 of the UTF-8 n-gram mod ``num_buckets``)."""
    return Counter(zlib.crc32(g.encode("utf-8")) % num_buckets for g in ngrams(text, max_n))


class HashedTfidf:
    """Fitted idf over ``num_buckets`` hashed n-gram buckets; :meth:`transform` makes features."""

    def __init__(self, idf: np.ndarray, max_n: int = 2):
        self.idf = np.asarray(idf, np.float32)  # [F]
        self.max_n = max_n

    @property
    def num_buckets(self) -> int:
        return len(self.idf)

    @classmethod
    def fit(cls, texts: Sequence[str], num_buckets: int, max_n: int = 2) -> HashedTfidf:
        """Smoothed idf of the training ``texts`` (0 for buckets none of them has)."""
        if num_buckets < 2 or max_n < 1:
            raise ValueError(f"num_buckets = {num_buckets} must be >= 2 and max_n = {max_n} >= 1")
        df = np.zeros(num_buckets, np.int64)
        for t in texts:
            df[list(bucket_counts(t, num_buckets, max_n))] += 1
        idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
        return cls(np.where(df > 0, idf, 0.0), max_n)

    def transform(self, texts: Sequence[str], top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Sparse L2-normalised TF-IDF rows: (bucket ids int32 [N, K], weights f32 [N, K]).

        Each row keeps its ``top_k`` largest weights (normalised over all of them first).
        """
        ids = np.zeros((len(texts), top_k), np.int32)
        vals = np.zeros((len(texts), top_k), np.float32)
        for i, t in enumerate(texts):
            counts = bucket_counts(t, self.num_buckets, self.max_n)
            b = np.fromiter(counts.keys(), np.int64, len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), np.float64, len(counts)))
            w = tf * self.idf[b]
            norm = np.linalg.norm(w)
            if norm == 0:
                continue  # nothing seen in training: an all-zero row
            keep = np.argsort(-w, kind="stable")[:top_k]
            ids[i, : len(keep)] = b[keep]
            vals[i, : len(keep)] = w[keep] / norm
        return ids, vals

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the idf vector (``.npy``, atomically); ``max_n`` belongs in the run's config."""
        path = os.fspath(path)
        tmp = path + ".tmp.npy"
        np.save(tmp, self.idf, allow_pickle=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], num_buckets: int, max_n: int = 2) -> HashedTfidf:
        """Reads a saved idf vector, checking it has ``num_buckets`` entries.

        Raises:
          DataError: a missing file or a vector of another size.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DataError(f"{path!r} does not exist: the run's wide-feature idf is missing")
        idf = np.load(path, allow_pickle=False)
        if idf.shape != (num_buckets,):
            raise DataError(
                f"{path}: idf of shape {idf.shape}, the config wants ({num_buckets},); the file "
                "belongs to another run"
            )
        return cls(idf, max_n)
