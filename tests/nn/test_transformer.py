"""Tests for aura.nn.transformer: the cached generation path against the full causal forward,
causality, and the attention against a naive per-position softmax."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.transformer import TransformerLM

V, B, T, D, H, L = 37, 2, 12, 32, 4, 2


def _model(**kw):
    return TransformerLM(vocab_size=V, num_layers=L, dim=D, num_heads=H, rope_max_len=64, **kw)


@functools.lru_cache(maxsize=1)
def _setup():
    model = _model()
    tokens = jax.random.randint(jax.random.key(0), (B, T), 0, V)
    params = model.init(jax.random.key(1), tokens)["params"]
    # Random LayerNorm gains/biases so no part of the forward is trivially symmetric.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(
        tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    return model, params, tokens


@functools.lru_cache(maxsize=1)
def _fns():
    """Jitted (forward, step, prefill) of the test model."""
    model, _, _ = _setup()
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    step = jax.jit(lambda p, tok, c, pos: model.apply({"params": p}, tok, c, pos, method="step"))
    prefill = jax.jit(lambda p, x, c: model.apply({"params": p}, x, c, method="prefill"))
    return forward, step, prefill


def test_cached_steps_equal_full_forward():
    model, params, tokens = _setup()
    forward, step, _ = _fns()
    full = forward(params, tokens)  # [B, T, V]
    cache = model.init_cache(B, max_len=T + 3)
    outs = []
    for t in range(T):
        logits, cache = step(params, tokens[:, t], cache, jnp.int32(t))
        outs.append(logits)
    np.testing.assert_allclose(jnp.stack(outs, axis=1), full, rtol=1e-4, atol=1e-4)


def test_prefill_then_steps_equal_full_forward():
    model, params, tokens = _setup()
    forward, step, prefill = _fns()
    full = forward(params, tokens)
    cut = 5
    logits, cache = prefill(params, tokens[:, :cut], model.init_cache(B, T + 3))
    np.testing.assert_allclose(logits, full[:, :cut], rtol=1e-4, atol=1e-4)
    for t in range(cut, T):
        step_logits, cache = step(params, tokens[:, t], cache, jnp.int32(t))
        np.testing.assert_allclose(step_logits, full[:, t], rtol=1e-4, atol=1e-4)


def test_causality_later_tokens_do_not_change_earlier_logits():
    model, params, tokens = _setup()
    forward, _, _ = _fns()
    full = forward(params, tokens)
    changed = tokens.at[:, 7:].set((tokens[:, 7:] + 5) % V)
    other = forward(params, changed)
    np.testing.assert_array_equal(np.asarray(other[:, :7]), np.asarray(full[:, :7]))
    assert not np.allclose(other[:, 7:], full[:, 7:])  # and the later ones do change


def test_step_ignores_stale_cache_slots():
    # Garbage in the slots after the position must not leak into the attention.
    model, params, tokens = _setup()
    forward, step, _ = _fns()
    full = forward(params, tokens)
    cache = model.init_cache(B, T + 3)
    cache = cache._replace(k=cache.k + 100.0, v=cache.v - 50.0)
    for t in range(4):
        logits, cache = step(params, tokens[:, t], cache, jnp.int32(t))
    np.testing.assert_allclose(logits, full[:, 3], rtol=1e-4, atol=1e-4)


def _naive_attention_layer(p, x, positions, heads):
    """One attention sublayer with explicit per-position loops (float64 numpy)."""
    from aura.nn.rope import rope_tables

    b, t, d = x.shape
    dh = d // heads
    qkv = (x @ np.asarray(p["qkv"]["kernel"], np.float64)).reshape(b, t, 3, heads, dh)
    cos, sin = (np.asarray(a, np.float64) for a in rope_tables(64, dh))

    def rot(z):  # [B, T, H, Dh]
        c, s = cos[positions][:, None], sin[positions][:, None]  # [T, 1, Dh/2]
        z1, z2 = z[..., : dh // 2], z[..., dh // 2 :]
        return np.concatenate([z1 * c - z2 * s, z2 * c + z1 * s], axis=-1)

    q, k, v = rot(qkv[:, :, 0]), rot(qkv[:, :, 1]), qkv[:, :, 2]
    out = np.zeros((b, t, heads, dh))
    for i in range(t):
        s = np.einsum("bhd,bjhd->bhj", q[:, i], k[:, : i + 1]) / np.sqrt(dh)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        out[:, i] = np.einsum("bhj,bjhd->bhd", w, v[:, : i + 1])
    return out.reshape(b, t, d) @ np.asarray(p["out"]["kernel"], np.float64)


def test_attention_matches_naive_reference():
    from aura.nn.transformer import CausalSelfAttention

    attn = CausalSelfAttention(D, H, rope_max_len=64, rope_base=10000.0)
    x = jax.random.normal(jax.random.key(3), (B, T, D))
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    params = attn.init(jax.random.key(4), x, pos)["params"]
    y, _, _ = attn.apply({"params": params}, x, pos)
    ref = _naive_attention_layer(params, np.asarray(x, np.float64), np.arange(T), H)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dim=30, num_heads=4), "divisible"),
        (dict(num_layers=0), "num_layers"),
        (dict(dim=12, num_heads=4), "even"),
    ],
)
def test_bad_config_raises(kw, match):
    args = dict(vocab_size=V, num_layers=1, dim=D, num_heads=H) | kw
    with pytest.raises(ValueError, match=match):
        TransformerLM(**args)


def test_step_position_beyond_cache_raises():
    model, params, tokens = _setup()
    cache = model.init_cache(B, 4)
    with pytest.raises(ValueError, match="outside the KV cache"):
        model.apply({"params": params}, tokens[:, 0], cache, 4, method="step")
