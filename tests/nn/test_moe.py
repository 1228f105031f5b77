"""LiquidMoE: routing masks, freezing, dispatch against the reference, aux outputs, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.moe import LiquidMoE, RoutingControls
from aura.nn.moe.dispatch import capacity_dispatch
from aura.nn.moe.reference import reference_moe

E, D, F = 8, 16, 32


def make(dispatch="capacity", **kw):
    kw.setdefault("capacity_factor", float(E))  # large enough that nothing is dropped
    return LiquidMoE(num_experts=E, in_dim=D, hidden_dim=F, dispatch=dispatch, **kw)


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(0), (4, 12, D), jnp.float32)


def init(model, x, controls=None):
    return model.init(jax.random.key(1), x, controls)["params"]


@pytest.mark.parametrize("kind", ["mlp", "conv1d"])
@pytest.mark.parametrize("mode", ["capacity", "ragged"])
@pytest.mark.parametrize("groups", [1, 2])
def test_dispatch_matches_compute_every_expert_reference(x, kind, mode, groups):
    controls = RoutingControls.create(E, active=6, pruned=[2], bias=jnp.linspace(-1, 1, E))
    model = make(mode, expert_kind=kind, group_count=groups, top_k=3)
    params = init(model, x, controls)
    y, aux = jax.jit(lambda p: model.apply({"params": p}, x, controls))(params)
    y_ref, aux_ref = make("dense", expert_kind=kind, group_count=groups, top_k=3).apply(
        {"params": params}, x, controls
    )
    assert y.shape == x.shape
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aux.load, aux_ref.load, atol=1e-6)
    assert float(aux.dropped_fraction) == 0.0

    # Gradients agree too (the dispatch is differentiable like the reference).
    def loss(p, m):
        return jnp.sum(m.apply({"params": p}, x, controls)[0] ** 2)

    g = jax.grad(loss)(params, model)
    g_ref = jax.grad(loss)(params, make("dense", expert_kind=kind, group_count=groups, top_k=3))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_capacity_overflow_drops_lowest_priority_pairs():
    # 6 tokens all routed to expert 0 (k=1); capacity factor gives C = ceil(6/2 * 1) = 3.
    xs = jax.random.normal(jax.random.key(2), (6, 4))
    idx = jnp.zeros((6, 1), jnp.int32)
    w = jnp.ones((6, 1))
    ok = jnp.ones((6, 1), bool)

    def run(b):  # expert e multiplies by (e + 2)
        return b * (jnp.arange(2)[:, None, None] + 2.0)

    y, stats = capacity_dispatch(xs, idx, w, ok, run, num_experts=2, capacity_factor=1.0)
    expected = jnp.concatenate([xs[:3] * 2.0, jnp.zeros((3, 4))])  # first come, first served
    np.testing.assert_allclose(y, expected, atol=1e-6)
    np.testing.assert_allclose(stats.dropped_fraction, 0.5)
    np.testing.assert_allclose(stats.load, [1.0, 0.0])
    y_ref = reference_moe(xs, idx, w, ok, run, 2)
    np.testing.assert_allclose(y_ref, xs * 2.0, atol=1e-6)  # the reference never drops


def test_first_choices_have_priority_over_second_choices():
    # Token 0's second choice and token 1's first choice compete for expert 1 (capacity 1).
    xs = jnp.ones((2, 1))
    idx = jnp.array([[0, 1], [1, 0]], jnp.int32)
    w = jnp.full((2, 2), 0.5)
    ok = jnp.ones((2, 2), bool)
    run = lambda b: b * (jnp.arange(2)[:, None, None] + 1.0)  # noqa: E731
    y, stats = capacity_dispatch(xs, idx, w, ok, run, num_experts=2, capacity_factor=0.5)
    # C = ceil(4/2*0.5) = 1: both first choices are kept, both second choices dropped.
    np.testing.assert_allclose(y[:, 0], [0.5 * 1.0, 0.5 * 2.0])
    np.testing.assert_allclose(stats.dropped_fraction, 0.5)


@pytest.mark.parametrize("mode", ["capacity", "ragged", "dense"])
def test_inactive_and_pruned_experts_get_no_weight(x, mode):
    controls = RoutingControls.create(E, active=5, pruned=[1, 3], bias=jnp.full((E,), 0.0))
    # Bias strongly towards the experts that must stay unused: masks must still win.
    controls = controls.replace(bias=jnp.where(jnp.arange(E) >= 5, 50.0, 0.0).at[1].set(50.0))
    model = make(mode)
    params = init(model, x, controls)
    r = model.apply({"params": params}, x, controls, method=LiquidMoE.compute_gate_weights)
    routable = np.array([1, 0, 1, 0, 1, 0, 0, 0], bool)
    assert np.all(np.asarray(r.probs)[:, ~routable] == 0.0)
    chosen = np.asarray(r.indices)[np.asarray(r.valid)]
    assert set(chosen.tolist()) <= {0, 2, 4}
    _, aux = model.apply({"params": params}, x, controls)
    assert np.all(np.asarray(aux.load)[~routable] == 0.0)
    np.testing.assert_allclose(np.asarray(r.probs).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_topk_weights_sum_to_one_and_follow_probabilities(x, groups):
    model = make(group_count=groups, top_k=3)
    params = init(model, x)
    r = model.apply({"params": params}, x, None, method=LiquidMoE.compute_gate_weights)
    np.testing.assert_allclose(np.asarray(r.weights).sum(-1), 1.0, rtol=1e-6)
    # The top-k are the largest probabilities, in order, renormalised.
    top = np.sort(np.asarray(r.probs), axis=-1)[:, ::-1][:, :3]
    np.testing.assert_allclose(r.weights, top / top.sum(-1, keepdims=True), rtol=1e-5)


def test_fewer_routable_than_k_uses_the_routable_ones(x):
    model = make(top_k=2)
    controls = RoutingControls.create(E, active=1)
    params = init(model, x, controls)
    r = model.apply({"params": params}, x, controls, method=LiquidMoE.compute_gate_weights)
    assert np.all(np.asarray(r.indices)[:, 0] == 0) and not np.any(np.asarray(r.valid)[:, 1])
    np.testing.assert_allclose(np.asarray(r.weights)[:, 0], 1.0)
    y, aux = model.apply({"params": params}, x, controls)
    outs = model.apply({"params": params}, x, controls, method=LiquidMoE.expert_outputs)
    np.testing.assert_allclose(y, outs[0], atol=1e-5)
    np.testing.assert_allclose(aux.load, np.eye(E)[0])


@pytest.mark.parametrize("mode", ["capacity", "ragged"])
def test_frozen_experts_get_exactly_zero_gradient(x, mode):
    controls = RoutingControls.create(E, frozen=[0, 3, 5])
    model = make(mode, top_k=4)
    params = init(model, x, controls)

    def loss(p):
        y, aux = model.apply({"params": p}, x, controls)
        return jnp.mean(y**2) + aux.load_balance_loss

    g = jax.grad(loss)(params)["experts"]
    load = np.asarray(model.apply({"params": params}, x, controls)[1].load)
    for name, leaf in g.items():
        leaf = np.asarray(leaf)
        for e in range(E):
            if e in (0, 3, 5):
                assert np.all(leaf[e] == 0.0), (name, e)
            elif load[e] > 0:
                assert np.any(leaf[e] != 0.0), (name, e)
    assert load[[0, 3, 5]].min() > 0  # frozen experts are routed: zero grad is the mask's doing
    assert load[[1, 2, 4, 6, 7]].sum() > 0


def test_growing_the_active_set_does_not_retrace(x):
    model = make()
    params = init(model, x)
    traces = []

    @jax.jit
    def step(p, c):
        traces.append(1)
        return model.apply({"params": p}, x, c)[0]

    c = RoutingControls.create(E, active=1)
    outs = []
    for n in (1, 3, 6, 8):
        outs.append(step(params, c.with_active(n)))
    assert len(traces) == 1
    assert not np.allclose(outs[0], outs[1])  # the new experts really are routed


def test_bf16_compute_close_to_f32(x):
    controls = RoutingControls.create(E)
    params = init(make(), x)
    y32, _ = make().apply({"params": params}, x, controls)
    y16, aux = jax.jit(lambda p: make(dtype=jnp.bfloat16).apply({"params": p}, x, controls))(params)
    assert y16.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(y16, np.float32)))
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=0.1, rtol=0.1)
    assert aux.load_balance_loss.dtype == jnp.float32


def test_aux_losses_and_entropy(x):
    model = make()
    params = init(model, x)
    _, aux = model.apply({"params": params}, x)
    assert aux.load.shape == (E,) and aux.importance.shape == (E,)
    np.testing.assert_allclose(aux.load.sum(), 1.0, rtol=1e-6)
    # Near-uniform initial gate: entropy close to log(E), balance loss close to 1.
    assert 0.9 * np.log(E) < float(aux.gate_entropy) <= np.log(E) + 1e-5
    assert 0.5 < float(aux.load_balance_loss) < 2.0
    assert float(aux.router_z_loss) > 0
    # Temperature -> 0 makes the gate peaked: entropy drops.
    cold = RoutingControls.create(E, temperature=0.01)
    _, aux_cold = model.apply({"params": params}, x, cold)
    assert float(aux_cold.gate_entropy) < float(aux.gate_entropy)


def test_bias_steers_routing(x):
    model = make(top_k=1)
    params = init(model, x)
    bias = jnp.zeros((E,)).at[6].set(20.0)
    r = model.apply(
        {"params": params},
        x,
        RoutingControls.create(E, bias=bias),
        method=LiquidMoE.compute_gate_weights,
    )
    assert np.all(np.asarray(r.indices)[:, 0] == 6)
    # Per-token bias [B, T, E] is accepted too.
    tok_bias = jnp.zeros(x.shape[:-1] + (E,)).at[0, :, 2].set(20.0)
    r2 = model.apply(
        {"params": params},
        x,
        RoutingControls.create(E, bias=tok_bias),
        method=LiquidMoE.compute_gate_weights,
    )
    assert np.all(np.asarray(r2.indices).reshape(4, 12, 1)[0, :, 0] == 2)


def test_distill_losses(x):
    model = make()
    params = init(model, x)
    outs = model.apply({"params": params}, x, method=LiquidMoE.expert_outputs)
    assert outs.shape == (E, *x.shape)
    loss = model.apply({"params": params}, x, 1, 4, method=LiquidMoE.distill_loss)
    np.testing.assert_allclose(loss, jnp.mean((outs[4] - outs[1]) ** 2), rtol=1e-5)
    # Only the student receives gradient; the teacher is a stop-gradient target.
    g = jax.grad(lambda p: model.apply({"params": p}, x, 1, 4, method=LiquidMoE.distill_loss))(
        params
    )["experts"]["w1"]
    assert np.all(np.asarray(g[1]) == 0) and np.any(np.asarray(g[4]) != 0)
    # A student that is a copy of its teacher has zero loss.
    cloned = jax.tree.map(lambda a: a, params)
    cloned["experts"] = jax.tree.map(lambda a: a.at[4].set(a[1]), params["experts"])
    zero = model.apply({"params": cloned}, x, 1, 4, method=LiquidMoE.distill_loss)
    assert float(zero) == 0.0
    # Committee: teacher = the MoE output (weighted top-k ensemble).
    y, _ = model.apply({"params": params}, x)
    c = model.apply({"params": params}, x, 3, method=LiquidMoE.committee_distill_loss)
    np.testing.assert_allclose(c, jnp.mean((outs[3] - y) ** 2), rtol=1e-5)


def test_gate_features_drive_routing(x):
    model = make(top_k=1)
    gf = jax.random.normal(jax.random.key(5), (4, 12, 3))
    params = model.init(jax.random.key(1), x, None, gf)["params"]
    assert params["router"]["expert_gate"]["kernel"].shape == (3, E)
    y, _ = model.apply({"params": params}, x, None, gf)
    assert y.shape == x.shape


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(top_k=9), "top_k = 9 must be in \\[1, num_experts=8\\]"),
        (dict(group_count=3), "group_count = 3 must divide the expert capacity 8"),
        (dict(expert_kind="lstm"), "expert_kind = 'lstm'"),
        (dict(dispatch="magic"), "dispatch = 'magic'"),
        (dict(capacity_factor=0.0), "capacity_factor = 0.0"),
    ],
)
def test_inconsistent_configuration_raises(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        init(make(**kwargs), x)


def test_control_validation():
    with pytest.raises(ValueError, match="active experts = 9 must be in \\[1, capacity=8\\]"):
        RoutingControls.create(E, active=9)
    with pytest.raises(ValueError, match="cannot activate 9 experts: capacity is 8"):
        RoutingControls.create(E).with_active(9)
    with pytest.raises(ValueError, match="top_k = 2 is larger than the 1 routable experts"):
        RoutingControls.create(E, active=2, pruned=[1], top_k=2)
    with pytest.raises(ValueError, match="pruned expert index 8 out of range"):
        RoutingControls.create(E, pruned=[8])
    with pytest.raises(ValueError, match="temperature"):
        RoutingControls.create(E, temperature=0.0)


def test_input_width_mismatch_raises(x):
    model = make()
    params = init(model, x)
    with pytest.raises(ValueError, match="input width 5 != LiquidMoE in_dim 16"):
        model.apply({"params": params}, jnp.ones((2, 5)))
