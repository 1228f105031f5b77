"""Modern Hopfield memory: a fixed-capacity pattern buffer with chunked top-k retrieval.

The memory holds at most ``capacity`` patterns ``[M, D]`` plus a stored ``count``; nothing in it
is trainable. Retrieval scores queries against stored patterns with ``beta * q . x`` and reads
out a softmax-weighted sum of patterns (Ramsauer et al., 2020, "Hopfield Networks is All You
Need"). Two read-outs are offered:

* ``mode="topk"``: keep the ``top_k`` best slots and renormalise the softmax over them.
* ``mode="full"``: softmax over every stored slot, normalised online (flash-attention-style
  running max and running sum), plus the top-k of those full-softmax weights for inspection.

Both walk the memory in chunks of ``chunk_size`` slots with ``jax.lax.scan``, so only ``[B, chunk]``
logits exist at a time and no ``[B, M, D]`` (nor even ``[B, M]``) array is ever built: a 100k x 384
memory is read with a few MiB of temporaries. When ``chunk_size`` does not divide ``M`` the last
window is shifted back to end at ``M`` and the slots it shares with the previous window are
masked, which gives the same result as padding without copying the buffer.

The core is pure-functional (``init_memory``, ``store``, ``retrieve`` over a ``HopfieldMemory``
pytree); ``ModernHopfield`` is a thin linen wrapper that keeps the buffer in the non-param
collection ``"memory"`` so that it never reaches the optimizer.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

_MODES = ("topk", "full")


class HopfieldMemory(NamedTuple):
    """Pattern buffer state (a pytree).

    Attributes:
      patterns: ``[M, D]`` stored patterns; slots ``>= count`` are empty (zeros) and never read.
      count: int32 scalar, number of filled slots (``0 <= count <= M``).
      dropped: int32 scalar, patterns that did not fit when ``store`` ran under ``jit`` (a traced
        count cannot be checked eagerly, so the overflow is recorded here instead of raised).
    """

    patterns: jax.Array
    count: jax.Array
    dropped: jax.Array


def init_memory(capacity: int, dim: int, dtype: Any = jnp.float32) -> HopfieldMemory:
    """Returns an empty memory with ``capacity`` slots of width ``dim``.

    Args:
      capacity: number of slots M (static, >= 1).
      dim: pattern width D (>= 1).
      dtype: storage dtype of the patterns (e.g. ``jnp.float32`` or ``jnp.bfloat16``).

    Raises:
      ValueError: if ``capacity`` or ``dim`` is smaller than 1.
    """
    if capacity < 1:
        raise ValueError(f"capacity={capacity} must be >= 1")
    if dim < 1:
        raise ValueError(f"dim={dim} must be >= 1")
    return HopfieldMemory(
        patterns=jnp.zeros((capacity, dim), dtype),
        count=jnp.zeros((), jnp.int32),
        dropped=jnp.zeros((), jnp.int32),
    )


def _concrete_int(x: jax.Array) -> int | None:
    """Returns ``int(x)`` when ``x`` is concrete, ``None`` when it is traced under a transform."""
    if isinstance(x, jax.core.Tracer):
        return None
    return int(x)


def store(memory: HopfieldMemory, patterns: jax.Array) -> HopfieldMemory:
    """Appends patterns at slot ``count`` and returns the updated memory.

    Eager calls (concrete ``count``) are checked before anything is written: storing past
    capacity raises. Under ``jit`` the count is traced and cannot be checked, so the write never
    wraps around: only the patterns that fit are written (scatter with ``mode='drop'``), ``count``
    saturates at capacity, and the number of patterns left out is added to ``memory.dropped``.

    Args:
      memory: the current memory.
      patterns: ``[N, D]`` patterns, or one ``[D]`` pattern; cast to the memory's dtype.

    Returns:
      The memory with ``count`` advanced by the number of patterns written.

    Raises:
      ValueError: on a width mismatch, a rank other than 1 or 2, or (eager) an overflow.
    """
    capacity, dim = memory.patterns.shape
    patterns = jnp.asarray(patterns)
    if patterns.ndim == 1:
        patterns = patterns[None, :]  # [D] -> [1, D]
    if patterns.ndim != 2:
        raise ValueError(f"patterns must be [N, D] or [D], got shape {patterns.shape}")
    if patterns.shape[1] != dim:
        raise ValueError(f"pattern width {patterns.shape[1]} != memory dim {dim}")
    n = patterns.shape[0]
    count = _concrete_int(memory.count)
    if count is not None and count + n > capacity:
        raise ValueError(
            f"storing {n} patterns at count={count} exceeds capacity={capacity} "
            f"(only {capacity - count} free slots)"
        )
    slots = memory.count + jnp.arange(n, dtype=jnp.int32)  # [N]; >= capacity means no room
    new = memory.patterns.at[slots].set(patterns.astype(memory.patterns.dtype), mode="drop")
    total = memory.count + n
    overflow = jnp.maximum(total - capacity, 0).astype(jnp.int32)
    return HopfieldMemory(
        patterns=new,
        count=jnp.minimum(total, capacity).astype(jnp.int32),
        dropped=(memory.dropped + overflow).astype(jnp.int32),
    )


def _merge_topk(
    vals: jax.Array, idx: jax.Array, new_vals: jax.Array, new_idx: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """Top-k of the union of two candidate sets; earlier candidates win ties (like lax.top_k)."""
    all_vals = jnp.concatenate([vals, new_vals], axis=1)  # [B, K + k_c]
    all_idx = jnp.concatenate([idx, new_idx], axis=1)  # [B, K + k_c]
    top_vals, pos = jax.lax.top_k(all_vals, k)  # [B, K]
    return top_vals, jnp.take_along_axis(all_idx, pos, axis=1)


def _validate(memory: HopfieldMemory, queries: jax.Array, beta, top_k, chunk_size, mode) -> float:
    capacity, dim = memory.patterns.shape
    if queries.ndim != 2:
        raise ValueError(f"queries must be [B, D], got shape {queries.shape}")
    if queries.shape[1] != dim:
        raise ValueError(f"query width {queries.shape[1]} != memory dim {dim}")
    beta = float(beta)  # static: a traced beta fails here with JAX's concretization error
    if not beta > 0.0 or not math.isfinite(beta):
        raise ValueError(f"beta={beta} must be finite and > 0")
    if not 1 <= top_k <= capacity:
        raise ValueError(f"top_k={top_k} must be in [1, capacity={capacity}]")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} must be one of {_MODES}")
    return beta


def retrieve(
    memory: HopfieldMemory,
    queries: jax.Array,
    *,
    beta: float,
    top_k: int,
    chunk_size: int = 4096,
    mode: str = "topk",
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Reads the memory with beta-scaled dot-product attention, chunked over slots.

    Logits are ``beta * q . x`` accumulated in f32; slots ``>= count`` are masked out.

    * ``mode="topk"``: ``weights = softmax`` over the ``top_k`` best logits (renormalised over
      them) and ``retrieved = sum_k weights_k * patterns[indices_k]``.
    * ``mode="full"``: ``retrieved`` is the softmax over every stored slot (online max/sum);
      ``weights`` are the ``top_k`` largest full-softmax weights (they need not sum to 1).

    When fewer than ``top_k`` slots are filled, the extra entries have ``indices == -1``,
    ``weights == 0`` and ``logits == -inf``; an empty memory retrieves zeros.

    Args:
      memory: the memory to read.
      queries: ``[B, D]`` queries (any float dtype; bf16 is fine).
      beta: inverse temperature, a static Python float > 0.
      top_k: number of slots returned (static, ``1 <= top_k <= capacity``).
      chunk_size: slots scored per scan step; clipped to capacity. Only ``[B, chunk]`` logits
        are live at a time.
      mode: ``"topk"`` or ``"full"``.
      precision: matmul precision passed to the einsums (``None``: backend default).

    Returns:
      ``(retrieved [B, D], weights [B, K] f32, indices [B, K] int32, logits [B, K] f32)``, sorted
      by decreasing logit; ``retrieved`` has the promoted dtype of queries and patterns.

    Raises:
      ValueError: on a width mismatch or a bad ``beta``, ``top_k``, ``chunk_size`` or ``mode``.
    """
    queries = jnp.asarray(queries)
    beta = _validate(memory, queries, beta, top_k, chunk_size, mode)
    out_dtype = jnp.result_type(queries.dtype, memory.patterns.dtype)
    scan = _ChunkScan(memory, queries.astype(out_dtype), beta, top_k, chunk_size, precision)
    if mode == "topk":
        return scan.topk(out_dtype)
    return scan.full(out_dtype)


_NEG_INF = float("-inf")


class _ChunkScan:
    """The chunked scan over memory slots shared by both retrieval modes (only ``[B, chunk]``
    logits are live at a time)."""

    def __init__(self, memory, q, beta, top_k, chunk_size, precision):
        self.memory, self.q, self.beta, self.top_k, self.precision = (
            memory, q, beta, top_k, precision,
        )  # fmt: skip
        self.capacity, self.dim = memory.patterns.shape
        self.chunk = min(chunk_size, self.capacity)
        self.k_chunk = min(top_k, self.chunk)
        self.steps = jnp.arange(-(-self.capacity // self.chunk), dtype=jnp.int32)
        batch = q.shape[0]
        self.init_topk = (
            jnp.full((batch, top_k), _NEG_INF, jnp.float32),
            jnp.full((batch, top_k), -1, jnp.int32),
        )

    def logits(self, i):
        """Chunk ``i``: its patterns [chunk, D], slot ids [chunk] and masked logits [B, chunk]."""
        m, chunk = self.memory, self.chunk
        # The last window is shifted back to end at M; slots below i * chunk were already seen.
        start = jnp.minimum(i * chunk, self.capacity - chunk)
        x = jax.lax.dynamic_slice_in_dim(m.patterns, start, chunk, axis=0)  # [chunk, D]
        slot = start + jnp.arange(chunk, dtype=jnp.int32)  # [chunk]
        valid = (slot >= i * chunk) & (slot < m.count)  # [chunk]
        # [B, D] x [chunk, D] -> [B, chunk], accumulated in f32
        s = jnp.einsum(
            "bd,md->bm", self.q, x.astype(self.q.dtype), preferred_element_type=jnp.float32,
            precision=self.precision,
        )  # fmt: skip
        return x, slot, jnp.where(valid[None, :], self.beta * s, _NEG_INF)

    def merge(self, vals, idx, slot, s):
        c_vals, c_pos = jax.lax.top_k(s, self.k_chunk)  # [B, k_c]
        return _merge_topk(vals, idx, c_vals, slot[c_pos], self.top_k)

    def topk(self, out_dtype):
        def step(carry, i):
            _, slot, s = self.logits(i)
            return self.merge(*carry, slot, s), None

        (vals, idx), _ = jax.lax.scan(step, self.init_topk, self.steps)
        ok = vals > _NEG_INF  # [B, K]
        top = jnp.max(vals, axis=1, keepdims=True)  # [B, 1]
        top = jnp.where(top > _NEG_INF, top, 0.0)
        e = jnp.where(ok, jnp.exp(vals - top), 0.0)
        denom = jnp.sum(e, axis=1, keepdims=True)
        weights = e / jnp.where(denom > 0, denom, 1.0)
        idx = jnp.where(ok, idx, -1)
        gathered = self.memory.patterns[jnp.maximum(idx, 0)].astype(jnp.float32)  # [B, K, D]
        # [B, K] x [B, K, D] -> [B, D]
        retrieved = jnp.einsum("bk,bkd->bd", weights, gathered, precision=self.precision)
        return retrieved.astype(out_dtype), weights, idx, vals

    def full(self, out_dtype):
        def step(carry, i):
            run_max, run_sum, acc, vals, idx = carry
            x, slot, s = self.logits(i)
            new_max = jnp.maximum(run_max, jnp.max(s, axis=1))  # [B]
            safe_max = jnp.where(new_max > _NEG_INF, new_max, 0.0)  # avoid -inf - -inf
            scale = jnp.exp(run_max - safe_max)  # [B]; 0 while nothing was seen
            p = jnp.exp(s - safe_max[:, None])  # [B, chunk]; masked slots -> 0
            run_sum = run_sum * scale + jnp.sum(p, axis=1)
            # [B, chunk] x [chunk, D] -> [B, D]
            acc = acc * scale[:, None] + jnp.einsum(
                "bm,md->bd", p, x.astype(jnp.float32), precision=self.precision
            )
            return (new_max, run_sum, acc, *self.merge(vals, idx, slot, s)), None

        batch = self.q.shape[0]
        init = (
            jnp.full((batch,), _NEG_INF, jnp.float32),
            jnp.zeros((batch,), jnp.float32),
            jnp.zeros((batch, self.dim), jnp.float32),
            *self.init_topk,
        )
        (run_max, run_sum, acc, vals, idx), _ = jax.lax.scan(step, init, self.steps)
        ok = vals > _NEG_INF  # [B, K]
        denom = jnp.where(run_sum > 0, run_sum, 1.0)  # [B]
        safe_max = jnp.where(run_max > _NEG_INF, run_max, 0.0)  # [B]
        weights = jnp.where(ok, jnp.exp(vals - safe_max[:, None]), 0.0) / denom[:, None]
        retrieved = acc / denom[:, None]
        return retrieved.astype(out_dtype), weights, jnp.where(ok, idx, -1), vals


class ModernHopfield(nn.Module):
    """Linen wrapper around the pure memory; the buffer lives in the ``"memory"`` collection.

    The module has no ``"params"``: ``patterns``, ``count`` and ``dropped`` are variables in
    ``"memory"``, which an optimizer over ``variables["params"]`` never sees. Store with
    ``mutable=["memory"]``; read with a plain ``apply``::

        hop = ModernHopfield(capacity=1024, dim=64, beta=8.0, top_k=4)
        variables = hop.init(jax.random.key(0), jnp.zeros((1, 64)))  # {"memory": {...}}
        _, variables = hop.apply(variables, keys, method=ModernHopfield.store, mutable=["memory"])
        retrieved, weights, indices, logits = hop.apply(variables, queries)

    Under ``jit`` an overflowing store writes what fits and counts the rest in
    ``variables["memory"]["dropped"]`` (see ``store``).

    Attributes:
      capacity: number of slots M.
      dim: pattern width D.
      beta: inverse temperature (> 0).
      top_k: slots returned per query.
      chunk_size: slots scored per scan step.
      mode: ``"topk"`` or ``"full"`` (see ``retrieve``).
      dtype: storage dtype of the patterns.
    """

    capacity: int
    dim: int
    beta: float = 1.0
    top_k: int = 1
    chunk_size: int = 4096
    mode: str = "topk"
    dtype: Any = jnp.float32

    def setup(self) -> None:
        # Initialisers run only when the collection is missing (init, or a first mutable store).
        empty = lambda: init_memory(self.capacity, self.dim, self.dtype)
        self.patterns = self.variable("memory", "patterns", lambda: empty().patterns)
        self.count = self.variable("memory", "count", lambda: empty().count)
        self.dropped = self.variable("memory", "dropped", lambda: empty().dropped)

    def memory(self) -> HopfieldMemory:
        """Returns the current buffer as a ``HopfieldMemory``."""
        return HopfieldMemory(self.patterns.value, self.count.value, self.dropped.value)

    def store(self, patterns: jax.Array) -> HopfieldMemory:
        """Appends ``[N, D]`` (or ``[D]``) patterns; call with ``mutable=["memory"]``."""
        new = store(self.memory(), patterns)
        self.patterns.value, self.count.value, self.dropped.value = new
        return new

    def __call__(self, queries: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Retrieves for ``[B, D]`` queries; returns ``(retrieved, weights, indices, logits)``."""
        return retrieve(
            self.memory(),
            queries,
            beta=self.beta,
            top_k=self.top_k,
            chunk_size=self.chunk_size,
            mode=self.mode,
        )
