"""Deterministic, resumable epoch batching.

Each epoch shuffles `range(n)` with a permutation that depends only on `(seed, epoch, n)`, and
step `s` of the epoch takes the `s`-th slice of it. A run interrupted after `(epoch, step)` and
resumed with `iterate_batches(..., epoch=epoch, start_step=step)` therefore sees exactly the
batches an uninterrupted run would, with no iterator state to checkpoint beyond the step count.

Typical loop::

    spe = steps_per_epoch(n, batch_size)
    epoch, step = resume_position(global_step, spe)
    for e in range(epoch, num_epochs):
        for idx in iterate_batches(n, batch_size, seed, e, start_step=step if e == epoch else 0):
            ...  # images[idx], labels[idx]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from aura.data.errors import DataError

__all__ = [
    "StepBatcher",
    "epoch_permutation",
    "iterate_batches",
    "resume_position",
    "steps_per_epoch",
]


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of `range(n)` used in `epoch`.

    Args:
      seed: run seed (non-negative).
      epoch: epoch number (non-negative).
      n: number of examples.

    Returns:
      int64 `[n]`, a permutation of `range(n)`; identical for identical arguments (numpy's
      PCG64 stream is stable across numpy versions).

    Raises:
      ValueError: negative seed or epoch, or `n < 1`.
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed={seed} and epoch={epoch} must both be >= 0")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches in one epoch.

    Raises:
      DataError: `batch_size < 1` or `batch_size > n`.
    """
    _check_batch_size(n, batch_size)
    return n // batch_size if drop_remainder else -(-n // batch_size)


def resume_position(global_step: int, steps_in_epoch: int) -> tuple[int, int]:
    """Maps a global step count to the `(epoch, step)` at which training continues.

    Raises:
      ValueError: negative `global_step` or `steps_in_epoch < 1`.
    """
    if global_step < 0 or steps_in_epoch < 1:
        raise ValueError(
            f"global_step={global_step} must be >= 0 and steps_in_epoch={steps_in_epoch} >= 1"
        )
    return divmod(global_step, steps_in_epoch)


def iterate_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    start_step: int = 0,
    drop_remainder: bool = True,
) -> Iterator[np.ndarray]:
    """Yields the index arrays of one epoch's batches, starting at `start_step`.

    Args:
      n: number of examples.
      batch_size: examples per batch, in 1..n.
      seed: run seed.
      epoch: epoch number; selects the permutation.
      start_step: first step to yield (a resumed run passes the step it stopped at).
      drop_remainder: drop the final short batch so every batch has a static shape; when
        False the last batch holds the `n % batch_size` leftover examples.

    Yields:
      int64 index arrays `[batch_size]` (the last may be shorter if not `drop_remainder`).

    Raises:
      DataError: `batch_size < 1` or `batch_size > n` (raised on the call, before iterating).
      ValueError: `start_step` outside `0..steps_per_epoch`.
    """
    total = steps_per_epoch(n, batch_size, drop_remainder)
    if not 0 <= start_step <= total:
        raise ValueError(f"start_step={start_step} must be in 0..{total} (steps in this epoch)")
    perm = epoch_permutation(seed, epoch, n)
    return _slices(perm, batch_size, start_step, total)


def _slices(perm: np.ndarray, batch_size: int, start: int, stop: int) -> Iterator[np.ndarray]:
    for step in range(start, stop):
        yield perm[step * batch_size : (step + 1) * batch_size]


def _check_batch_size(n: int, batch_size: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be >= 1")
    if batch_size > n:
        raise DataError(
            f"batch_size={batch_size} is larger than the dataset ({n} examples); "
            f"use --batch_size of at most {n}"
        )


class StepBatcher:
    """Batch indices as a pure function of the global step (what the shared loop needs).

    ``indices(step)`` is the ``step % steps_per_epoch``-th slice of epoch ``step //
    steps_per_epoch``'s permutation: the same batches :func:`iterate_batches` yields, with the
    current epoch's permutation cached.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.steps_per_epoch = steps_per_epoch(self.n, self.batch_size)
        self._epoch, self._perm = -1, np.zeros((0,), np.int64)

    def epoch_of(self, step: int) -> int:
        """The epoch that global step ``step`` belongs to."""
        return int(step) // self.steps_per_epoch

    def indices(self, step: int) -> np.ndarray:
        """int64 ``[batch_size]``: the examples of global step ``step``."""
        epoch, pos = divmod(int(step), self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, self.n)
        return self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]
