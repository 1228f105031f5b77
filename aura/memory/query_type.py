"""A query-type classifier that picks the retrieval policy for a question.

Cheap features of the question text (its wh-word, time cue words such as "now" or "originally",
length, capitalised words, possessives, digits) feed scikit-learn's gradient-boosted trees, trained
on the kinds of the development questions (``single``, ``latest``, ``early``, ...). Each kind maps
to its own `FusionConfig` (e.g. more recency weight when the latest value must win, less for
facts from early on); `QueryTypePolicy.fusion_for` returns the config of the predicted kind.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from aura.memory.index import FusionConfig

__all__ = ["QueryTypePolicy", "question_features"]

_WH = ("what", "where", "which", "who", "when", "how", "why", "is", "does", "do", "did", "can")
_NOW = ("now", "currently", "these days", "still", "latest", "anymore", "today", "lately")
_PAST = ("first", "originally", "early", "earlier", "beginning", "ago", "used to", "before")


def question_features(questions: Sequence[str]) -> np.ndarray:
    """``[N, F]`` float features of questions (see the module docstring)."""
    rows = []
    for q in questions:
        low = q.lower()
        words = re.findall(r"[\w']+", q)
        first = words[0].lower() if words else ""
        wh = [float(first == w) for w in _WH] + [float(first not in _WH)]
        rows.append(
            wh
            + [
                float(any(re.search(rf"\b{w}\b", low) for w in _NOW)),
                float(any(re.search(rf"\b{w}\b", low) for w in _PAST)),
                float(len(words)),
                float(sum(w[:1].isupper() for w in words[1:])),
                float("'s" in low),
                float(bool(re.search(r"\d", q))),
                float(q.rstrip().endswith("?")),
            ]
        )
    return np.array(rows, np.float32).reshape(len(rows), len(_WH) + 8)


@dataclasses.dataclass
class QueryTypePolicy:
    """Question kind -> fusion config, through a gradient-boosted classifier.

    Attributes:
      configs: the fusion config per kind.
      default: the config for a kind without one.
      model: the fitted classifier (set by `fit`).
    """

    configs: dict[str, FusionConfig]
    default: FusionConfig
    model: GradientBoostingClassifier | None = None

    def fit(self, questions: Sequence[str], kinds: Sequence[str], seed: int = 0) -> QueryTypePolicy:
        """Trains the classifier on labelled questions; returns self."""
        if len(set(kinds)) < 2:
            raise ValueError(f"need questions of at least two kinds to train, got {set(kinds)}")
        self.model = GradientBoostingClassifier(n_estimators=100, max_depth=2, random_state=seed)
        self.model.fit(question_features(questions), np.asarray(kinds))
        return self

    def predict(self, questions: Sequence[str]) -> list[str]:
        """Predicted kinds."""
        if self.model is None:
            raise ValueError("QueryTypePolicy.predict before fit")
        return [str(k) for k in self.model.predict(question_features(questions))]

    def fusion_for(self, kinds: Sequence[str]) -> list[FusionConfig]:
        """The fusion config of each (predicted) kind."""
        return [self.configs.get(k, self.default) for k in kinds]
