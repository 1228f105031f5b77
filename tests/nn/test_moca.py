"""Tests for aura.nn.moca: routing, counters, slot memory, streaming and the budget."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.nn.moca import (
    ContextualCounters,
    MemoryState,
    MocaLayer,
    SlotMemory,
    active_mask,
    budget_loss,
    dense_weights,
    harmonic_code,
    reference_memory,
    routing_stats,
    scan_memory,
    select_from_probs,
    select_top_k,
)
from aura.nn.moca.memory import MemoryOps
from aura.nn.moca.position import CounterState


def _logits(shape, seed=0, scale=2.0):
    return scale * jax.random.normal(jax.random.key(seed), shape)


# ----------------------------------------------------------------------------- routing


def test_unselected_slots_get_exactly_zero_weight():
    sel = select_top_k(_logits((5, 7, 64)), 16)
    dense = np.asarray(dense_weights(sel))  # [5, 7, 64]
    chosen = np.asarray(active_mask(sel))
    assert np.all(dense[~chosen] == 0.0)
    assert np.all(dense[chosen] > 0.0)
    assert chosen.sum(-1).max() == 16
    np.testing.assert_allclose(dense.sum(-1), 1.0, rtol=1e-6)


def test_weights_are_renormalised_top_k_probabilities():
    logits = _logits((3, 10), seed=1)
    sel = select_top_k(logits, 3, temperature=0.5)
    probs = np.asarray(jax.nn.softmax(logits / 0.5, axis=-1))
    np.testing.assert_allclose(sel.probs, probs, rtol=1e-6)
    for n in range(3):
        top = np.argsort(-probs[n])[:3]
        np.testing.assert_array_equal(sel.indices[n], top)
        np.testing.assert_allclose(sel.weights[n], probs[n, top] / probs[n, top].sum(), rtol=1e-5)


def test_min_ratio_drops_weak_candidates_and_surrogate_rounds_to_it():
    probs = jnp.array([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    sel = select_from_probs(probs, 3, min_ratio=0.5)
    np.testing.assert_array_equal(sel.active, [[True, True, False], [True, True, True]])
    np.testing.assert_allclose(sel.weights[0], [0.5 / 0.8, 0.3 / 0.8, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(sel.soft_active) > 0.5, np.asarray(sel.active))
    one = select_from_probs(probs, 3, min_ratio=1.0)  # only the best (ties all stay)
    np.testing.assert_array_equal(one.active[0], [True, False, False])


def test_bad_top_k_and_ratio_are_value_errors():
    with pytest.raises(ValueError, match="top-k = 5"):
        select_top_k(jnp.zeros((2, 4)), 5)
    with pytest.raises(ValueError, match="min_ratio"):
        select_top_k(jnp.zeros((2, 4)), 2, min_ratio=1.5)


def test_load_balance_is_one_when_uniform_and_num_choices_when_collapsed():
    uniform = select_from_probs(jnp.full((64, 8), 1 / 8), 1)  # ties: every token picks 0
    collapsed = routing_stats(uniform)
    assert float(collapsed.balance) == pytest.approx(1.0)  # load all on 0, importance 1/8 each
    probs = jax.nn.one_hot(jnp.arange(64) % 8, 8)  # each choice used equally, confidently
    spread = routing_stats(select_from_probs(probs, 1))
    assert float(spread.balance) == pytest.approx(1.0)
    onto_zero = routing_stats(select_from_probs(jax.nn.one_hot(jnp.zeros(64, int), 8), 1))
    assert float(onto_zero.balance) == pytest.approx(8.0)
    assert float(onto_zero.active_fraction) == pytest.approx(1 / 8)


def test_routing_stats_respect_the_token_mask():
    probs = jnp.stack([jax.nn.one_hot(0, 4), jax.nn.one_hot(3, 4)])  # [2, 4]
    stats = routing_stats(select_from_probs(probs, 1), mask=jnp.array([True, False]))
    np.testing.assert_allclose(stats.load, [1, 0, 0, 0])
    np.testing.assert_allclose(stats.importance, [1, 0, 0, 0])


# ----------------------------------------------------------------------------- counters


def test_harmonic_code_dot_product_depends_on_the_difference_only():
    c = jnp.arange(0, 64, dtype=jnp.float32)
    code = harmonic_code(c, 64)  # [64, 64]
    gram = np.asarray(code @ code.T)
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-5)
    np.testing.assert_allclose(gram[3, 10], gram[20, 27], atol=1e-5)  # same difference 7
    off = gram[~np.eye(64, dtype=bool)]
    assert off.max() < 0.05  # distinct counts are nearly orthogonal
    with pytest.raises(ValueError, match="even"):
        harmonic_code(c, 63)


def _counter_params(C=3):
    mod = ContextualCounters(C, 16)
    x = jax.random.normal(jax.random.key(0), (2, 9, 8))
    return mod, mod.init(jax.random.key(1), x, mod.initial_state(2)), x


def test_counters_chunked_equal_whole_and_start_at_their_origin():
    mod, params, x = _counter_params()
    state = mod.apply(params, 2, jnp.array([5.0, 40.0]), method="initial_state")
    run = jax.jit(lambda x, s: mod.apply(params, x, s))
    whole, end = run(x, state)
    a, mid = run(x[:, :4], state)
    b, end2 = run(x[:, 4:], mid)
    np.testing.assert_allclose(jnp.concatenate([a, b], 1), whole, atol=1e-5)
    np.testing.assert_allclose(end2.counts, end.counts, atol=1e-4)
    # Gates start at "count every token": the counts are origin + position.
    np.testing.assert_allclose(end.counts[:, 0], [5.0 + 9, 40.0 + 9], atol=0.01)


def test_separators_send_the_counters_back_to_their_origin():
    mod, params, x = _counter_params()
    seps = jnp.zeros((2, 9), bool).at[:, 4].set(True)
    state = CounterState(jnp.full((2, 3), 7.0), jnp.full((2, 3), 7.0))
    codes, end = mod.apply(params, x, state, seps)
    # After the separator at t=4 the counts restart: t=5..8 count 1..4 from the origin.
    np.testing.assert_allclose(end.counts, 7.0 + 4, atol=0.01)
    period_code = codes.reshape(2, 9, 3, 16)
    np.testing.assert_allclose(
        period_code[:, 4], harmonic_code(jnp.full((2, 3), 7.0), 16), atol=1e-3
    )


# ----------------------------------------------------------------------------- memory


def _ops(B, T, A, U, seed=0):
    k = jax.random.split(jax.random.key(seed), 6)
    return MemoryOps(
        jax.random.normal(k[0], (B, T, A)),
        jax.random.normal(k[1], (B, T, A)),
        jax.random.normal(k[2], (B, T, U)),
        jax.nn.sigmoid(jax.random.normal(k[3], (B, T, A))),
        jax.nn.sigmoid(jax.random.normal(k[4], (B, T, U))),
        jax.nn.sigmoid(jax.random.normal(k[5], (B, T))),
    )


def test_sparse_scan_matches_the_dense_reference():
    B, T, M, A, U = 3, 6, 16, 5, 7
    read = select_top_k(_logits((B, T, M), seed=2), 4, min_ratio=0.2)
    write = select_top_k(_logits((B, T, M), seed=3), 3)
    ops = _ops(B, T, A, U)
    state = MemoryState(_logits((B, M, A), seed=4), _logits((B, M, U), seed=5))
    got_state, got = jax.jit(scan_memory)(state, read, write, ops)
    ref_state, ref = jax.jit(reference_memory)(
        state, dense_weights(read), dense_weights(write), ops
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_state.keys, ref_state.keys, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_state.values, ref_state.values, rtol=1e-5, atol=1e-5)


def test_a_write_is_read_back_by_a_later_token_only():
    """Token 0 writes a value into slot 3; token 5 reads slot 3 and gets it; others do not."""
    B, T, M, A, U = 1, 6, 8, 4, 3
    slot = jnp.zeros((B, T), jnp.int32)
    logits = jnp.where(jnp.arange(M) == 3, 20.0, 0.0)[None, None] * jnp.ones((B, T, 1))
    logits = logits.at[:, 1:5].set(jnp.where(jnp.arange(M) == 6, 20.0, 0.0))  # 1..4 use slot 6
    sel = select_top_k(logits, 1)
    np.testing.assert_array_equal(sel.indices[0, :, 0], [3, 6, 6, 6, 6, 3])
    del slot
    value = jnp.array([1.0, -2.0, 3.0])
    ops = MemoryOps(
        query=jnp.zeros((B, T, A)),
        add_key=jnp.zeros((B, T, A)),
        add_value=jnp.zeros((B, T, U)).at[:, 0].set(value),
        erase_key=jnp.ones((B, T, A)),
        erase_value=jnp.ones((B, T, U)),
        gate=jnp.zeros((B, T)).at[:, 0].set(1.0),  # only token 0 writes
    )
    state = MemoryState(jnp.zeros((B, M, A)), jnp.full((B, M, U), 0.5))
    _, reads = scan_memory(state, sel, sel, ops)
    np.testing.assert_allclose(reads[0, 0], 0.5)  # read before its own write
    np.testing.assert_allclose(reads[0, 1:5], 0.5)  # slot 6 untouched
    np.testing.assert_allclose(reads[0, 5], value, rtol=1e-6)


def test_slot_memory_needs_its_position_codes():
    mem = SlotMemory(8, 6, 4, position_width=10, position_dim=2)
    h = jnp.ones((1, 3, 5))
    sel = select_top_k(jnp.zeros((1, 3, 8)), 2)
    params = mem.init(
        jax.random.key(0),
        h,
        sel,
        sel,
        MemoryState(jnp.zeros((1, 8, 6)), jnp.zeros((1, 8, 4))),
        jnp.ones((1, 3, 10)),
    )
    with pytest.raises(ValueError, match="position codes of width 10"):
        mem.apply(params, h, sel, sel, MemoryState(jnp.zeros((1, 8, 6)), jnp.zeros((1, 8, 4))))
    with pytest.raises(ValueError, match="position_dim"):
        SlotMemory(8, 6, 4, position_width=10, position_dim=6).init(
            jax.random.key(0), h, sel, sel, None
        )


# ----------------------------------------------------------------------------- layer


def _layer(**kw):
    cfg = dict(
        dim=16,
        num_experts=4,
        expert_hidden=16,
        top_k=2,
        num_slots=8,
        slot_top_k=3,
        key_dim=8,
        value_dim=8,
        position_key_dim=4,
        router_hidden=8,
        num_counters=2,
        position_period=8,
        dispatch="dense",
    )
    cfg.update(kw)
    return MocaLayer(**cfg)


@pytest.fixture(scope="module")
def layer_setup():
    layer = _layer()
    x = jax.random.normal(jax.random.key(0), (2, 7, 16))
    params = jax.jit(layer.init)(jax.random.key(1), x)
    return layer, params, x


def test_layer_streams_token_by_token_and_in_chunks(layer_setup):
    layer, params, x = layer_setup
    carry0 = layer.apply(params, 2, jnp.array([0.0, 9.0]), method="initial_carry")
    run = jax.jit(lambda x, c: layer.apply(params, x, c))
    step = jax.jit(lambda x, c: layer.apply(params, x, c, method="step"))
    whole, end, _ = run(x, carry0)
    carry, outs = carry0, []
    for t in range(x.shape[1]):
        y, carry, _ = step(x[:, t], carry)
        outs.append(y)
    np.testing.assert_allclose(jnp.stack(outs, 1), whole, rtol=1e-4, atol=1e-5)
    a, mid, _ = run(x[:, :3], carry0)
    b, end2, _ = run(x[:, 3:], mid)
    np.testing.assert_allclose(jnp.concatenate([a, b], 1), whole, rtol=1e-4, atol=1e-5)
    for got, want in zip(jax.tree.leaves((carry, end2)), jax.tree.leaves((end, end)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_memory_carries_information_forward_and_the_ablation_does_not():
    """Token 0 writes the slot of count 1; after a separator token 2 is at count 1 again and
    reads it (location-based addressing): changing token 0 changes token 2, via the memory."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 16))
    x2 = x.at[:, 0].set(jax.random.normal(jax.random.key(5), (2, 16)))  # another token 0
    seps = jnp.zeros((2, 3), bool).at[:, 1].set(True)
    for use_memory in (True, False):
        layer = _layer(use_memory=use_memory)
        params = jax.jit(layer.init)(jax.random.key(1), x)
        run = jax.jit(lambda x, layer=layer, p=params: layer.apply(p, x, separators=seps))
        (y1, carry, aux), (y2, _, _) = run(x), run(x2)
        change = float(jnp.abs(y1[:, 2] - y2[:, 2]).max())
        if use_memory:
            assert change > 1e-2
        else:  # counter gates start saturated: token 0 barely moves later counts
            assert carry.memory is None and aux.slots is None
            assert change < 1e-3


def test_expected_compute_gives_the_router_a_gradient(layer_setup):
    layer, params, x = layer_setup

    @jax.jit
    def loss(p):
        _, _, aux = layer.apply(p, x)
        expected = 0.5 * (aux.experts.expected_fraction + aux.slots.expected_fraction)
        return budget_loss(expected, 0.0) + aux.experts.balance + aux.slots.balance

    grads = jax.jit(jax.grad(loss))(params)["params"]
    for path in (("slot_gate", "kernel"), ("moe", "router", "expert_gate", "kernel")):
        g = grads
        for k in path:
            g = g[k]
        assert float(jnp.abs(g).max()) > 0, path


def test_budget_loss_is_a_hinge():
    assert float(budget_loss(jnp.array(0.2), 0.3)) == 0.0
    assert float(budget_loss(jnp.array(0.5), 0.3)) == pytest.approx(0.2)


def test_expert_min_ratio_runs_fewer_experts():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    full = _layer(top_k=2, expert_min_ratio=0.0)
    sparse = _layer(top_k=2, expert_min_ratio=1.0)  # only the best expert of the two runs
    params = jax.jit(full.init)(jax.random.key(1), x)
    _, _, aux_full = jax.jit(full.apply)(params, x)
    y, _, aux = jax.jit(sparse.apply)(params, x)
    assert float(aux_full.experts.active_fraction) == pytest.approx(2 / 4)
    assert float(aux.experts.active_fraction) == pytest.approx(1 / 4)
    # The skipped expert contributes nothing: the output equals a top-1 layer's.
    top1 = _layer(top_k=1)
    y1, _, _ = jax.jit(top1.apply)(params, x)
    np.testing.assert_allclose(y, y1, rtol=1e-5, atol=1e-5)


def test_layer_validates_its_sizes():
    x = jnp.zeros((1, 2, 16))
    with pytest.raises(ValueError, match="slot_top_k"):
        _layer(slot_top_k=9).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="top_k"):
        _layer(top_k=5).init(jax.random.key(0), x)
