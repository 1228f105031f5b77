"""Sparse dispatch: run each token only through its K chosen experts.

Shapes: N tokens, K top-k, P = K·N (token, choice) pairs, E experts, C capacity per expert,
D input width, O output width, G rows per block and Q blocks (``"blocked"``).

Three paths behind one interface (``LiquidMoE.dispatch``), picked by backend or config:

* ``"capacity"`` (default on CPU): pairs are numbered k-major (every token's first choice
  before any second choice) and placed into a static ``[E, C, D]`` buffer at their rank within
  their expert (a cumulative count, no sort); two batched einsums run the experts; a gather
  brings results back. Pairs beyond an expert's capacity ``C = ceil(P/E · capacity_factor)`` are
  dropped (their weight contributes nothing) and counted in ``dropped_fraction``. Cost grows with
  K·N·capacity_factor, not with E.
* ``"blocked"``: the capacity semantics (an expert keeps its first C pairs) with a compact
  buffer: each expert gets only ``ceil(kept_e / G)`` blocks of G rows, at most
  ``ceil(P / G) + E`` blocks in all, and each block runs its expert's weights (gathered per
  block). It computes about P rows instead of E·C: the win when C is generous (the adapter's
  factor 2.0 with 4 experts computes 2x the pairs in the capacity buffer), a loss when the
  capacity buffer is already tight (the weight gather costs more than the rows it saves), so
  ``"auto"`` on CPU takes it only when it saves at least a quarter of the rows
  (:func:`prefer_blocked`).
* ``"ragged"`` (default on GPU/TPU): pairs are sorted by expert and run with
  ``jax.lax.ragged_dot`` (a grouped matmul, megablox-style) — dropless. On the CPU backend
  ragged_dot is not a grouped kernel (about 18x slower here), hence the capacity default.

Under a device mesh ``LiquidMoE`` dispatches per device (``parallel.py``: ``shard_map``): with
the expert axis 1, the ragged path per device (GPU/TPU) or the capacity buffer; with an expert
axis larger than 1 the pairs travel to the devices holding their experts, through
per-destination capacity buffers (:func:`pack`) and a dense all-to-all, or dropless through a
ragged all-to-all (``ragged_parallel.py``, ``dispatch="ragged"``).

The compute-every-expert reference lives in ``reference.py``; tests hold every path to it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

DISPATCH_MODES = ("auto", "capacity", "blocked", "ragged", "dense")


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


BLOCK_ROWS = 256


def blocked_layout(num_pairs: int, num_experts: int, capacity: int) -> tuple[int, int]:
    """(G rows per block, Q blocks) of the blocked buffer: Q = min(E·ceil(C/G), ceil(P/G) + E)."""
    G = min(BLOCK_ROWS, capacity)
    return G, min(num_experts * -(-capacity // G), -(-num_pairs // G) + num_experts)


def prefer_blocked(num_pairs: int, num_experts: int, capacity_factor: float) -> bool:
    """Whether the blocked buffer computes at most 3/4 of the capacity buffer's rows."""
    C = expert_capacity(num_pairs, num_experts, capacity_factor)
    G, Q = blocked_layout(num_pairs, num_experts, C)
    return 0.75 * num_experts * C >= Q * G


def expert_capacity(num_pairs: int, num_experts: int, capacity_factor: float) -> int:
    """Static per-expert capacity ``C = ceil(P / E · factor)``, at least 1, at most P."""
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor = {capacity_factor} must be > 0")
    return max(1, min(num_pairs, math.ceil(num_pairs / num_experts * capacity_factor)))


def pairs(indices: jax.Array, weights: jax.Array, valid: jax.Array):
    """Flattens [N, K] routing to k-major pairs: expert [P], token [P], weight [P], valid [P]."""
    N, K = indices.shape
    expert = indices.T.reshape(-1)  # [P], p = k·N + n
    token = jnp.tile(jnp.arange(N, dtype=jnp.int32), K)  # [P]
    return expert, token, weights.T.reshape(-1), valid.T.reshape(-1)


class Packing(NamedTuple):
    """Where each (token, choice) pair goes in a ``[G, C]`` capacity buffer.

    kept: bool [P] the pair has a slot; slot: int32 [P] ``g·C + rank`` (``G·C`` when dropped);
    pair_of_slot: int32 [G·C] the pair in each slot (``P`` for an empty slot).
    """

    kept: jax.Array
    slot: jax.Array
    pair_of_slot: jax.Array


def pack(group: jax.Array, ok: jax.Array, num_groups: int, capacity: int) -> Packing:
    """Numbers pairs within their group (in pair order, no sort) and keeps the first C of each.

    Args:
      group: int32 [P] destination of each pair (an expert, or a device holding experts).
      ok: bool [P] whether the pair is routed at all.
      num_groups: G.
      capacity: C slots per group.
    """
    G, C, P = num_groups, capacity, group.shape[0]
    onehot = jax.nn.one_hot(jnp.where(ok, group, G), G + 1, dtype=jnp.int32)  # [P, G+1]
    rank = jnp.sum(jnp.cumsum(onehot, axis=0) * onehot, axis=-1) - 1  # [P] rank within group
    kept = ok & (rank < C)
    slot = jnp.where(kept, group * C + rank, G * C)  # [P]; G·C = "nowhere"
    # Inverse map slot -> pair (integer scatter, cheap), so both data moves are gathers.
    pair_of_slot = jnp.full((G * C + 1,), P, jnp.int32).at[slot].set(jnp.arange(P, dtype=jnp.int32))
    return Packing(kept, slot, pair_of_slot[:-1])


def gather_rows(rows: jax.Array, index: jax.Array) -> jax.Array:
    """``rows[index]``, where ``index == len(rows)`` reads a zero row: [R, ...] -> [I, ...].

    An out-of-bounds gather with ``mode="fill"`` (no padded copy of ``rows``); its transpose
    drops the out-of-bounds rows, so gradients are exact.
    """
    return rows.at[index].get(mode="fill", fill_value=0)


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
    expert, token, w, ok = pairs(indices, weights, valid)
    P = expert.shape[0]
    C = expert_capacity(P, E, capacity_factor)
    packing = pack(expert, ok, E, C)
    token_of_slot = jnp.append(token, N)[packing.pair_of_slot]  # [E·C]; N = empty slot
    x_buf = gather_rows(x, token_of_slot).reshape(E, C, D)  # [E, C, D]
    y_buf = run_batched(x_buf)  # [E, C, O]
    out = y_buf.shape[-1]
    y_pairs = gather_rows(y_buf.reshape(E * C, out), packing.slot)  # [P, O]
    y_pairs = y_pairs * jnp.where(packing.kept, w, 0.0).astype(y_buf.dtype)[:, None]
    y = y_pairs.reshape(-1, N, out).sum(axis=0)  # [K, N, O] -> [N, O]
    dropped = jnp.sum(ok & ~packing.kept) / jnp.maximum(jnp.sum(ok), 1)
    return y, DispatchStats(routing_load(indices, valid, E), dropped.astype(jnp.float32))


def blocked_dispatch(
    x: jax.Array,
    indices: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    params: dict,
    run,
    num_experts: int,
    capacity_factor: float,
) -> tuple[jax.Array, DispatchStats]:
    """Capacity semantics in a compact block buffer (see the module docstring).

    Args:
      x: [N, D] tokens; indices, weights, valid: [N, K] routing.
      params, run: the bank's ``batched_parts``: ``run(params [Q, ...], x [Q, G, D])`` applies
        block q's own expert (the leaves gathered per block).
      num_experts: E; capacity_factor: C = ceil(K·N / E · capacity_factor).

    Returns:
      y [N, O] and DispatchStats; equal to :func:`capacity_dispatch` (same pairs kept).
    """
    N, D = x.shape
    E = num_experts
    expert, token, w, ok = pairs(indices, weights, valid)
    P = expert.shape[0]
    C = expert_capacity(P, E, capacity_factor)
    G, Q = blocked_layout(P, E, C)
    onehot = jax.nn.one_hot(jnp.where(ok, expert, E), E + 1, dtype=jnp.int32)  # [P, E+1]
    rank = jnp.sum(jnp.cumsum(onehot, axis=0) * onehot, axis=-1) - 1  # [P] rank within expert
    kept = ok & (rank < C)
    count = jnp.minimum(jnp.sum(onehot[:, :E], axis=0), C)  # [E] kept pairs per expert
    blocks = (count + G - 1) // G  # [E]
    start = (jnp.cumsum(blocks) - blocks) * G  # [E] first row of each expert
    slot = jnp.where(kept, start[jnp.minimum(expert, E - 1)] + rank, Q * G)  # [P]
    pair_of_slot = jnp.full((Q * G + 1,), P, jnp.int32).at[slot].set(jnp.arange(P, dtype=jnp.int32))
    token_of_slot = jnp.append(token, N)[pair_of_slot[:-1]]  # [Q·G]; N = empty slot
    block_expert = jnp.searchsorted(jnp.cumsum(blocks), jnp.arange(Q), side="right")  # [Q]
    block_expert = jnp.minimum(block_expert, E - 1)  # unused tail blocks: empty rows
    x_buf = gather_rows(x, token_of_slot).reshape(Q, G, D)  # [Q, G, D]
    y_buf = run(jax.tree.map(lambda a: a[block_expert], params), x_buf)  # [Q, G, O]
    out = y_buf.shape[-1]
    y_pairs = gather_rows(y_buf.reshape(Q * G, out), slot)  # [P, O]
    y_pairs = y_pairs * jnp.where(kept, w, 0.0).astype(y_buf.dtype)[:, None]
    y = y_pairs.reshape(-1, N, out).sum(axis=0)  # [K, N, O] -> [N, O]
    dropped = jnp.sum(ok & ~kept) / jnp.maximum(jnp.sum(ok), 1)
    return y, DispatchStats(routing_load(indices, valid, E), dropped.astype(jnp.float32))


def routing_load(indices: jax.Array, valid: jax.Array, num_experts: int) -> jax.Array:
    """f32 [E]: fraction of the valid (token, choice) pairs routed to each expert (before drops)."""
    E = num_experts
    onehot = jax.nn.one_hot(jnp.where(valid, indices, E), E, dtype=jnp.int32)  # [N, K, E]
    return (jnp.sum(onehot, axis=(0, 1)) / jnp.maximum(jnp.sum(valid), 1)).astype(jnp.float32)


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
    expert, token, w, ok = pairs(indices, weights, valid)
    key = jnp.where(ok, expert, E)  # [P]
    order = jnp.argsort(key, stable=True)  # [P]
    group_sizes = jnp.bincount(key, length=E + 1)[:E].astype(jnp.int32)  # [E]
    y_sorted = run_grouped(x[token[order]], group_sizes)  # [P, O]
    w_sorted = jnp.where(ok, w, 0.0)[order].astype(y_sorted.dtype)
    y = jnp.zeros((N, y_sorted.shape[-1]), y_sorted.dtype)
    y = y.at[token[order]].add(y_sorted * w_sorted[:, None])  # [N, O]
    load = group_sizes / jnp.maximum(jnp.sum(ok), 1)
    return y, DispatchStats(load.astype(jnp.float32), jnp.zeros((), jnp.float32))
