"""Pruning: experts whose utilisation stays low are masked out of gating.

Utilisation is an exponential moving average of each expert's load (its share of the batch's
tokens). `prune_mask` is called once after each `update_utilisation`; it counts, per active
expert, consecutive calls with utilisation below a threshold, and marks an expert pruned once
the count reaches `patience`. Pruning is sticky (a pruned expert stays pruned until
`reset_experts`), and the last remaining unpruned active expert is never pruned. The gate uses
`active_mask & ~pruned`. Everything is jit-safe array math on a NamedTuple state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["PruningState", "init_pruning", "prune_mask", "reset_experts", "update_utilisation"]


class PruningState(NamedTuple):
    """Utilisation tracking."""

    utilisation: jax.Array  # [E] float32 EMA of load
    below: jax.Array  # [E] int32 consecutive checks below threshold
    pruned: jax.Array  # [E] bool


def init_pruning(num_experts: int, initial_utilisation: float | None = None) -> PruningState:
    """Fresh state; utilisation starts at `initial_utilisation` (default: fair share 1/E)."""
    if num_experts < 1:
        raise ValueError(f"num_experts={num_experts} must be >= 1")
    init = 1.0 / num_experts if initial_utilisation is None else initial_utilisation
    return PruningState(
        utilisation=jnp.full((num_experts,), init, jnp.float32),
        below=jnp.zeros((num_experts,), jnp.int32),
        pruned=jnp.zeros((num_experts,), bool),
    )


def update_utilisation(
    state: PruningState, load: jax.Array, decay: float | jax.Array
) -> PruningState:
    """EMA update `u = decay * u + (1 - decay) * load`.

    Args:
      state: current state.
      load: `[E]` share of tokens routed to each expert in this batch.
      decay: EMA decay in [0, 1).
    """
    if isinstance(decay, int | float) and not 0.0 <= decay < 1.0:
        raise ValueError(f"utilisation decay={decay} must be in [0, 1)")
    load = jnp.asarray(load, jnp.float32)
    return state._replace(utilisation=decay * state.utilisation + (1.0 - decay) * load)


def prune_mask(
    state: PruningState,
    active_mask: jax.Array,
    threshold: float | jax.Array,
    patience: int | jax.Array,
) -> tuple[PruningState, jax.Array]:
    """Advances the below-threshold counters and returns the pruned mask.

    Args:
      state: state after this step's `update_utilisation`.
      active_mask: boolean `[E]` of grown experts; inactive experts are never counted or pruned.
      threshold: utilisation below which an expert counts as idle.
      patience: consecutive idle checks before pruning (>= 1).

    Returns:
      `(state, pruned)`: pruned is boolean `[E]` (sticky). If every remaining active expert
      would be pruned, the one with the highest utilisation (lowest index on ties) is kept.
    """
    if isinstance(patience, int) and patience < 1:
        raise ValueError(f"pruning patience={patience} must be >= 1")
    active = jnp.asarray(active_mask, bool)
    alive = active & ~state.pruned
    idle = alive & (state.utilisation < threshold)
    below = jnp.where(idle, state.below + 1, 0).astype(jnp.int32)
    candidates = idle & (below >= patience)
    survivors = alive & ~candidates
    keep = jnp.argmax(jnp.where(alive, state.utilisation, -jnp.inf))
    spare_last = alive.any() & ~survivors.any()
    candidates = candidates & ~(spare_last & (jnp.arange(active.shape[0]) == keep))
    pruned = state.pruned | candidates
    below = jnp.where(pruned, 0, below).astype(jnp.int32)
    return state._replace(below=below, pruned=pruned), pruned


def reset_experts(
    state: PruningState, mask: jax.Array, utilisation: float | jax.Array
) -> PruningState:
    """Revives the experts in boolean `mask` (e.g. slots reused by growth or neurogenesis).

    Sets their utilisation to `utilisation` (typically the fair share), clears their counters
    and their pruned flag.
    """
    mask = jnp.asarray(mask, bool)
    return PruningState(
        utilisation=jnp.where(mask, jnp.asarray(utilisation, jnp.float32), state.utilisation),
        below=jnp.where(mask, 0, state.below).astype(jnp.int32),
        pruned=state.pruned & ~mask,
    )
