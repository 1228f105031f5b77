"""ZoneBrain: heterogeneous zone columns, thalamic routing, and what each zone reads off the bus."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.experiments.zones.joint import model_config
from aura.experiments.zones.registry import get_zone, zone_controls
from aura.models import zone_brain
from aura.models.zone_brain import ZoneBrain, bus_widths
from aura.nn import bus as bus_lib

ZONES = ("hippocampus", "amygdala", "language")


def tiny_config(**over):
    return model_config(ZONES, base=zone_brain.tiny_config(**over))


@pytest.fixture(scope="module")
def built():
    c = tiny_config()
    model = ZoneBrain(c)
    bus = bus_lib.init_bus(**bus_widths(c))
    controls = tuple(zone_controls(z, 10) for z in ZONES)  # fully grown
    x = jax.random.uniform(jax.random.key(0), (12, 28, 28, 1))
    params = jax.jit(model.init)(jax.random.key(1), x, controls, bus)["params"]
    apply = jax.jit(model.apply)
    return c, model, params, bus, controls, x, apply


def test_zones_follow_their_registry_presets_and_output_shapes(built):
    c, _, params, bus, controls, x, apply = built
    for z in ZONES:
        experts = params[z]["core"]["experts"]
        assert jax.tree.leaves(experts)[0].shape[0] == get_zone(z).capacity, z
    assert "conv" in params["amygdala"]["core"]["experts"]  # the amygdala's conv1d experts
    out = apply({"params": params}, x, controls, bus)
    assert out.logits.shape == (12, 10) and out.zone_logits.shape == (3, 12, 10)
    w = np.asarray(out.weights)
    assert np.all((w > 0).sum(1) == 1)  # top-1 zone per sample
    np.testing.assert_allclose(w.max(1), np.asarray(out.probs).max(1), rtol=1e-6)  # Switch style
    # The combined output is the routing-weighted sum of the zone heads.
    naive = np.einsum("zbc,bz->bc", np.asarray(out.zone_logits), w)
    np.testing.assert_allclose(np.asarray(out.logits), naive, rtol=1e-5, atol=1e-6)
    for col in out.columns:
        assert col.phasor.shape == (2 * c.phasor_oscillators,)
        assert col.attention.shape == (c.feature_dim,)
        assert float(col.attention.min()) >= 0 and float(col.attention.max()) <= 1


def test_thalamus_reads_routing_shares_off_the_bus(built):
    _, _, params, bus, controls, x, apply = built
    i = bus_lib.STATS.index("routing_weight")
    hog = bus._replace(
        stats=bus.stats.at[:, i].set(jnp.asarray([1.0, 0.0, 0.0])),
        seen=bus.seen.at[:, i].set(True),
    )
    out = apply({"params": params}, x, controls, hog)
    np.testing.assert_allclose(np.asarray(out.zone_bias), [-4.0, 2.0, 2.0], rtol=1e-6)  # gain 2
    base = apply({"params": params}, x, controls, bus)
    assert float(out.probs[:, 0].mean()) < float(base.probs[:, 0].mean())
    off = jax.jit(ZoneBrain(tiny_config(balance_gain=0.0)).apply)(
        {"params": params}, x, controls, hog
    )
    np.testing.assert_allclose(np.asarray(off.probs), np.asarray(base.probs), rtol=1e-6)


def test_zones_read_each_others_attention_and_phasor_signals(built):
    _, _, params, bus, controls, x, apply = built
    base = apply({"params": params}, x, controls, bus)
    # Lateral inhibition: the other zones attended to every feature -> zone 0's input is damped.
    busy = bus._replace(attention=bus.attention.at[1:].set(1.0))
    inhibited = apply({"params": params}, x, controls, busy)
    assert not np.allclose(inhibited.zone_logits[0], base.zone_logits[0])
    no_lateral = jax.jit(ZoneBrain(tiny_config(lateral=0.0)).apply)(
        {"params": params}, x, controls, busy
    )
    np.testing.assert_allclose(no_lateral.zone_logits, base.zone_logits, rtol=1e-5, atol=1e-6)
    # Phasor context: a zone's gate reads the *other* zones' phasor summaries, not its own.
    own = apply({"params": params}, x, controls, bus._replace(phasor=bus.phasor.at[0].set(3.0)))
    np.testing.assert_allclose(own.columns[0].aux.importance, base.columns[0].aux.importance)
    assert not np.allclose(own.columns[1].aux.importance, base.columns[1].aux.importance)
    assert not np.allclose(own.columns[2].aux.importance, base.columns[2].aux.importance)


def test_bad_controls_or_bus_are_named(built):
    c, model, params, bus, controls, x, apply = built
    with pytest.raises(ValueError, match="2 RoutingControls for 3 zones"):
        model.apply({"params": params}, x, controls[:2], bus)
    with pytest.raises(ValueError, match="the bus carries 2 zones"):
        model.apply({"params": params}, x, controls, bus_lib.init_bus(2, 6, 16, 8))
