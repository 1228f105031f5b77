"""Expert parallelism (shard_map + all-to-all) against the single-device dispatch, 8 CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from aura.nn.moe import LiquidMoE, RoutingControls

E, D, F = 8, 16, 32


def mesh_2x4(shape=(2, 4)):
    return Mesh(np.asarray(jax.devices()[:8], dtype=object).reshape(shape), ("data", "expert"))


def make(**kw):
    kw.setdefault("capacity_factor", float(E))  # S = p and C = R: nothing can be dropped
    return LiquidMoE(num_experts=E, in_dim=D, hidden_dim=F, dispatch="capacity", **kw)


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(0), (4, 16, D), jnp.float32)  # N = 64 tokens


def run(model, params, x, controls, mesh=None):
    """(y, aux, grads of a scalar loss) under jit, inside ``mesh`` when given."""

    def loss(p):
        y, aux = model.apply({"params": p}, x, controls)
        return jnp.sum(y**2) + aux.load_balance_loss, (y, aux)

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    with jax.set_mesh(mesh):  # None: no mesh
        lowered = f.lower(params)
        (_, (y, aux)), g = lowered.compile()(params)
    return y, aux, g, lowered.as_text()


def init(model, x, controls=None):
    return jax.jit(model.init)(jax.random.key(1), x, controls)["params"]


@pytest.mark.parametrize(("kind", "shape"), [("mlp", (2, 4)), ("conv1d", (2, 4)), ("mlp", (8, 1))])
def test_expert_parallel_equals_single_device(x, kind, shape):
    controls = RoutingControls.create(E, frozen=[3], bias=jnp.linspace(-1, 1, E))
    model = make(expert_kind=kind, top_k=2)
    params = init(model, x, controls)
    y1, aux1, g1, _ = run(model, params, x, controls)
    y8, aux8, g8, hlo = run(model, params, x, controls, mesh_2x4(shape))
    assert "sdy.manual_computation" in hlo  # dispatched per device (shard_map)
    # Tokens travel to their experts only when the experts are split (data only: no exchange).
    assert ("stablehlo.all_to_all" in hlo) == (shape[1] > 1)
    np.testing.assert_allclose(y8, y1, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aux8.load, aux1.load, atol=1e-7)
    np.testing.assert_allclose(aux8.load_balance_loss, aux1.load_balance_loss, rtol=1e-6)
    assert float(aux8.dropped_fraction) == 0.0
    for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert np.all(np.asarray(g8["experts"][next(iter(g8["experts"]))])[3] == 0.0)  # frozen


def test_overflow_drops_by_destination_then_by_expert(x):
    # Every token picks expert 0 (k=1). n = 8 tokens per device, p = 8, capacity factor 1:
    # S = ceil(8/4) = 2 slots per destination, C = ceil(8·4/8) = 4 rows for expert 0, which keeps
    # the first two tokens of the first two devices of each expert group (blocks arrive in
    # device order): 8 of 64 pairs survive.
    bias = jnp.zeros((E,)).at[0].set(30.0)
    controls = RoutingControls.create(E, bias=bias)
    model = make(top_k=1, capacity_factor=1.0)
    params = init(model, x, controls)
    with jax.set_mesh(mesh_2x4()):
        y, aux = jax.jit(lambda p: model.apply({"params": p}, x, controls))(params)
    np.testing.assert_allclose(aux.dropped_fraction, 1 - 8 / 64)
    rows = np.asarray(y).reshape(64, D)
    kept = [(d * 4 + dev) * 8 + t for d in range(2) for dev in range(2) for t in range(2)]
    roomy = make(top_k=1, capacity_factor=E)
    full = jax.jit(lambda p: roomy.apply({"params": p}, x, controls)[0])(params)
    np.testing.assert_allclose(rows[kept], np.asarray(full).reshape(64, D)[kept], atol=1e-5)
    assert np.all(np.delete(rows, kept, axis=0) == 0.0)


def test_experts_must_split_evenly_over_the_expert_axis(x):
    model = LiquidMoE(num_experts=6, in_dim=D, hidden_dim=F)
    params = jax.eval_shape(model.init, jax.random.key(1), x)["params"]
    with (
        jax.set_mesh(mesh_2x4()),
        pytest.raises(
            ValueError, match="num_experts = 6 must be a multiple of the mesh's 'expert'"
        ),
    ):
        jax.jit(lambda p: model.apply({"params": p}, x)).lower(params)


def test_partitioned_params_carry_logical_axis_names(x):
    boxed = init(make(partition_params=True), x)
    names = {k: v.names for k, v in boxed["experts"].items()}
    assert names == {
        "w1": ("expert", "embed", "mlp"),
        "b1": ("expert", "mlp"),
        "w2": ("expert", "mlp", "embed"),
        "b2": ("expert", "embed"),
    }
    plain = init(make(), x)  # default: plain arrays, same values
    for a, b in zip(jax.tree.leaves(boxed), jax.tree.leaves(plain), strict=True):
        np.testing.assert_array_equal(a, b)
