"""Tests for aura.data.mnist: loading, validation of every bad-input case, splits."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.data.mnist import holdout_split, load_digits, split_tasks, to_float


def _digits(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def _save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_embedded_digits():
    images, labels = load_digits()
    assert images.shape == (8000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (8000,) and labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and images.min() == 0


def test_npz_round_trip(tmp_path):
    images, labels = _digits()
    got_images, got_labels = load_digits(_save(tmp_path, images=images, labels=labels))
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int32


@pytest.mark.parametrize("shape", [(12, 784), (12, 28, 28, 1)])
def test_flat_and_channel_images_are_reshaped(tmp_path, shape):
    images, labels = _digits()
    path = _save(tmp_path, images=images.reshape(shape), labels=labels.astype(np.int64))
    got_images, _ = load_digits(path)
    np.testing.assert_array_equal(got_images, images)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.npz")
    with pytest.raises(DataError, match=r"nope\.npz.*does not exist"):
        load_digits(path)


def test_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        load_digits(str(tmp_path))


def test_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello, I am not a zip archive\n")
    with pytest.raises(DataError, match=r"text\.npz is not an \.npz archive"):
        load_digits(str(path))


def test_truncated_zip(tmp_path):
    images, labels = _digits()
    path = _save(tmp_path, images=images, labels=labels)
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt"):
        load_digits(path)


def test_corrupt_member(tmp_path):
    images, labels = _digits()
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", b"\x93NUMPY garbage")
        z.writestr("labels.npy", b"garbage")
    with pytest.raises(DataError, match="key 'images'"):
        load_digits(str(path))


def test_npy_instead_of_npz(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"single \.npy array of shape \(3, 28, 28\)"):
        load_digits(str(path))


def test_missing_keys_names_keys_present(tmp_path):
    images, labels = _digits()
    path = _save(tmp_path, x=images, y=labels)
    with pytest.raises(DataError, match=r"missing key\(s\) \['images', 'labels'\].*\['x', 'y'\]"):
        load_digits(path)


def test_pickled_objects_are_refused(tmp_path):
    _, labels = _digits()
    objs = np.empty(12, dtype=object)
    path = _save(tmp_path, images=objs, labels=labels)
    with pytest.raises(DataError, match="pickled"):
        load_digits(path)


@pytest.mark.parametrize(
    ("images", "pattern"),
    [
        (np.zeros((12, 28, 28), np.float32), r"dtype float32, expected uint8"),
        (np.zeros((12, 28, 27), np.uint8), r"shape \(12, 28, 27\).*expected \[N, 28, 28\]"),
        (np.zeros((12,), np.uint8), r"shape \(12,\) \(ndim 1\)"),
        (np.zeros((12, 700), np.uint8), r"shape \(12, 700\)"),
    ],
)
def test_bad_images(tmp_path, images, pattern):
    _, labels = _digits()
    with pytest.raises(DataError, match=pattern):
        load_digits(_save(tmp_path, images=images, labels=labels))


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.zeros(12, np.float32), r"'labels' has dtype float32, expected an integer"),
        (np.zeros((12, 10), np.int64), r"'labels' has shape \(12, 10\).*one-hot"),
    ],
)
def test_bad_labels(tmp_path, labels, pattern):
    images, _ = _digits()
    with pytest.raises(DataError, match=pattern):
        load_digits(_save(tmp_path, images=images, labels=labels))


@pytest.mark.parametrize(("value", "index"), [(10, 3), (-1, 7)])
def test_label_out_of_range_names_value_and_index(tmp_path, value, index):
    images, labels = _digits()
    labels = labels.astype(np.int64)
    labels[index] = value
    with pytest.raises(DataError, match=rf"label {value} at index {index} is out of range 0\.\.9"):
        load_digits(_save(tmp_path, images=images, labels=labels))


def test_empty(tmp_path):
    path = _save(tmp_path, images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int32))
    with pytest.raises(DataError, match="empty"):
        load_digits(path)


def test_length_mismatch(tmp_path):
    images, labels = _digits()
    with pytest.raises(DataError, match="12 images but 11 labels"):
        load_digits(_save(tmp_path, images=images, labels=labels[:11]))


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


def test_tfds_source_without_name():
    with pytest.raises(DataError, match="names no dataset"):
        load_digits("tfds:")


def test_holdout_split_fixed_disjoint_and_complete():
    train, held = holdout_split(1000, 0.15, seed=3)
    train2, held2 = holdout_split(1000, 0.15, seed=3)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(held, held2)
    assert len(held) == 150 and len(train) == 850
    assert not np.intersect1d(train, held).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(1000))
    _, other = holdout_split(1000, 0.15, seed=4)
    assert not np.array_equal(held, other)


def test_holdout_split_errors():
    with pytest.raises(ValueError, match=r"eval_fraction=1.0"):
        holdout_split(10, 1.0)
    with pytest.raises(DataError, match="at least 2"):
        holdout_split(1, 0.5)
    train, held = holdout_split(2, 0.01)
    assert len(train) == 1 and len(held) == 1


def test_split_tasks():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 0, 3], np.int32)
    tasks = split_tasks(labels)
    assert len(tasks) == 5
    for t, idx in enumerate(tasks):
        assert set(labels[idx]) == {2 * t, 2 * t + 1}
    np.testing.assert_array_equal(np.sort(np.concatenate(tasks)), np.arange(len(labels)))
    np.testing.assert_array_equal(tasks[0], [0, 1, 11])


def test_split_tasks_errors():
    with pytest.raises(DataError, match=r"task 4 \(classes \(8, 9\)\) has no examples"):
        split_tasks(np.array([0, 1, 2, 3, 4, 5, 6, 7]))
    with pytest.raises(ValueError, match="class 1 is in task 0 and task 1"):
        split_tasks(np.arange(10), pairs=((0, 1), (1, 2)))
    with pytest.raises(ValueError, match="class 10 is out of range"):
        split_tasks(np.arange(10), pairs=((0, 10),))


def test_to_float():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)
    out = to_float(images)
    assert out.shape == (1, 2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        to_float(images.astype(np.float32))
