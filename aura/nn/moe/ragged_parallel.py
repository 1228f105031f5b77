"""Dropless expert parallelism: a ragged all-to-all to the experts and back (shard_map).

Shapes: n tokens on one device, K top-k, p = K·n (token, choice) pairs, X devices on the expert
axis, E experts, L = E / X experts per device, R = X·p rows a device may receive, D input
width, O output width.

Inside ``jax.shard_map`` each device

1. sorts its pairs by expert (global id ``e = x·L + l``: device x, local expert l), so the rows
   for device x, expert l form one contiguous slice, and shares its per-expert counts with
   the other devices of its expert group (an all-gather of an [X, L] int32 matrix);
2. sends the X·L slices with one ``ragged_all_to_all``, each to the offset where it belongs in
   the receiver's buffer: expert-major (local expert l's rows from senders 0..X-1, then l+1),
   so the receiver runs its L experts with one grouped matmul (``ragged_dot``) over group sizes
   it knows from the counts;
3. returns the results with the reverse ``ragged_all_to_all`` to the rows they came from,
   then unsorts and combines each token's K outputs with its gate weights.

Nothing is dropped: the receive buffer has room for the worst case (every pair of every device
of the group, R rows). ``ragged_all_to_all`` is a GPU/TPU collective; XLA:CPU cannot compile it
(jax 0.12: "HLO opcode ragged-all-to-all is not supported"), so on CPU the same exchange runs
through :func:`ragged_all_to_all_dense`, an exact emulation by a padded dense all-to-all (X·L·p
rows per device: for tests and small meshes, not for speed). Both take the same arguments with
the semantics of ``jax.lax.ragged_all_to_all``'s documentation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from aura.nn.moe.dispatch import pairs
from aura.nn.moe.experts import GroupedFn


def native_ragged_all_to_all() -> bool:
    """Whether this backend compiles ``jax.lax.ragged_all_to_all`` (GPU and TPU do; CPU not)."""
    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def ragged_all_to_all_dense(
    operand: jax.Array,
    output: jax.Array,
    input_offsets: jax.Array,
    send_sizes: jax.Array,
    output_offsets: jax.Array,
    recv_sizes: jax.Array,
    *,
    axis_name: str,
    axis_size: int,
) -> jax.Array:
    """``jax.lax.ragged_all_to_all`` emulated with a dense, padded ``all_to_all``.

    Every slice is padded to the operand's length M, exchanged as an [S, M, ...] block
    (S slices), and written at its receiver-chosen offset with a scatter that drops the padding.
    Same arguments and result as the collective (``axis_size`` is the size of ``axis_name``).
    """
    S, M = input_offsets.shape[0], operand.shape[0]
    r = jnp.arange(M, dtype=jnp.int32)
    rows = input_offsets[:, None] + r[None, :]  # [S, M]
    rows = jnp.where(r[None, :] < send_sizes[:, None], rows, M)  # M reads a zero row
    blocks = operand.at[rows].get(mode="fill", fill_value=0)  # [S, M, ...]
    per = S // axis_size  # slices per destination device

    def exchange(a):  # block j (slices j·per .. j·per + per - 1) goes to device j
        a = a.reshape(axis_size, per, *a.shape[1:])
        a = jax.lax.all_to_all(a, axis_name, 0, 0, tiled=True)
        return a.reshape(S, *a.shape[2:])

    blocks, offsets = exchange(blocks), exchange(output_offsets)  # slice i came from i // per
    dest = offsets[:, None] + r[None, :]  # [S, M]
    dest = jnp.where(r[None, :] < recv_sizes[:, None], dest, output.shape[0])  # drop padding
    flat = blocks.reshape(S * M, *blocks.shape[2:])  # [S, M, ...] -> [S·M, ...]
    return output.at[dest.reshape(-1)].set(flat, mode="drop")


def _exclusive_cumsum(a: jax.Array, axis: int = -1) -> jax.Array:
    return jnp.cumsum(a, axis=axis) - a


def ragged_expert_parallel_dispatch(
    x: jax.Array,
    indices: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    params: dict,
    run: GroupedFn,
    num_experts: int,
    mesh: jax.sharding.AbstractMesh,
    expert_axis: str,
    native: bool | None = None,
) -> jax.Array:
    """Dropless dispatch with the experts spread over ``mesh``'s ``expert_axis`` (size X > 1).

    Args:
      x: [N, D] tokens (N divisible by the mesh size; split over every mesh axis).
      indices, weights, valid: [N, K] routing (see ``RouterOutput``).
      params: the bank's parameters, leaves ``[E, ...]`` (frozen and cast already).
      run: pure ``run(params [L, ...], x [R, D] sorted by local expert, sizes [L]) -> [R, O]``
        (``grouped_parts``).
      num_experts: E (a multiple of X).
      mesh: the mesh; expert_axis: the mesh axis that splits the experts.
      native: use ``jax.lax.ragged_all_to_all`` (None: where the backend compiles it), else
        the dense emulation.

    Returns:
      y [N, O] (nothing is dropped).
    """
    E, X = num_experts, mesh.shape[expert_axis]
    L = E // X
    token_axes = tuple(mesh.axis_names)
    tok = P(token_axes)
    if native is None:
        native = native_ragged_all_to_all()
    if native:
        a2a = lambda *a: jax.lax.ragged_all_to_all(*a, axis_name=expert_axis)
    else:
        a2a = lambda *a: ragged_all_to_all_dense(*a, axis_name=expert_axis, axis_size=X)

    def local(x, indices, weights, valid, params):
        n, D = x.shape
        expert, token, w, ok = pairs(indices, weights, valid)  # [p] each, k-major
        p = expert.shape[0]
        key = jnp.where(ok, expert, E)  # invalid pairs sort last and are never sent
        order = jnp.argsort(key, stable=True)  # [p]
        xs = x[token[order]]  # [p, D], sorted by global expert
        counts = jnp.bincount(key, length=E + 1)[:E].astype(jnp.int32)  # [E] = [X·L]
        me = jax.lax.axis_index(expert_axis)
        every = jax.lax.all_gather(counts.reshape(X, L), expert_axis)  # [X(src), X(dst), L]
        # -- there: slice (dst j, expert l) -> device j, expert-major, senders in order.
        send_off = _exclusive_cumsum(counts)  # [E]: my rows for global expert e start here
        per_dst = jnp.sum(every, axis=0)  # [X(dst), L]: rows each device gets per expert
        expert_start = _exclusive_cumsum(per_dst, axis=1)  # [X(dst), L]
        before_me = jnp.sum(jnp.where(jnp.arange(X)[:, None, None] < me, every, 0), axis=0)
        land = (expert_start + before_me).reshape(E)  # where my slice (j, l) lands on j
        mine = every[:, me]  # [X(src), L]: what each sender sends me
        recv = mine.reshape(E)  # slice (src i, expert l)
        R = X * p
        x_recv = a2a(xs, jnp.zeros((R, D), xs.dtype), send_off, counts, land, recv)
        y_recv = run(params, x_recv, jnp.sum(mine, axis=0))  # [R, O], groups = my L experts
        # -- back: slice (src i, expert l) returns to device i, to the row it left from.
        here = (expert_start[me][None, :] + _exclusive_cumsum(mine, axis=0)).reshape(E)
        src_off = _exclusive_cumsum(every.reshape(X, E), axis=1)  # [X(src), E]
        back_to = src_off[:, me * L + jnp.arange(L)].reshape(E)  # on sender i, for (me, l)
        out = y_recv.shape[-1]
        y_sorted = a2a(y_recv, jnp.zeros((p, out), y_recv.dtype), here, recv, back_to, counts)
        y_pairs = jnp.zeros_like(y_sorted).at[order].set(y_sorted)  # unsort: [p, O]
        y_pairs = y_pairs * jnp.where(ok, w, 0.0).astype(y_pairs.dtype)[:, None]
        return y_pairs.reshape(-1, n, out).sum(axis=0)  # [K, n, O] -> [n, O]

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(tok, tok, tok, tok, P(expert_axis)),
        out_specs=tok,
        check_vma=True,
    )(x, indices, weights, valid, params)
