"""Token routing over memory slots (and the activity rule shared with the experts).

Shapes: N tokens (any leading shape), S choices (memory slots M or experts E), K top-k.

Per token, ``softmax(logits / T)`` over all S choices gives the soft probabilities; the top K
are the candidates. A candidate is *active* when its probability is at least ``min_ratio``
times the best one (the best is always active), so a confident router touches fewer slots or
experts than K; ``min_ratio = 0`` keeps all K. The weights of the active candidates are the
probabilities renormalised over them; every other choice gets exactly zero weight.

Hard activity has no gradient, so the compute budget uses a smooth surrogate of it,
``sigmoid((p / p_best - min_ratio) · sharpness)``, which rounds to the hard rule (> 1/2 exactly
when active) and passes gradient to the router's probabilities.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Selection(NamedTuple):
    """A top-k choice per token.

    probs: f32 [..., S] soft router probabilities (all choices).
    indices: int32 [..., K] candidates, best first.
    weights: f32 [..., K] probabilities renormalised over the active candidates (0 elsewhere).
    active: bool [..., K] candidates that are used.
    soft_active: f32 [..., K] differentiable surrogate of ``active`` (for the budget loss).
    """

    probs: jax.Array
    indices: jax.Array
    weights: jax.Array
    active: jax.Array
    soft_active: jax.Array


def select_top_k(
    logits: jax.Array,
    k: int,
    *,
    temperature: float | jax.Array = 1.0,
    min_ratio: float = 0.0,
    sharpness: float = 10.0,
) -> Selection:
    """Soft probabilities ``softmax(logits / temperature)``, then :func:`select_from_probs`.

    Args:
      logits: router logits [..., S] (computed in f32).
      k: candidates per token, 1 <= k <= S.
      temperature: softmax temperature (> 0).
      min_ratio: a candidate is active when ``p >= min_ratio · p_best``; in [0, 1].
      sharpness: slope of the sigmoid surrogate of activity.
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)  # [..., S]
    return select_from_probs(probs, k, min_ratio=min_ratio, sharpness=sharpness)


def select_from_probs(
    probs: jax.Array, k: int, *, min_ratio: float = 0.0, sharpness: float = 10.0
) -> Selection:
    """Top-k candidates of soft probabilities [..., S], their activity and renormalised weights.

    Raises:
      ValueError: k outside [1, S] or min_ratio outside [0, 1].
    """
    S = probs.shape[-1]
    if not 1 <= k <= S:
        raise ValueError(f"top-k = {k} must be in [1, {S}] (the number of choices)")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio = {min_ratio} must be in [0, 1]")
    top_p, top_i = jax.lax.top_k(probs, k)  # [..., K], best first
    rel = top_p / jnp.maximum(top_p[..., :1], 1e-30)  # [..., K], rel[..., 0] == 1
    first = jnp.arange(k) == 0  # [K]
    active = first | (rel >= min_ratio)
    soft = jnp.where(first, 1.0, jax.nn.sigmoid((rel - min_ratio) * sharpness))
    kept = jnp.where(active, top_p, 0.0)
    weights = kept / jnp.sum(kept, axis=-1, keepdims=True)  # the best is always kept: sum > 0
    return Selection(probs, top_i.astype(jnp.int32), weights, active, soft)


def dense_weights(sel: Selection) -> jax.Array:
    """The selection as dense weights [..., S]: exactly zero off the active candidates."""
    S = sel.probs.shape[-1]
    onehot = jax.nn.one_hot(sel.indices, S, dtype=sel.weights.dtype)  # [..., K, S]
    return jnp.einsum("...ks,...k->...s", onehot, sel.weights)  # [..., S]


def active_mask(sel: Selection) -> jax.Array:
    """bool [..., S]: which choices each token touches."""
    S = sel.probs.shape[-1]
    onehot = jax.nn.one_hot(sel.indices, S, dtype=jnp.int32)  # [..., K, S]
    return jnp.einsum("...ks,...k->...s", onehot, sel.active.astype(jnp.int32)) > 0  # [..., S]
