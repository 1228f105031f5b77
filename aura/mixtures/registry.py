"""The model-type registry: every kind of mixture model that `MM`, `MMMan` and `Cerebrum` manage.

A model type is a pair of pure host functions over a JSON-able `config` and a dict of arrays:

* ``fit(data, config) -> (arrays, info)``: fits on `data`; `info` is JSON-able and should hold
  ``iterations`` and ``converged`` when they apply.
* ``score_samples(arrays, config, data) -> np.ndarray [N]``: log-likelihood per sample (per
  point for point data, per sequence for sequence data), in nats.
* optional ``score(arrays, config, data) -> float`` (default: the mean of `score_samples`).

Built in: ``"gmm"`` (`GaussianMixture`, score = mean per-sample as scikit-learn) and ``"hmm"``
(`HiddenMarkov`, score = TOTAL as hmmlearn). ``"mmm"`` (the MultiMixtureTransformer hybrid) is
registered by `aura.mixtures.mmm`. A user adds their own::

    register_model_type("my_custom", fit=my_fit, score_samples=my_score_samples)
    MM("my_custom", config={...}).fit(x)

Sequence data is an array ``[B, T, D]``, or ``(x, lengths)``, or ``{"x": ..., "lengths": ...}``
(`split_sequences`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aura.mixtures.gmm import GaussianMixture
from aura.mixtures.hmm import HiddenMarkov

__all__ = [
    "ModelType",
    "get_model_type",
    "model_types",
    "register_model_type",
    "split_sequences",
    "unregister_model_type",
]

FitFn = Callable[[Any, dict], tuple[dict, dict]]
ScoreSamplesFn = Callable[[dict, dict, Any], np.ndarray]
ScoreFn = Callable[[dict, dict, Any], float]


@dataclasses.dataclass(frozen=True)
class ModelType:
    """One registered model type (see the module docstring for the function contracts)."""

    name: str
    fit: FitFn
    score_samples: ScoreSamplesFn
    score: ScoreFn | None = None
    sequence_data: bool = False  # True: data are sequences (used by Cerebrum's gate features)

    def mean_or_custom_score(self, arrays: dict, config: dict, data: Any) -> float:
        if self.score is not None:
            return float(self.score(arrays, config, data))
        return float(np.mean(self.score_samples(arrays, config, data)))


_REGISTRY: dict[str, ModelType] = {}


def register_model_type(
    name: str,
    *,
    fit: FitFn,
    score_samples: ScoreSamplesFn,
    score: ScoreFn | None = None,
    sequence_data: bool = False,
    overwrite: bool = False,
) -> ModelType:
    """Registers a model type under `name`.

    Raises:
      ValueError: an empty/non-identifier name, a non-callable function, or a name already
        registered (unless `overwrite`).
    """
    if not isinstance(name, str) or not name.replace("_", "a").isalnum():
        raise ValueError(f"model type name {name!r} must be a non-empty identifier ([A-Za-z0-9_])")
    for what, fn in (("fit", fit), ("score_samples", score_samples)):
        if not callable(fn):
            raise ValueError(f"model type {name!r}: {what} must be callable, got {fn!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"model type {name!r} is already registered; pass overwrite=True")
    spec = ModelType(name, fit, score_samples, score, sequence_data)
    _REGISTRY[name] = spec
    return spec


def unregister_model_type(name: str) -> None:
    """Removes a registered type (built-ins included; tests use it to clean up)."""
    _REGISTRY.pop(name, None)


def get_model_type(name: str) -> ModelType:
    """The registered type `name`.

    Raises:
      ValueError: unknown name (lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model_type {name!r}; registered types: {sorted(_REGISTRY)} "
            "(add your own with aura.mixtures.register_model_type)"
        ) from None


def model_types() -> tuple[str, ...]:
    """Names of all registered types."""
    return tuple(sorted(_REGISTRY))


def split_sequences(data: Any) -> tuple[Any, Any]:
    """``(x, lengths)`` from an array, a ``(x, lengths)`` pair or a ``{"x", "lengths"}`` dict."""
    if isinstance(data, dict):
        return data["x"], data.get("lengths")
    if isinstance(data, tuple) and len(data) == 2:
        return data
    return data, None


# ---------------------------------------------------------------------------- built-in types


def _info(model: Any, t0: float) -> dict:
    return {
        "iterations": int(model.n_iter_),
        "converged": bool(model.converged_),
        "lower_bound": float(model.lower_bound_),
        "fit_s": time.perf_counter() - t0,
    }


def _gmm_fit(data: Any, config: dict) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    gm = GaussianMixture(**config).fit(data, where="data")
    return gm.state_dict(), _info(gm, t0)


def _gmm_score_samples(arrays: dict, config: dict, data: Any) -> np.ndarray:
    return GaussianMixture.from_state(config, arrays).score_samples(data)


def _hmm_fit(data: Any, config: dict) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    x, lengths = split_sequences(data)
    hm = HiddenMarkov(**config).fit(x, lengths, where="data")
    return hm.state_dict(), _info(hm, t0)


def _hmm_score_samples(arrays: dict, config: dict, data: Any) -> np.ndarray:
    x, lengths = split_sequences(data)
    return HiddenMarkov.from_state(config, arrays).score_sequences(x, lengths)


def _hmm_score(arrays: dict, config: dict, data: Any) -> float:
    return float(np.sum(_hmm_score_samples(arrays, config, data)))


register_model_type("gmm", fit=_gmm_fit, score_samples=_gmm_score_samples)
register_model_type(
    "hmm",
    fit=_hmm_fit,
    score_samples=_hmm_score_samples,
    score=_hmm_score,
    sequence_data=True,
)
