"""Tests for aura.nn.spiking: surrogate spikes, LIF, k-WTA and SpikingAttention."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.spiking import LIF, SURROGATES, SpikingAttention, kwta, spike_fn

# Naive surrogate derivatives, written from the formulas in the spike_fn docstring.
NAIVE_GRADS = {
    "fast_sigmoid": lambda x, a: 1.0 / (1.0 + a * np.abs(x)) ** 2,
    "arctan": lambda x, a: (a / 2.0) / (1.0 + (math.pi * a * x / 2.0) ** 2),
    "sigmoid": lambda x, a: a * np.exp(-a * x) / (1 + np.exp(-a * x)) ** 2,
}


def naive_lif(inputs, v0, beta, threshold, reset):
    """Python-loop LIF reference: integrate, fire (v - thr > 0), reset."""
    inputs = np.asarray(inputs, np.float32)
    v = np.array(v0, np.float32)
    spikes = np.zeros_like(inputs)
    for t in range(inputs.shape[1]):
        v = beta * v + inputs[:, t]
        s = (v - threshold > 0).astype(np.float32)
        v = v - s * threshold if reset == "subtract" else v * (1 - s)
        spikes[:, t] = s
    return spikes, v


def naive_topk_mask(scores, k, tiebreak=None):
    """Mask of the k largest per row; ties by larger tiebreak, then lower index."""
    scores = np.asarray(scores, np.float64)
    d = scores.shape[-1]
    rows = scores.reshape(-1, d)
    tbs = np.zeros_like(rows) if tiebreak is None else np.asarray(tiebreak).reshape(-1, d)
    mask = np.zeros_like(rows)
    for i, (row, tb) in enumerate(zip(rows, tbs, strict=True)):
        order = sorted(range(d), key=lambda j, r=row, b=tb: (-r[j], -b[j], j))
        mask[i, order[:k]] = 1
    return mask.reshape(scores.shape)


# ----------------------------------------------------------------------------- surrogates


@pytest.mark.parametrize("name", SURROGATES)
def test_heaviside_forward_exact(name):
    x = jnp.array([-2.0, -1e-7, 0.0, 1e-7, 0.5, 3.0], jnp.float32)
    y = spike_fn(name)(x)
    np.testing.assert_array_equal(np.asarray(y), [0, 0, 0, 1, 1, 1])
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("name", SURROGATES)
@pytest.mark.parametrize("scale", [None, 5.0])
def test_surrogate_gradient_matches_formula(name, scale):
    x = jnp.linspace(-1.5, 1.5, 13, dtype=jnp.float32)
    fn = spike_fn(name, scale)
    g = jax.jit(jax.vmap(jax.grad(fn)))(x)
    default = {"fast_sigmoid": 25.0, "arctan": 2.0, "sigmoid": 25.0}[name]
    want = NAIVE_GRADS[name](np.asarray(x, np.float64), default if scale is None else scale)
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(g) > 0)


def test_surrogates_differ_in_gradient():
    x = jnp.array([0.05, 0.3, -0.7])
    grads = {n: jax.grad(lambda v, n=n: spike_fn(n)(v).sum())(x) for n in SURROGATES}
    assert not np.allclose(grads["fast_sigmoid"], grads["arctan"])
    assert not np.allclose(grads["fast_sigmoid"], grads["sigmoid"])
    # Same forward for all of them.
    fwd = {n: spike_fn(n)(x) for n in SURROGATES}
    np.testing.assert_array_equal(fwd["fast_sigmoid"], fwd["arctan"])


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogate_bf16_preserves_dtype(name):
    x = jnp.array([-0.5, 0.0, 0.25, 2.0], jnp.bfloat16)
    fn = spike_fn(name)
    y = jax.jit(fn)(x)
    g = jax.grad(lambda v: fn(v).sum())(x)
    assert y.dtype == jnp.bfloat16 and g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y, np.float32), [0, 0, 1, 1])
    assert np.all(np.isfinite(np.asarray(g, np.float32))) and np.all(np.asarray(g) > 0)


def test_spike_fn_bad_config():
    with pytest.raises(ValueError, match="'nope'.*arctan.*fast_sigmoid"):
        spike_fn("nope")
    with pytest.raises(ValueError, match="-1.0"):
        spike_fn("arctan", -1.0)


# ----------------------------------------------------------------------------- LIF


def _lif_params(lif, shape, seed=0):
    return lif.init(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 3), (4, 16, 32)])
def test_lif_shapes_and_jit(shape):
    lif = LIF()
    x = jax.random.normal(jax.random.key(1), shape) * 2
    params = _lif_params(lif, shape)
    spikes, v = jax.jit(lif.apply)(params, x)
    assert spikes.shape == shape and v.shape == (shape[0], shape[2])
    assert set(np.unique(np.asarray(spikes))) <= {0.0, 1.0}
    assert lif.init_carry(shape[0], shape[2]).shape == (shape[0], shape[2])


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("learn_beta", [False, True])
def test_lif_matches_naive_loop(reset, learn_beta):
    b, s, d = 3, 12, 7
    lif = LIF(beta=0.8, threshold=0.7, reset=reset, learn_beta=learn_beta)
    x = jax.random.normal(jax.random.key(2), (b, s, d)) * 0.8
    v0 = jax.random.normal(jax.random.key(3), (b, d)) * 0.3
    params = _lif_params(lif, (b, s, d))
    beta = 0.8
    if learn_beta:
        logits = jax.random.normal(jax.random.key(4), (d,))
        params = {"params": {"beta_logit": logits}}
        beta = np.asarray(jax.nn.sigmoid(logits))
    spikes, v = lif.apply(params, x, v0)
    want_s, want_v = naive_lif(x, v0, beta, 0.7, reset)
    assert want_s.sum() > 0  # the test exercises firing
    np.testing.assert_array_equal(np.asarray(spikes), want_s)
    np.testing.assert_allclose(np.asarray(v), want_v, rtol=1e-5, atol=1e-6)


def test_lif_reset_modes_by_hand():
    x = jnp.full((1, 5, 1), 0.625)  # exact in binary, so the sums below are exact
    sub_s, sub_v = LIF(beta=1.0, threshold=1.0, reset="subtract").apply({}, x)
    zero_s, zero_v = LIF(beta=1.0, threshold=1.0, reset="zero").apply({}, x)
    # subtract: .625, 1.25->.25, .875, 1.5->.5, 1.125->.125
    np.testing.assert_array_equal(np.asarray(sub_s).ravel(), [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(np.asarray(sub_v).ravel(), [0.125])
    # zero: .625, 1.25->0, .625, 1.25->0, .625
    np.testing.assert_array_equal(np.asarray(zero_s).ravel(), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(np.asarray(zero_v).ravel(), [0.625])


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_carry_split_equals_full_run(reset):
    lif = LIF(beta=0.9, reset=reset, learn_beta=True)
    x = jax.random.normal(jax.random.key(5), (2, 20, 6)) * 1.5
    params = _lif_params(lif, x.shape)
    full_s, full_v = lif.apply(params, x)
    s1, v1 = lif.apply(params, x[:, :9], lif.init_carry(2, 6))
    s2, v2 = lif.apply(params, x[:, 9:], v1)
    np.testing.assert_array_equal(np.concatenate([s1, s2], axis=1), full_s)
    np.testing.assert_array_equal(v2, full_v)


@pytest.mark.parametrize("name", ["fast_sigmoid", "arctan"])
def test_lif_gradients_nonzero(name):
    lif = LIF(surrogate=name, learn_beta=True)
    x = jax.random.normal(jax.random.key(6), (2, 10, 5)) + 0.5
    params = _lif_params(lif, x.shape)

    def loss(p, inp):
        spikes, v = lif.apply(p, inp)
        return jnp.sum(spikes * jnp.arange(1.0, 11.0)[None, :, None]) + jnp.sum(v)

    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    for g in (gp["params"]["beta_logit"], gx):
        assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_lif_surrogates_give_different_gradients():
    x = jax.random.normal(jax.random.key(7), (2, 8, 4))
    grads = [
        jax.grad(lambda inp, n=n: LIF(surrogate=n).apply({}, inp)[0].sum())(x)
        for n in ("fast_sigmoid", "arctan")
    ]
    assert not np.allclose(grads[0], grads[1])


def test_lif_bf16():
    x = (jax.random.normal(jax.random.key(8), (2, 6, 4)) * 2).astype(jnp.bfloat16)
    spikes, v = jax.jit(LIF().apply)({}, x)
    assert spikes.dtype == jnp.bfloat16 and v.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(v, np.float32)))
    assert set(np.unique(np.asarray(spikes, np.float32))) <= {0.0, 1.0}


def test_lif_bad_config():
    with pytest.raises(ValueError, match="'sideways'"):
        LIF(reset="sideways")
    with pytest.raises(ValueError, match="1.5"):
        LIF(beta=1.5)
    with pytest.raises(ValueError, match="1.0"):
        LIF(beta=1.0, learn_beta=True)
    with pytest.raises(ValueError, match="-0.5"):
        LIF(threshold=-0.5)
    with pytest.raises(ValueError, match="'bogus'.*arctan"):
        LIF(surrogate="bogus")
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        LIF().apply({}, jnp.zeros((2, 4, 3)), jnp.zeros((2, 5)))


# ----------------------------------------------------------------------------- k-WTA


@pytest.mark.parametrize("k", [1, 3, 8])
def test_kwta_exactly_k_and_top_scores(k):
    scores = jax.random.normal(jax.random.key(9), (5, 4, 8))
    gains = jax.jit(kwta, static_argnums=1)(scores, k)
    np.testing.assert_array_equal(np.asarray(gains.sum(-1)), np.full((5, 4), k))
    np.testing.assert_array_equal(np.asarray(gains), naive_topk_mask(scores, k))


@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_kwta_ties_break_to_lower_index(k):
    scores = jnp.array(
        [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 2.0, 2.0, 0.0, 5.0], [3, 1, 3, 1, 3, 1]],
        jnp.float32,
    )
    gains = kwta(scores, k)
    np.testing.assert_array_equal(np.asarray(gains.sum(-1)), [k, k, k])
    np.testing.assert_array_equal(np.asarray(gains), naive_topk_mask(scores, k))


def test_kwta_tiebreak_key():
    scores = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    tiebreak = jnp.array([[0.1, 0.9, 0.5, 10.0]])
    gains = kwta(scores, 2, tiebreak=tiebreak)
    np.testing.assert_array_equal(np.asarray(gains), [[0, 1, 1, 0]])


def test_kwta_forward_exact_and_surrogate_gradient():
    scores = jax.random.normal(jax.random.key(10), (6, 10)) * 3
    k, temp = 4, 0.5
    gains = kwta(scores, k, temperature=temp)
    assert set(np.unique(np.asarray(gains))) == {0.0, 1.0}
    w = jax.random.normal(jax.random.key(11), (6, 10))
    g = jax.grad(lambda s: jnp.sum(kwta(s, k, temperature=temp) * w))(scores)
    srt = -np.sort(-np.asarray(scores), axis=-1)
    tau = (srt[:, k - 1] + srt[:, k]) / 2
    sig = 1 / (1 + np.exp(-(np.asarray(scores) - tau[:, None]) / temp))
    np.testing.assert_allclose(np.asarray(g), np.asarray(w) * sig * (1 - sig) / temp, rtol=1e-5)
    assert np.abs(np.asarray(g)).sum() > 0


def test_kwta_bf16_and_vmap():
    scores = jax.random.normal(jax.random.key(12), (3, 7, 9)).astype(jnp.bfloat16)
    gains = jax.vmap(lambda s: kwta(s, 2))(scores)
    assert gains.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(gains.sum(-1), np.float32), np.full((3, 7), 2))


def test_kwta_bad_k():
    scores = jnp.zeros((2, 5))
    with pytest.raises(ValueError, match="k = 6"):
        kwta(scores, 6)
    with pytest.raises(ValueError, match="k = 0"):
        kwta(scores, 0)
    with pytest.raises(ValueError, match="temperature.*0.0"):
        kwta(scores, 2, temperature=0.0)


# ----------------------------------------------------------------------------- SpikingAttention


@pytest.mark.parametrize("shape,k,steps", [((4, 8), 3, 6), ((2, 5, 16), 1, 4), ((3, 6), 6, 1)])
def test_spiking_attention_shapes_and_exact_k(shape, k, steps):
    mod = SpikingAttention(k=k, steps=steps)
    x = jax.random.normal(jax.random.key(13), shape)
    params = mod.init(jax.random.key(14), x)
    y, gains = jax.jit(mod.apply)(params, x)
    assert y.shape == shape and gains.shape == shape
    assert set(np.unique(np.asarray(gains))) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.asarray(gains.sum(-1)), np.full(shape[:-1], k))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x) * np.asarray(gains))


def test_spiking_attention_matches_naive_reference():
    b, d, k, steps = 5, 12, 4, 6
    mod = SpikingAttention(k=k, steps=steps, beta=0.85, threshold=0.5, reset="zero")
    x = jax.random.normal(jax.random.key(15), (b, d))
    params = mod.init(jax.random.key(16), x)
    _, gains = mod.apply(params, x)
    kern = np.asarray(params["params"]["drive"]["kernel"])
    bias = np.asarray(params["params"]["drive"]["bias"])
    drive = np.asarray(x) @ kern + bias
    currents = np.repeat(drive[:, None, :], steps, axis=1)
    spikes, _ = naive_lif(currents, np.zeros((b, d)), 0.85, 0.5, "zero")
    rates = spikes.mean(axis=1)
    assert len(np.unique(rates)) > 1  # rates differ, and ties exist to break
    np.testing.assert_array_equal(np.asarray(gains), naive_topk_mask(rates, k, drive))


@pytest.mark.parametrize("name", ["fast_sigmoid", "arctan"])
def test_spiking_attention_gradients_nonzero(name):
    mod = SpikingAttention(k=3, steps=5, surrogate=name, learn_beta=True)
    x = jax.random.normal(jax.random.key(17), (4, 10))
    params = mod.init(jax.random.key(18), x)
    w = jax.random.normal(jax.random.key(19), (4, 10))

    def loss(p, inp):
        y, _ = mod.apply(p, inp)
        return jnp.sum(y * w)

    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    for leaf in [*jax.tree.leaves(gp), gx]:
        assert np.all(np.isfinite(leaf)) and np.abs(leaf).sum() > 0
    assert np.abs(gp["params"]["drive"]["kernel"]).sum() > 0


def test_spiking_attention_bf16():
    mod = SpikingAttention(k=2, steps=4)
    x = jax.random.normal(jax.random.key(20), (3, 4, 8)).astype(jnp.bfloat16)
    params = mod.init(jax.random.key(21), x)
    y, gains = jax.jit(mod.apply)(params, x)
    assert y.dtype == jnp.bfloat16 and gains.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(y, np.float32)))
    np.testing.assert_array_equal(np.asarray(gains.sum(-1), np.float32), np.full((3, 4), 2))


def test_spiking_attention_bad_config():
    x = jnp.zeros((2, 4))
    with pytest.raises(ValueError, match="k = 5"):
        SpikingAttention(k=5).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="got 0"):
        SpikingAttention(k=0)
    with pytest.raises(ValueError, match="steps.*got 0"):
        SpikingAttention(k=1, steps=0)
    with pytest.raises(ValueError, match="'relu'.*arctan"):
        SpikingAttention(k=1, surrogate="relu")
