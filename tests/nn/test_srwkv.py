"""Tests for aura.nn.wkv and aura.nn.srwkv: the WKV kernels against a naive O(T^2) sum, and the
sequence and recurrent forms of the SRWKV stack against each other."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.srwkv import SRWKV, SRWKVState
from aura.nn.wkv import init_wkv_state, wkv, wkv_assoc, wkv_scan, wkv_step

B, T, D = 2, 32, 16


def naive_wkv(w, u, k, v):
    """Explicit weighted sums (float64), from an empty state:

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (same sums without v).
    """
    w, u, k, v = (np.asarray(a, np.float64) for a in (w, u, k, v))
    out = np.zeros_like(k)
    for t in range(k.shape[1]):
        num = np.exp(u + k[:, t]) * v[:, t]
        den = np.exp(u + k[:, t])
        for i in range(t):
            e = np.exp((t - 1 - i) * w + k[:, i])
            num, den = num + e * v[:, i], den + e
        out[:, t] = num / den
    return out


def _wkv_inputs(seed=0, k_scale=1.0, t=T):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    w = -jnp.exp(jax.random.uniform(keys[0], (D,), minval=-5.0, maxval=2.0))
    u = jax.random.normal(keys[1], (D,))
    k = k_scale * jax.random.normal(keys[2], (B, t, D))
    v = jax.random.normal(keys[3], (B, t, D))
    return w, u, k, v


@pytest.mark.parametrize("impl", [wkv_scan, wkv_assoc])
@pytest.mark.parametrize("k_scale", [1.0, 60.0])
def test_wkv_matches_naive(impl, k_scale):
    # k_scale = 60 puts exp(k) beyond float32's range for a naive float32 sum.
    w, u, k, v = _wkv_inputs(k_scale=k_scale)
    got, _ = impl(w, u, k, v, init_wkv_state(B, D))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, naive_wkv(w, u, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["scan", "assoc"])
def test_wkv_state_passing_equals_full_sequence(impl):
    w, u, k, v = _wkv_inputs(seed=1)
    full, full_state = wkv(w, u, k, v, init_wkv_state(B, D), impl)
    first, st = wkv(w, u, k[:, :13], v[:, :13], init_wkv_state(B, D), impl)
    outs = [first]
    for t in range(13, T):  # continue one recurrent step at a time
        y, st = wkv_step(w, u, k[:, t], v[:, t], st)
        outs.append(y[:, None])
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)
    for a, b in zip(st, full_state, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_wkv_bad_impl_raises():
    w, u, k, v = _wkv_inputs()
    with pytest.raises(ValueError, match="scan, assoc"):
        wkv(w, u, k, v, init_wkv_state(B, D), "fft")


# ----------------------------------------------------------------------------- SRWKV stack


def _model(**kw):
    kw = {"num_layers": 2, "dim": D, "ffn_mult": 2, "lif_threshold": 0.3, **kw}
    return SRWKV(**kw)


def _x(seed=0, t=T, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(seed), (B, t, D), dtype)


@functools.cache
def _setup(spiking=True, impl="scan"):
    model = _model(spiking=spiking, wkv_impl=impl)
    params = model.init(jax.random.PRNGKey(1), _x())
    seq = jax.jit(lambda p, x, s: model.apply(p, x, s))
    step = jax.jit(lambda p, x, s: model.apply(p, x, s, method="step"))
    return model, params, seq, step


def _run_steps(step, params, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = step(params, x[:, t], state)
        ys.append(y)
    return jnp.stack(ys, 1), state  # [T, B, D] stacked on axis 1 -> [B, T, D]


def _assert_states_close(a: SRWKVState, b: SRWKVState, tol=1e-4):
    for name, x, y in zip(SRWKVState._fields, a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("spiking", [True, False])
def test_sequence_and_recurrent_forms_agree(spiking):
    model, params, seq, step = _setup(spiking)
    x = _x(2)
    y_seq, st_seq = seq(params, x, model.init_state(B))
    y_rec, st_rec = _run_steps(step, params, x, model.init_state(B))
    assert y_seq.shape == (B, T, D)
    np.testing.assert_allclose(y_rec, y_seq, rtol=1e-4, atol=1e-4)
    _assert_states_close(st_rec, st_seq)
    if spiking:  # the comparison is only meaningful if neurons actually fired
        _, inter = model.apply(params, x, capture_intermediates=True, mutable=["intermediates"])
        for name in ("lif_att", "lif_ffn"):
            spikes = inter["intermediates"]["blocks_0"][name]["__call__"][0][0]
            assert 0.01 < float(jnp.mean(spikes)) < 0.99, name
        assert float(jnp.mean(jnp.abs(st_seq.mem_att))) > 0


@pytest.mark.parametrize("spiking", [True, False])
def test_prompt_by_sequence_then_recurrent_equals_full_sequence(spiking):
    model, params, seq, step = _setup(spiking)
    x = _x(3)
    y_full, st_full = seq(params, x, model.init_state(B))
    y_a, st = seq(params, x[:, : T // 2], model.init_state(B))
    y_b, st = _run_steps(step, params, x[:, T // 2 :], st)
    np.testing.assert_allclose(jnp.concatenate([y_a, y_b], 1), y_full, rtol=1e-4, atol=1e-4)
    _assert_states_close(st, st_full)
    # Two sequence calls chained through the state also equal one call.
    y_c, _ = seq(params, x[:, T // 2 :], seq(params, x[:, : T // 2], model.init_state(B))[1])
    np.testing.assert_allclose(y_c, y_full[:, T // 2 :], rtol=1e-4, atol=1e-4)


def test_assoc_impl_matches_scan_impl():
    model, params, seq, _ = _setup(False, "scan")
    _, _, seq_assoc, _ = _setup(False, "assoc")
    x = _x(4)
    y1, s1 = seq(params, x, model.init_state(B))
    y2, s2 = seq_assoc(params, x, model.init_state(B))
    np.testing.assert_allclose(y2, y1, rtol=1e-4, atol=1e-4)
    _assert_states_close(s2, s1)


def test_state_size_does_not_grow_with_context():
    model, params, seq, step = _setup()
    _, st_short = seq(params, _x(t=2), model.init_state(B))
    _, st_long = seq(params, _x(t=3 * T), model.init_state(B))
    _, st_step = step(params, _x()[:, 0], st_long)
    shapes = [jax.tree_util.tree_map(jnp.shape, s) for s in (st_short, st_long, st_step)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert all(leaf.shape == (2, B, D) for leaf in st_long)


def test_gradients_finite_and_nonzero_through_spikes():
    model, params, _, _ = _setup(True)
    x = _x(5)
    target = jax.random.normal(jax.random.PRNGKey(9), (B, T, D))

    def loss(p):
        y, _ = model.apply(p, x)
        return jnp.mean((y - target) ** 2)

    grads = jax.jit(jax.grad(loss))(params)["params"]
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(leaf))
    # The time-mix branch reaches the output only through the LIF spikes (surrogate gradient).
    for blk in ("blocks_0", "blocks_1"):
        for name in ("key", "value", "receptance", "output"):
            assert float(jnp.abs(grads[blk]["att"][name]["kernel"]).max()) > 0, (blk, name)
        assert float(jnp.abs(grads[blk]["att"]["decay_raw"]).max()) > 0
        assert float(jnp.abs(grads[blk]["ffn"]["key"]["kernel"]).max()) > 0


def test_bf16_runs_finite():
    model = _model(dtype=jnp.bfloat16)
    x = _x(6, dtype=jnp.bfloat16)
    params = model.init(jax.random.PRNGKey(0), x)
    y, st = jax.jit(model.apply)(params, x)
    assert y.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y, np.float32)))
    assert all(leaf.dtype == jnp.float32 for leaf in st)
    y1, _ = jax.jit(lambda p, a, s: model.apply(p, a, s, method="step"))(params, x[:, 0], st)
    assert y1.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y1, np.float32)))


def test_jit_matches_eager():
    model, params, seq, _ = _setup(True)
    x = _x(7, t=8)
    y_e, s_e = model.apply(params, x)
    y_j, s_j = seq(params, x, model.init_state(B))
    np.testing.assert_allclose(y_j, y_e, rtol=1e-5, atol=1e-5)
    _assert_states_close(s_j, s_e, 1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_layers": 0}, "num_layers"),
        ({"dim": 0}, "dim"),
        ({"ffn_mult": 0}, "ffn_mult"),
        ({"wkv_impl": "cuda"}, "scan, assoc"),
        ({"lif_beta": 1.0}, "lif_beta"),
        ({"lif_threshold": 0.0}, "lif_threshold"),
        ({"surrogate": "tanh"}, "surrogate"),
    ],
)
def test_invalid_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        _model(**kw)


def test_invalid_inputs_raise():
    model, params, _, _ = _setup()
    with pytest.raises(ValueError, match="D = 16"):
        model.apply(params, jnp.zeros((B, T, D + 1)))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        model.apply(params, jnp.zeros((B, T, D)), model.init_state(B), method="step")
    with pytest.raises(ValueError, match="shift_att"):
        model.apply(params, jnp.zeros((B, T, D)), model.init_state(B + 1))
