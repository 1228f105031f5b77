"""tools/flops.py: FLOPs from a compiled program, peak parsing and MFU."""

import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from flops import PEAK_FLOPS, compiled_flops, mfu, parse_peak  # noqa: E402


def test_compiled_flops_of_a_matmul():
    a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
    compiled = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
    assert compiled_flops(compiled) == pytest.approx(2 * 64 * 32 * 16, rel=0.05)


def test_peak_parsing_and_mfu():
    assert parse_peak(None) == PEAK_FLOPS["cpu"]  # the measured CPU default on the CPU backend
    assert parse_peak("tpu_v4") == 275e12 and parse_peak("h200") == 989e12
    assert parse_peak("2.5e9") == 2.5e9
    for bad in ("fast", "-1", "0"):
        with pytest.raises(ValueError, match="peak_flops"):
            parse_peak(bad)
    assert mfu(165e9, 2.0, 165e9) == pytest.approx(0.5)
    assert mfu(None, 1.0, 1.0) is None
