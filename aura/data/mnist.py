"""MNIST-style digit images: loading, validation, hold-out and Split-MNIST task splits.

`load_digits` reads one of three sources and always returns `(images uint8 [N, 28, 28],
labels int32 [N])`:

* `None`: the embedded 8,000 real MNIST digits vendored at `aura/data/assets/mnist_8k.npz`
  (attribution in `aura/data/assets/README.md`), so everything runs offline.
* a path to an `.npz` with keys `images` (uint8 `[N, 28, 28]`, `[N, 28, 28, 1]` or `[N, 784]`)
  and `labels` (integers 0..9, `[N]`).
* `tfds:<name>[:split]` (for example `tfds:mnist:test`), through `aura.data.tfds_adapter`.

Everything is validated before any compute is spent; bad input raises `DataError` with a
message that names the file, the key or the index and says how to fix it. Files are read with
`allow_pickle=False`: an `.npz` can never execute code here.
"""

from __future__ import annotations

import importlib.resources
import io
import os
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from aura.data.errors import DataError
from aura.data.tfds_adapter import load_tfds

__all__ = [
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "SPLIT_MNIST_PAIRS",
    "holdout_split",
    "load_digit_split",
    "load_digits",
    "split_tasks",
    "to_float",
    "validate_digits",
]

IMAGE_SIZE = 28
NUM_CLASSES = 10
SPLIT_MNIST_PAIRS: tuple[tuple[int, ...], ...] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
_EMBEDDED = "assets/mnist_8k.npz"
_FORMAT_HINT = (
    "expected an .npz written by np.savez(path, images=<uint8 [N, 28, 28]>, labels=<int [N]>)"
)


def load_digits(
    source: str | os.PathLike[str] | None = None, *, tfds_data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads and validates digit images and labels.

    Args:
      source: `None` for the embedded 8,000 digits, a path to an `.npz` file, or
        `tfds:<name>[:split]` (split defaults to `train`; it may contain slicing such as
        `tfds:mnist:train[:80%]`).
      tfds_data_dir: TensorFlow Datasets cache directory for `tfds:` sources.

    Returns:
      `(images, labels)`: images uint8 `[N, 28, 28]`, labels int32 `[N]` with values in 0..9.

    Raises:
      DataError: the source is missing, corrupt or does not hold valid digits.
    """
    if source is None:
        blob = importlib.resources.files("aura.data").joinpath(_EMBEDDED).read_bytes()
        return _load_npz(io.BytesIO(blob), where="embedded digits aura/data/" + _EMBEDDED)
    source_str = os.fspath(source)
    if source_str.startswith("tfds:"):
        name, _, split = source_str[len("tfds:") :].partition(":")
        if not name:
            raise DataError(
                f"data source {source_str!r} names no dataset; write tfds:<name>[:split], "
                "for example tfds:mnist or tfds:mnist:test"
            )
        where = f"tfds:{name}:{split or 'train'}"
        data = load_tfds(name, split or "train", ("image", "label"), data_dir=tfds_data_dir)
        return validate_digits(data["image"], data["label"], where=where)
    return _load_npz_path(source_str)


def _load_npz_path(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Checks that `path` is a readable file, then loads it as digits."""
    if not os.path.exists(path):
        raise DataError(
            f"data file {path!r} does not exist; pass an existing .npz path, "
            "tfds:<name>[:split], or leave the flag unset for the embedded 8,000 digits"
        )
    if os.path.isdir(path):
        raise DataError(f"data path {path!r} is a directory; pass the .npz file inside it")
    try:
        with open(path, "rb") as f:
            return _load_npz(f, where=path)
    except OSError as e:
        raise DataError(f"cannot read data file {path!r}: {e}") from e


def _load_npz(file: io.IOBase, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads `images`/`labels` from an open `.npz` file object and validates them."""
    try:
        archive = np.load(file, allow_pickle=False)
    except ValueError as e:
        # Neither zip nor .npy magic: numpy would fall back to unpickling, which we refuse.
        raise DataError(
            f"{where} is not an .npz archive (neither a zip file nor a .npy array); {_FORMAT_HINT}"
        ) from e
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"{where} is a corrupt .npz archive ({e}); re-create it") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{where} holds a single .npy array of shape {archive.shape}, not an .npz archive; "
            f"{_FORMAT_HINT}"
        )
    with archive:
        present = sorted(archive.files)
        missing = [k for k in ("images", "labels") if k not in present]
        if missing:
            raise DataError(
                f"{where} is missing key(s) {missing}; keys present: {present}; {_FORMAT_HINT}"
            )
        arrays = {}
        for key in ("images", "labels"):
            try:
                arrays[key] = archive[key]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    msg = "holds Python objects (pickled data), which are never loaded; save "
                    msg += "numeric arrays instead"
                else:
                    msg = f"is not a valid .npy array ({e}); re-create the file with np.savez"
                raise DataError(f"{where}: key {key!r} {msg}") from e
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise DataError(f"{where}: key {key!r} is corrupt ({e}); re-create the file") from e
    return validate_digits(arrays["images"], arrays["labels"], where=where)


def validate_digits(
    images: np.ndarray, labels: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validates digit arrays and brings them to the canonical layout.

    Accepts images uint8 `[N, 28, 28]`, `[N, 28, 28, 1]` or `[N, 784]` and integer labels
    `[N]` in 0..9.

    Args:
      images: candidate image array.
      labels: candidate label array.
      where: where the arrays came from (a path or dataset name), used in error messages.

    Returns:
      `(images uint8 [N, 28, 28], labels int32 [N])`.

    Raises:
      DataError: naming the wrong dtype/shape (expected and found), an out-of-range label with
        its index, empty data or a length mismatch.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    side = IMAGE_SIZE
    if images.dtype != np.uint8:
        raise DataError(
            f"{where}: 'images' has dtype {images.dtype}, expected uint8 (pixel values 0..255); "
            "convert with np.clip(x * 255, 0, 255).astype(np.uint8) if they are floats in [0, 1]"
        )
    if images.ndim == 2 and images.shape[1] == side * side:
        images = images.reshape(-1, side, side)  # [N, 784] -> [N, 28, 28]
    elif images.ndim == 4 and images.shape[1:] == (side, side, 1):
        images = images.reshape(-1, side, side)  # [N, 28, 28, 1] -> [N, 28, 28]
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise DataError(
            f"{where}: 'images' has shape {images.shape} (ndim {images.ndim}), expected "
            f"[N, {side}, {side}] (or [N, {side * side}] / [N, {side}, {side}, 1])"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: 'labels' has dtype {labels.dtype}, expected an integer dtype "
            "(class ids 0..9); convert with .astype(np.int32)"
        )
    if labels.ndim != 1:
        raise DataError(
            f"{where}: 'labels' has shape {labels.shape} (ndim {labels.ndim}), expected [N]; "
            "store one class id per image, not one-hot vectors"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{where}: {images.shape[0]} images but {labels.shape[0]} labels; "
            "there must be exactly one label per image"
        )
    if images.shape[0] == 0:
        raise DataError(f"{where}: the dataset is empty (0 images); supply at least one digit")
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where}: label {int(labels[i])} at index {i} is out of range 0..{NUM_CLASSES - 1} "
            f"({bad.size} bad label(s) in total); labels must be digit classes"
        )
    return np.ascontiguousarray(images), labels.astype(np.int32)


def holdout_split(
    n: int, eval_fraction: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Splits `range(n)` into fixed train and evaluation index sets.

    The split depends only on `(n, eval_fraction, seed)`, so a resumed run and a later
    evaluation see the same held-out digits.

    Args:
      n: number of examples.
      eval_fraction: fraction held out, in (0, 1); at least one example goes to each side.
      seed: split seed.

    Returns:
      `(train_idx, eval_idx)`: sorted, disjoint int64 index arrays covering `range(n)`.

    Raises:
      ValueError: `eval_fraction` outside (0, 1).
      DataError: fewer than 2 examples, so nothing can be held out.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be in the open interval (0, 1)")
    if n < 2:
        raise DataError(f"cannot hold out evaluation data from {n} example(s); need at least 2")
    n_eval = min(max(1, round(n * eval_fraction)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def split_tasks(
    labels: np.ndarray, pairs: Sequence[Sequence[int]] = SPLIT_MNIST_PAIRS
) -> list[np.ndarray]:
    """Index sets of a Split-MNIST task sequence (default 0/1, 2/3, 4/5, 6/7, 8/9).

    Args:
      labels: int labels `[N]`.
      pairs: the classes of each task, in order; classes must be in 0..9 and disjoint.

    Returns:
      One sorted int64 index array per task: the examples whose label is in that task.

    Raises:
      ValueError: a class out of range or used by two tasks.
      DataError: a task has no examples in `labels`.
    """
    labels = np.asarray(labels)
    seen: dict[int, int] = {}
    for t, classes in enumerate(pairs):
        for c in classes:
            if not 0 <= int(c) < NUM_CLASSES:
                raise ValueError(f"task {t} class {c} is out of range 0..{NUM_CLASSES - 1}")
            if int(c) in seen:
                raise ValueError(f"class {c} is in task {seen[int(c)]} and task {t}")
            seen[int(c)] = t
    out = []
    for t, classes in enumerate(pairs):
        idx = np.flatnonzero(np.isin(labels, np.asarray(classes)))
        if idx.size == 0:
            raise DataError(
                f"task {t} (classes {tuple(int(c) for c in classes)}) has no examples; "
                "the data must contain every class of every task"
            )
        out.append(idx)
    return out


def to_float(images: np.ndarray) -> np.ndarray:
    """Converts uint8 images `[N, 28, 28]` to float32 `[N, 28, 28, 1]` in [0, 1].

    Raises:
      ValueError: images are not uint8 or not 3-D.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"to_float expects uint8 [N, H, W] images, got {images.dtype} {images.shape}"
        )
    return (images.astype(np.float32) / np.float32(255.0))[..., None]  # [N,H,W] -> [N,H,W,1]


def load_digit_split(
    data: str | None = None, eval_fraction: float = 0.125, eval_data: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits from ``data`` (default: the embedded ones) with a fixed held-out split.

    Without ``eval_data`` the examples ``holdout_split(n, eval_fraction, seed=0)`` are held out;
    with it, ``eval_data`` is the held-out set.

    Returns:
      ``(train_x, train_y, eval_x, eval_y)``: float32 images ``[N, 28, 28, 1]`` in [0, 1] and
      int32 labels.

    Raises:
      DataError: a missing, corrupt or invalid file.
    """
    images, labels = load_digits(data)
    if eval_data:
        eval_images, eval_labels = load_digits(eval_data)
    else:
        tr, ev = holdout_split(len(labels), eval_fraction, seed=0)
        images, labels, eval_images, eval_labels = images[tr], labels[tr], images[ev], labels[ev]
    return to_float(images), labels, to_float(eval_images), eval_labels
