"""Tests for aura.brain.growth: schedule parsing, validation and activation."""

from __future__ import annotations

import numpy as np
import pytest

from aura.brain.growth import active_at, active_mask, newly_activated, parse_growth_schedule


def test_parse_default_schedule():
    assert parse_growth_schedule("0:1,2:3,4:6", capacity=6) == ((0, 1), (2, 3), (4, 6))
    assert parse_growth_schedule(" 0:2 , 5:2 ", capacity=2) == ((0, 2), (5, 2))
    assert parse_growth_schedule("0:4", capacity=8) == ((0, 4),)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("", "malformed"),
        ("0:1,,2:3", "malformed"),
        ("0-1", r"item '0-1' is not 'epoch:count'"),
        ("0:1,2:x", r"item '2:x'"),
        ("0:1:2", r"item '0:1:2'"),
        ("1:1,2:3", "must start at epoch 0, got epoch 1"),
        ("0:1,3:2,2:3", "epochs must increase, got 2 after 3"),
        ("0:1,0:2", "epochs must increase"),
        ("0:3,2:2", "counts must not decrease, got 2 after 3"),
        ("0:0,2:3", "expert count 0 must be >= 1"),
        ("0:1,2:3,4:9", "asks for 9 experts but the capacity is 6"),
    ],
)
def test_parse_errors(spec, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        parse_growth_schedule(spec, capacity=6)
    if spec:
        assert repr(spec) in str(info.value)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity=0"):
        parse_growth_schedule("0:1", capacity=0)


def test_active_at_and_newly_activated():
    s = parse_growth_schedule("0:1,2:3,4:6", capacity=6)
    assert [active_at(s, e) for e in range(7)] == [1, 1, 3, 3, 6, 6, 6]
    assert newly_activated(s, 0) == [0]
    assert newly_activated(s, 1) == []
    assert newly_activated(s, 2) == [1, 2]
    assert newly_activated(s, 3) == []
    assert newly_activated(s, 4) == [3, 4, 5]
    assert newly_activated(s, 9) == []
    np.testing.assert_array_equal(active_mask(s, 2, 6), [1, 1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="epoch=-1"):
        active_at(s, -1)
