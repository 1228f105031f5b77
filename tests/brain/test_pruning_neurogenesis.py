"""Tests for aura.brain.pruning and aura.brain.neurogenesis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.brain import neurogenesis
from aura.brain.pruning import init_pruning, prune_mask, reset_experts, update_utilisation

ACTIVE = jnp.array([1, 1, 1, 0], bool)


def _run(loads, patience=3, threshold=0.1, decay=0.0, active=ACTIVE):
    state = init_pruning(4)
    masks = []
    for load in loads:
        state = update_utilisation(state, jnp.asarray(load, jnp.float32), decay)
        state, pruned = prune_mask(state, active, threshold, patience)
        masks.append(np.asarray(pruned))
    return state, masks


def test_utilisation_ema():
    s = update_utilisation(init_pruning(2), jnp.array([1.0, 0.0]), 0.75)
    np.testing.assert_allclose(s.utilisation, [0.25 * 1 + 0.75 * 0.5, 0.75 * 0.5])


def test_prunes_after_patience_consecutive_low_updates():
    low = [0.6, 0.38, 0.02, 0.0]
    _, masks = _run([low] * 4, patience=3)
    assert [m[2] for m in masks] == [False, False, True, True]
    assert not any(m[0] or m[1] for m in masks)
    assert not any(m[3] for m in masks)  # inactive experts are never pruned


def test_streak_resets_when_utilisation_recovers():
    low, ok = [0.5, 0.45, 0.05, 0.0], [0.4, 0.3, 0.3, 0.0]
    _, masks = _run([low, low, ok, low, low], patience=3)
    assert not any(m[2] for m in masks)
    _, masks = _run([low, low, ok, low, low, low], patience=3)
    assert masks[-1][2]


def test_pruning_is_sticky():
    low, ok = [0.6, 0.38, 0.02, 0.0], [0.4, 0.3, 0.3, 0.0]
    _, masks = _run([low, low, ok], patience=2)
    assert masks[1][2] and masks[2][2]


def test_never_prunes_last_expert():
    state, masks = _run([[0.05, 0.01, 0.0, 0.0]] * 6, patience=2)
    final = masks[-1]
    alive = np.asarray(ACTIVE) & ~final
    assert alive.sum() == 1 and alive[0]  # keeps the most used one
    state, masks = _run([[0.0, 0.0, 0.0, 0.0]] * 6, patience=1, active=jnp.array([0, 1, 0, 0]))
    assert not masks[-1].any()


def test_reset_experts_revives_slot():
    low = [0.6, 0.38, 0.02, 0.0]
    state, masks = _run([low] * 3, patience=2)
    assert masks[-1][2]
    state = reset_experts(state, jnp.array([0, 0, 1, 0], bool), 1 / 3)
    assert not bool(state.pruned[2]) and int(state.below[2]) == 0
    np.testing.assert_allclose(state.utilisation[2], 1 / 3)


def test_pruning_jit():
    fn = jax.jit(lambda s, load: prune_mask(update_utilisation(s, load, 0.5), ACTIVE, 0.1, 1))
    state, pruned = fn(init_pruning(4), jnp.array([0.5, 0.5, 0.0, 0.0]))
    np.testing.assert_array_equal(pruned, [False, False, False, False])  # EMA 0.125 > 0.1
    state, pruned = fn(state, jnp.array([0.5, 0.5, 0.0, 0.0]))
    np.testing.assert_array_equal(pruned, [False, False, True, False])


def test_pruning_errors():
    with pytest.raises(ValueError, match="patience=0"):
        prune_mask(init_pruning(2), jnp.ones(2, bool), 0.1, 0)
    with pytest.raises(ValueError, match="decay=1.0"):
        update_utilisation(init_pruning(2), jnp.ones(2), 1.0)


def _spawns(entropies, patience=3, teach_steps=0, threshold=0.5):
    state = neurogenesis.init_neurogenesis()
    out = []
    for h in entropies:
        state, spawn = neurogenesis.update(state, h, threshold, patience, teach_steps)
        out.append(bool(spawn))
    return state, out


def test_spawns_after_patience_steps_above_threshold():
    _, out = _spawns([0.9, 0.9, 0.9, 0.9])
    assert out == [False, False, True, False]
    _, out = _spawns([0.9, 0.9, 0.1, 0.9, 0.9, 0.9])  # a dip resets the streak
    assert out == [False, False, False, False, False, True]
    _, out = _spawns([0.5] * 5)  # equal to threshold is not above
    assert not any(out)


def test_cooldown_blocks_spawns_and_counting():
    state, out = _spawns([0.9] * 12, patience=2, teach_steps=3)
    # spawn at step 1, cooldown steps 2-4, streak restarts at 5 -> spawn at 6, cooldown 7-9, ...
    assert [i for i, s in enumerate(out) if s] == [1, 6, 11]
    assert int(state.spawned) == 3


def test_neurogenesis_jit_scan():
    def body(state, h):
        return neurogenesis.update(state, h, 0.5, 2, 1)

    entropies = jnp.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.1])
    state, spawns = jax.lax.scan(body, neurogenesis.init_neurogenesis(), entropies)
    _, expected = _spawns(list(np.asarray(entropies)), patience=2, teach_steps=1)
    np.testing.assert_array_equal(spawns, expected)
    assert expected == [False, True, False, False, True, False]


def test_next_free_slot():
    assert neurogenesis.next_free_slot(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 0])) == 3
    assert neurogenesis.next_free_slot(np.array([1, 0, 0]), np.array([0, 0, 0])) == 1
    assert neurogenesis.next_free_slot(np.array([1, 1, 0]), np.array([0, 0, 1])) == -1
    with pytest.raises(ValueError, match="patience=0"):
        neurogenesis.update(neurogenesis.init_neurogenesis(), 1.0, 0.5, 0)
