"""The blocked capacity dispatch (compact per-expert blocks) against the compute-every-expert
reference and the capacity buffer: outputs, drops, gradients, frozen experts; and when "auto"
picks it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.moe import LiquidMoE, RoutingControls
from aura.nn.moe import dispatch as dispatch_lib

E, D, F = 4, 16, 32


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(0), (2, 96, D), jnp.float32)  # N = 192, P = 384


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # Blocks of 16 rows, so these small problems get a truly compact layout (28 blocks of 16
    # rows instead of the capacity buffer's E·C rows).
    monkeypatch.setattr(dispatch_lib, "BLOCK_ROWS", 16)


def _run(model, params, x, controls):
    def loss(p):
        y, aux = model.apply({"params": p}, x, controls)
        return jnp.sum(y**2) + aux.load_balance_loss, (y, aux)

    (_, (y, aux)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return y, aux, g


@pytest.mark.parametrize("kind", ["mlp", pytest.param("conv1d", marks=pytest.mark.slow)])
def test_blocked_equals_reference_when_nothing_is_dropped(x, kind):
    G, Q = dispatch_lib.blocked_layout(384, E, 192)
    assert (G, Q) == (16, 28) and Q * G < E * 192
    controls = RoutingControls.create(E, frozen=[2], bias=jnp.array([1.0, 0.0, -0.5, 0.3]))
    ref = LiquidMoE(E, D, F, top_k=2, expert_kind=kind, dispatch="dense")
    blk = LiquidMoE(E, D, F, top_k=2, expert_kind=kind, dispatch="blocked", capacity_factor=2.0)
    params = jax.jit(ref.init)(jax.random.key(1), x, controls)["params"]
    y1, aux1, g1 = _run(ref, params, x, controls)
    y2, aux2, g2 = _run(blk, params, x, controls)
    assert float(aux2.dropped_fraction) == 0.0  # C = N: no expert can overflow
    np.testing.assert_allclose(y2, y1, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aux2.load, aux1.load, atol=1e-7)
    for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert np.all(np.asarray(g2["experts"][next(iter(g2["experts"]))])[2] == 0.0)  # frozen


def test_blocked_drops_exactly_what_the_capacity_buffer_drops(x):
    # A strong bias overloads expert 0 beyond a tight capacity: both paths keep the same pairs.
    controls = RoutingControls.create(E, bias=jnp.array([3.0, 0.0, 0.0, 0.0]))
    cap = LiquidMoE(E, D, F, top_k=2, dispatch="capacity", capacity_factor=1.5)
    blk = LiquidMoE(E, D, F, top_k=2, dispatch="blocked", capacity_factor=1.5)
    params = jax.jit(cap.init)(jax.random.key(1), x, controls)["params"]
    y1, aux1, g1 = _run(cap, params, x, controls)
    y2, aux2, g2 = _run(blk, params, x, controls)
    assert float(aux1.dropped_fraction) > 0.05
    np.testing.assert_allclose(aux2.dropped_fraction, aux1.dropped_fraction)
    np.testing.assert_allclose(y2, y1, atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_auto_prefers_blocked_only_where_it_saves_rows(monkeypatch):
    monkeypatch.setattr(dispatch_lib, "BLOCK_ROWS", 256)
    # The adapter's demo: 4 experts, top-2, factor 2.0 -> C = N; blocks compute ~P rows.
    assert dispatch_lib.prefer_blocked(4096, 4, 2.0)
    G, Q = dispatch_lib.blocked_layout(4096, 4, 2048)
    assert Q * G <= 4096 + 4 * G and Q * G < 4 * 2048
    # The MoE benchmark: 16 experts, factor 1.25 -> the capacity buffer is already tight.
    assert not dispatch_lib.prefer_blocked(16384, 16, 1.25)
