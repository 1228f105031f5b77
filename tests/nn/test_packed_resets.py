"""Resets (packed records) in the recurrences: each segment computes what it computes alone.

Every WKV form (scan, associative scan, chunked with chunks straddling the boundaries, and the
step) with ``resets`` against each segment run on its own from the empty state, outputs and
gradients; the LIF membrane likewise.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.spiking import LIF

W = importlib.import_module("aura.nn.wkv")  # the module (aura.nn re-exports the function)

B, T, D = 2, 37, 5
STARTS = ([0, 5, 6, 20], [0, 16, 17, 33])  # record starts per row (5 -> 6: a 1-token record)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    w = -np.exp(rng.normal(size=D)).astype(np.float32)
    u = rng.normal(size=D).astype(np.float32)
    k = (3 * rng.normal(size=(B, T, D))).astype(np.float32)  # wide key range: stability
    v = rng.normal(size=(B, T, D)).astype(np.float32)
    resets = np.zeros((B, T), bool)
    for b, s in enumerate(STARTS):
        resets[b, s] = True
    return w, u, k, v, resets


def segments(b):
    s = [*STARTS[b], T]
    return list(zip(s[:-1], s[1:], strict=True))


def alone(w, u, k, v):
    """Reference: every segment through the plain scan from the empty state."""
    out = np.zeros((B, T, D), np.float32)
    for b in range(B):
        for s, e in segments(b):
            o, _ = W.wkv_scan(w, u, k[b : b + 1, s:e], v[b : b + 1, s:e], W.init_wkv_state(1, D))
            out[b, s:e] = o[0]
    return out


FORMS = {
    "scan": lambda *a, r: W.wkv(*a, impl="scan", resets=r),
    "assoc": lambda *a, r: W.wkv(*a, impl="assoc", resets=r),
    "chunked4": lambda *a, r: W.wkv(*a, impl="chunked", chunk=4, resets=r),
    "chunked16": lambda *a, r: W.wkv(*a, impl="chunked", chunk=16, resets=r),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_wkv_with_resets_equals_each_segment_alone(inputs, form):
    w, u, k, v, resets = inputs
    state = W.init_wkv_state(B, D)
    # a non-empty incoming state: the first segment starts with a reset, so it must not count
    _, state = W.wkv_scan(w, u, k, v, state)
    out, _ = jax.jit(lambda *a: FORMS[form](*a, r=resets))(w, u, k, v, state)
    np.testing.assert_allclose(out, alone(w, u, k, v), rtol=1e-5, atol=1e-6)

    def loss(k, v, f):
        return jnp.sum(jnp.sin(f(w, u, k, v, W.init_wkv_state(B, D), r=resets)[0]))

    def loss_alone(k, v):
        total = 0.0
        for b in range(B):
            for s, e in segments(b):
                o, _ = W.wkv_scan(
                    w, u, k[b : b + 1, s:e], v[b : b + 1, s:e], W.init_wkv_state(1, D)
                )
                total += jnp.sum(jnp.sin(o))
        return total

    got = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(k, v, FORMS[form])
    want = jax.jit(jax.grad(loss_alone, argnums=(0, 1)))(k, v)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_wkv_step_with_reset_starts_empty(inputs):
    w, u, k, v, _ = inputs
    _, full = W.wkv_scan(w, u, k, v, W.init_wkv_state(B, D))
    reset = np.array([True, False])
    out, _ = W.wkv_step(w, u, k[:, 0], v[:, 0], full, reset)
    fresh, _ = W.wkv_step(w, u, k[:1, 0], v[:1, 0], W.init_wkv_state(1, D))
    kept, _ = W.wkv_step(w, u, k[1:, 0], v[1:, 0], W.WKVState(*(x[1:] for x in full)))
    np.testing.assert_allclose(out[:1], fresh, rtol=1e-6)
    np.testing.assert_allclose(out[1:], kept, rtol=1e-6)


def test_lif_membrane_rests_at_a_reset(inputs):
    _, _, k, _, resets = inputs
    lif = LIF(beta=0.5, threshold=0.5, reset="zero")
    x = jnp.asarray(k)  # [B, S, D] currents
    spikes, _ = lif.apply({}, x, None, resets)
    for b in range(B):
        for s, e in segments(b):
            ref, _ = lif.apply({}, x[b : b + 1, s:e])
            np.testing.assert_array_equal(spikes[b, s:e], ref[0])
