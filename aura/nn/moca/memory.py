"""A per-sequence memory bank of M key/value slots with sparse, gated NTM-style writes.

Shapes: B batch, T tokens, D token width, M slots, R selected slots per token (top-k_m),
A key width, U value width.

The memory is *state*, not parameters: each sequence starts from learned initial keys and
values (``initial_state``) and carries its own copy through the sequence (``lax.scan``), so
what one token writes, later tokens of the same sequence read, and sequences never share it.
At token t, with the router's selection (R slot indices and weights w, exactly zero on the
slots it did not choose):

* read (before the write, so a token reads only the past): attention over the selected slots,
  ``alpha = softmax_r(q_t · K_r / sqrt(A) + log w_r)`` (an unselected slot has weight 0), and
  ``read_t = sum_r alpha_r V_r``;
* write: a write gate ``g_t = sigmoid(.)`` decides how much the token writes at all; with
  ``omega_r = g_t · w_r``, every selected slot is erased and added to, as in the Neural Turing
  Machine (Graves et al., 2014): ``K_r <- K_r * (1 - omega_r e^K_t) + omega_r a^K_t`` and the
  same for V with its own erase vector ``e^V_t`` in (0, 1) and add vector ``a^V_t``, all
  computed from the token. Unselected slots are untouched.

Only the R selected slots are gathered, updated and scattered back per token, so the cost of a
step grows with R, not M. The carry (:class:`MemoryState`) goes in and out of every call, so a
sequence can be processed in one call, in chunks, or token by token (streaming) with the same
result. ``reference_memory`` is the dense, unoptimised form the tests hold the scan to.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aura.nn.moca.routing import Selection

NEG_INF = -1e30


class MemoryState(NamedTuple):
    """keys f32 [B, M, A] and values f32 [B, M, U] of every sequence in the batch."""

    keys: jax.Array
    values: jax.Array


class MemoryOps(NamedTuple):
    """What each token reads and writes with (all [B, T, ...]): computed in parallel."""

    query: jax.Array  # [B, T, A]
    add_key: jax.Array  # [B, T, A]
    add_value: jax.Array  # [B, T, U]
    erase_key: jax.Array  # [B, T, A] in (0, 1)
    erase_value: jax.Array  # [B, T, U] in (0, 1)
    gate: jax.Array  # [B, T] in (0, 1)


def _masked_softmax(scores: jax.Array, keep: jax.Array) -> jax.Array:
    scores = jnp.where(keep, scores, NEG_INF)
    e = jnp.where(keep, jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True)), 0.0)
    return e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), 1e-30)


def read_scores(query, keys, weights):
    """``q·K / sqrt(A) + log w`` [B, R] for keys [B, R, A], query [B, A], weights [B, R]."""
    s = jnp.einsum("bra,ba->br", keys, query) / math.sqrt(query.shape[-1])  # [B, R]
    return s + jnp.log(jnp.maximum(weights, 1e-30))


def _gather(rows: jax.Array, flat: jax.Array, B: int) -> jax.Array:
    return rows[flat].reshape(B, -1, rows.shape[-1])  # [B·R, X] -> [B, R, X]


def _step(state: MemoryState, inp):
    """One token for the whole batch: read the read slots, then write the write slots."""
    ri, rw, ra, wi, ww, wa, q, ak, av, ek, ev, g = inp  # ri/rw/ra, wi/ww/wa [B, R]; q [B, A]
    keys, values = state
    B, M, A = keys.shape
    U = values.shape[-1]
    # Flat row indices b·M + slot: a 1-D gather/scatter is far cheaper on CPU than a 2-D one.
    base = jnp.arange(B, dtype=ri.dtype)[:, None] * M  # [B, 1]
    k_rows, v_rows = keys.reshape(B * M, A), values.reshape(B * M, U)
    r_flat = (base + ri).reshape(-1)  # [B·R]
    alpha = _masked_softmax(read_scores(q, _gather(k_rows, r_flat, B), rw), ra)  # [B, R]
    read = jnp.einsum("br,bru->bu", alpha, _gather(v_rows, r_flat, B))  # [B, U]
    w_flat = (base + wi).reshape(-1)  # [B·R]
    k_sel, v_sel = _gather(k_rows, w_flat, B), _gather(v_rows, w_flat, B)  # [B, R, A|U]
    om = (g[:, None] * jnp.where(wa, ww, 0.0))[..., None]  # [B, R, 1]
    k_new = k_sel * (1.0 - om * ek[:, None]) + om * ak[:, None]  # [B, R, A]
    v_new = v_sel * (1.0 - om * ev[:, None]) + om * av[:, None]  # [B, R, U]
    # Top-k indices within a row are distinct, so the scatter has unique indices.
    k_rows = k_rows.at[w_flat].set(k_new.reshape(-1, A), unique_indices=True)  # [B·M, A]
    v_rows = v_rows.at[w_flat].set(v_new.reshape(-1, U), unique_indices=True)  # [B·M, U]
    return MemoryState(k_rows.reshape(B, M, A), v_rows.reshape(B, M, U)), read


def scan_memory(state: MemoryState, read: Selection, write: Selection, ops: MemoryOps):
    """Runs the read/write recurrence over T tokens with ``lax.scan``.

    Args:
      state: the carry (keys [B, M, A], values [B, M, U]).
      read: read-slot selection with [B, T, R] indices/weights/active.
      write: write-slot selection, the same shapes.
      ops: per-token read/write vectors.

    Returns:
      (the state after the last token, reads [B, T, U]).
    """
    xs = (read.indices, read.weights, read.active)
    xs += (write.indices, write.weights, write.active, *ops)
    xs = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), xs)  # [B, T, ...] -> [T, B, ...]
    state, reads = jax.lax.scan(_step, state, xs)
    return state, jnp.swapaxes(reads, 0, 1)  # [T, B, U] -> [B, T, U]


def reference_memory(state: MemoryState, read_w: jax.Array, write_w: jax.Array, ops: MemoryOps):
    """Dense, token-by-token Python loop over all M slots (the test oracle for ``scan_memory``).

    ``read_w`` and ``write_w`` [B, T, M] hold the dense read and write weights, exactly zero on
    the slots a token does not touch.
    """
    keys, values = state
    reads = []
    A = keys.shape[-1]
    for t in range(read_w.shape[1]):
        r, w = read_w[:, t], write_w[:, t]  # [B, M]
        s = jnp.einsum("bma,ba->bm", keys, ops.query[:, t]) / math.sqrt(A)  # [B, M]
        alpha = _masked_softmax(s + jnp.log(jnp.maximum(r, 1e-30)), r > 0)  # [B, M]
        reads.append(jnp.einsum("bm,bmu->bu", alpha, values))  # [B, U]
        om = (ops.gate[:, t, None] * w)[..., None]  # [B, M, 1]
        keys = keys * (1 - om * ops.erase_key[:, t, None]) + om * ops.add_key[:, t, None]
        values = values * (1 - om * ops.erase_value[:, t, None]) + om * ops.add_value[:, t, None]
    return MemoryState(keys, values), jnp.stack(reads, axis=1)  # [B, T, U]


class SlotMemory(nn.Module):
    """Learned initial slots plus the projections that turn tokens into reads and writes.

    With position codes (``pos``), the last ``position_dim`` key and query dimensions are
    projections of the code: the key's with ``W_p``, the query's with ``W_p + Delta`` where
    ``Delta`` starts at zero. At init a token therefore reads what was written at the same
    count (``code · W_p W_p^T · code'`` peaks at equal counts), the prior that makes the
    memory addressable by position from the first step; ``Delta`` lets it learn shifted reads
    (read the token written d counts ago).

    Attributes:
      num_slots: M.
      key_dim: A (position dimensions included).
      value_dim: U.
      position_width: width P of the position codes passed to every call (0: none).
      position_dim: key/query dimensions given to the position code.
      position_scale: init std of ``W_p`` (sets how strongly positions match at init).
    """

    num_slots: int = 64
    key_dim: int = 64
    value_dim: int = 128
    position_width: int = 0
    position_dim: int = 32
    position_scale: float = 0.5

    def setup(self):
        if min(self.num_slots, self.key_dim, self.value_dim) < 1:
            raise ValueError(
                f"memory sizes must be >= 1: num_slots={self.num_slots}, "
                f"key_dim={self.key_dim}, value_dim={self.value_dim}"
            )
        if not 0 <= self.position_dim < self.key_dim:
            raise ValueError(
                f"memory position_dim = {self.position_dim} must be in [0, key_dim={self.key_dim})"
            )
        M, A, U = self.num_slots, self.key_dim, self.value_dim
        Ap = self.position_dim if self.position_width else 0
        self.content_dim = A - Ap
        if Ap:
            shape = (self.position_width, Ap)
            init = nn.initializers.normal(self.position_scale)
            self.position_key = self.param("position_key", init, shape)
            self.position_query_delta = self.param(
                "position_query_delta", nn.initializers.zeros, shape
            )
        self.init_keys = self.param("init_keys", nn.initializers.normal(1.0), (M, A))
        self.init_values = self.param("init_values", nn.initializers.normal(0.1), (M, U))
        self.query = nn.Dense(self.content_dim, name="query")
        self.add = nn.Dense(self.content_dim + U, name="add")
        # Erase gates start half open (bias 0); the write gate starts open (bias 2).
        self.erase = nn.Dense(A + U, name="erase")
        self.gate = nn.Dense(1, bias_init=nn.initializers.constant(2.0), name="gate")

    def initial_state(self, batch_size: int) -> MemoryState:
        """Every sequence starts from the learned slots: ([B, M, A], [B, M, U])."""
        keys = jnp.broadcast_to(self.init_keys, (batch_size, *self.init_keys.shape))
        values = jnp.broadcast_to(self.init_values, (batch_size, *self.init_values.shape))
        return MemoryState(keys, values)

    def _position(self, pos: jax.Array) -> tuple[jax.Array, jax.Array]:
        w = self.position_key
        key = jnp.einsum("btp,pa->bta", pos, w)  # [B, T, Ap]
        return key, jnp.einsum("btp,pa->bta", pos, w + self.position_query_delta)  # [B, T, Ap]

    def ops(self, h: jax.Array, pos: jax.Array | None = None) -> MemoryOps:
        """Per-token queries, add/erase vectors and write gates from features h [B, T, D].

        Args:
          h: token features [B, T, D].
          pos: position codes [B, T, P] (required when ``position_width > 0``).
        """
        Ac = self.content_dim
        add = self.add(h)  # [B, T, Ac+U]
        erase = jax.nn.sigmoid(self.erase(h))  # [B, T, A+U]
        gate = jax.nn.sigmoid(self.gate(h))[..., 0]  # [B, T]
        q, ak, av = self.query(h), add[..., :Ac], add[..., Ac:]  # [B, T, Ac], ..., [B, T, U]
        if self.position_width and self.position_dim:
            if pos is None or pos.shape[-1] != self.position_width:
                raise ValueError(
                    f"SlotMemory needs position codes of width {self.position_width} (pos)"
                )
            pk, pq = self._position(pos)
            q, ak = jnp.concatenate([q, pq], -1), jnp.concatenate([ak, pk], -1)  # [B, T, A]
        A = self.key_dim
        return MemoryOps(q, ak, av, erase[..., :A], erase[..., A:], gate)

    def __call__(
        self,
        h: jax.Array,
        read: Selection,
        write: Selection,
        state: MemoryState,
        pos: jax.Array | None = None,
    ) -> tuple[jax.Array, MemoryState]:
        """For every token of h [B, T, D]: read its read slots, then write its write slots.

        Returns:
          (reads [B, T, U], the state after the last token).
        """
        state, reads = scan_memory(state, read, write, self.ops(h, pos))
        return reads, state
