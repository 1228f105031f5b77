"""The compute budget: expected activations, Switch load balance and the compute actually used.

Shapes: N tokens, S choices (E experts or M slots), K top-k.

*Compute* is counted per token as the fraction of the experts (of E) and of the memory slots
(of M) the token touches; ``compute = (experts/E + slots/M) / 2``. The hard count (what really
ran) has no gradient; the *expected* count sums the sigmoid surrogate of every candidate's
activity (``routing.Selection.soft_active``), a smooth function of the soft router
probabilities, so ``budget_loss`` reaches the router: above the budget it pushes the
probability of the weaker candidates below ``min_ratio`` of the best, i.e. sharper routing and
fewer activations. The Switch-Transformer load balance ``S · sum_s f_s · P_s`` (f the fraction
of activations, P the mean soft probability of each choice; 1.0 when uniform) keeps the
router from collapsing onto a few experts or slots.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from aura.nn.moca.routing import Selection, active_mask


class RoutingStats(NamedTuple):
    """Masked per-token averages of one selection (experts or slots); all f32.

    active_fraction: [] activations per token / S (hard; what ran).
    expected_fraction: [] the differentiable surrogate of ``active_fraction``.
    balance: [] Switch load balance ``S · sum_s f_s P_s``.
    load: [S] fraction of the activations that went to each choice.
    importance: [S] mean soft probability of each choice.
    """

    active_fraction: jax.Array
    expected_fraction: jax.Array
    balance: jax.Array
    load: jax.Array
    importance: jax.Array


def routing_stats(sel: Selection, mask: jax.Array | None = None) -> RoutingStats:
    """Statistics of a selection over the tokens where ``mask`` [...] is true (default all)."""
    S = sel.probs.shape[-1]
    probs = sel.probs.reshape(-1, S)  # [N, S]
    touched = active_mask(sel).reshape(-1, S).astype(jnp.float32)  # [N, S]
    soft = sel.soft_active.reshape(probs.shape[0], -1)  # [N, K]
    m = jnp.ones(probs.shape[:1]) if mask is None else mask.reshape(-1).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m), 1.0)
    count = jnp.sum(touched, axis=-1)  # [N]
    load = jnp.sum(touched * m[:, None], axis=0) / jnp.maximum(jnp.sum(count * m), 1.0)  # [S]
    importance = jnp.sum(probs * m[:, None], axis=0) / n  # [S]
    return RoutingStats(
        active_fraction=jnp.sum(count * m) / n / S,
        expected_fraction=jnp.sum(jnp.sum(soft, axis=-1) * m) / n / S,
        balance=S * jnp.sum(load * importance),
        load=load,
        importance=importance,
    )


def compute_fraction(expert_fraction: jax.Array, slot_fraction: jax.Array) -> jax.Array:
    """Per-token compute as the mean of the expert and slot activation fractions."""
    return 0.5 * (expert_fraction + slot_fraction)


def budget_loss(expected_compute: jax.Array, budget: float | jax.Array) -> jax.Array:
    """``max(0, expected_compute - budget)``: zero within the budget, linear above it."""
    return jnp.maximum(expected_compute - budget, 0.0)
