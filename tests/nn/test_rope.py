"""Tests for aura.nn.rope: rotary position embeddings against a naive reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.rope import apply_rope, rope_tables, rotate, substep_tables


def naive_rope(x, positions, base=10000.0):
    """Per-pair 2x2 rotation matrices in float64: pair i = (x[i], x[i + D/2])."""
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    half = d // 2
    out = np.empty_like(x)
    b, t = x.shape[:2]
    positions = np.broadcast_to(np.asarray(positions, np.float64), (b, t))
    for bi in range(b):
        for ti in range(t):
            for i in range(half):
                ang = positions[bi, ti] * base ** (-2.0 * i / d)
                rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
                pair = np.stack([x[bi, ti, ..., i], x[bi, ti, ..., i + half]], axis=0)
                res = rot @ pair
                out[bi, ti, ..., i], out[bi, ti, ..., i + half] = res[0], res[1]
    return out


def _x(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def test_tables_shape_dtype_and_position_zero_is_identity():
    cos, sin = rope_tables(16, 8, 100.0)
    assert cos.shape == sin.shape == (16, 4) and cos.dtype == np.float32
    np.testing.assert_array_equal(cos[0], 1.0)
    np.testing.assert_array_equal(sin[0], 0.0)
    x = _x((2, 1, 8))
    np.testing.assert_allclose(apply_rope(x, 0, max_len=16), x, atol=1e-7)


@pytest.mark.parametrize("base", [10000.0, 50.0])
def test_matches_naive_reference_3d_offset(base):
    x = _x((2, 7, 8))
    got = apply_rope(x, 5, max_len=32, base=base)
    want = naive_rope(x, np.arange(5, 12)[None], base)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_matches_naive_reference_4d_per_batch_positions():
    x = _x((2, 5, 3, 6), seed=1)  # [B, T, H, D]
    pos = np.array([[0, 3, 9, 20, 63], [1, 1, 2, 40, 7]], np.int32)
    got = apply_rope(x, jnp.asarray(pos), max_len=64)
    np.testing.assert_allclose(got, naive_rope(x, pos), rtol=1e-5, atol=1e-5)
    got_t = apply_rope(x[:1], jnp.asarray(pos[0]), max_len=64)  # [T] positions
    np.testing.assert_allclose(got_t, naive_rope(x[:1], pos[:1]), rtol=1e-5, atol=1e-5)


def test_relative_position_invariance_of_dot_products():
    d, t = 16, 12
    q = jnp.broadcast_to(_x((1, 1, d), 2), (1, t, d))  # one q vector at every position
    k = jnp.broadcast_to(_x((1, 1, d), 3), (1, t, d))
    rq = apply_rope(q, 0, max_len=t)[0]  # [T, D]
    rk = apply_rope(k, 0, max_len=t)[0]
    scores = np.asarray(rq @ rk.T)  # scores[m, n] = rope(q, m) . rope(k, n)
    # Every diagonal (fixed m - n) is constant, and diagonals differ from each other.
    for off in range(-t + 1, t):
        diag = np.diagonal(scores, offset=off)
        np.testing.assert_allclose(diag, diag[0], rtol=1e-5, atol=1e-5)
    assert np.ptp([np.diagonal(scores, o)[0] for o in range(-3, 4)]) > 1e-2


def test_norm_preserved():
    x = _x((3, 9, 2, 10), seed=4)
    y = apply_rope(x, 3, max_len=16)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_substeps_compose_to_fractional_positions():
    s, d = 4, 8
    x = _x((1, 3, d), seed=5)
    by_t = apply_rope(x, 2, max_len=8)  # tokens at 2, 3, 4
    cos, sin = substep_tables(s, d)
    got = rotate(by_t[:, :, None, :], jnp.asarray(cos), jnp.asarray(sin))  # [1, 3, S, D]
    for si in range(s):
        want = naive_rope(x, np.arange(2, 5)[None] + si / s)
        np.testing.assert_allclose(got[:, :, si], want, rtol=1e-5, atol=1e-5)


def test_dtype_preserved_and_jit_with_traced_positions():
    x = _x((2, 4, 8)).astype(jnp.bfloat16)
    y = apply_rope(x, 1, max_len=8)
    assert y.dtype == jnp.bfloat16
    pos = jnp.array([[0, 1, 2, 3], [4, 5, 6, 7]], jnp.int32)
    xf = _x((2, 4, 8))
    eager = apply_rope(xf, pos, max_len=8)
    jitted = jax.jit(lambda a, p: apply_rope(a, p, max_len=8))(xf, pos)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    off = jax.jit(lambda a, o: apply_rope(a, o, max_len=8))(xf, jnp.int32(4))
    np.testing.assert_allclose(off, apply_rope(xf, 4, max_len=8), rtol=1e-6, atol=1e-6)


def test_traced_out_of_range_positions_give_nan():
    x = _x((1, 2, 8))
    y = jax.jit(lambda a, p: apply_rope(a, p, max_len=8))(x, jnp.array([[6, 8]], jnp.int32))
    assert np.all(np.isfinite(y[0, 0])) and np.all(np.isnan(y[0, 1]))


def test_odd_dim_raises():
    with pytest.raises(ValueError, match="even"):
        apply_rope(_x((1, 2, 7)), 0)
    with pytest.raises(ValueError, match="even"):
        rope_tables(8, 5)


@pytest.mark.parametrize(
    "positions, match",
    [(7, "8 is beyond rope_max_len = 8"), (np.array([[0, 8]]), "8 is beyond rope_max_len = 8")],
)
def test_positions_beyond_max_len_raise(positions, match):
    x = _x((1, 2, 8))
    with pytest.raises(ValueError, match=match):
        apply_rope(
            x, positions if isinstance(positions, int) else jnp.asarray(positions), max_len=8
        )


def test_bad_config_and_positions_raise():
    x = _x((1, 2, 8))
    with pytest.raises(ValueError, match="negative"):
        apply_rope(x, jnp.array([[-1, 0]]), max_len=8)
    with pytest.raises(ValueError, match="rope_base"):
        apply_rope(x, 0, base=1.0)
    with pytest.raises(ValueError, match="rope_max_len"):
        apply_rope(x, 0, max_len=0)
    with pytest.raises(ValueError, match="integers"):
        apply_rope(x, jnp.zeros((1, 2), jnp.float32))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        apply_rope(x, jnp.zeros((3, 2), jnp.int32))
    with pytest.raises(ValueError, match="B, T, D"):
        apply_rope(x[0], 0)
