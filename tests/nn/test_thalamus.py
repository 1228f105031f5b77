"""Thalamic inter-zone routing and the gradient broadcaster."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aura.nn import thalamus as tr

ZONES = ("hippocampus", "amygdala", "language")


def test_centroid_scores_match_a_naive_loop():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    got = np.asarray(tr.centroid_scores(jnp.asarray(q), jnp.asarray(c), 0.5))
    naive = np.array([[-0.5 * np.sum((qi - cz) ** 2) for cz in c] for qi in q])
    np.testing.assert_allclose(got, naive, rtol=1e-5, atol=1e-5)


def test_route_zones_keeps_top_k_and_zeroes_the_rest():
    scores = jnp.asarray([[3.0, 1.0, 2.0, -1.0], [0.0, 5.0, 4.0, 1.0]])
    w = np.asarray(tr.route_zones(scores, top_k=2, temperature=0.5))
    for row, s in zip(w, np.asarray(scores), strict=True):
        keep = np.argsort(-s)[:2]
        e = np.exp(s[keep] / 0.5 - np.max(s[keep] / 0.5))
        np.testing.assert_allclose(row[keep], e / e.sum(), rtol=1e-6)
        assert np.all(row[np.setdiff1d(np.arange(4), keep)] == 0.0)
    masked = np.asarray(tr.route_zones(scores, 1, mask=jnp.asarray([False, True, True, True])))
    np.testing.assert_array_equal(masked, [[0, 0, 1, 0], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match="top_k=5 must be in"):
        tr.route_zones(scores, 5)


def test_broadcaster_scales_routed_and_zeroes_non_routed_exactly():
    grads = {
        "hippocampus": {"w": jnp.ones((2, 3)), "b": jnp.full((3,), 2.0)},
        "amygdala": {"w": jnp.full((2,), jnp.nan)},  # even a non-finite gradient becomes 0
        "language": {"w": jnp.arange(4.0)},
    }
    out = tr.broadcast_gradients(grads, {"hippocampus": 0.25, "amygdala": 0.0, "language": 0.75})
    np.testing.assert_array_equal(out["hippocampus"]["w"], np.full((2, 3), 0.25))
    np.testing.assert_array_equal(out["hippocampus"]["b"], np.full((3,), 0.5))
    np.testing.assert_array_equal(out["amygdala"]["w"], np.zeros(2))
    np.testing.assert_array_equal(out["language"]["w"], 0.75 * np.arange(4.0))
    # Per-sample routing weights [B, Z]: each zone's share of the batch.
    w = jnp.asarray([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    out = tr.broadcast_gradients(grads, w, ZONES)
    np.testing.assert_array_equal(out["hippocampus"]["w"], np.full((2, 3), 0.75))
    np.testing.assert_array_equal(out["language"]["w"], 0.25 * np.arange(4.0))
    np.testing.assert_array_equal(out["amygdala"]["w"], np.zeros(2))
    with pytest.raises(ValueError, match="no routing weight for zones"):
        tr.broadcast_gradients(grads, {"hippocampus": 1.0})
    with pytest.raises(ValueError, match="need `zones`"):
        tr.broadcast_gradients(grads, w)


def test_non_routed_zones_get_exactly_zero_gradient_in_a_training_step():
    """Three zone experts, a thalamus routing each sample to its top-1 zone, zone-local losses."""
    D, Dout, B = 4, 3, 6
    keys = jax.random.split(jax.random.key(0), 4)
    params = {z: {"w": jax.random.normal(k, (D, Dout))} for z, k in zip(ZONES, keys, strict=False)}
    centroids = jnp.asarray([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    x = jnp.asarray([[3.0, 0.1, 0, 0], [2.9, 0, 0.2, 0], [0, 0.1, 3.1, 0]] * 2)  # no amygdala
    y = jax.random.normal(keys[3], (B, Dout))

    def loss_fn(params):
        w = tr.route_zones(tr.centroid_scores(x, centroids), top_k=1)  # [B, Z]
        outs = jnp.stack([x @ params[z]["w"] for z in ZONES])  # [Z, B, O]
        main = jnp.mean((tr.combine_zones(outs, w) - y) ** 2)
        local = sum(jnp.mean(params[z]["w"] ** 2) for z in ZONES)  # every zone's own term
        return main + 1e-2 * local, w

    grads, w = jax.grad(loss_fn, has_aux=True)(params)
    assert float(jnp.abs(grads["amygdala"]["w"]).sum()) > 0  # the local term reaches it...
    shares = np.asarray(tr.zone_shares(w))
    np.testing.assert_allclose(shares, [4 / 6, 0.0, 2 / 6], rtol=1e-6)
    routed = tr.broadcast_gradients(grads, w, ZONES)
    np.testing.assert_array_equal(routed["amygdala"]["w"], np.zeros((D, Dout)))  # ...not any more
    np.testing.assert_allclose(routed["hippocampus"]["w"], shares[0] * grads["hippocampus"]["w"])
    opt = optax.adam(1e-1)
    updates, _ = opt.update(routed, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["amygdala"]["w"], params["amygdala"]["w"])
    assert not np.array_equal(new["language"]["w"], params["language"]["w"])


def test_gradient_gate_matches_a_per_sample_weighted_loss_and_zeroes_unrouted():
    rng = np.random.default_rng(1)
    W = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    w = jnp.asarray([0.7, 0.0, 1.0, 0.2, 0.0])

    def gated(W):
        return jnp.sum(jnp.tanh(tr.gradient_gate(x @ W, w)) ** 2)

    def naive(W):  # the same loss with sample b's term multiplied by w[b] (value changes, grad ok)
        per_sample = jnp.sum(jnp.tanh(x @ W) ** 2, axis=1)  # [B]
        return jnp.sum(jax.lax.stop_gradient(w) * per_sample)

    np.testing.assert_allclose(gated(W), jnp.sum(jnp.tanh(x @ W) ** 2), rtol=1e-6)  # identity
    np.testing.assert_allclose(jax.grad(gated)(W), jax.grad(naive)(W), rtol=1e-5, atol=1e-6)
    # A non-finite cotangent of an unrouted sample becomes exactly 0.
    bad = jnp.asarray([0.0, jnp.inf, 0.0, 0.0, 0.0])
    g = jax.grad(lambda x_: jnp.sum(tr.gradient_gate(x_, w) * bad[:, None]))(x)
    assert np.all(np.asarray(g) == 0.0)
    # The weights themselves receive no gradient through the gate.
    gw = jax.grad(lambda w_: jnp.sum(tr.gradient_gate(x, w_)))(w)
    assert np.all(np.asarray(gw) == 0.0)


def test_route_zones_without_renormalising_keeps_the_full_softmax_probability():
    scores = jnp.asarray([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    w = np.asarray(tr.route_zones(scores, top_k=1, renormalize=False))
    p = np.asarray(jax.nn.softmax(scores, axis=-1))
    np.testing.assert_allclose(w, [[p[0, 0], 0, 0], [0, 0, p[1, 2]]], rtol=1e-6)
    # ... so the gate gets a gradient even with one zone per sample (renormalised: none).
    g = jax.grad(lambda s: jnp.sum(tr.route_zones(s, 1, renormalize=False)))(scores)
    assert np.abs(np.asarray(g)).sum() > 0
    g1 = jax.grad(lambda s: jnp.sum(tr.route_zones(s, 1)))(scores)
    assert np.abs(np.asarray(g1)).sum() == 0


def test_balance_bias_pushes_towards_a_uniform_share():
    bias = np.asarray(tr.balance_bias(jnp.asarray([0.7, 0.1, 0.1, 0.1]), gain=0.5))
    np.testing.assert_allclose(bias, [-0.9, 0.3, 0.3, 0.3], rtol=1e-6)
    assert np.all(np.asarray(tr.balance_bias(jnp.full((4,), 0.25))) == 0)
    unseen = tr.balance_bias(jnp.asarray([1.0, 0.0]), seen=jnp.asarray([True, False]))
    np.testing.assert_allclose(np.asarray(unseen), [-1.0, 0.0])
