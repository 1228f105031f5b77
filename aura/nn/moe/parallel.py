"""Expert parallelism: tokens travel to the devices holding their experts (shard_map, all-to-all).

Shapes: n tokens on one device, K top-k, p = K·n (token, choice) pairs, X devices on the expert
axis, E experts, L = E / X experts per device, S slots per destination device, C slots per local
expert, R = X·S received rows, D input width, O output width.

When a device mesh is set (``jax.set_mesh``), the tokens are split over every mesh axis and the
bank's stacked ``[E, ...]`` parameters over the expert axis (size X; device x holds experts
``x·L .. x·L + L - 1``). Inside ``jax.shard_map`` each device

1. packs its pairs by destination device into an ``[X, S, D]`` buffer with
   ``S = ceil(p / X · capacity_factor)`` (pairs beyond S are dropped and counted),
2. exchanges the buffers with one all-to-all over the expert axis (with the local expert id of
   every row), so it now holds the rows that every device sent to its own experts,
3. runs its L experts on them with a capacity buffer of ``C = ceil(K·n·X / E · capacity_factor)``
   rows per expert (the single-device formula applied to the X devices' tokens),
4. sends the results back with a second all-to-all and combines each token's K outputs with its
   gate weights (the same k-major order as the single-device dispatch).

With X = 1 (data or fsdp parallelism only) there is no exchange: every device dispatches its
own tokens to its full copy of the experts, with the capacity buffer or, in ``"ragged"`` mode
(the GPU/TPU default), the dropless sort + ``ragged_dot`` path (:func:`local_ragged_dispatch`).
With X > 1, ``"ragged"`` mode sends the pairs with a ragged all-to-all instead, dropless
(``ragged_parallel.py``); ``"capacity"`` mode (and ``"auto"`` on every backend) uses the
capacity buffers described here. Without this the sharded program would compute the
dispatch of the whole global batch on every device (its capacity ranks are a cumulative count
over all tokens, which XLA's partitioner gathers rather than splits): the per-device FLOPs of
the MoE would not fall with the number of devices. Capacity is therefore per device (per expert
group of X devices), the usual GShard semantics.

Nothing else changes: the router runs outside under plain ``jit`` (its statistics are global),
and when no pair is dropped the result equals the single-device dispatch (tests hold it to 1e-5
in f32, gradients included). Both all-to-alls are differentiable (the transpose of an all-to-all
is the reverse all-to-all), so the backward pass routes the gradients the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from aura.nn.moe.dispatch import expert_capacity, gather_rows, pack, pairs, ragged_dispatch
from aura.nn.moe.experts import BatchedFn, GroupedFn


def dispatch_mesh(
    expert_axis: str | None, num_tokens: int, num_experts: int
) -> jax.sharding.AbstractMesh | None:
    """The context mesh when ``num_tokens`` tokens are dispatched per device, else None.

    That is when a mesh of more than one device is set (``jax.set_mesh``) and the tokens split
    evenly over all its devices; otherwise (no mesh, or e.g. the 1-token batch of an init) the
    caller uses the single-program dispatch, which is correct under any sharding.

    Raises:
      ValueError: the mesh's expert axis does not divide the number of experts.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return None
    X = expert_axis_size(mesh, expert_axis)
    if num_experts % X:
        raise ValueError(
            f"num_experts = {num_experts} must be a multiple of the mesh's {expert_axis!r} axis "
            f"size {X} (each device holds num_experts / {X} experts)"
        )
    if num_tokens % mesh.size:
        return None
    return mesh


def expert_axis_size(mesh: jax.sharding.AbstractMesh, expert_axis: str | None) -> int:
    """X: how many devices split the experts (1 without an expert axis)."""
    if expert_axis is None or expert_axis not in mesh.axis_names:
        return 1
    return mesh.shape[expert_axis]


def expert_parallel_dispatch(
    x: jax.Array,
    indices: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    params: dict,
    run: BatchedFn,
    num_experts: int,
    capacity_factor: float,
    mesh: jax.sharding.AbstractMesh,
    expert_axis: str | None = "expert",
) -> tuple[jax.Array, jax.Array]:
    """Capacity dispatch with the experts spread over ``mesh``'s ``expert_axis``.

    Args:
      x: [N, D] tokens (N divisible by the mesh size; split over every mesh axis).
      indices, weights, valid: [N, K] routing (see ``RouterOutput``).
      params: the bank's parameters, leaves ``[E, ...]`` (frozen and cast already).
      run: pure ``run(params [L, ...], x [L, C, D]) -> [L, C, O]`` (``batched_parts``).
      num_experts: E (a multiple of the expert axis size X).
      capacity_factor: sets S and C (see the module docstring).
      mesh: the mesh (``dispatch_mesh``).
      expert_axis: the mesh axis that splits the experts (None or absent: X = 1).

    Returns:
      (y [N, O], dropped_fraction []: pairs dropped at either buffer / valid pairs).
    """
    E, X = num_experts, expert_axis_size(mesh, expert_axis)
    L = E // X
    token_axes = tuple(mesh.axis_names)
    tok = P(token_axes)

    def exchange(a: jax.Array) -> jax.Array:  # [X, S, ...]: block j goes to / came from device j
        return a if X == 1 else jax.lax.all_to_all(a, expert_axis, 0, 0, tiled=True)

    def local(x, indices, weights, valid, params):
        n, D = x.shape
        expert, token, w, ok = pairs(indices, weights, valid)  # [p] each, k-major
        p = expert.shape[0]
        # 1. pack by destination device.
        S = expert_capacity(p, X, capacity_factor)
        send = pack(expert // L, ok, X, S)
        x_send = gather_rows(x, jnp.append(token, n)[send.pair_of_slot])  # [X·S, D]
        e_send = jnp.append(expert % L, L)[send.pair_of_slot]  # [X·S]; L = empty slot
        # 2. exchange: block j of what arrives came from device j.
        x_recv = exchange(x_send.reshape(X, S, D))
        e_recv = exchange(e_send.reshape(X, S))
        R = X * S
        e_recv = e_recv.reshape(R)  # [X, S] -> [R]
        # 3. local experts over a capacity buffer.
        C = min(R, expert_capacity(p * X, E, capacity_factor))
        here = pack(jnp.minimum(e_recv, L - 1), e_recv < L, L, C)
        x_buf = gather_rows(x_recv.reshape(R, D), here.pair_of_slot).reshape(L, C, D)
        y_buf = run(params, x_buf)  # [L, C, O]
        out = y_buf.shape[-1]
        y_rows = gather_rows(y_buf.reshape(L * C, out), here.slot)  # [R, O]; 0 where dropped
        # 4. results back to the devices the rows came from, then the gate-weighted combine.
        y_back = exchange(y_rows.reshape(X, S, out))
        y_pairs = gather_rows(y_back.reshape(R, out), send.slot)  # [p, O]
        y_pairs = y_pairs * jnp.where(send.kept, w, 0.0).astype(y_pairs.dtype)[:, None]
        y = y_pairs.reshape(-1, n, out).sum(axis=0)  # [K, n, O] -> [n, O]
        dropped = jnp.sum(ok & ~send.kept) + jnp.sum((e_recv < L) & ~here.kept)
        totals = jax.lax.psum(jnp.stack([dropped, jnp.sum(ok)]), token_axes)  # [2]
        return y, totals[0] / jnp.maximum(totals[1], 1)

    y, dropped = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(tok, tok, tok, tok, P(expert_axis) if X > 1 else P()),
        out_specs=(tok, P()),
        check_vma=True,
    )(x, indices, weights, valid, params)
    return y, dropped.astype(jnp.float32)


def local_ragged_dispatch(
    x: jax.Array,
    indices: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    params: dict,
    run: GroupedFn,
    num_experts: int,
    mesh: jax.sharding.AbstractMesh,
) -> jax.Array:
    """Dropless sort + grouped-matmul dispatch per device, every device holding all E experts.

    For a mesh whose expert axis is 1 (or absent): each device sorts its own pairs and runs
    ``ragged_dot`` on them (``dispatch.ragged_dispatch``); no exchange, nothing dropped.

    Args:
      x: [N, D] tokens (split over every mesh axis); indices, weights, valid: [N, K].
      params: the bank's parameters ``[E, ...]`` (frozen and cast); run: ``grouped_parts``'s fn.
      num_experts: E; mesh: the mesh.

    Returns:
      y [N, O].
    """
    tok = P(tuple(mesh.axis_names))

    def local(x, indices, weights, valid, params):
        grouped = lambda xs, gs: run(params, xs, gs)
        return ragged_dispatch(x, indices, weights, valid, grouped, num_experts)[0]

    return jax.shard_map(
        local, mesh=mesh, in_specs=(tok, tok, tok, tok, P()), out_specs=tok, check_vma=True
    )(x, indices, weights, valid, params)
