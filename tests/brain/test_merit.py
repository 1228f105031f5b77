"""Tests for aura.brain.merit: momentum merit, UCB1 and Exp3 against references and a bandit."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.brain.merit import MeritBoard

MEANS = jnp.array([0.2, 0.35, 0.5, 0.65, 0.8])


def _play(policy: str, rounds: int, seed: int) -> np.ndarray:
    """Runs a seeded Bernoulli bandit under jit; returns the arm pulled each round."""
    board = MeritBoard(num_experts=5)

    def body(state, key):
        k_select, k_reward = jax.random.split(key)
        arm = board.select(state, policy, k_select)
        reward = jax.random.bernoulli(k_reward, MEANS[arm]).astype(jnp.float32)
        return board.observe(state, arm, reward), arm

    @jax.jit
    def run(key):
        return jax.lax.scan(body, board.init(), jax.random.split(key, rounds))[1]

    return np.asarray(run(jax.random.key(seed)))


@pytest.mark.parametrize("policy", ["ucb", "exp3"])
def test_bandit_finds_best_arm(policy):
    arms = _play(policy, rounds=2000, seed=0)
    counts = np.bincount(arms, minlength=5)
    assert counts.argmax() == 4
    assert counts[4] > 0.5 * len(arms)
    late = np.bincount(arms[-500:], minlength=5)
    assert late[4] > 0.6 * 500  # it keeps exploiting


def test_ucb_tries_every_arm_first():
    arms = _play("ucb", rounds=5, seed=1)
    np.testing.assert_array_equal(arms, [0, 1, 2, 3, 4])


def test_merit_momentum_and_unobserved_experts():
    board = MeritBoard(3)
    s = board.update(board.init(), jnp.array([0.5, 1.0, 0.2]), jnp.array([4, 2, 0]), 0.9)
    np.testing.assert_allclose(s.merit, [0.5, 1.0, 0.0])  # first observation sets merit
    s = board.update(s, jnp.array([1.0, 0.0, 0.7]), jnp.array([1, 1, 3]), 0.9)
    np.testing.assert_allclose(s.merit, [0.55, 0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(s.pulls, [2, 2, 1])
    np.testing.assert_allclose(s.reward_sum, [1.5, 1.0, 0.7])
    s = board.update(s, jnp.array([3.0, -1.0, 0.0]), jnp.array([1, 1, 0]), 0.5)
    np.testing.assert_allclose(s.merit, [0.775, 0.45, 0.7], rtol=1e-6)  # rewards clipped to 0..1


def test_ucb_scores_match_formula():
    board = MeritBoard(3, ucb_c=0.7)
    s = board.init()
    for arm, r in [(0, 1.0), (1, 0.0), (0, 0.0), (1, 1.0), (0, 1.0)]:
        s = board.observe(s, arm, r)
    t = 5
    expected = [
        2 / 3 + 0.7 * math.sqrt(2 * math.log(t) / 3),
        1 / 2 + 0.7 * math.sqrt(2 * math.log(t) / 2),
        1 + 0.7 * math.sqrt(2 * math.log(t + 1)),  # untried: optimistic, above all others
    ]
    np.testing.assert_allclose(board.ucb_scores(s), expected, rtol=1e-6)


def test_exp3_update_matches_reference():
    board = MeritBoard(4, exp3_gamma=0.2)
    s = board.init()
    w = np.ones(4)
    for arm, r in [(2, 1.0), (0, 0.5), (2, 0.0), (3, 1.0)]:
        p = 0.8 * w / w.sum() + 0.2 / 4
        np.testing.assert_allclose(board.probabilities(s), p, rtol=1e-5)
        w[arm] *= math.exp(0.2 * (r / p[arm]) / 4)
        s = board.observe(s, arm, r)
    np.testing.assert_allclose(board.probabilities(s), 0.8 * w / w.sum() + 0.05, rtol=1e-5)


def test_masked_experts_never_selected_and_get_no_bias():
    board = MeritBoard(4)
    s = board.init()
    for arm, r in [(0, 0.1), (1, 0.9), (2, 0.5), (3, 1.0)]:
        s = board.observe(s, arm, r)
    mask = jnp.array([1, 1, 1, 0], bool)
    for policy in ("none", "ucb", "exp3"):
        picks = [int(board.select(s, policy, jax.random.key(i), mask)) for i in range(20)]
        assert 3 not in picks
        bias = board.routing_bias(s, policy, 2.0, mask)
        assert bias.shape == (4,) and bias[3] == 0.0
        assert float(bias.min()) >= 0.0
    assert int(board.select(s, "none", jax.random.key(0), mask)) == 1
    np.testing.assert_array_equal(board.routing_bias(s, "none", 2.0, mask), np.zeros(4))
    for policy in ("ucb", "exp3"):
        bias = board.routing_bias(s, policy, 2.0, mask)
        assert int(jnp.argmax(bias)) == 1  # best active arm gets the largest bonus
    np.testing.assert_allclose(
        board.routing_bias(s, "exp3", 1.0, mask)[:3],
        np.log(board.probabilities(s, mask)[:3]) - np.log(board.probabilities(s, mask)[:3]).min(),
        rtol=1e-5,
    )


def test_jit_update_and_bias():
    board = MeritBoard(3)

    @jax.jit
    def step(state, rewards, counts, momentum):
        state = board.update(state, rewards, counts, momentum)
        return state, board.routing_bias(state, "ucb", 1.0)

    s, bias = step(board.init(), jnp.array([0.5, 0.5, 0.5]), jnp.array([1.0, 2.0, 0.0]), 0.9)
    assert bias.shape == (3,) and bool(jnp.all(jnp.isfinite(bias)))


def test_errors():
    board = MeritBoard(3)
    with pytest.raises(ValueError, match=r"unknown bandit policy 'thompson'.*none, ucb, exp3"):
        board.select(board.init(), "thompson", jax.random.key(0))
    with pytest.raises(ValueError, match="unknown bandit policy"):
        board.routing_bias(board.init(), "greedy", 1.0)
    with pytest.raises(ValueError, match="momentum=1.5"):
        board.update(board.init(), jnp.zeros(3), jnp.ones(3), 1.5)
    with pytest.raises(ValueError, match="exp3_gamma=0.0"):
        MeritBoard(3, exp3_gamma=0.0)


def test_exp3_masked_update_uses_masked_probabilities():
    board = MeritBoard(3, exp3_gamma=0.3)
    mask = jnp.array([1, 1, 0], bool)
    s = board.observe(board.init(), 0, 1.0, mask)
    # Over the 2 active arms p = 0.5 each, so x_hat = 2 and log w_0 = gamma * 2 / K.
    np.testing.assert_allclose(s.log_weights[0] - s.log_weights[1], 0.3 * 2 / 3, rtol=1e-6)
    s = board.observe(s, 2, 1.0, mask)  # a masked arm's reward cannot move Exp3
    np.testing.assert_allclose(s.log_weights[2] - s.log_weights[1], 0.0, atol=1e-7)
