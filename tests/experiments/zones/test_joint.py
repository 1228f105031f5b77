"""Joint multi-zone training: bus in the step state, the thalamic broadcaster, resume, analytics."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aura.data.mnist import load_digits, to_float
from aura.experiments.zones.joint import JointConfig, class_zone_nmi, model_config, train_joint
from aura.experiments.zones.joint_step import JointLossConfig, JointState, build_train_step
from aura.experiments.zones.registry import zone_controls
from aura.models import zone_brain
from aura.models.zone_brain import ZoneBrain, bus_widths
from aura.nn import bus as bus_lib
from aura.train import loop
from aura.train.experts import load_expert
from aura.train.optim import expert_row_mask

ZONES = ("hippocampus", "amygdala", "language")
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def tiny_config(**over):
    """Wider than zone_brain.tiny_config: the specialisation test needs a little capacity."""
    width = dict(stem_channels=(8, 16), feature_dim=32, phasor_oscillators=4, attention_k=24)
    return model_config(ZONES, base=zone_brain.tiny_config(**{**width, **over}))


def digits(n=96):
    x, y = load_digits(None)
    return jnp.asarray(to_float(x[:n])), jnp.asarray(y[:n].astype(np.int32))


@pytest.fixture(scope="module")
def stepper():
    """``run(broadcast, bus_hog)``: one train step from the same start (steps compiled once).

    With ``bus_hog`` the bus says zones 1.. hogged the routing, so every sample goes to zone 0.
    """
    c = tiny_config(balance_gain=50.0)
    model = ZoneBrain(c)
    controls = tuple(zone_controls(z, 10) for z in ZONES)
    bus = bus_lib.init_bus(**bus_widths(c))
    x, y = digits(32)
    params = jax.jit(model.init)(jax.random.key(0), x[:2], controls, bus)["params"]
    opt = optax.chain(optax.adamw(1e-3), expert_row_mask())
    steps = {
        b: jax.jit(build_train_step(model, opt, JointLossConfig(broadcast=b)))
        for b in (True, False)
    }

    def run(broadcast: bool, bus_hog: bool):
        b = bus
        if bus_hog:
            i = bus_lib.STATS.index("routing_weight")
            b = bus._replace(
                stats=bus.stats.at[:, i].set(jnp.asarray([0.0, 1.0, 1.0])),
                seen=bus.seen.at[:, i].set(True),
            )
        state = JointState(params, opt.init(params), b, jnp.asarray(0, jnp.int32))
        new, metrics = steps[broadcast](state, (x, y), controls)
        return model, state, new, metrics, (x, y, controls)

    return run


def changed(a, b) -> bool:
    return any(
        bool(jnp.any(u != v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_unrouted_zones_get_exactly_zero_update_only_with_the_broadcaster(stepper):
    _, old, new, metrics, _ = stepper(broadcast=True, bus_hog=True)
    np.testing.assert_array_equal(np.asarray(metrics["zone_share"]), [1.0, 0.0, 0.0])
    assert changed(old.params["hippocampus"], new.params["hippocampus"])
    for z in ("amygdala", "language"):
        assert not changed(old.params[z], new.params[z]), z
    _, old, new, _, _ = stepper(broadcast=False, bus_hog=True)  # the ablation
    for z in ZONES:
        assert changed(old.params[z], new.params[z]), z
    # The amygdala's experts are consolidated (freeze policy "all"): exactly unchanged, even by
    # weight decay, while the rest of its column learns.
    amygdala_old, amygdala_new = old.params["amygdala"], new.params["amygdala"]
    assert not changed(amygdala_old["core"]["experts"], amygdala_new["core"]["experts"])
    assert changed(amygdala_old["head"], amygdala_new["head"])


def test_the_step_publishes_every_zone_on_the_bus_in_its_state(stepper):
    model, old, new, metrics, (x, y, controls) = stepper(broadcast=True, bus_hog=False)
    out = jax.jit(model.apply)({"params": old.params}, x, controls, old.bus)  # what the step saw
    bus = new.bus
    np.testing.assert_array_equal(np.asarray(bus.count), [1, 1, 1])
    share = np.asarray(jnp.mean(out.weights > 0, axis=0))
    np.testing.assert_allclose(np.asarray(metrics["zone_share"]), share)
    view = bus_lib.zone_analytics(bus, ZONES)
    for i, (z, col) in enumerate(zip(ZONES, out.columns, strict=True)):
        np.testing.assert_allclose(bus.phasor[i], col.phasor, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bus.attention[i], col.attention, rtol=1e-5, atol=1e-6)
        assert view[z]["routing_weight"] == pytest.approx(float(share[i]), abs=1e-6)
        assert view[z]["gate_entropy"] == pytest.approx(float(col.aux.gate_entropy), rel=1e-5)
        mine = np.asarray(jnp.argmax(out.weights, -1) == i)
        if mine.any():
            ok = np.asarray(jnp.argmax(out.logits, -1) == y)[mine].mean()
            assert view[z]["routed_accuracy"] == pytest.approx(float(ok), abs=1e-6)
        else:
            assert view[z]["routed_accuracy"] is None
        n = len(col.aux.load)
        np.testing.assert_allclose(view[z]["lifetime_utilisation"][:n], col.aux.load, atol=1e-6)


def test_class_zone_nmi():
    assert class_zone_nmi(np.eye(4) * 10) == pytest.approx(1.0)
    assert class_zone_nmi(np.ones((4, 2))) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same short run with and without the broadcaster (one epoch of the 8,000 digits)."""
    out = {}
    for broadcast in (True, False):
        root = tmp_path_factory.mktemp(f"joint_{broadcast}")
        cfg = JointConfig(
            ckpt_root=str(root), zones=ZONES, epochs=2, batch_size=128, model=tiny_config(),
            loss=JointLossConfig(broadcast=broadcast), tensorboard=False,
        )  # fmt: skip
        logs = []
        out[broadcast] = (cfg, train_joint(cfg, log=logs.append), logs)
    return out


def test_the_broadcaster_makes_zones_specialise(runs):
    _, on, _ = runs[True]
    _, off, _ = runs[False]
    assert on["test_accuracy"] > 0.8 and off["test_accuracy"] > 0.8
    # With it, a zone's head knows the digits routed to it far better than the others'; without
    # it every zone learns everything.
    assert on["specialisation"] > 0.3, on["per_zone"]
    assert abs(off["specialisation"]) < 0.1, off["per_zone"]
    for z in ZONES:
        shares = on["per_zone"][z]
        assert 0.05 < shares["share"] < 0.7, (z, shares)  # the bus keeps routing balanced


def test_joint_run_writes_analytics_and_per_zone_expert_checkpoints(runs):
    cfg, result, logs = runs[True]
    manifest = json.loads((cfg.workdir / "joint.json").read_text())
    assert manifest["zones"] == list(ZONES) and manifest["steps"] == result["steps"]
    for z in ZONES:
        zone = manifest["per_zone"][z]
        for key in ("share", "routed_accuracy", "gate_entropy", "local_in", "local_out"):
            assert zone[key] is not None, (z, key)
        assert len(zone["lifetime_utilisation"]) == len(zone["utilisation"])
        assert sum(zone["classes"]) > 0
        params, em = load_expert(cfg.workdir / z / "expert_0")
        assert em["zone"] == z and em["joint"] and "lifetime_utilisation" in em["metrics"]
    assert manifest["bus"]["hippocampus"]["publishes"] == result["steps"]
    assert any("growth" in s for s in logs)


def test_joint_resume_after_sigterm_matches_the_uninterrupted_run(runs, tmp_path, monkeypatch,
                                                                  stop_after):  # fmt: skip
    cfg, full, _ = runs[True]
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(70))  # epoch 1, mid-way
    again = JointConfig(**{**cfg.__dict__, "ckpt_root": str(tmp_path)})
    first = train_joint(again, log=lambda s: None)
    assert first["interrupted"] and first["steps"] == 71
    assert not (again.workdir / "joint.json").exists()
    monkeypatch.undo()
    second = train_joint(again, log=lambda s: None)
    assert not second["interrupted"] and second["steps"] == full["steps"]
    assert second["test_accuracy"] == full["test_accuracy"]
    assert second["per_zone"] == full["per_zone"]
