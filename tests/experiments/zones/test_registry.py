"""Zone registry (presets, core kwargs, controls, paths) and the neural-signal bus."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.experiments.zones import layout
from aura.experiments.zones import registry as zones
from aura.nn import bus as bus_lib
from aura.nn.moe import LiquidMoE

NAMES = ("hippocampus", "amygdala", "hypothalamus", "thalamus", "language")


def test_registry_has_the_five_zones_and_each_builds_a_working_core():
    assert tuple(zones.ZONES) == NAMES
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    for name in NAMES:
        kw = zones.build_core_kwargs_for_zone(name, 8)
        spec = zones.get_zone(name)
        assert kw["moe"]["num_experts"] == spec.capacity
        assert kw["moe"]["hidden_dim"] == spec.hidden_mult * 8
        assert kw["moe"]["expert_kind"] == spec.expert_kind
        assert kw["controls"].num_experts == spec.capacity
    for name in ("hippocampus", "amygdala"):  # one core per expert kind (mlp, conv1d)
        kw = zones.build_core_kwargs_for_zone(name, 8)
        moe = LiquidMoE(**kw["moe"])
        params = jax.jit(moe.init)(jax.random.key(1), x, kw["controls"])["params"]
        y, aux = jax.jit(moe.apply)({"params": params}, x, kw["controls"])
        assert y.shape == x.shape and np.all(np.isfinite(np.asarray(y)))
        # Only the experts active at epoch 0 receive tokens.
        n0 = int(kw["controls"].active_count)
        assert np.all(np.asarray(aux.load)[n0:] == 0) and np.sum(np.asarray(aux.load)) > 0
    assert {zones.get_zone(z).expert_kind for z in NAMES} == {"mlp", "conv1d"}
    assert zones.get_zone("thalamus").head == "gate_head"


def test_unknown_zone_names_the_valid_ones():
    for call in (
        lambda: zones.get_zone("cortex"),
        lambda: zones.build_core_kwargs_for_zone("cortex", 8),
        lambda: layout.head_path("/x", "cortex"),
        lambda: zones.parse_zones("language,cortex"),
    ):
        with pytest.raises(ValueError, match="unknown zone 'cortex'; valid zones: ") as err:
            call()
        assert all(n in str(err.value) for n in NAMES)
    with pytest.raises(ValueError, match="names no zone"):
        zones.parse_zones(" , ")
    assert zones.parse_zones("language, thalamus,language") == ("language", "thalamus")
    with pytest.raises(ValueError, match="hidden_dim=0"):
        zones.build_core_kwargs_for_zone("language", 0)
    with pytest.raises(ValueError, match="has no head"):
        layout.head_path("/x", "language")


def test_the_checkpoint_layout():
    assert layout.expert_ckpt_path("checkpoints", "amygdala", 3) == Path(
        "checkpoints/amygdala/expert_3"
    )
    assert layout.expert_ckpt_path("/x", "language", 0) == Path("/x/language/expert_0")
    assert layout.head_path("/x", "hypothalamus") == Path("/x/hypothalamus/control_head")
    assert layout.joint_dir("/x") == Path("/x/joint")
    with pytest.raises(ValueError, match="must be an int >= 0"):
        layout.expert_ckpt_path("/x", "language", -1)
    with pytest.raises(ValueError, match="plain directory name"):
        layout.expert_ckpt_path("/x", "../up", 0)


def test_registry_is_config_data():
    presets = {k: dict(v) for k, v in zones.ZONE_PRESETS.items()}
    presets["hippocampus"]["capacity"] = 8
    presets["hippocampus"]["growth_schedule"] = "0:2,1:8"
    reg = zones.registry_from_config(presets)
    assert zones.get_zone("hippocampus", reg).capacity == 8
    assert zones.zone_controls("hippocampus", 1, registry=reg).active_count == 8
    kw = zones.build_core_kwargs_for_zone("hippocampus", 16, registry=reg)
    assert kw["moe"]["num_experts"] == 8
    with pytest.raises(ValueError, match="unknown fields"):
        zones.registry_from_config({"x": {"capacity": 2, "colour": "red"}})
    with pytest.raises(ValueError, match="top_k=3 must be in"):
        zones.registry_from_config({"x": {**presets["amygdala"], "top_k": 3}})


def test_freeze_policies():
    def frozen(ctl):
        return np.flatnonzero(np.asarray(ctl.freeze_mask)).tolist()

    # hippocampus: "grown" — experts that existed before the latest growth are frozen.
    per_epoch = {e: zones.zone_controls("hippocampus", e) for e in range(6)}
    assert [int(c.active_count) for c in per_epoch.values()] == [1, 1, 3, 3, 6, 6]
    assert [frozen(c) for c in per_epoch.values()] == [[], [], [0], [0], [0, 1, 2], [0, 1, 2]]
    assert frozen(zones.zone_controls("language", 5)) == []  # "none"
    assert frozen(zones.zone_controls("amygdala", 0)) == [0]  # "all" (active ones)
    kw = zones.build_core_kwargs_for_zone("language", 8, freeze_experts=True)
    assert frozen(kw["controls"]) == [0, 1, 2, 3]
    assert frozen(zones.zone_controls("language", 0, active=2, freeze_experts=True)) == [0, 1]


def test_fit_schedule():
    assert zones.fit_schedule("0:1,2:3,4:6", 3, 6) == "0:1,1:3,2:6"
    assert zones.fit_schedule("0:1,2:3,4:6", 1, 6) == "0:6"
    assert zones.fit_schedule("0:1,2:3,4:6", 15, 6) == "0:1,2:3,4:6"
    assert zones.fit_schedule("0:1,2:3,4:6", 5, 4) == "0:1,2:3,4:4"
    with pytest.raises(ValueError, match="epochs=0"):
        zones.fit_schedule("0:1", 0, 2)


# ----------------------------------------------------------------------------- bus


def test_bus_rides_in_a_scanned_state_with_traced_zone_indices():
    Z, E, steps = 3, 4, 6
    rng = np.random.default_rng(0)
    loads = rng.dirichlet(np.ones(E), size=steps).astype(np.float32)  # [steps, E]
    ents = rng.uniform(0, 1, steps).astype(np.float32)
    phasors = rng.normal(size=(steps, 2)).astype(np.float32)
    zone_of = np.array([0, 2, 0, 0, 2, 0], np.int32)
    decay = 0.8

    @jax.jit
    def run(bus):
        def step(b, xs):
            z, load, ent, ph = xs
            b = bus_lib.publish(
                b, z, phasor=ph, stats={"gate_entropy": ent}, load=load, decay=decay
            )
            return b, bus_lib.read(b, z)["stats"][0]

        return jax.lax.scan(step, bus, (zone_of, loads, ents, phasors))

    bus, trace = run(bus_lib.init_bus(Z, 2, 3, E))
    for z in (0, 2):
        mine = zone_of == z
        np.testing.assert_allclose(bus.utilisation[z], loads[mine].mean(0), rtol=1e-5)
        ema = None
        for e in ents[mine]:  # naive EMA, first value taken as is
            ema = e if ema is None else decay * ema + (1 - decay) * e
        np.testing.assert_allclose(bus.stats[z, 0], ema, rtol=1e-5)
        np.testing.assert_array_equal(bus.phasor[z], phasors[np.flatnonzero(mine)[-1]])
        assert int(bus.count[z]) == mine.sum()
    assert int(bus.count[1]) == 0 and np.all(np.asarray(bus.utilisation[1]) == 0)
    np.testing.assert_allclose(trace[-1], bus.stats[0, 0])

    analytics = bus_lib.zone_analytics(bus, ("a", "b", "c"))
    assert analytics["a"]["gate_entropy"] == pytest.approx(float(bus.stats[0, 0]))
    assert analytics["a"]["loss"] is None  # never published
    assert analytics["b"]["publishes"] == 0 and analytics["b"]["gate_entropy"] is None
    assert analytics["b"]["lifetime_utilisation"] is None
    # A publish without a load does not dilute the lifetime utilisation.
    b = bus_lib.publish(bus, 0, stats={"loss": 1.0})
    b = bus_lib.publish(b, 0, load=jnp.asarray([1.0, 0, 0, 0]))
    want = (loads[zone_of == 0].sum(0) + [1, 0, 0, 0]) / (np.sum(zone_of == 0) + 1)
    np.testing.assert_allclose(b.utilisation[0], want, rtol=1e-5)


def test_bus_rejects_bad_widths_and_names():
    bus = bus_lib.init_bus(2, 2, 3, 4)
    with pytest.raises(ValueError, match="phasor has width 3 but the bus carries 2"):
        bus_lib.publish(bus, 0, phasor=jnp.zeros(3))
    with pytest.raises(ValueError, match="unknown bus statistics"):
        bus_lib.publish(bus, 0, stats={"accuracy": 1.0})
    with pytest.raises(ValueError, match="load has 5 experts"):
        bus_lib.publish(bus, 0, load=jnp.ones(5))
    with pytest.raises(ValueError, match="zone 'x' is not on this bus"):
        bus_lib.zone_index(("a", "b"), "x")
    # A shorter load is padded: a zone with fewer experts shares the bus.
    b = bus_lib.publish(bus, 1, load=jnp.asarray([0.25, 0.75]))
    np.testing.assert_allclose(b.utilisation[1], [0.25, 0.75, 0, 0])


def test_bus_skips_nan_statistics_and_follows_a_given_schedule():
    bus = bus_lib.init_bus(2, 1, 1, 2)
    bus = bus_lib.publish(bus, 0, stats={"routed_accuracy": 0.8, "loss": 1.0}, decay=0.5)
    bus = bus_lib.publish(bus, 0, stats={"routed_accuracy": jnp.nan, "loss": 3.0}, decay=0.5)
    bus = bus_lib.publish(bus, 1, stats={"routed_accuracy": jnp.nan})
    view = bus_lib.zone_analytics(bus, ("a", "b"))
    assert view["a"]["routed_accuracy"] == pytest.approx(0.8)  # NaN: left alone
    assert view["a"]["loss"] == pytest.approx(2.0)  # 0.5 * 1 + 0.5 * 3
    assert view["b"]["routed_accuracy"] is None  # never seen
    # zone_controls can follow a compressed schedule instead of the zone's own.
    ctl = zones.zone_controls("hippocampus", 1, schedule="0:3,1:6")
    assert int(ctl.active_count) == 6
    assert np.asarray(ctl.freeze_mask).tolist() == [True] * 3 + [False] * 3  # policy "grown"


def test_bus_decay_can_differ_per_statistic():
    bus = bus_lib.init_bus(1, 1, 1, 1)
    for value in (1.0, 0.0):
        bus = bus_lib.publish(
            bus, 0, stats={"loss": value, "routing_weight": value},
            decay={"loss": 0.99, "routing_weight": 0.5},
        )  # fmt: skip
    view = bus_lib.zone_analytics(bus, ("z",))["z"]
    assert view["loss"] == pytest.approx(0.99) and view["routing_weight"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="decay for unknown statistic 'speed'"):
        bus_lib.publish(bus, 0, stats={"loss": 1.0}, decay={"speed": 0.5})
    with pytest.raises(ValueError, match=r"decay=1.0 \(loss\) must be in \[0, 1\)"):
        bus_lib.publish(bus, 0, stats={"loss": 1.0}, decay={"loss": 1.0})
    with pytest.raises(ValueError, match=r"decay=1.5 must be in \[0, 1\)"):
        bus_lib.publish(bus, 0, stats={"loss": 1.0}, decay=1.5)
