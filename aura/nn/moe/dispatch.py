"""Sparse dispatch: run each token only through its K chosen experts.

Shapes: N tokens, K top-k, P = K·N (token, choice) pairs, E experts, C capacity per expert,
D input width, O output width.

Two paths behind one interface (:func:`dispatch`), picked by backend or config:

* ``"capacity"`` (default on CPU): pairs are numbered k-major (every token's first choice
  before any second choice) and placed into a static ``[E, C, D]`` buffer at their rank within
  their expert (a cumulative count, no sort); two batched einsums run the experts; a gather
  brings results back. Pairs beyond an expert's capacity ``C = ceil(P/E · capacity_factor)`` are
  dropped (their weight contributes nothing) and counted in ``dropped_fraction``. Cost grows with
  K·N·capacity_factor, not with E.
* ``"ragged"`` (default on GPU/TPU): pairs are sorted by expert and run with
  ``jax.lax.ragged_dot`` (a grouped matmul, megablox-style) — dropless. On the CPU backend
  ragged_dot is not a grouped kernel (about 18x slower here), hence the capacity default.

The compute-every-expert reference lives in ``reference.py``; tests hold both paths to it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

DISPATCH_MODES = ("auto", "capacity", "ragged", "dense")


class DispatchStats(NamedTuple):
    """load: f32 [E] fraction of valid pairs sent to each expert; dropped_fraction: f32 []."""

    load: jax.Array
    dropped_fraction: jax.Array


def resolve_mode(mode: str) -> str:
    """Maps ``"auto"`` to ``"ragged"`` on CUDA/ROCm/TPU and ``"capacity"`` elsewhere.

    ``"dense"`` (compute every expert, ``reference.py``) is accepted for tests and baselines.
    """
    if mode not in DISPATCH_MODES:
        raise ValueError(f"dispatch = {mode!r}; valid values: {', '.join(DISPATCH_MODES)}")
    if mode == "auto":
        # ragged_dot is a grouped-matmul kernel on CUDA/ROCm/TPU; elsewhere (CPU, Apple Metal
        # plugins) it is not, or may be missing, so the capacity buffer is the safe fast path.
        return "ragged" if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else "capacity"
    return mode


def expert_capacity(num_pairs: int, num_experts: int, capacity_factor: float) -> int:
    """Static per-expert capacity ``C = ceil(P / E · factor)``, at least 1, at most P."""
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor = {capacity_factor} must be > 0")
    return max(1, min(num_pairs, math.ceil(num_pairs / num_experts * capacity_factor)))


def _pairs(indices: jax.Array, weights: jax.Array, valid: jax.Array):
    """Flattens [N, K] routing to k-major pairs: expert [P], token [P], weight [P], valid [P]."""
    N, K = indices.shape
    expert = indices.T.reshape(-1)  # [P], p = k·N + n
    token = jnp.tile(jnp.arange(N, dtype=jnp.int32), K)  # [P]
    return expert, token, weights.T.reshape(-1), valid.T.reshape(-1)


def capacity_dispatch(
    x: jax.Array,
    indices: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    run_batched,
    num_experts: int,
    capacity_factor: float,
) -> tuple[jax.Array, DispatchStats]:
    """Capacity-buffer dispatch.

    Args:
      x: [N, D] tokens.
      indices, weights, valid: [N, K] routing (see ``RouterOutput``).
      run_batched: ``f(x [E, C, D]) -> [E, C, O]``, the expert bank's batched apply.
      num_experts: E.
      capacity_factor: C = ceil(K·N / E · capacity_factor).

    Returns:
      y [N, O] = sum_k weight_k · expert_k(x) over kept pairs, and DispatchStats.
    """
    N, D = x.shape
    E = num_experts
    expert, token, w, ok = _pairs(indices, weights, valid)
    P = expert.shape[0]
    C = expert_capacity(P, E, capacity_factor)
    onehot = jax.nn.one_hot(jnp.where(ok, expert, E), E + 1, dtype=jnp.int32)  # [P, E+1]
    rank = jnp.sum(jnp.cumsum(onehot, axis=0) * onehot, axis=-1) - 1  # [P] rank within expert
    kept = ok & (rank < C)
    slot = jnp.where(kept, expert * C + rank, E * C)  # [P]; E·C = "nowhere"
    # Inverse map slot -> pair (integer scatter, cheap), so both data moves are gathers.
    pair_of_slot = jnp.full((E * C + 1,), P, jnp.int32).at[slot].set(jnp.arange(P, dtype=jnp.int32))
    token_of_slot = jnp.append(token, N)[pair_of_slot[:-1]]  # [E·C]; N = empty slot
    x_pad = jnp.concatenate([x, jnp.zeros((1, D), x.dtype)], axis=0)  # [N+1, D]
    x_buf = x_pad[token_of_slot].reshape(E, C, D)  # [E, C, D]
    y_buf = run_batched(x_buf)  # [E, C, O]
    out = y_buf.shape[-1]
    y_flat = jnp.concatenate([y_buf.reshape(E * C, out), jnp.zeros((1, out), y_buf.dtype)])
    y_pairs = y_flat[slot] * jnp.where(kept, w, 0.0).astype(y_buf.dtype)[:, None]  # [P, O]
    y = y_pairs.reshape(-1, N, out).sum(axis=0)  # [K, N, O] -> [N, O]
    n_ok = jnp.maximum(jnp.sum(ok), 1)
    load = jnp.sum(onehot[:, :E], axis=0) / n_ok
    dropped = jnp.sum(ok & ~kept) / n_ok
    return y, DispatchStats(load.astype(jnp.float32), dropped.astype(jnp.float32))


def ragged_dispatch(
    x: jax.Array,
    indices: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    run_grouped,
    num_experts: int,
) -> tuple[jax.Array, DispatchStats]:
    """Dropless dispatch: sort pairs by expert, grouped matmul, unsort.

    ``run_grouped(x_sorted [P, D], group_sizes [E]) -> [P, O]`` is the bank's grouped apply.
    Invalid pairs (fewer routable experts than K) sort to the end, outside every group.
    """
    N, _ = x.shape
    E = num_experts
    expert, token, w, ok = _pairs(indices, weights, valid)
    key = jnp.where(ok, expert, E)  # [P]
    order = jnp.argsort(key, stable=True)  # [P]
    group_sizes = jnp.bincount(key, length=E + 1)[:E].astype(jnp.int32)  # [E]
    y_sorted = run_grouped(x[token[order]], group_sizes)  # [P, O]
    w_sorted = jnp.where(ok, w, 0.0)[order].astype(y_sorted.dtype)
    y = jnp.zeros((N, y_sorted.shape[-1]), y_sorted.dtype)
    y = y.at[token[order]].add(y_sorted * w_sorted[:, None])  # [N, O]
    load = group_sizes / jnp.maximum(jnp.sum(ok), 1)
    return y, DispatchStats(load.astype(jnp.float32), jnp.zeros((), jnp.float32))
