"""`MM` (one mixture model of any registered type) and `MMMan` (many models under string ids).

Both keep a model as ``(model_type, config, arrays, info)``: the registered type's pure
functions do the work (`aura.mixtures.registry`), so a custom type is managed exactly like the
built-in "gmm" and "hmm". Saving writes orbax arrays + a JSON manifest (`aura.mixtures.store`);
loading a directory written for another model type or another class is refused with a
`DataError` that names what the directory holds.

Example::

    man = MMMan()
    man.fit(x_a, model_type="gmm", data_id="a", config={"n_components": 3})
    man.fit((seqs, lengths), model_type="hmm", data_id="b", config={"n_states": 4})
    man.score(x_a, "a"), man.get_means(), man.check_data()   # {"a": "gmm", "b": "hmm"}
    man.save("models/"); MMMan.load("models/")
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from aura.data.errors import DataError
from aura.mixtures import registry, store

__all__ = ["MM", "MMMan", "check_id"]

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_id(model_id: Any) -> str:
    """A valid model id (1-64 of ``[A-Za-z0-9_.-]``; ints are turned into strings)."""
    if isinstance(model_id, int | np.integer) and not isinstance(model_id, bool):
        model_id = str(int(model_id))
    if not isinstance(model_id, str) or not _ID.match(model_id) or model_id in {".", ".."}:
        raise ValueError(f"model id {model_id!r} must be 1-64 characters of [A-Za-z0-9_.-]")
    return model_id


class MM:
    """One mixture model of a registered type: fit, score, serialise.

    Attributes:
      model_type: registered type name.
      config: JSON-able settings passed to the type's functions.
      arrays: fitted arrays (None before `fit`).
      info: fit facts (iterations, converged, fit_s, ...).
    """

    def __init__(self, model_type: str = "gmm", config: dict | None = None, **settings: Any):
        """Args: model_type: a registered type; config / settings: its settings (merged)."""
        self.spec = registry.get_model_type(model_type)
        self.model_type = model_type
        self.config = {**(config or {}), **settings}
        self.arrays: dict | None = None
        self.info: dict = {}

    def fit(self, data: Any) -> MM:
        """Fits on `data` (points [N, D], or sequences for sequence types)."""
        self.arrays, self.info = self.spec.fit(data, dict(self.config))
        return self

    def _fitted(self) -> dict:
        if self.arrays is None:
            raise ValueError(f"this {self.model_type!r} model is not fitted yet; call fit first")
        return self.arrays

    def score_samples(self, data: Any) -> np.ndarray:
        """Per-sample (per-sequence for sequence types) log-likelihood, nats."""
        return np.asarray(self.spec.score_samples(self._fitted(), dict(self.config), data))

    def get_log_likelihoods(self, data: Any) -> np.ndarray:
        """Alias of `score_samples` (the original API's name)."""
        return self.score_samples(data)

    def score(self, data: Any) -> float:
        """The type's score: mean per-sample for "gmm", total for "hmm"."""
        return self.spec.mean_or_custom_score(self._fitted(), dict(self.config), data)

    def _array(self, name: str) -> np.ndarray:
        arrays = self._fitted()
        if name not in arrays:
            raise ValueError(
                f"a {self.model_type!r} model has no {name!r}; it has {sorted(arrays)}"
            )
        return np.asarray(arrays[name])

    def get_means(self) -> np.ndarray:
        return self._array("means")

    def get_variances(self) -> np.ndarray:
        return self._array("covariances")

    def get_weights(self) -> np.ndarray:
        return self._array("weights")

    def manifest(self) -> dict:
        """JSON description (type, config, fit info)."""
        return {"model_type": self.model_type, "config": self.config, "info": self.info}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes orbax arrays + manifest.json to directory `path`."""
        store.save_model_dir(path, self._fitted(), {"kind": "mm", **self.manifest()})

    @classmethod
    def from_parts(cls, manifest: dict, arrays: dict) -> MM:
        """Rebuilds a fitted model from `manifest()` and its arrays."""
        mm = cls(manifest["model_type"], manifest.get("config") or {})
        mm.arrays, mm.info = dict(arrays), dict(manifest.get("info") or {})
        return mm

    @classmethod
    def load(cls, path: str | os.PathLike[str], model_type: str | None = None) -> MM:
        """Loads a saved model; with `model_type`, refuses a model of another type.

        Raises:
          DataError: missing/corrupt save, another kind of save, or another model type.
        """
        arrays, manifest = store.load_model_dir(path, "mm")
        if model_type is not None and manifest.get("model_type") != model_type:
            raise DataError(
                f"{path} holds a {manifest.get('model_type')!r} model, not {model_type!r}; "
                f"load it with model_type={manifest.get('model_type')!r} (or None)"
            )
        if manifest.get("model_type") not in registry.model_types():
            raise DataError(
                f"{path} holds a model of type {manifest.get('model_type')!r}, which is not "
                f"registered here ({list(registry.model_types())}); register it first"
            )
        return cls.from_parts(manifest, arrays)


class MMMan:
    """Many `MM` models under string ids."""

    def __init__(self) -> None:
        self.models: dict[str, MM] = {}

    def _new_id(self, prefix: str) -> str:
        i = len(self.models)
        while f"{prefix}_{i}" in self.models:
            i += 1
        return f"{prefix}_{i}"

    def add(self, model: MM, data_id: Any = None, *, replace: bool = False) -> str:
        """Adds a fitted model; returns its id (default ``<type>_<n>``)."""
        model._fitted()
        data_id = self._new_id(model.model_type) if data_id is None else check_id(data_id)
        if data_id in self.models and not replace:
            raise ValueError(f"model id {data_id!r} already exists; remove it or pass replace=True")
        self.models[data_id] = model
        return data_id

    def fit(
        self,
        data: Any,
        model_type: str = "gmm",
        data_id: Any = None,
        config: dict | None = None,
        **settings: Any,
    ) -> str:
        """Fits a new model of `model_type` on `data` (or absorbs a fitted `MM`); returns its id."""
        model = data if isinstance(data, MM) else MM(model_type, config, **settings).fit(data)
        return self.add(model, data_id, replace=True)

    def check_data(self) -> dict[str, str]:
        """``{id: model_type}`` of every stored model."""
        return {k: m.model_type for k, m in self.models.items()}

    def __contains__(self, data_id: Any) -> bool:
        return check_id(data_id) in self.models

    def __len__(self) -> int:
        return len(self.models)

    def get(self, data_id: Any) -> MM:
        """The model stored under `data_id` (ValueError listing the ids if unknown)."""
        key = check_id(data_id)
        if key not in self.models:
            raise ValueError(f"no model with id {key!r}; stored ids: {sorted(self.models)}")
        return self.models[key]

    export_model = get

    def remove(self, data_id: Any) -> None:
        """Deletes a model (ValueError if unknown)."""
        self.get(data_id)
        del self.models[check_id(data_id)]

    unfit = remove

    def _each(self, data_ids: Any, fn) -> Any:
        if data_ids is None:
            return {k: fn(m) for k, m in self.models.items()}
        if isinstance(data_ids, str | int | np.integer):
            return fn(self.get(data_ids))
        return {check_id(d): fn(self.get(d)) for d in data_ids}

    def score(self, data: Any, data_ids: Any = None) -> Any:
        """Each model's `score` on `data`: a dict per id (a float for a single id)."""
        return self._each(data_ids, lambda m: m.score(data))

    def get_log_likelihoods(self, data: Any, data_ids: Any = None) -> Any:
        """Per-sample log-likelihoods per id (an array for a single id)."""
        return self._each(data_ids, lambda m: m.score_samples(data))

    def get_means(self, data_ids: Any = None) -> Any:
        return self._each(data_ids, MM.get_means)

    def get_variances(self, data_ids: Any = None) -> Any:
        return self._each(data_ids, MM.get_variances)

    def get_weights(self, data_ids: Any = None) -> Any:
        return self._each(data_ids, MM.get_weights)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes all models (one orbax checkpoint keyed by id) + manifest.json."""
        if not self.models:
            raise ValueError("MMMan.save: there are no models to save")
        arrays = {k: m._fitted() for k, m in self.models.items()}
        manifest = {"kind": "mmman", "models": {k: m.manifest() for k, m in self.models.items()}}
        store.save_model_dir(path, arrays, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MMMan:
        """Loads a saved manager (DataError for a missing/corrupt/other-kind save)."""
        arrays, manifest = store.load_model_dir(path, "mmman")
        man = cls()
        for key, entry in manifest["models"].items():
            man.models[key] = MM.from_parts(entry, arrays[key])
        return man
