"""A modern Hopfield memory sharded over a device mesh: patterns split over devices, per-device
top-k, merged.

Shapes: B queries, D width, M memory slots (all devices), m = M / n slots per device, n devices
that split the memory, K top-k.

:func:`sharded_retrieve` reads a memory whose ``patterns [M, D]`` are split along M over the
mesh axes ``axes`` (device i holds slots ``i·m .. i·m + m - 1``, the layout of a
``NamedSharding(mesh, P(axes, None))``; :func:`shard_memory` puts a memory there). Inside
``jax.shard_map`` each device runs the chunked scan of :func:`aura.nn.hopfield.retrieve`
(:class:`~aura.nn.hopfield.ChunkScan`) over its own slots; the per-device partial results are
all-gathered and merged into what one device computes:

* ``mode="topk"``: each device's K best logits, slots and patterns (``[n, B, K(, D)]``; never
  ``[B, M]``), the top-k of their union (ties go to the lower slot, as in the single-device scan)
  and the same read-out (:func:`~aura.nn.hopfield.topk_readout`);
* ``mode="full"``: each device's online-softmax state (running max, sum, weighted pattern sum),
  combined by log-sum-exp, plus the merged top-k (:func:`~aura.nn.hopfield.full_readout`).

Without a mesh, or with one device on ``axes``, it is plain ``retrieve``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from aura.nn.hopfield import (
    ChunkScan,
    FullPartial,
    HopfieldMemory,
    full_readout,
    retrieve,
    topk_readout,
    validate_retrieval,
)

__all__ = ["memory_axes", "shard_memory", "sharded_retrieve"]

_NEG_INF = float("-inf")


def memory_axes(mesh, axes: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The mesh axes that split the memory (default: every axis of ``mesh``)."""
    if axes is None:
        return tuple(mesh.axis_names)
    out = (axes,) if isinstance(axes, str) else tuple(axes)
    unknown = [a for a in out if a not in mesh.axis_names]
    if unknown:
        raise ValueError(f"memory axes {unknown} are not mesh axes {tuple(mesh.axis_names)}")
    return out


def shard_memory(
    memory: HopfieldMemory, mesh: jax.sharding.Mesh, axes: str | Sequence[str] | None = None
) -> HopfieldMemory:
    """Places ``memory`` with its slots split over ``axes`` of ``mesh`` (count replicated).

    Raises:
      ValueError: the devices on ``axes`` do not divide the capacity.
    """
    axes = memory_axes(mesh, axes)
    n = math.prod(mesh.shape[a] for a in axes)
    if memory.patterns.shape[0] % n:
        raise ValueError(
            f"memory capacity {memory.patterns.shape[0]} must be a multiple of the {n} devices "
            f"on mesh axes {axes} (round the capacity up)"
        )
    rep = NamedSharding(mesh, P())
    return HopfieldMemory(
        jax.device_put(memory.patterns, NamedSharding(mesh, P(axes, None))),
        jax.device_put(memory.count, rep),
        jax.device_put(memory.dropped, rep),
    )


def _merge_topk(vals, idx, extra, k):
    """Top-k over the gathered candidates ``[B, n·K]`` (earlier = lower slot wins ties)."""
    top_vals, pos = jax.lax.top_k(vals, k)  # [B, K]
    picked = [jnp.take_along_axis(idx, pos, axis=1)]
    picked += [jnp.take_along_axis(e, pos.reshape(*pos.shape, 1), axis=1) for e in extra]
    return top_vals, *picked


def _local_retrieve(axes, m, beta, top_k, chunk_size, mode, precision, out_dtype):
    """The per-device body of :func:`sharded_retrieve` (``m`` slots per device)."""
    gather = lambda x: jax.lax.all_gather(x, axes, axis=1, tiled=True)  # [B, K..] -> [B, n·K..]

    def local(patterns, count, q):
        offset = jax.lax.axis_index(axes) * m
        local_count = jnp.clip(count - offset, 0, m).astype(jnp.int32)
        shard = HopfieldMemory(patterns, local_count, jnp.zeros((), jnp.int32))
        scan = ChunkScan(shard, q, beta, top_k, chunk_size, precision)
        if mode == "topk":
            vals, idx = scan.topk_partial()
            rows = patterns[jnp.maximum(idx, 0)]  # [B, K, D]
            idx = jnp.where(vals > _NEG_INF, idx + offset, -1)
            vals, idx, rows = _merge_topk(gather(vals), gather(idx), [gather(rows)], top_k)
            return topk_readout(vals, idx, rows, out_dtype, precision)
        part = scan.full_partial()
        idx = jnp.where(part.vals > _NEG_INF, part.idx + offset, -1)
        vals, idx = _merge_topk(gather(part.vals), gather(idx), [], top_k)
        all_max = jax.lax.all_gather(part.run_max, axes)  # [n, B]
        run_max = jnp.max(all_max, axis=0)  # [B]
        safe = jnp.where(run_max > _NEG_INF, run_max, 0.0)
        scale = jnp.exp(all_max - safe)  # [n, B]; 0 for shards with nothing stored
        run_sum = jnp.sum(scale * jax.lax.all_gather(part.run_sum, axes), axis=0)  # [B]
        # [n, B] x [n, B, D] -> [B, D]
        acc = jnp.einsum("nb,nbd->bd", scale, jax.lax.all_gather(part.acc, axes))
        return full_readout(FullPartial(run_max, run_sum, acc, vals, idx), out_dtype)

    return local


def sharded_retrieve(
    memory: HopfieldMemory,
    queries: jax.Array,
    *,
    beta: float,
    top_k: int,
    chunk_size: int = 4096,
    mode: str = "topk",
    axes: str | Sequence[str] | None = None,
    mesh=None,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """:func:`aura.nn.hopfield.retrieve` over a memory whose slots are split over devices.

    Args:
      memory: the memory; ``patterns`` split along M over ``axes`` (or placed anywhere: the
        ``shard_map`` moves it there), ``count`` the global number of filled slots.
      queries: ``[B, D]`` queries (every device scores all of them against its slots).
      beta, top_k, chunk_size, mode, precision: as in ``retrieve`` (``chunk_size`` applies to
        each device's slots).
      axes: mesh axes that split the memory (default: all axes of the mesh).
      mesh: the mesh (default: the one set with ``jax.set_mesh``).

    Returns:
      ``(retrieved [B, D], weights [B, K], indices [B, K], logits [B, K])`` with global slot
      indices, equal to one device's ``retrieve`` (replicated on every device).

    Raises:
      ValueError: bad arguments (as ``retrieve``), unknown axes, or a capacity that the devices
        on ``axes`` do not divide.
    """
    queries = jnp.asarray(queries)
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if mesh is None or mesh.empty:
        return retrieve(memory, queries, beta=beta, top_k=top_k, chunk_size=chunk_size,
                        mode=mode, precision=precision)  # fmt: skip
    axes = memory_axes(mesh, axes)
    n = math.prod(mesh.shape[a] for a in axes)
    if n == 1:
        return retrieve(memory, queries, beta=beta, top_k=top_k, chunk_size=chunk_size,
                        mode=mode, precision=precision)  # fmt: skip
    beta = validate_retrieval(memory, queries, beta, top_k, chunk_size, mode)
    capacity = memory.patterns.shape[0]
    if capacity % n:
        raise ValueError(
            f"memory capacity {capacity} must be a multiple of the {n} devices on mesh axes "
            f"{axes} (round the capacity up)"
        )
    m = capacity // n
    out_dtype = jnp.result_type(queries.dtype, memory.patterns.dtype)
    local = _local_retrieve(axes, m, beta, top_k, chunk_size, mode, precision, out_dtype)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axes, None), P(), P()),
        out_specs=(P(), P(), P(), P()),
        # The scan's carries start device-invariant and become device-varying (the local slots);
        # the outputs are all-gathered and merged, so they are replicated by construction.
        check_vma=False,
    )(memory.patterns, memory.count, queries.astype(out_dtype))
