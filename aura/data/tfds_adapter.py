"""TensorFlow Datasets adapter (`--data tfds:<name>[:split]`), for online users.

`load_tfds("mnist", "train", ("image", "label"))` reads a whole split through
`tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, ...))` and returns the named features
as numpy arrays; the callers validate them (digits: `aura.data.mnist.load_digits`; text
classification and QA: their own loaders). tensorflow-datasets and TensorFlow are an optional
dependency (`pip install 'aura[tfds]'`) imported only when this function runs; a missing one gets
its own message.

Tests inject a fake module through `_tfds_module`; every other line is the real code path.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from aura.data.errors import DataError

__all__ = ["load_tfds"]

_CATALOG = "https://www.tensorflow.org/datasets/catalog/overview"


def _import_tfds() -> ModuleType:
    """Imports tensorflow_datasets, turning its (or TensorFlow's) absence into a DataError."""
    try:
        tfds = importlib.import_module("tensorflow_datasets")
    except ImportError as e:
        raise DataError(
            "tfds: data sources need tensorflow-datasets, which is not installed; "
            "run `pip install 'aura[tfds]'` or pass a local file instead"
        ) from e
    if importlib.util.find_spec("tensorflow") is None:
        raise DataError(
            "tfds: data sources need TensorFlow (tensorflow-datasets builds and reads datasets "
            "with it), which is not installed; run `pip install 'aura[tfds]'` or pass a local "
            "file instead"
        )
    return tfds


def load_tfds(
    name: str,
    split: str = "train",
    features: Sequence[str] = ("image", "label"),
    data_dir: str | None = None,
    _tfds_module: Any = None,
    *,
    download: bool = True,
) -> dict[str, np.ndarray]:
    """Loads the named features of a whole TFDS split as numpy arrays.

    Args:
      name: TFDS dataset name, e.g. `mnist`, `glue/sst2`, `squad`.
      split: TFDS split spec, e.g. `train`, `test`, `train[:80%]`.
      features: the feature keys to return (nested dicts are flattened as `outer/inner`, so
        SQuAD's answers are `answers/text`).
      data_dir: TFDS data directory (default: TFDS's own, `~/tensorflow_datasets`).
      _tfds_module: for tests only: an object with `load` and `as_numpy` used instead of
        `tensorflow_datasets`.
      download: let TFDS download and prepare the dataset if it is not in `data_dir`.

    Returns:
      feature name -> numpy array (strings come back as bytes arrays, as TFDS gives them).

    Raises:
      DataError: tensorflow-datasets or TensorFlow missing, the dataset cannot be loaded, or it
        lacks one of `features` (listing the ones it has).
    """
    tfds = _tfds_module if _tfds_module is not None else _import_tfds()
    where = f"tfds:{name}:{split}"
    try:
        data = tfds.as_numpy(
            tfds.load(name, split=split, batch_size=-1, data_dir=data_dir, download=download)
        )
    except Exception as e:  # TFDS raises many exception types; all mean "cannot load".
        raise DataError(
            f"{where}: tensorflow-datasets could not load dataset {name!r} split {split!r} "
            f"({type(e).__name__}: {e}); check the name against {_CATALOG}, the split, "
            f"the network connection and data_dir={data_dir!r}"
        ) from e
    if not isinstance(data, dict):
        raise DataError(
            f"{where}: expected a dict of features from tfds.load, got {type(data).__name__}; "
            "pass one split (a string such as 'train'), not a list of splits"
        )
    flat = _flatten(data)
    missing = [k for k in features if k not in flat]
    if missing:
        raise DataError(
            f"{where}: dataset has no feature(s) {missing}; features present: {sorted(flat)}"
        )
    return {k: np.asarray(flat[k]) for k in features}


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
