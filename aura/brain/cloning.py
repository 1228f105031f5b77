"""Clone/teach: a newly activated expert starts as a copy of a teacher chosen by merit.

Expert parameters are stacked on a leading expert axis: every leaf under a sub-dict named
`experts` has shape `[E, ...]`. `clone_expert` copies row `src` to row `dst` in all of them
(optionally with a little Gaussian noise so the twins can diverge), leaving every other leaf
untouched. The same call works on any pytree that mirrors the params (for example optax
moment trees), so optimizer state can be cloned alongside.

After cloning, the student is distilled from the teacher: `distill_alpha` gives the weight of
the distillation term (1.0 while bootstrapping, then 0.5), and `committee_weights` blends the
top-k experts by merit when distilling from a committee instead of one teacher.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["choose_teacher", "clone_expert", "committee_weights", "distill_alpha"]

EXPERTS_KEY = "experts"


def _under_experts(path: tuple[Any, ...]) -> bool:
    """True if a pytree key path passes through a dict key named `experts`."""
    return any(getattr(k, "key", getattr(k, "name", None)) == EXPERTS_KEY for k in path)


def clone_expert(
    params: Any,
    src: int | jax.Array,
    dst: int | jax.Array,
    noise_scale: float = 0.0,
    rng: jax.Array | None = None,
) -> Any:
    """Copies expert `src` onto expert `dst` in every stacked leaf under an `experts` sub-dict.

    Jit-safe: `src`/`dst` may be traced integers (range checks then only run on concrete ints).

    Args:
      params: a pytree (nested dicts or FrozenDicts) holding one or more `experts` sub-dicts
        whose leaves are `[E, ...]` arrays.
      src: teacher expert index.
      dst: student expert index (its row is overwritten).
      noise_scale: standard deviation of Gaussian noise added to the copied rows (0 = exact).
      rng: PRNG key; required when `noise_scale > 0`.

    Returns:
      A pytree of the same structure and container types: `leaf[dst] = leaf[src] (+ noise)`
      under `experts`, everything else unchanged.

    Raises:
      ValueError: no `experts` leaves, `src == dst`, an index outside `0..E-1` (naming the leaf
        and its shape), or noise requested without `rng`.
    """
    if noise_scale < 0:
        raise ValueError(f"noise_scale={noise_scale} must be >= 0")
    if noise_scale > 0 and rng is None:
        raise ValueError("clone_expert: noise_scale > 0 needs an rng key")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    targets = [i for i, (path, _) in enumerate(leaves) if _under_experts(path)]
    if not targets:
        raise ValueError(
            f"clone_expert: no leaves under an {EXPERTS_KEY!r} sub-dict; expert parameters "
            "must be stacked as params[...]['experts'][name] with shape [E, ...]"
        )
    concrete = isinstance(src, int | np.integer) and isinstance(dst, int | np.integer)
    if concrete and src == dst:
        raise ValueError(f"clone_expert: src and dst are both {src}; pick a different student")
    keys = jax.random.split(rng, len(targets)) if noise_scale > 0 else [None] * len(targets)
    out = [leaf for _, leaf in leaves]
    for key, i in zip(keys, targets, strict=True):
        path, leaf = leaves[i]
        leaf = jnp.asarray(leaf)
        num = leaf.shape[0] if leaf.ndim else 0
        if concrete and not (0 <= src < num and 0 <= dst < num):
            raise ValueError(
                f"clone_expert: src={src}, dst={dst} out of range for leaf "
                f"{jax.tree_util.keystr(path)} with shape {leaf.shape} (E={num})"
            )
        row = leaf[src]
        if key is not None:
            noise = noise_scale * jax.random.normal(key, row.shape, jnp.float32)
            row = row + noise.astype(row.dtype)
        out[i] = leaf.at[dst].set(row)
    return jax.tree_util.tree_unflatten(treedef, out)


def choose_teacher(
    merit: np.ndarray | jax.Array,
    active_mask: np.ndarray | jax.Array,
    exclude: int | None = None,
) -> int:
    """Index of the active expert with the highest merit (ties: lowest index).

    Args:
      merit: per-expert merit `[E]`.
      active_mask: boolean `[E]`; pass the mask from *before* the student was activated, or
        name the student in `exclude`.
      exclude: an expert that may not be chosen (the student).

    Raises:
      ValueError: shapes differ or no eligible active expert exists.
    """
    merit = np.asarray(merit, dtype=np.float32)
    eligible = np.asarray(active_mask, dtype=bool).copy()
    if merit.shape != eligible.shape or merit.ndim != 1:
        raise ValueError(
            f"merit shape {merit.shape} and active_mask shape {eligible.shape} must both be [E]"
        )
    if exclude is not None:
        eligible[exclude] = False
    if not eligible.any():
        raise ValueError("choose_teacher: no active expert to teach from")
    return int(np.argmax(np.where(eligible, merit, -np.inf)))


def committee_weights(
    merit: jax.Array, active_mask: jax.Array, k: int, temperature: float = 1.0
) -> jax.Array:
    """Distillation weights over a committee of the top-`k` active experts by merit.

    Jit-safe (`k` static). Returns `[E]` float32: a softmax of `merit / temperature` over the
    committee, 0 for every other expert; all zeros if no expert is active.

    Raises:
      ValueError: `k` outside `1..E` or `temperature <= 0`.
    """
    merit = jnp.asarray(merit, jnp.float32)
    num = merit.shape[0]
    if not 1 <= k <= num:
        raise ValueError(f"committee size k={k} must be in 1..{num} (the number of experts)")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    active = jnp.asarray(active_mask, bool)
    masked = jnp.where(active, merit, -jnp.inf)
    _, top = jax.lax.top_k(masked, k)
    chosen = jnp.zeros((num,), bool).at[top].set(True) & active
    logits = jnp.where(chosen, merit / temperature, -jnp.inf)
    weights = jax.nn.softmax(jnp.where(chosen.any(), logits, 0.0))
    return jnp.where(chosen, weights, 0.0)


def distill_alpha(step_since_activation: int, bootstrap_steps: int) -> float:
    """Weight of the distillation loss for a student `step_since_activation` steps old.

    1.0 (pure imitation of the teacher) for the first `bootstrap_steps` steps, then 0.5.

    Raises:
      ValueError: negative arguments.
    """
    if step_since_activation < 0 or bootstrap_steps < 0:
        raise ValueError(
            f"step_since_activation={step_since_activation} and "
            f"bootstrap_steps={bootstrap_steps} must be >= 0"
        )
    return 1.0 if step_since_activation < bootstrap_steps else 0.5
