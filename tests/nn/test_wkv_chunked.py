"""The chunked WKV (aura.nn.wkv.wkv_chunked) against a naive float64 sum, the sequential scan and
the recurrent step, in float32 (tight) and with bfloat16 inputs; gradients against the scan's;
and the SRWKV stack with the chunked WKV against the scan and its own recurrent form."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.srwkv import SRWKV
from aura.nn.wkv import (
    init_wkv_state,
    resolve_wkv_impl,
    wkv,
    wkv_chunked,
    wkv_scan,
    wkv_step,
)

B, D = 2, 12


def naive_wkv(w, u, k, v, a0=None, b0=None, p0=None):
    """Explicit float64 sums over the whole past (optionally with an incoming (a, b, p) state)."""
    w, u, k, v = (np.asarray(x, np.float64) for x in (w, u, k, v))
    out = np.zeros_like(k)
    for t in range(k.shape[1]):
        ex = [(t - 1 - i) * w + k[:, i] for i in range(t)] + [u + k[:, t]]
        vals = [v[:, i] for i in range(t)] + [v[:, t]]
        if a0 is not None:  # the incoming state: a e^p decayed t steps
            ex.append(np.asarray(p0, np.float64) + t * w)
        q = np.max(np.stack(ex), axis=0)
        num = sum(np.exp(e - q) * x for e, x in zip(ex, vals, strict=False))
        den = sum(np.exp(e - q) for e in ex[: len(vals)])
        if a0 is not None:
            num = num + np.exp(ex[-1] - q) * np.asarray(a0, np.float64)
            den = den + np.exp(ex[-1] - q) * np.asarray(b0, np.float64)
        out[:, t] = num / den
    return out


def _inputs(seed=0, t=40, k_scale=1.0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    # log-decay w = -exp(r) from very slow (e^-6) to very fast (e^decay_hi per token)
    w = -jnp.exp(jnp.linspace(-6.0, 2.0, D))
    u = jax.random.normal(keys[1], (D,))
    k = k_scale * jax.random.normal(keys[2], (B, t, D))
    v = jax.random.normal(keys[3], (B, t, D))
    return w, u, k, v


@functools.cache
def _naive(k_scale):
    return naive_wkv(*_inputs(k_scale=k_scale))


@pytest.mark.parametrize(
    "chunk, k_scale", [(1, 1.0), (5, 1.0), (16, 1.0), (64, 1.0), (5, 60.0), (16, 60.0), (64, 60.0)]
)
def test_chunked_matches_naive_float64(chunk, k_scale):
    # k_scale = 60: exp(k) spans far beyond float32's range within one chunk, and decays of up
    # to e^-7.4 per token would overflow a factorised (matmul) form; the log-space block holds.
    # (Chunk 1 is the recurrent step's arithmetic: at k_scale 60 its running exponent
    # accumulates float32 rounding to 1.6e-5, exactly as `wkv_scan`'s does, so it is checked
    # at k_scale 1 only; chunks >= 5 compute every exponent directly and stay within 3e-6.)
    w, u, k, v = _inputs(k_scale=k_scale)
    got, _ = wkv_chunked(w, u, k, v, init_wkv_state(B, D), chunk)
    assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _naive(k_scale), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [4, 7, 16])
def test_chunked_equals_scan_outputs_and_state_within_1e5(chunk):
    w, u, k, v = _inputs(seed=1, t=45)  # 45 = 2 full chunks of 16 + a tail of 13, etc.
    # a non-empty incoming state, as when a prompt continues a conversation
    _, st0 = wkv_scan(w, u, k[:, :9], v[:, :9], init_wkv_state(B, D))
    ref, ref_state = wkv_scan(w, u, k, v, st0)
    got, got_state = wkv_chunked(w, u, k, v, st0, chunk)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # (a, b) are scaled by e^-p; compare the scale-free quantities a e^p, b e^p in relative terms
    for x, y in ((got_state.a, ref_state.a), (got_state.b, ref_state.b)):
        np.testing.assert_allclose(
            x * jnp.exp(got_state.p - ref_state.p), y, rtol=1e-5, atol=1e-6 * float(jnp.max(y))
        )
    np.testing.assert_allclose(
        naive_wkv(w, u, k, v, st0.a, st0.b, st0.p), ref, rtol=1e-5, atol=1e-5
    )


def test_chunked_then_recurrent_steps_equal_full_sequence():
    w, u, k, v = _inputs(seed=2, t=33)
    full, _ = wkv_scan(w, u, k, v, init_wkv_state(B, D))
    first, st = wkv_chunked(w, u, k[:, :20], v[:, :20], init_wkv_state(B, D), 8)
    outs = [first]
    for t in range(20, 33):  # generation continues one O(1) recurrent step at a time
        y, st = wkv_step(w, u, k[:, t], v[:, t], st)
        outs.append(y[:, None])
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_chunked_gradients_equal_scan_gradients():
    w, u, k, v = _inputs(seed=3, t=24)
    cot = jax.random.normal(jax.random.PRNGKey(7), k.shape)

    def loss(fn, *args):
        out, st = fn(*args)
        # a representation-free function of the final state: a e^p, b e^p (p shifted by a
        # constant so the exponentials stay in range)
        ref = jax.lax.stop_gradient(jnp.max(st.p))
        return jnp.sum(out * cot) + jnp.sum((st.a + st.b) * jnp.exp(st.p - ref))

    scan = lambda w, u, k, v: wkv_scan(w, u, k, v, init_wkv_state(B, D))
    chunked = lambda w, u, k, v: wkv_chunked(w, u, k, v, init_wkv_state(B, D), 8)
    g_ref = jax.grad(lambda *a: loss(scan, *a), argnums=(0, 1, 2, 3))(w, u, k, v)
    g_got = jax.jit(jax.grad(lambda *a: loss(chunked, *a), argnums=(0, 1, 2, 3)))(w, u, k, v)
    for name, a, b in zip("wukv", g_got, g_ref, strict=True):
        assert np.all(np.isfinite(a)), name
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_chunked_bf16_inputs():
    # bf16 k, v (a bf16 model): the WKV upcasts and computes in float32, so against the scan
    # on the same bf16 inputs the tolerance stays float32-tight (1e-5); against the float32
    # inputs the only error is bf16's input rounding (2^-8 relative), bounded here by 3e-2.
    w, u, k, v = _inputs(seed=4, t=40)
    kb, vb = k.astype(jnp.bfloat16), v.astype(jnp.bfloat16)
    got, _ = wkv_chunked(w, u, kb, vb, init_wkv_state(B, D), 16)
    ref_same, _ = wkv_scan(w, u, kb, vb, init_wkv_state(B, D))
    ref_f32, _ = wkv_scan(w, u, k, v, init_wkv_state(B, D))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref_same, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ref_f32, rtol=3e-2, atol=3e-2)


def test_wkv_dispatch_and_validation():
    w, u, k, v = _inputs(t=6)
    st = init_wkv_state(B, D)
    ref, _ = wkv_scan(w, u, k, v, st)
    for impl in ("auto", "scan", "assoc", "chunked"):
        np.testing.assert_allclose(wkv(w, u, k, v, st, impl, 4)[0], ref, rtol=1e-5, atol=1e-5)
    assert resolve_wkv_impl("auto") == "scan"  # the CPU default (measured fastest there)
    with pytest.raises(ValueError, match="auto, scan, assoc, chunked"):
        wkv(w, u, k, v, st, "fft")
    with pytest.raises(ValueError, match="chunk"):
        wkv_chunked(w, u, k, v, st, 0)


# ----------------------------------------------------------------------------- SRWKV stack

T = 20


def _stack(impl, spiking=False, **kw):
    model = SRWKV(num_layers=1, dim=D, ffn_mult=2, lif_threshold=0.3, spiking=spiking,
                  wkv_impl=impl, wkv_chunk=8, **kw)  # fmt: skip
    return model


def test_srwkv_chunked_equals_scan_and_recurrent_f32():
    x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    scan, chunked = _stack("scan"), _stack("chunked")
    params = scan.init(jax.random.PRNGKey(1), x)
    y_ref, st_ref = jax.jit(scan.apply)(params, x)
    # the chunked prompt (T / 2 = 10 tokens: a chunk of 8 and a tail of 2) equals the scan,
    # and the recurrent generation path continues it exactly
    y_half, st_half = jax.jit(chunked.apply)(params, x[:, : T // 2])
    np.testing.assert_allclose(y_half, y_ref[:, : T // 2], rtol=1e-5, atol=1e-5)
    step = jax.jit(lambda p, xt, s: chunked.apply(p, xt, s, method="step"))
    ys = []
    for t in range(T // 2, T):
        yt, st_half = step(params, x[:, t], st_half)
        ys.append(yt)
    np.testing.assert_allclose(jnp.stack(ys, 1), y_ref[:, T // 2 :], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(st_half.shift_att, st_ref.shift_att, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_srwkv_chunked_spiking_gradients_match_scan():
    x = jax.random.normal(jax.random.PRNGKey(2), (B, T, D))
    target = jax.random.normal(jax.random.PRNGKey(3), (B, T, D))
    scan, chunked = _stack("scan", spiking=True), _stack("chunked", spiking=True)
    params = scan.init(jax.random.PRNGKey(1), x)

    def grads(model):
        loss = lambda p: jnp.mean((model.apply(p, x)[0] - target) ** 2)
        return jax.jit(jax.value_and_grad(loss))(params)

    (l_ref, g_ref), (l_got, g_got) = grads(scan), grads(chunked)
    assert abs(float(l_got) - float(l_ref)) < 1e-5
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_srwkv_bf16_chunked_close_to_scan():
    # bf16 model: projections and residuals run in bf16 (8-bit mantissa), the WKV in f32.
    # Stated tolerance for chunked vs scan outputs: 5e-2 absolute on unit-scale outputs
    # (a few bf16 ulps after two blocks); in practice the two agree to about 1 ulp.
    x = jax.random.normal(jax.random.PRNGKey(4), (B, T, D)).astype(jnp.bfloat16)
    scan, chunked = _stack("scan", dtype=jnp.bfloat16), _stack("chunked", dtype=jnp.bfloat16)
    params = scan.init(jax.random.PRNGKey(1), x)
    y_ref, _ = jax.jit(scan.apply)(params, x)
    y, _ = jax.jit(chunked.apply)(params, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=0, atol=5e-2
    )


def test_srwkv_rejects_bad_chunk():
    with pytest.raises(ValueError, match="wkv_chunk"):
        SRWKV(num_layers=1, dim=D, wkv_impl="chunked", wkv_chunk=0)
