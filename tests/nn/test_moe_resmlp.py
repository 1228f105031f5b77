"""The "resmlp" expert kind (experts of several residual layers) in LiquidMoE: a naive per-expert
loop, every dispatch path, expert parallelism on 8 devices, freezing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from aura.nn.moe import LiquidMoE, ResidualMLPExperts, RoutingControls

E, L, D, F = 8, 3, 16, 24


def make(dispatch="capacity", **kw):
    kw.setdefault("capacity_factor", float(E))  # nothing dropped
    return LiquidMoE(num_experts=E, in_dim=D, hidden_dim=F, expert_kind="resmlp",
                     expert_layers=L, dispatch=dispatch, **kw)  # fmt: skip


def _naive_expert(p: dict, e: int, x: np.ndarray) -> np.ndarray:
    """Expert e on rows x [N, D], one layer at a time in float64."""
    x = x.astype(np.float64)
    for layer in range(L):
        g = lambda k: np.asarray(p[k][e, layer], np.float64)  # noqa: B023
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        h = (x - mu) / np.sqrt(var + 1e-6) * g("ln_scale") + g("ln_bias")
        u = np.asarray(jax.nn.gelu(jnp.asarray(h @ g("w1") + g("b1"))), np.float64)
        x = x + u @ g("w2") + g("b2")
    return x


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(0), (4, 8, D), jnp.float32)


def test_batched_grouped_subset_match_a_naive_loop(x):
    bank = ResidualMLPExperts(num_experts=E, in_dim=D, hidden_dim=F, num_layers=L)
    rows = x.reshape(-1, D)[:10]  # [N, D]
    xb = jnp.broadcast_to(rows, (E, *rows.shape))  # [E, N, D]
    params = bank.init(jax.random.key(1), xb, method=ResidualMLPExperts.batched)["params"]
    assert params["w1"].shape == (E, L, D, F) and params["b2"].shape == (E, L, D)
    # Random LayerNorm parameters so that they matter.
    params = {**params, "ln_scale": 1 + 0.1 * jax.random.normal(jax.random.key(2), (E, L, D))}
    want = np.stack([_naive_expert(params, e, np.asarray(rows)) for e in range(E)])
    got = bank.apply({"params": params}, xb, method=ResidualMLPExperts.batched)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    idx = jnp.array([5, 2])
    sub = bank.apply({"params": params}, rows, idx, method=ResidualMLPExperts.subset)
    np.testing.assert_allclose(sub, want[[5, 2]], atol=2e-5, rtol=2e-5)
    sizes = jnp.array([2, 0, 3, 1, 0, 2, 1, 1])  # rows sorted by expert
    grouped = bank.apply({"params": params}, rows, sizes, method=ResidualMLPExperts.grouped)
    expert_of = np.repeat(np.arange(E), np.asarray(sizes))
    np.testing.assert_allclose(grouped, want[expert_of, np.arange(10)], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("mode", ["capacity", "ragged"])
def test_dispatch_matches_the_dense_reference_with_gradients(x, mode):
    controls = RoutingControls.create(E, frozen=[1], bias=jnp.linspace(-1, 1, E))
    model = make(mode, top_k=3)
    params = jax.jit(model.init)(jax.random.key(3), x, controls)["params"]

    def loss(p, m):
        y, aux = m.apply({"params": p}, x, controls)
        return jnp.sum(y**2) + aux.load_balance_loss, y

    (_, y), g = jax.jit(jax.value_and_grad(lambda p: loss(p, model), has_aux=True))(params)
    (_, y0), g0 = jax.value_and_grad(lambda p: loss(p, make("dense", top_k=3)), has_aux=True)(
        params
    )
    np.testing.assert_allclose(y, y0, atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g0), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    for leaf in jax.tree.leaves(g["experts"]):  # the frozen expert gets exactly zero
        assert not np.asarray(leaf)[1].any()


def test_expert_parallel_equals_single_device(x):
    mesh = Mesh(np.asarray(jax.devices()[:8], dtype=object).reshape(2, 4), ("data", "expert"))
    controls = RoutingControls.create(E)
    model = make(top_k=2)
    params = jax.jit(model.init)(jax.random.key(4), x, controls)["params"]
    f = jax.jit(lambda p: model.apply({"params": p}, x, controls)[0])
    y1 = f(params)
    with jax.set_mesh(mesh):
        y8 = jax.jit(lambda p: model.apply({"params": p}, x, controls)[0])(params)
    np.testing.assert_allclose(y8, y1, atol=1e-5, rtol=1e-5)


def test_width_change_is_refused(x):
    with pytest.raises(ValueError, match=r"residual experts keep the width: out_dim=8 != 16"):
        make(out_dim=8).init(jax.random.key(0), x)
