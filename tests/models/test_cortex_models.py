"""Cortex models: router shapes and identity start, reasoner shapes, MoE/dense parameter match."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.models.cortex import (
    CortexRouter,
    Reasoner,
    block_params,
    matched_dense_hidden,
    moe_block_params,
)

D = 24


def _count(tree) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def test_router_shapes_parts_and_identity_start():
    router = CortexRouter(dim=D, width=16, gray_hidden=32, gray_layers=2, gru_layers=3,
                          settle_steps=2)  # fmt: skip
    q = jax.random.normal(jax.random.key(0), (5, D))
    params = jax.jit(router.init)(jax.random.key(1), q)["params"]
    assert set(params) == {"input_proj", "gray", "brown", "blue"}
    assert {k for k in params["brown"] if k.startswith("gru_")} == {"gru_0", "gru_1", "gru_2"}
    apply = jax.jit(router.apply)
    out = apply({"params": params}, q)
    assert out.shape == (5, D)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    # blue starts at zero: the untrained router is the normalised query (exact NN retrieval)
    unit = q / jnp.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(out, unit, atol=1e-6)
    moved = jax.tree.map(lambda x: x + 0.1, params)
    assert not np.allclose(apply({"params": moved}, q), unit, atol=1e-3)
    plain = CortexRouter(dim=D, width=16, residual=False)
    p2 = jax.jit(plain.init)(jax.random.key(1), q)["params"]
    assert np.abs(np.asarray(p2["blue"]["kernel"])).sum() > 0


@pytest.mark.parametrize(("e", "layers", "hidden", "width", "s"),
                         [(16, 4, 64, 128, 0), (8, 2, 32, 48, 0), (4, 3, 5, 16, 0),
                          (16, 4, 64, 128, 4), (4, 3, 5, 16, 1)])  # fmt: skip
def test_dense_ablation_matches_the_moe_parameter_count(e, layers, hidden, width, s):
    moe = Reasoner(dim=D, kind="moe", width=width, num_experts=e, expert_layers=layers,
                   expert_hidden=hidden, top_k=2, shared_experts=s)  # fmt: skip
    dense = moe.clone(kind="dense")
    x = jnp.zeros((2, D))
    pm = jax.eval_shape(moe.init, jax.random.key(0), x, x)["params"]
    pd = jax.eval_shape(dense.init, jax.random.key(0), x, x)["params"]
    # the shared parts are identical; the blocks match to within one hidden unit's parameters
    shared = {k for k in pm if not k.startswith("moe")}
    assert shared == {k for k in pd if k != "dense"}
    assert all(_count(pm[k]) == _count(pd[k]) for k in shared)
    block = _count({k: v for k, v in pm.items() if k.startswith("moe")})
    assert set(pm) - shared == ({"moe", "moe_shared"} if s else {"moe"})
    assert pm["moe"]["router"]["expert_gate"]["kernel"].shape[-1] == e - s  # the gate routes E - S
    assert block == moe_block_params(width, e, layers, hidden, s)
    assert _count(pd["dense"]) == block_params("dense", width, e, layers, hidden, s)
    per_unit = layers * (2 * width + 1)
    assert abs(_count(pd["dense"]) - block) <= per_unit / 2
    assert matched_dense_hidden(width, e, layers, hidden, s) > hidden  # wider than one expert


def test_reasoner_outputs_and_gates():
    model = Reasoner(dim=D, kind="moe", width=16, num_experts=4, expert_layers=2,
                     expert_hidden=8, top_k=2)  # fmt: skip
    r = jax.random.normal(jax.random.key(2), (6, D))
    q = jax.random.normal(jax.random.key(3), (6, D))
    params = jax.jit(model.init)(jax.random.key(4), r, q)["params"]
    y, aux = jax.jit(model.apply)({"params": params}, r, q)
    assert y.shape == (6, D) and aux["load"].shape == (4,)
    gates = jax.jit(lambda p: model.apply({"params": p}, r, q, method=Reasoner.gates))(params)
    assert gates.shape == (6, 4)
    np.testing.assert_allclose(np.asarray(gates).sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="reasoning kind 'sparse'"):
        Reasoner(dim=D, kind="sparse").init(jax.random.key(0), r, q)


@pytest.mark.parametrize("kind", ["moe", "dense"])
def test_reasoner_training_noise_and_dropout_touch_only_the_branch_in_train_mode(kind):
    model = Reasoner(dim=D, kind=kind, width=16, num_experts=4, expert_layers=2, expert_hidden=8,
                     top_k=2, input_noise=0.1, dropout=0.5)  # fmt: skip
    r = jax.random.normal(jax.random.key(2), (6, D))
    q = jax.random.normal(jax.random.key(3), (6, D))
    params = jax.jit(model.init)(jax.random.key(4), r, q)["params"]
    apply = jax.jit(model.apply, static_argnames="train")

    def train(p, seed):
        return apply({"params": p}, r, q, train=True, rngs={"dropout": jax.random.key(seed)})[0]

    # zero-initialised branch: the residual base (the clean retrieved vector) is never noised
    np.testing.assert_array_equal(train(params, 0), r)
    moved = jax.tree.map(lambda x: x + 0.05, params)
    clean = model.clone(input_noise=0.0, dropout=0.0)
    evaluated = apply({"params": moved}, r, q)[0]
    # eval mode is deterministic and exactly the model without the regularisers
    np.testing.assert_array_equal(evaluated, jax.jit(clean.apply)({"params": moved}, r, q)[0])
    a, b = train(moved, 0), train(moved, 1)
    np.testing.assert_array_equal(a, train(moved, 0))  # a pure function of the key
    assert not np.allclose(a, b, atol=1e-4) and not np.allclose(a, evaluated, atol=1e-4)
    with pytest.raises(Exception, match="dropout"):
        apply({"params": moved}, r, q, train=True)  # train mode needs the rng


def test_reasoner_routed_on_the_question_ignores_the_context_in_its_gates():
    model = Reasoner(dim=D, kind="moe", width=16, num_experts=4, expert_layers=2,
                     expert_hidden=8, top_k=2, route_on="question")  # fmt: skip
    r, r2, q = (jax.random.normal(jax.random.key(i), (6, D)) for i in (2, 5, 3))
    params = jax.jit(model.init)(jax.random.key(4), r, q)["params"]
    assert params["moe"]["router"]["expert_gate"]["kernel"].shape == (D, 4)  # reads [B, D]
    gates = jax.jit(lambda p, rr: model.apply({"params": p}, rr, q, method=Reasoner.gates))
    np.testing.assert_array_equal(gates(params, r), gates(params, r2))
    by_input = model.clone(route_on="input")
    p_in = jax.jit(by_input.init)(jax.random.key(4), r, q)["params"]
    g_in = jax.jit(lambda p, rr: by_input.apply({"params": p}, rr, q, method=Reasoner.gates))
    assert not np.allclose(g_in(p_in, r), g_in(p_in, r2), atol=1e-4)
    # the dense ablation is matched to the wider gate
    dense = jax.eval_shape(model.clone(kind="dense").init, jax.random.key(0), r, q)["params"]
    assert abs(_count(dense["dense"]) - _count(params["moe"])) <= 2 * (2 * 16 + 1) / 2
    with pytest.raises(ValueError, match="route_on 'context'"):
        model.clone(route_on="context").init(jax.random.key(0), r, q)


def test_reasoner_gate_noise_perturbs_only_training_routing():
    model = Reasoner(dim=D, kind="moe", width=16, num_experts=4, expert_layers=2, expert_hidden=8,
                     top_k=1, gate_noise=1.0)  # fmt: skip
    r, q = (jax.random.normal(jax.random.key(i), (32, D)) for i in (2, 3))
    params = jax.jit(model.init)(jax.random.key(4), r, q)["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    params = tree.unflatten([x + 0.2 * jax.random.normal(k, x.shape)
                             for x, k in zip(leaves, keys, strict=True)])  # fmt: skip
    quiet = model.clone(gate_noise=0.0)
    apply = jax.jit(lambda m, seed: m.apply({"params": params}, r, q, train=True,
                                            rngs={"dropout": jax.random.key(seed)})[0],
                    static_argnums=0)  # fmt: skip
    # eval mode is the noiseless model; training draws the noise from the key (top-1: some rows
    # change expert, so their outputs change)
    np.testing.assert_array_equal(model.apply({"params": params}, r, q)[0],
                                  quiet.apply({"params": params}, r, q)[0])  # fmt: skip
    np.testing.assert_array_equal(quiet.apply({"params": params}, r, q, train=True)[0],
                                  quiet.apply({"params": params}, r, q)[0])  # fmt: skip
    np.testing.assert_array_equal(apply(model, 0), apply(model, 0))
    assert not np.allclose(apply(model, 0), apply(quiet, 0), atol=1e-5)
