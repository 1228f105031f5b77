"""Tests for aura.data.batching: determinism, coverage and exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from aura.data.batching import (
    epoch_permutation,
    iterate_batches,
    resume_position,
    steps_per_epoch,
)
from aura.data.errors import DataError


def test_permutation_deterministic_and_per_epoch():
    a = epoch_permutation(seed=1, epoch=0, n=100)
    np.testing.assert_array_equal(a, epoch_permutation(1, 0, 100))
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    assert not np.array_equal(a, epoch_permutation(1, 1, 100))
    assert not np.array_equal(a, epoch_permutation(2, 0, 100))


def test_epoch_covers_each_example_once():
    batches = list(iterate_batches(103, 10, seed=0, epoch=4))
    assert len(batches) == 10 == steps_per_epoch(103, 10)
    assert all(b.shape == (10,) for b in batches)
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == 100
    np.testing.assert_array_equal(flat, epoch_permutation(0, 4, 103)[:100])


def test_keep_remainder():
    batches = list(iterate_batches(103, 10, seed=0, epoch=0, drop_remainder=False))
    assert len(batches) == 11 == steps_per_epoch(103, 10, drop_remainder=False)
    assert batches[-1].shape == (3,)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(103))


def test_resume_equals_uninterrupted():
    n, bs, seed, epochs = 57, 8, 7, 3
    spe = steps_per_epoch(n, bs)
    full = [b for e in range(epochs) for b in iterate_batches(n, bs, seed, e)]
    for stop in range(len(full) + 1):  # interrupt after every possible step
        seen = full[:stop]
        epoch, step = resume_position(stop, spe)
        for e in range(epoch, epochs):
            seen += list(iterate_batches(n, bs, seed, e, start_step=step if e == epoch else 0))
        assert len(seen) == len(full)
        for a, b in zip(seen, full, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bs", [0, -3, 11])
def test_bad_batch_size(bs):
    with pytest.raises(DataError, match=f"batch_size={bs}"):
        iterate_batches(10, bs, seed=0, epoch=0)


def test_bad_positions():
    with pytest.raises(ValueError, match=r"start_step=6 must be in 0\.\.5"):
        iterate_batches(10, 2, seed=0, epoch=0, start_step=6)
    assert list(iterate_batches(10, 2, seed=0, epoch=0, start_step=5)) == []
    with pytest.raises(ValueError, match="epoch=-1"):
        epoch_permutation(0, -1, 5)
    with pytest.raises(ValueError, match="steps_in_epoch=0"):
        resume_position(3, 0)
    assert resume_position(23, 5) == (4, 3)
