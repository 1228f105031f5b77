"""GRUStack (pre-LN GRU layers, explicit carry) and ResidualMLP against naive numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.recurrent import GRUStack
from aura.nn.residual import ResidualMLP, residual_mlp_params


def _ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p.get("bias", 0.0), np.float64)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _naive_gru_stack(params, x, layers):
    """Layer by layer, step by step: r, z gates and the candidate as in Cho et al. (2014)."""
    out = np.asarray(x, np.float64)
    finals = []
    for i in range(layers):
        p = params[f"gru_{i}"]
        h = np.zeros((out.shape[0], p["hr"]["kernel"].shape[0]))
        inp = _ln(out, params[f"ln_{i}"])
        steps = []
        for t in range(out.shape[1]):
            xt = inp[:, t]
            r = _sig(_dense(xt, p["ir"]) + _dense(h, p["hr"]))
            z = _sig(_dense(xt, p["iz"]) + _dense(h, p["hz"]))
            n = np.tanh(_dense(xt, p["in"]) + r * _dense(h, p["hn"]))
            h = (1 - z) * n + z * h
            steps.append(h)
        out = np.stack(steps, axis=1)
        finals.append(h)
    return out, finals


def test_gru_stack_matches_a_naive_loop_and_continues_from_its_carry():
    model = GRUStack(features=6, num_layers=3)
    x = jax.random.normal(jax.random.key(0), (2, 5, 4))
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]
    assert set(params) == {"ln_0", "gru_0", "ln_1", "gru_1", "ln_2", "gru_2"}
    apply = jax.jit(model.apply)  # one compile per shape instead of many eager ops
    out, carry = apply({"params": params}, x)
    assert out.shape == (2, 5, 6) and len(carry) == 3 and carry[0].shape == (2, 6)
    want, finals = _naive_gru_stack(params, np.asarray(x), 3)
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-5)
    for c, f in zip(carry, finals, strict=True):
        np.testing.assert_allclose(c, f, atol=1e-5, rtol=1e-5)
    # The carry is the whole state: 3 steps, then 2 more from the carry == 5 steps at once.
    first, mid = apply({"params": params}, x[:, :3])
    rest, end = apply({"params": params}, x[:, 3:], mid)
    np.testing.assert_allclose(jnp.concatenate([first, rest], 1), out, atol=1e-6)
    np.testing.assert_allclose(end[-1], carry[-1], atol=1e-6)


def test_gru_stack_rejects_bad_shapes():
    model = GRUStack(features=3, num_layers=2)
    with pytest.raises(ValueError, match=r"must be \[B, T, D\], got shape \(2, 4\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 4)))
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 1, 4)))
    with pytest.raises(ValueError, match="carry has 1 states for 2 layers"):
        model.apply(params, jnp.zeros((2, 1, 4)), (jnp.zeros((2, 3)),))


def test_residual_mlp_matches_naive_and_counts_its_parameters():
    model = ResidualMLP(hidden=7, num_layers=3)
    x = jax.random.normal(jax.random.key(2), (4, 5))
    params = jax.jit(model.init)(jax.random.key(3), x)["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == residual_mlp_params(5, 7, 3)
    want = np.asarray(x, np.float64)
    for i in range(3):
        h = _ln(want, params[f"ln_{i}"])
        h = np.asarray(jax.nn.gelu(jnp.asarray(_dense(h, params[f"up_{i}"]))), np.float64)
        want = want + _dense(h, params[f"down_{i}"])
    got = jax.jit(model.apply)({"params": params}, x)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
