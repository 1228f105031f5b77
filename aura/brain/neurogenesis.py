"""Neurogenesis: spawn a new expert when routing stays uncertain.

High gate entropy for many consecutive steps means no expert claims the inputs. `update`
counts consecutive steps with entropy above a threshold and signals a spawn on the `patience`-th
one; the counter then resets and a `teach_steps` cooldown runs (the new expert is being cloned
and taught), during which nothing is counted and nothing spawns. The caller puts the new expert
in `next_free_slot(active_mask, pruned_mask)` and clones a teacher into it
(`aura.brain.cloning`). `update` is jit-safe array math on a NamedTuple state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["NeurogenesisState", "init_neurogenesis", "next_free_slot", "update"]


class NeurogenesisState(NamedTuple):
    """Counters (int32 scalars)."""

    above: jax.Array  # consecutive steps with entropy above the threshold
    cooldown: jax.Array  # teach steps left during which no spawn happens
    spawned: jax.Array  # total spawns so far


def init_neurogenesis() -> NeurogenesisState:
    """Fresh state: no streak, no cooldown, no spawns."""
    zero = jnp.zeros((), jnp.int32)
    return NeurogenesisState(above=zero, cooldown=zero, spawned=zero)


def update(
    state: NeurogenesisState,
    entropy: float | jax.Array,
    threshold: float | jax.Array,
    patience: int | jax.Array,
    teach_steps: int | jax.Array = 0,
) -> tuple[NeurogenesisState, jax.Array]:
    """Advances one step.

    Args:
      state: current counters.
      entropy: this step's gate entropy (same units as `threshold`).
      threshold: entropy above which the step counts towards a spawn.
      patience: consecutive counted steps that trigger a spawn (>= 1).
      teach_steps: cooldown length after a spawn; these steps neither count nor spawn.

    Returns:
      `(state, spawn)`: spawn is a boolean scalar array (use `bool(spawn)` outside jit).
    """
    if isinstance(patience, int) and patience < 1:
        raise ValueError(f"neurogenesis patience={patience} must be >= 1")
    if isinstance(teach_steps, int) and teach_steps < 0:
        raise ValueError(f"teach_steps={teach_steps} must be >= 0")
    cooling = state.cooldown > 0
    high = jnp.asarray(entropy) > threshold
    above = jnp.where(cooling | ~high, 0, state.above + 1)
    spawn = ~cooling & (above >= patience)
    new_state = NeurogenesisState(
        above=jnp.where(spawn, 0, above).astype(jnp.int32),
        cooldown=jnp.where(spawn, teach_steps, jnp.where(cooling, state.cooldown - 1, 0)).astype(
            jnp.int32
        ),
        spawned=(state.spawned + spawn).astype(jnp.int32),
    )
    return new_state, spawn


def next_free_slot(active_mask: np.ndarray | jax.Array, pruned_mask: np.ndarray | jax.Array) -> int:
    """Lowest expert index that is neither active nor pruned, or -1 if capacity is full."""
    free = ~np.asarray(active_mask, bool) & ~np.asarray(pruned_mask, bool)
    idx = np.flatnonzero(free)
    return int(idx[0]) if idx.size else -1
