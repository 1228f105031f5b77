"""Tests for aura.brain.cloning: exact copies, noise, teacher choice, committees."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict, freeze

from aura.brain.cloning import choose_teacher, clone_expert, committee_weights, distill_alpha


def _params(num_experts: int = 4) -> dict:
    k = jax.random.split(jax.random.key(0), 4)
    return {
        "params": {
            "core": {
                "experts": {
                    "w_in": jax.random.normal(k[0], (num_experts, 3, 5)),
                    "b_in": jax.random.normal(k[1], (num_experts, 5)),
                    "nested": {"scale": jax.random.normal(k[2], (num_experts,))},
                },
                "router": {"kernel": jax.random.normal(k[3], (3, num_experts))},
            },
            "head": {"bias": jnp.arange(10.0)},
        }
    }


def _experts(p):
    return p["params"]["core"]["experts"]


def test_clone_copies_teacher_exactly_and_leaves_others():
    params = _params()
    out = clone_expert(params, src=1, dst=3)
    for before, after in zip(
        jax.tree.leaves(_experts(params)), jax.tree.leaves(_experts(out)), strict=True
    ):
        np.testing.assert_array_equal(after[3], before[1])  # student == teacher
        np.testing.assert_array_equal(after[:3], before[:3])  # others untouched
    np.testing.assert_array_equal(
        out["params"]["core"]["router"]["kernel"], params["params"]["core"]["router"]["kernel"]
    )
    np.testing.assert_array_equal(out["params"]["head"]["bias"], params["params"]["head"]["bias"])
    assert jax.tree.structure(out) == jax.tree.structure(params)


def test_clone_frozendict_and_jit():
    params = freeze(_params())
    out = jax.jit(clone_expert)(params, 0, 2)
    assert isinstance(out, FrozenDict)
    w = params["params"]["core"]["experts"]["w_in"]
    np.testing.assert_array_equal(out["params"]["core"]["experts"]["w_in"][2], w[0])
    np.testing.assert_array_equal(out["params"]["core"]["experts"]["w_in"][1], w[1])


def test_clone_noise_is_small_seeded_and_only_on_student():
    params = _params()
    a = clone_expert(params, 1, 3, noise_scale=1e-3, rng=jax.random.key(5))
    b = clone_expert(params, 1, 3, noise_scale=1e-3, rng=jax.random.key(5))
    w, wa, wb = _experts(params)["w_in"], _experts(a)["w_in"], _experts(b)["w_in"]
    np.testing.assert_array_equal(wa, wb)
    diff = np.asarray(wa[3] - w[1])
    assert 0 < np.abs(diff).max() < 1e-2 and np.abs(diff).std() > 1e-4
    np.testing.assert_array_equal(wa[:3], w[:3])


def test_clone_errors():
    params = _params()
    with pytest.raises(ValueError, match="no leaves under an 'experts'"):
        clone_expert({"dense": {"kernel": jnp.ones((2, 2))}}, 0, 1)
    with pytest.raises(ValueError, match="src and dst are both 2"):
        clone_expert(params, 2, 2)
    with pytest.raises(ValueError, match=r"dst=4 out of range.*b_in.*\(4, 5\)"):
        clone_expert(params, 0, 4)
    with pytest.raises(ValueError, match="needs an rng"):
        clone_expert(params, 0, 1, noise_scale=0.1)


def test_choose_teacher():
    merit = np.array([0.9, 0.5, 0.7, 0.99])
    assert choose_teacher(merit, np.array([1, 1, 1, 0], bool)) == 0
    assert choose_teacher(merit, np.array([0, 1, 1, 0], bool)) == 2
    assert choose_teacher(merit, np.array([1, 1, 1, 0], bool), exclude=0) == 2
    with pytest.raises(ValueError, match="no active expert"):
        choose_teacher(merit, np.zeros(4, bool))


def test_committee_weights():
    merit = jnp.array([0.1, 0.9, 0.5, 0.95, 0.3])
    active = jnp.array([1, 1, 1, 0, 1], bool)
    w = jax.jit(committee_weights, static_argnums=2)(merit, active, 2)
    expected = np.zeros(5)
    expected[[1, 2]] = np.exp([0.9, 0.5]) / np.exp([0.9, 0.5]).sum()
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    w_all_k = committee_weights(merit, jnp.array([1, 0, 0, 0, 0], bool), 3)
    np.testing.assert_allclose(w_all_k, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(committee_weights(merit, jnp.zeros(5, bool), 2), np.zeros(5))
    with pytest.raises(ValueError, match="k=6 must be in 1..5"):
        committee_weights(merit, active, 6)


def test_distill_alpha():
    assert [distill_alpha(s, 3) for s in range(5)] == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert distill_alpha(0, 0) == 0.5
    with pytest.raises(ValueError, match="step_since_activation=-1"):
        distill_alpha(-1, 3)
