"""Split-MNIST task data: digits split into the five two-class tasks of continual learning.

Shapes: n examples of a task, D = 784 pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from aura.data.errors import DataError
from aura.data.mnist import SPLIT_MNIST_PAIRS, load_digit_split, split_tasks

__all__ = ["SplitData", "load_split_data"]


@dataclasses.dataclass(frozen=True)
class SplitData:
    """Per-task inputs (f32 [n, 784] in [0, 1]) and digit labels (int32 [n]), one list entry
    per task. Only the caller holds these; the continual state never does."""

    train_x: list[np.ndarray]
    train_y: list[np.ndarray]
    eval_x: list[np.ndarray]
    eval_y: list[np.ndarray]


def load_split_data(
    data: str | None,
    eval_data: str | None,
    pairs: Sequence[Sequence[int]] = SPLIT_MNIST_PAIRS,
    eval_fraction: float = 0.125,
) -> SplitData:
    """Loads digits (embedded default, an npz or tfds:) and splits them into tasks.

    Without ``eval_data`` a fixed split is held out (:func:`aura.data.mnist.load_digit_split`).

    Raises:
      DataError: bad files, or a task without training or evaluation examples.
    """
    images, labels, eval_images, eval_labels = load_digit_split(data, eval_fraction, eval_data)
    out: dict[str, list] = {k: [] for k in ("train_x", "train_y", "eval_x", "eval_y")}
    for split, imgs, labs in (("train", images, labels), ("eval", eval_images, eval_labels)):
        try:
            idx = split_tasks(labs, pairs)
        except DataError as e:
            raise DataError(f"{split} data: {e}") from e
        for i in idx:
            flat = imgs[i].reshape(len(i), -1)  # [n, 28, 28, 1] -> [n, D] floats in [0, 1]
            out[f"{split}_x"].append(flat)
            out[f"{split}_y"].append(labs[i].astype(np.int32))
    return SplitData(**out)
