"""Classification metrics and the TF-IDF + logistic-regression baseline.

Shapes: N examples, L labels.

``macro_f1`` is plain numpy (the command reports it with or without scikit-learn; tests hold it
to ``sklearn.metrics.f1_score(average="macro")``). ``tfidf_baseline`` fits scikit-learn's
``TfidfVectorizer`` (word 1-2 grams, sublinear tf) and ``LogisticRegression`` on the training
split and scores the eval split, the bar the MOCA classifier is measured against; it returns
None when scikit-learn is not installed (it is a dev/test dependency, not a runtime one).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import numpy as np


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> float:
    """Unweighted mean over the labels present in ``labels`` or ``preds`` of per-label F1.

    A label with no true and no predicted example is left out (as scikit-learn does); a
    label with precision and recall both 0 scores F1 0.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    scores = []
    for c in range(num_labels):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Fraction of equal entries."""
    return float(np.mean(np.asarray(labels) == np.asarray(preds)))


def sklearn_available() -> bool:
    """Whether scikit-learn can be imported (the baseline needs it)."""
    try:
        importlib.import_module("sklearn")
    except ImportError:
        return False
    return True


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    eval_texts: Sequence[str],
    eval_labels: np.ndarray,
    num_labels: int,
    seed: int = 0,
) -> dict[str, float] | None:
    """TF-IDF (word 1-2 grams) + logistic regression on the same split; None without sklearn.

    Returns:
      ``{"accuracy", "macro_f1"}`` on the eval split.
    """
    if not sklearn_available():
        return None
    feature_extraction = importlib.import_module("sklearn.feature_extraction.text")
    linear_model = importlib.import_module("sklearn.linear_model")
    vec = feature_extraction.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vec.fit_transform(list(train_texts))
    clf = linear_model.LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
    clf.fit(x_train, np.asarray(train_labels))
    preds = clf.predict(vec.transform(list(eval_texts)))
    return {
        "accuracy": accuracy(eval_labels, preds),
        "macro_f1": macro_f1(eval_labels, preds, num_labels),
    }
