"""Tests for aura.brain.personality: monotone trait effects, ranges, jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.brain.personality import (
    RANGES,
    PersonalityEngine,
    Signals,
    Traits,
    controls,
    parse_traits,
)

E = 6


def _ctl(signals=None, **traits):
    return controls(Traits(**traits), Signals() if signals is None else signals, E)


def test_neutral_controls():
    c = _ctl()
    np.testing.assert_allclose(c.bias_logits, np.zeros(E), atol=1e-7)
    np.testing.assert_allclose(
        [c.temperature, c.distill_alpha, c.merit_momentum], [1.0, 0.5, 0.9], rtol=1e-6
    )


def test_curiosity_raises_temperature():
    temps = [float(_ctl(curiosity=v).temperature) for v in (0.1, 0.4, 0.7, 1.0)]
    assert all(b > a for a, b in zip(temps, temps[1:], strict=False))
    assert float(_ctl(caution=0.9).temperature) < 1.0


def test_stability_raises_merit_momentum():
    rising = Signals(loss_trend=0.05)
    for signals in (Signals(), rising):
        moms = [float(_ctl(signals, stability=v).merit_momentum) for v in (0.0, 0.3, 0.6, 0.9)]
        assert all(b > a for a, b in zip(moms, moms[1:], strict=False))
    assert float(_ctl(rising, stability=0.2).merit_momentum) < float(
        _ctl(stability=0.2).merit_momentum
    )


def test_caution_and_rising_loss_raise_distill_alpha():
    assert float(_ctl(caution=0.9).distill_alpha) > float(_ctl(caution=0.1).distill_alpha)
    rising = Signals(loss_trend=0.1)
    assert float(_ctl(rising, caution=0.8).distill_alpha) > float(_ctl(caution=0.8).distill_alpha)


def test_bias_favours_underused_active_experts():
    util = jnp.array([0.5, 0.3, 0.2, 0.0, 0.0, 0.0])
    mask = jnp.array([1, 1, 1, 1, 0, 0], bool)
    c = controls(Traits(curiosity=0.8), Signals(gate_entropy=0.3, utilisation=util), E, mask)
    b = np.asarray(c.bias_logits)
    assert b[3] > b[2] > b[1] > b[0]  # less used -> larger bonus
    np.testing.assert_array_equal(b[4:], [0.0, 0.0])  # inactive: no bonus
    collapsed = controls(Traits(curiosity=0.8), Signals(0.0, 0.1, util), E, mask).bias_logits
    assert float(collapsed[3]) > float(b[3])  # lower entropy -> stronger push


def test_outputs_stay_in_range_for_extreme_inputs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        traits = Traits(*rng.uniform(-1, 2, size=4))
        util = rng.dirichlet(np.ones(E)) * rng.uniform(0, 3)
        signals = Signals(rng.normal(0, 5), rng.uniform(-1, 2), jnp.asarray(util))
        c = controls(traits, signals, E)
        for name, value in c._asdict().items():
            lo, hi = RANGES[name]
            assert float(jnp.min(value)) >= lo and float(jnp.max(value)) <= hi, name


def test_jit_and_engine():
    engine = PersonalityEngine(Traits(curiosity=0.9, stability=0.8))
    signals = Signals(jnp.float32(0.02), jnp.float32(0.4), jnp.full((E,), 1 / E))
    jitted = jax.jit(controls, static_argnums=2)(engine.traits, signals, E)
    eager = engine.controls(signals, E)
    for a, b in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="trait caution=1.5"):
        PersonalityEngine(Traits(caution=1.5))


def test_parse_traits():
    assert parse_traits("curiosity=0.8, caution=0.2") == Traits(0.8, 0.2, 0.5, 0.5)
    assert parse_traits("") == Traits()
    with pytest.raises(ValueError, match="unknown trait 'bravery'; valid: curiosity"):
        parse_traits("bravery=1")
    with pytest.raises(ValueError, match=r"stability=2.0 must be in \[0, 1\]"):
        parse_traits("stability=2")
    with pytest.raises(ValueError, match="not 'trait=value'"):
        parse_traits("curiosity")
