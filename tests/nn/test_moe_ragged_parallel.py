"""The dropless per-device paths under a mesh (8 simulated CPU devices): sort + ragged_dot with
the expert axis 1, and the ragged all-to-all with expert parallelism, against the
compute-every-expert reference (outputs, aux, gradients); the dense emulation of
``ragged_all_to_all`` against the collective's documented semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from aura.nn.moe import LiquidMoE, RoutingControls
from aura.nn.moe.ragged_parallel import ragged_all_to_all_dense, ragged_expert_parallel_dispatch

E, D, F = 8, 16, 32


def mesh(shape):
    return Mesh(np.asarray(jax.devices()[:8], dtype=object).reshape(shape), ("data", "expert"))


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(0), (4, 16, D), jnp.float32)  # N = 64 tokens


def run(model, params, x, controls, m=None):
    def loss(p):
        y, aux = model.apply({"params": p}, x, controls)
        return jnp.sum(y**2) + aux.load_balance_loss, (y, aux)

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    with jax.set_mesh(m):
        lowered = f.lower(params)
        (_, (y, aux)), g = lowered.compile()(params)
    return y, aux, g, lowered.as_text()


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("mlp", (8, 1)), ("mlp", (2, 4)), pytest.param("conv1d", (4, 2), marks=pytest.mark.slow)],
)
def test_ragged_under_mesh_equals_reference(x, kind, shape):
    # A strong bias sends most tokens to expert 0: any capacity buffer would drop pairs here.
    bias = jnp.zeros((E,)).at[0].set(4.0).at[5].set(2.0)
    controls = RoutingControls.create(E, frozen=[3], bias=bias)
    ref = LiquidMoE(E, D, F, top_k=2, expert_kind=kind, dispatch="dense")
    model = LiquidMoE(E, D, F, top_k=2, expert_kind=kind, dispatch="ragged")
    params = jax.jit(ref.init)(jax.random.key(1), x, controls)["params"]
    y1, aux1, g1, _ = run(ref, params, x, controls)
    y8, aux8, g8, hlo = run(model, params, x, controls, mesh(shape))
    # per device (shard_map), pairs sorted by expert (ragged_dot itself lowers to a loop of
    # dots on CPU, so it has no op name of its own here)
    assert "sdy.manual_computation" in hlo and "stablehlo.sort" in hlo
    assert ("all_to_all" in hlo) == (shape[1] > 1)  # the exchange only with expert parallelism
    np.testing.assert_allclose(y8, y1, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aux8.load, aux1.load, atol=1e-7)
    assert float(aux8.dropped_fraction) == 0.0
    for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    leaf = next(iter(g8["experts"]))
    assert np.all(np.asarray(g8["experts"][leaf])[3] == 0.0)  # frozen expert: zero gradient


def test_auto_under_mesh_keeps_capacity_on_cpu(x):
    model = LiquidMoE(E, D, F, top_k=2)  # dispatch="auto": capacity on the CPU backend
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]
    _, _, _, hlo = run(model, params, x, RoutingControls.create(E), mesh((8, 1)))
    assert "stablehlo.sort" not in hlo  # no per-device sort: the sort-free capacity packing


def _numpy_ragged_all_to_all(operands, outputs, in_off, send, out_off, recv):
    """The documented semantics, looped in numpy over X devices (lists of per-device arrays)."""
    X, S = len(operands), len(in_off[0])
    per = S // X
    result = [o.copy() for o in outputs]
    for src in range(X):
        for s in range(S):
            dst = s // per
            rows = operands[src][in_off[src][s] : in_off[src][s] + send[src][s]]
            # receiver-side slice index of this slice: block `src`, position s % per
            i = src * per + s % per
            assert recv[dst][i] == send[src][s]
            result[dst][out_off[src][s] : out_off[src][s] + len(rows)] = rows
    return result


def test_dense_emulation_follows_ragged_all_to_all_semantics():
    X, M, per = 4, 6, 2  # 4 devices, 6 rows each, 2 slices per destination
    rng = np.random.default_rng(0)
    send = rng.integers(0, 3, size=(X, X * per)).astype(np.int32)  # slice sizes <= 2
    in_off = np.zeros_like(send)
    for d in range(X):  # slices packed in order with one row of internal padding
        in_off[d] = np.minimum(np.concatenate([[0], np.cumsum(send[d])[:-1]]), M - 2)
    send = np.minimum(send, M - in_off)
    # recv[dst][src·per + j] = send[src][dst·per + j]; offsets: senders in order on receivers
    recv = np.zeros_like(send)
    out_off = np.zeros_like(send)
    for dst in range(X):
        pos = 0
        for src in range(X):
            for j in range(per):
                n = send[src][dst * per + j]
                recv[dst][src * per + j], out_off[src][dst * per + j] = n, pos
                pos += n
    operands = rng.normal(size=(X, M, 3)).astype(np.float32)
    outputs = np.full((X, 2 * X * per + 1, 3), -7.0, np.float32)
    want = _numpy_ragged_all_to_all(list(operands), list(outputs), in_off, send, out_off, recv)

    m = Mesh(np.asarray(jax.devices()[:X], dtype=object), ("e",))
    fn = lambda *a: ragged_all_to_all_dense(*[b[0] for b in a], axis_name="e", axis_size=X)[None]
    got = jax.jit(jax.shard_map(fn, mesh=m, in_specs=(P("e"),) * 6, out_specs=P("e")))(
        *(jnp.asarray(a) for a in (operands, outputs, in_off, send, out_off, recv))
    )
    np.testing.assert_array_equal(np.asarray(got), np.stack(want))


def test_native_ragged_all_to_all_lowers(x):
    # XLA:CPU cannot compile ragged-all-to-all, but the GPU/TPU program must at least lower
    # with these argument shapes and dtypes.
    model = LiquidMoE(E, D, F, top_k=2)
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]["experts"]
    x2 = x.reshape(-1, D)
    idx = jnp.tile(jnp.arange(2, dtype=jnp.int32), (x2.shape[0], 1))
    w = jnp.full(idx.shape, 0.5)
    bank = model.bind({"params": {"experts": params, "router": {}}})
    p, fn = bank.experts.grouped_parts()
    m = mesh((2, 4))
    f = lambda x2: ragged_expert_parallel_dispatch(
        x2, idx, w, idx >= 0, p, fn, E, m, "expert", native=True
    )
    with jax.set_mesh(m):
        text = jax.jit(f).lower(x2).as_text()
    assert "ragged_all_to_all" in text
