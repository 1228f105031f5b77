"""MeritBoard: per-expert merit with momentum, and bandit policies over the experts.

Each expert is an arm. After a batch, every expert that received tokens is *observed* with a
reward in [0, 1] (for example its routed accuracy); `MeritBoard.update` folds the rewards into

* `merit`: an exponential moving average with the given momentum (used to choose teachers);
* UCB1 statistics: one pull per observed expert per update, with the mean observed reward;
* Exp3 log-weights: exponential weights with gamma exploration and importance-weighted
  rewards `x_i * f_i / p_i`, where `f_i` is the fraction of the batch's tokens expert i saw
  and `p_i` its Exp3 probability. With a single pulled arm (`observe`) this is textbook Exp3
  (Auer et al., 2002): `x_hat = x / p_arm` for the pulled arm, 0 for the others.

Policies (`"none"`, `"ucb"`, `"exp3"`) are used two ways: `select` picks one arm, and
`routing_bias` turns the policy's scores into a non-negative logit bonus added to the gate
logits (0 for inactive experts and for the least favoured active one). Everything is array
math on a NamedTuple state, so it runs under `jax.jit` with the board and policy static.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["POLICIES", "MeritBoard", "MeritState"]

POLICIES = ("none", "ucb", "exp3")


class MeritState(NamedTuple):
    """Per-expert statistics; all float32."""

    merit: jax.Array  # [E] momentum-smoothed reward
    pulls: jax.Array  # [E] updates in which the expert was observed (UCB n_i)
    reward_sum: jax.Array  # [E] sum of observed rewards (UCB mean = reward_sum / pulls)
    log_weights: jax.Array  # [E] Exp3 log-weights
    rounds: jax.Array  # [] number of updates (UCB t)


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown bandit policy {policy!r}; valid policies: {', '.join(POLICIES)}")


@dataclasses.dataclass(frozen=True)
class MeritBoard:
    """Bandit configuration; pure methods over `MeritState`.

    Attributes:
      num_experts: number of arms E (the expert capacity).
      ucb_c: UCB1 exploration constant c in `mean + c * sqrt(2 ln t / n)`.
      exp3_gamma: Exp3 exploration rate gamma in (0, 1].
    """

    num_experts: int
    ucb_c: float = 1.0
    exp3_gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ValueError(f"num_experts={self.num_experts} must be >= 1")
        if self.ucb_c < 0:
            raise ValueError(f"ucb_c={self.ucb_c} must be >= 0")
        if not 0.0 < self.exp3_gamma <= 1.0:
            raise ValueError(f"exp3_gamma={self.exp3_gamma} must be in (0, 1]")

    def init(self) -> MeritState:
        """Fresh state: zero merit, no pulls, uniform Exp3 weights."""
        zeros = jnp.zeros((self.num_experts,), jnp.float32)
        return MeritState(zeros, zeros, zeros, zeros, jnp.zeros((), jnp.float32))

    def update(
        self,
        state: MeritState,
        expert_rewards: jax.Array,
        counts: jax.Array,
        momentum: float | jax.Array,
        active_mask: jax.Array | None = None,
    ) -> MeritState:
        """Folds one batch of per-expert rewards into the state.

        Args:
          state: current state.
          expert_rewards: `[E]` rewards, clipped to [0, 1]; ignored where `counts == 0`.
          counts: `[E]` tokens (or examples) each expert received; > 0 means observed.
          momentum: merit EMA momentum in [0, 1): `merit = m * merit + (1 - m) * reward`.
            An expert's first observation sets its merit to the reward.
          active_mask: optional boolean `[E]`; the Exp3 importance weights use the
            probabilities over these experts (pass the mask `select`/`routing_bias` used).

        Returns:
          The updated state; unobserved experts keep their merit and UCB statistics.
        """
        if isinstance(momentum, int | float) and not 0.0 <= momentum < 1.0:
            raise ValueError(f"merit momentum={momentum} must be in [0, 1)")
        rewards = jnp.clip(jnp.asarray(expert_rewards, jnp.float32), 0.0, 1.0)
        counts = jnp.asarray(counts, jnp.float32)
        seen = counts > 0
        ema = momentum * state.merit + (1.0 - momentum) * rewards
        merit = jnp.where(seen, jnp.where(state.pulls > 0, ema, rewards), state.merit)
        frac = counts / jnp.maximum(counts.sum(), 1.0)  # f_i: share of the batch
        p = self.probabilities(state, active_mask)  # 0 for masked experts: they learn nothing
        x_hat = jnp.where(seen & (p > 0), rewards * frac / jnp.maximum(p, 1e-12), 0.0)
        log_w = state.log_weights + self.exp3_gamma * x_hat / self.num_experts
        log_w = log_w - log_w.max()  # keep exp() in range; probabilities are unchanged
        return MeritState(
            merit=merit,
            pulls=state.pulls + seen.astype(jnp.float32),
            reward_sum=state.reward_sum + jnp.where(seen, rewards, 0.0),
            log_weights=log_w,
            rounds=state.rounds + 1.0,
        )

    def observe(
        self,
        state: MeritState,
        arm: jax.Array | int,
        reward: jax.Array | float,
        active_mask: jax.Array | None = None,
    ) -> MeritState:
        """One classic bandit round: only `arm` was pulled and paid `reward` in [0, 1].

        Merit moves with momentum 0.9.
        """
        one_hot = jax.nn.one_hot(arm, self.num_experts, dtype=jnp.float32)
        return self.update(state, one_hot * reward, one_hot, 0.9, active_mask)

    def probabilities(self, state: MeritState, active_mask: jax.Array | None = None) -> jax.Array:
        """Exp3 distribution `(1 - gamma) w_i / sum(w) + gamma / K` over the active arms."""
        active = self._active(active_mask)
        k = jnp.maximum(active.sum(), 1).astype(jnp.float32)
        logits = jnp.where(active, state.log_weights, -jnp.inf)
        w = jax.nn.softmax(logits)
        p = (1.0 - self.exp3_gamma) * w + self.exp3_gamma / k
        return jnp.where(active, p, 0.0)

    def ucb_scores(self, state: MeritState, active_mask: jax.Array | None = None) -> jax.Array:
        """UCB1 index `mean + c * sqrt(2 ln t / n)`; -inf for inactive arms.

        An untried arm scores as if pulled once with the maximal reward 1 in a round that has
        not happened yet, `1 + c * sqrt(2 ln(t + 1))`, which exceeds every tried arm's index;
        so untried arms come first (lowest index first).
        """
        active = self._active(active_mask)
        t = jnp.maximum(state.rounds, 1.0)
        n = jnp.maximum(state.pulls, 1.0)
        score = state.reward_sum / n + self.ucb_c * jnp.sqrt(2.0 * jnp.log(t) / n)
        untried = 1.0 + self.ucb_c * jnp.sqrt(2.0 * jnp.log(state.rounds + 1.0))
        score = jnp.where(state.pulls > 0, score, untried)
        return jnp.where(active, score, -jnp.inf)

    def select(
        self,
        state: MeritState,
        policy: str,
        rng: jax.Array,
        active_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Picks one active arm: int32 scalar.

        `"none"`: greedy, highest merit. `"ucb"`: highest UCB1 index. `"exp3"`: a sample from
        the Exp3 distribution (uses `rng`).

        Raises:
          ValueError: unknown policy (lists the valid ones).
        """
        _check_policy(policy)
        if policy == "none":
            score = jnp.where(self._active(active_mask), state.merit, -jnp.inf)
        elif policy == "ucb":
            score = self.ucb_scores(state, active_mask)
        else:
            p = self.probabilities(state, active_mask)
            return jax.random.choice(rng, self.num_experts, p=p).astype(jnp.int32)
        return jnp.argmax(score).astype(jnp.int32)

    def routing_bias(
        self,
        state: MeritState,
        policy: str,
        scale: float | jax.Array,
        active_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Non-negative `[E]` logit bonus favouring the arms the policy prefers.

        `"none"`: zeros. `"ucb"`: `scale * (ucb_i - min_active ucb)`. `"exp3"`:
        `scale * (log p_i - min_active log p)`, i.e. the gate is multiplied by the Exp3
        distribution (up to a constant) when `scale == 1`. Inactive experts get 0.

        Raises:
          ValueError: unknown policy (lists the valid ones).
        """
        _check_policy(policy)
        active = self._active(active_mask)
        if policy == "none":
            return jnp.zeros((self.num_experts,), jnp.float32)
        if policy == "ucb":
            score = self.ucb_scores(state, active_mask)
        else:
            score = jnp.log(jnp.maximum(self.probabilities(state, active_mask), 1e-30))
        low = jnp.min(jnp.where(active, score, jnp.inf))
        return jnp.where(active, scale * (score - low), 0.0).astype(jnp.float32)

    def _active(self, active_mask: jax.Array | None) -> jax.Array:
        if active_mask is None:
            return jnp.ones((self.num_experts,), bool)
        return jnp.asarray(active_mask, bool)
