"""Tests for aura.nn.phasor.PhasorBank against a naive loop and closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.phasor import PhasorBank


def naive_phasor(params, x, steps, drive, summary=False):
    """Python-loop reference: explicit 2x2 matrices, one oscillator at a time."""
    p = params["params"]
    x = np.asarray(x, np.float64)
    lead, d = x.shape[:-1], x.shape[-1]
    xf = x.reshape(-1, d)
    u = xf @ np.asarray(p["drive"]["kernel"], np.float64) + np.asarray(p["drive"]["bias"])
    omega = np.asarray(p["omega"], np.float64)
    phi = np.asarray(p["phi"], np.float64)
    lam = np.log1p(np.exp(np.asarray(p["decay_raw"], np.float64)))  # softplus
    n, n_osc = u.shape
    feats = np.zeros((n, steps, 2 * n_osc))
    amp_mean = np.zeros((n, n_osc))
    for i in range(n):
        for j in range(n_osc):
            w = omega[j]
            m = math.exp(-lam[j]) * np.array(
                [[math.cos(w), -math.sin(w)], [math.sin(w), math.cos(w)]]
            )
            ro = np.array(
                [[math.cos(phi[j]), -math.sin(phi[j])], [math.sin(phi[j]), math.cos(phi[j])]]
            )
            z = np.zeros(2)
            for t in range(steps):
                inject = drive == "step" or t == 0
                z = m @ z + np.array([u[i, j] if inject else 0.0, 0.0])
                c, s = ro @ z
                feats[i, t, j], feats[i, t, n_osc + j] = c, s
                amp_mean[i, j] += np.hypot(*z) / steps
    if summary:
        out = np.concatenate([amp_mean, feats[:, -1, :n_osc]], axis=-1)
        return out.reshape(lead + (2 * n_osc,))
    return feats.reshape(lead + (steps, 2 * n_osc))


@pytest.mark.parametrize(
    "shape,n_osc,steps",
    [((1, 1), 1, 1), ((3, 5), 4, 7), ((2, 3, 6), 5, 10), ((8, 16), 12, 3)],
)
@pytest.mark.parametrize("summary", [False, True])
def test_shapes_and_jit(shape, n_osc, steps, summary):
    bank = PhasorBank(num_oscillators=n_osc, steps=steps, summary=summary)
    x = jax.random.normal(jax.random.key(0), shape)
    params = bank.init(jax.random.key(1), x)
    out = jax.jit(bank.apply)(params, x)
    want = shape[:-1] + ((2 * n_osc,) if summary else (steps, 2 * n_osc))
    assert out.shape == want and out.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("drive", ["step", "impulse"])
@pytest.mark.parametrize("summary", [False, True])
def test_matches_naive_loop(drive, summary):
    bank = PhasorBank(num_oscillators=6, steps=24, drive=drive, summary=summary, init_decay=0.1)
    x = jax.random.normal(jax.random.key(2), (2, 3, 5))
    params = bank.init(jax.random.key(3), x)
    out = bank.apply(params, x)
    want = naive_phasor(params, x, 24, drive, summary)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)


def test_impulse_closed_form():
    """Impulse response: c_t = u * exp(-lambda t) * cos(omega t + phi), s_t with sin."""
    steps = 40
    bank = PhasorBank(num_oscillators=3, steps=steps, drive="impulse")
    x = jax.random.normal(jax.random.key(4), (4, 7))
    params = bank.init(jax.random.key(5), x)
    p = params["params"]
    out = np.asarray(bank.apply(params, x))
    u = np.asarray(x, np.float64) @ np.asarray(p["drive"]["kernel"]) + np.asarray(
        p["drive"]["bias"]
    )
    t = np.arange(steps)[:, None]
    lam = np.log1p(np.exp(np.asarray(p["decay_raw"], np.float64)))
    arg = np.asarray(p["omega"], np.float64) * t + np.asarray(p["phi"], np.float64)
    env = np.exp(-lam * t)
    want_c = u[:, None, :] * env * np.cos(arg)
    want_s = u[:, None, :] * env * np.sin(arg)
    np.testing.assert_allclose(out[..., :3], want_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[..., 3:], want_s, rtol=1e-5, atol=1e-5)


def test_dominant_frequency_follows_omega():
    steps, omegas = 256, np.array([0.3, 0.9, 2.0], np.float32)
    bank = PhasorBank(num_oscillators=3, steps=steps, drive="impulse", init_decay=0.01)
    x = jnp.ones((1, 2))
    params = bank.init(jax.random.key(6), x)
    params["params"]["omega"] = jnp.asarray(omegas)
    params["params"]["drive"]["bias"] = jnp.ones(3)  # u != 0 for every oscillator
    out = np.asarray(bank.apply(params, x))[0]  # [S, 2P]
    peaks = []
    for j in range(3):
        spectrum = np.abs(np.fft.rfft(out[:, j]))
        peaks.append(2 * math.pi * np.argmax(spectrum[1:]) / steps + 2 * math.pi / steps)
    np.testing.assert_allclose(peaks, omegas, atol=2 * math.pi / steps)
    assert len(set(np.round(peaks, 6))) == 3


def test_init_frequencies_spread_and_decay_positive():
    bank = PhasorBank(num_oscillators=8, steps=4, omega_min=0.1, omega_max=2.5, init_decay=0.2)
    params = bank.init(jax.random.key(7), jnp.zeros((1, 3)))["params"]
    omega = np.asarray(params["omega"])
    assert omega[0] == pytest.approx(0.1, rel=1e-6) and omega[-1] == pytest.approx(2.5, rel=1e-6)
    ratios = omega[1:] / omega[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)  # log-spaced
    assert ratios[0] > 1.1
    lam = jax.nn.softplus(params["decay_raw"])
    np.testing.assert_allclose(np.asarray(lam), 0.2, rtol=1e-5)
    assert len(np.unique(np.asarray(params["phi"]))) == 8


def test_decay_stays_nonnegative_for_any_raw_value():
    """softplus keeps |z| non-increasing in impulse mode even for a very negative decay_raw."""
    bank = PhasorBank(num_oscillators=4, steps=50, drive="impulse")
    x = jax.random.normal(jax.random.key(8), (3, 5))
    params = bank.init(jax.random.key(9), x)
    params["params"]["decay_raw"] = jnp.full((4,), -30.0)
    out = np.asarray(bank.apply(params, x))
    amp = np.hypot(out[..., :4], out[..., 4:])  # [B, S, P]
    assert np.all(np.diff(amp, axis=1) <= 1e-5 * amp[:, :1])


def test_bf16_preserves_dtype():
    bank = PhasorBank(num_oscillators=5, steps=12)
    x = jax.random.normal(jax.random.key(10), (3, 8)).astype(jnp.bfloat16)
    params = bank.init(jax.random.key(11), x)
    out = jax.jit(bank.apply)(params, x)
    assert out.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(out, np.float32)))
    ref = bank.apply(params, x.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=0.05, atol=0.05)
    summ = PhasorBank(num_oscillators=5, steps=12, summary=True).apply(params, x)
    assert summ.dtype == jnp.bfloat16 and summ.shape == (3, 10)


@pytest.mark.parametrize("summary", [False, True])
def test_gradients_reach_every_param(summary):
    bank = PhasorBank(num_oscillators=4, steps=9, summary=summary)
    x = jax.random.normal(jax.random.key(12), (3, 6))
    params = bank.init(jax.random.key(13), x)
    w = jax.random.normal(jax.random.key(14), bank.apply(params, x).shape)
    grads = jax.grad(lambda p: jnp.sum(bank.apply(p, x) * w))(params)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf)) and np.abs(leaf).sum() > 0
    # Zero input and zero bias: the amplitude floor keeps the gradient finite.
    zero_grads = jax.grad(lambda p: jnp.sum(bank.apply(p, jnp.zeros_like(x))))(params)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(zero_grads))


def test_bad_config():
    with pytest.raises(ValueError, match="num_oscillators.*got 0"):
        PhasorBank(num_oscillators=0)
    with pytest.raises(ValueError, match="steps.*got 0"):
        PhasorBank(num_oscillators=2, steps=0)
    with pytest.raises(ValueError, match="'chirp'"):
        PhasorBank(num_oscillators=2, drive="chirp")
    with pytest.raises(ValueError, match="omega_min = 2.0"):
        PhasorBank(num_oscillators=2, omega_min=2.0, omega_max=1.0)
    with pytest.raises(ValueError, match="-0.1"):
        PhasorBank(num_oscillators=2, init_decay=-0.1)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        PhasorBank(num_oscillators=2).init(jax.random.key(0), jnp.zeros((5,)))
