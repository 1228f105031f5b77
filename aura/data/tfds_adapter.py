"""TensorFlow Datasets adapter for digit-image datasets (`--data tfds:<name>[:split]`).

For online users: `load_tfds("mnist", "train")` reads a whole split through
`tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, ...))` and returns the same arrays as
`aura.data.mnist.load_digits`, validated the same way. tensorflow-datasets is an optional
dependency (`pip install 'aura[tfds]'`) imported only when this function runs.

Tests inject a fake module through `_tfds_module`; every other line is the real code path.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from aura.data.errors import DataError
from aura.data.mnist import validate_digits

__all__ = ["load_tfds"]

_CATALOG = "https://www.tensorflow.org/datasets/catalog/overview"


def _import_tfds() -> ModuleType:
    """Imports tensorflow_datasets, turning its absence into an actionable DataError."""
    try:
        return importlib.import_module("tensorflow_datasets")
    except ImportError as e:
        raise DataError(
            "tfds: data sources need tensorflow-datasets, which is not installed; "
            "run `pip install 'aura[tfds]'` or pass an .npz file with --data"
        ) from e


def load_tfds(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    _tfds_module: Any = None,
    *,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a whole TFDS split of 28x28 grey digits as numpy arrays.

    Args:
      name: TFDS dataset name, e.g. `mnist`, `fashion_mnist`, `kmnist`.
      split: TFDS split spec, e.g. `train`, `test`, `train[:80%]`.
      data_dir: TFDS data directory (default: TFDS's own, `~/tensorflow_datasets`).
      _tfds_module: for tests only: an object with `load` and `as_numpy` used instead of
        `tensorflow_datasets`.
      download: let TFDS download and prepare the dataset if it is not in `data_dir`.

    Returns:
      `(images uint8 [N, 28, 28], labels int32 [N])`.

    Raises:
      DataError: tensorflow-datasets missing, the dataset cannot be loaded, it has no
        `image`/`label` features, or its arrays fail the digit validation.
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
    missing = [k for k in ("image", "label") if k not in data]
    if missing:
        raise DataError(
            f"{where}: dataset has no feature(s) {missing}; features present: "
            f"{sorted(data)}; only image-classification datasets with 'image' and 'label' work"
        )
    return validate_digits(np.asarray(data["image"]), np.asarray(data["label"]), where=where)
