"""Optimizers the experiments share, and one optax transformation for per-expert update masks.

Shapes: E experts (the leading axis of every stacked expert leaf).

Growing and freezing experts means some rows of the stacked ``[E, ...]`` expert parameters must
not move in a step: frozen experts, experts that received no token (routed learning), or a whole
zone that got no sample. Zero gradients are not enough: AdamW's momentum and decoupled weight
decay would still move those rows. :func:`expert_row_mask` zeroes the *updates* instead, after
the optimizer, so nothing moves them. It takes the masks as extra arguments of ``update``::

    tx = optax.chain(optax.adamw(lr), expert_row_mask())
    updates, opt_state = tx.update(grads, opt_state, params, expert_keep=keep)   # keep: bool [E]

``expert_keep`` is a bool ``[E]`` (every leaf under an ``experts`` key) or a mapping from a
top-level key (a zone) to its own ``[E_z]``; ``shared_keep`` is a bool scalar for every leaf
that is not an expert leaf (or a mapping per top-level key), e.g. False to train only experts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "TrainState",
    "expert_row_mask",
    "is_expert_leaf",
    "make_lm_optimizer",
    "make_optimizer",
]

EXPERTS_KEY = "experts"


class TrainState(NamedTuple):
    """The state most experiments train: parameters, optimizer state and the step counter."""

    params: Any
    opt_state: Any
    step: jax.Array  # int32 []


def _key(entry: Any) -> Any:
    return getattr(entry, "key", getattr(entry, "name", None))


def is_expert_leaf(path: tuple) -> bool:
    """Whether a pytree path runs through an ``experts`` key (a stacked ``[E, ...]`` leaf)."""
    return any(_key(k) == EXPERTS_KEY for k in path)


def _pick(mask: Any, path: tuple) -> Any:
    """The mask for a leaf: the array itself, or the entry of its top-level key (None: keep)."""
    if mask is None or not isinstance(mask, Mapping):
        return mask
    return mask.get(_key(path[0])) if path else None


def _keep_rows(u: jax.Array, keep: jax.Array) -> jax.Array:
    k = jnp.asarray(keep).reshape((-1,) + (1,) * (u.ndim - 1))  # [E] -> [E, 1, ...]
    return jnp.where(k, u, jnp.zeros_like(u))


def expert_row_mask() -> optax.GradientTransformationExtraArgs:
    """Zeroes update rows of frozen/unrouted experts (and optionally the shared parameters).

    Extra ``update`` arguments (all optional; omitted means "keep everything"):
      expert_keep: bool [E], or {top-level key: bool [E_key]}.
      shared_keep: bool [], or {top-level key: bool []}, for the non-expert leaves.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, expert_keep=None, shared_keep=None, **extra):
        del params, extra
        if expert_keep is None and shared_keep is None:
            return updates, state

        def mask(path, u):
            if is_expert_leaf(path):
                keep = _pick(expert_keep, path)
                return u if keep is None else _keep_rows(u, keep)
            keep = _pick(shared_keep, path)
            return u if keep is None else jnp.where(keep, u, jnp.zeros_like(u))

        return jax.tree_util.tree_map_with_path(mask, updates), state

    return optax.GradientTransformationExtraArgs(init, update)


def make_optimizer(peak_lr: float, total_steps: int, weight_decay: float = 1e-4):
    """AdamW with a cosine one-cycle schedule over ``total_steps``, then the expert row mask."""
    schedule = optax.cosine_onecycle_schedule(max(total_steps, 1), peak_lr)
    return optax.chain(optax.adamw(schedule, weight_decay=weight_decay), expert_row_mask())


def make_lm_optimizer(peak_lr: float, total_steps: int, warmup: int = 50, clip: float = 1.0):
    """Clipped AdamW with linear warm-up and cosine decay; returns (optimizer, schedule)."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, peak_lr, max(1, min(warmup, total_steps // 2)), max(total_steps, 2), peak_lr * 0.1
    )
    tx = optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(schedule, weight_decay=0.01),
        expert_row_mask(),
    )
    return tx, schedule
