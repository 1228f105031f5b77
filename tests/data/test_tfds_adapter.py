"""Tests for aura.data.tfds_adapter on a fake tensorflow_datasets module (no downloads)."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.data.mnist import load_digits
from aura.data.tfds_adapter import load_tfds


class _Tensor:
    """Stands in for a tf.Tensor: only `as_numpy` may turn it into an array."""

    def __init__(self, value):
        self.value = value


class FakeTfds:
    """Mimics `tfds.load(..., batch_size=-1)` + `tfds.as_numpy` over a local fixture."""

    def __init__(self, features=None, error=None):
        rng = np.random.default_rng(0)
        self.features = features or {
            "image": rng.integers(0, 256, size=(6, 28, 28, 1), dtype=np.uint8),
            "label": np.array([0, 1, 2, 7, 8, 9], np.int64),
        }
        self.error = error
        self.calls = []

    def load(self, name, **kwargs):
        self.calls.append((name, kwargs))
        if self.error is not None:
            raise self.error
        return {k: _Tensor(v) for k, v in self.features.items()}

    def as_numpy(self, tree):
        return {k: v.value for k, v in tree.items()}


def install(monkeypatch, fake: FakeTfds, tensorflow: bool = True) -> None:
    """Makes ``import tensorflow_datasets`` return ``fake`` (and TensorFlow importable)."""
    module = types.ModuleType("tensorflow_datasets")
    module.load, module.as_numpy = fake.load, fake.as_numpy
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    tf = types.ModuleType("tensorflow")
    tf.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)
    monkeypatch.setitem(sys.modules, "tensorflow", tf if tensorflow else None)


def test_load_returns_the_named_features_and_passes_arguments():
    fake = FakeTfds()
    out = load_tfds("mnist", "test", ("image", "label"), data_dir="/tmp/tfds", _tfds_module=fake)
    assert fake.calls == [
        ("mnist", {"split": "test", "batch_size": -1, "data_dir": "/tmp/tfds", "download": True})
    ]
    np.testing.assert_array_equal(out["image"], fake.features["image"])
    np.testing.assert_array_equal(out["label"], [0, 1, 2, 7, 8, 9])
    nested = FakeTfds(features={"answers": {"text": np.array([b"a"])}, "id": np.array([b"x"])})
    out = load_tfds("squad", "train", ("answers/text", "id"), _tfds_module=nested)
    assert out["answers/text"].tolist() == [b"a"]


def test_load_digits_routes_tfds_sources(monkeypatch):
    fake = FakeTfds()
    install(monkeypatch, fake)
    images, labels = load_digits("tfds:mnist:train[:80%]")
    assert fake.calls[0][0] == "mnist" and fake.calls[0][1]["split"] == "train[:80%]"
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, fake.features["image"][..., 0])
    assert labels.dtype == np.int32 and labels.shape == (6,)
    load_digits("tfds:fashion_mnist")
    assert fake.calls[1][0] == "fashion_mnist" and fake.calls[1][1]["split"] == "train"


def test_missing_tensorflow_has_its_own_message(monkeypatch):
    install(monkeypatch, FakeTfds(), tensorflow=False)
    with pytest.raises(DataError, match=r"need TensorFlow .*pip install 'aura\[tfds\]'"):
        load_tfds("mnist", "train")


def test_missing_tensorflow_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises
    with pytest.raises(DataError, match=r"pip install 'aura\[tfds\]'"):
        load_tfds("mnist", "train")


def test_load_failure_is_data_error():
    fake = FakeTfds(error=RuntimeError("DatasetNotFoundError: Dataset mnisst not found"))
    with pytest.raises(DataError, match=r"tfds:mnisst:train.*could not load dataset 'mnisst'"):
        load_tfds("mnisst", "train", _tfds_module=fake)


def test_missing_features_named():
    fake = FakeTfds(features={"image": np.zeros((2, 28, 28, 1), np.uint8), "text": np.zeros(2)})
    with pytest.raises(DataError, match=r"no feature\(s\) \['label'\].*\['image', 'text'\]"):
        load_tfds("some_text_ds", "train", _tfds_module=fake)


def test_digits_are_validated_like_npz(monkeypatch):
    features = {
        "image": np.zeros((3, 32, 32, 3), np.uint8),
        "label": np.array([0, 1, 2]),
    }
    install(monkeypatch, FakeTfds(features))
    with pytest.raises(DataError, match=r"tfds:cifar10:train: 'images' has shape \(3, 32, 32, 3\)"):
        load_digits("tfds:cifar10")
    features = {"image": np.zeros((3, 28, 28, 1), np.uint8), "label": np.array([0, 11, 2])}
    install(monkeypatch, FakeTfds(features))
    with pytest.raises(DataError, match=r"label 11 at index 1"):
        load_digits("tfds:emnist")
