"""Contextual position counters: a small causal token-mixing layer with an explicit carry.

Shapes: B batch, T tokens, D width, C counters, P code width per counter (the period).

Each counter follows a gated affine recurrence driven by the tokens,

    c_t = (1 - r_t) · c_{t-1} + r_t · o + u_t,   r_t = sigmoid(W_r x_t), u_t = sigmoid(W_u x_t),

an increment gate u (count the tokens of a learned kind, as Contextual Position Encoding,
CoPE, Golovneva et al., 2024) and a reset gate r that sends the counter back to its origin o.
Gates start at "count every token, never reset", so the counters begin as clean absolute
positions; one token type learning ``r = 1`` (a delimiter) is enough to give every later token
its index within the new segment, so a memory key written with a content token's index can be
found by the query of the answer token with the same index.

Counts are read out through a fixed sinusoidal code of all harmonics of a period ``period``:
``[cos(2π f c / period), sin(2π f c / period)]`` for ``f = 1 .. period/2``. The dot product of
two codes depends only on the difference of the counts (shift-equivariant) and peaks sharply
at equal counts (modulo the period); shifting by a constant is a fixed linear map of the code.
That is what lets a model trained on short sequences address positions it never saw: training
starts each sequence at a random origin (randomised positions, Ruoss et al., 2023), so every
code value is seen, and only relative structure has to be learned.

The carry (:class:`CounterState`: counts and origin ``[B, C]``) makes the layer streamable:
``__call__`` runs a chunk with an associative scan (parallel over T), and chunk-by-chunk or
token-by-token calls that pass the carry along give the same codes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class CounterState(NamedTuple):
    """counts f32 [B, C] (after the last token seen) and origin f32 [B, C] (the reset value)."""

    counts: jax.Array
    origin: jax.Array


def _compose(first, second):
    """Composes affine maps ``c -> a·c + b`` (first, then second), elementwise."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def harmonic_code(counts: jax.Array, period: int) -> jax.Array:
    """Sinusoidal code of ``counts`` [...] with every harmonic of ``period``: [..., period].

    Args:
      counts: real-valued counts (any shape).
      period: the code repeats with this period; even, >= 2.

    Returns:
      ``[..., 2·F]`` with F = period // 2: ``cos(2π f c / period)`` then ``sin(...)``,
      scaled by ``1/sqrt(F)`` so two equal counts have a dot product of 1.
    """
    if period < 2 or period % 2:
        raise ValueError(f"position period = {period} must be an even number >= 2")
    F = period // 2
    freqs = 2.0 * math.pi * jnp.arange(1, F + 1, dtype=jnp.float32) / period  # [F]
    angle = counts[..., None].astype(jnp.float32) * freqs  # [..., F]
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1) / math.sqrt(F)


def location_addresses(num_counters: int, period: int, num_slots: int) -> jax.Array:
    """[C·period, M]: slot m's address is the code of count ``m · period / M`` on every counter.

    ``code(c) @ location_addresses(...)`` (C counters at the same count c) is a kernel over the
    slots that peaks at the slot whose count is nearest c modulo the period, the location-based
    addressing of the Neural Turing Machine (consecutive counts -> consecutive slots).
    """
    counts = jnp.arange(num_slots, dtype=jnp.float32) * (period / num_slots)  # [M]
    code = harmonic_code(counts, period)  # [M, period]
    return jnp.tile(code.T, (num_counters, 1)) / num_counters  # [C·period, M]


class ContextualCounters(nn.Module):
    """C gated token counters (reset and increment gates) read out as harmonic codes.

    Attributes:
      num_counters: C.
      period: code period (counts are addressable modulo it); even.
      gate_scale: gate logits are ``gate_scale · (W x + b)``: a larger scale lets a gate
        travel from "never" to "always" in fewer optimizer steps.
    """

    num_counters: int = 4
    period: int = 64
    gate_scale: float = 4.0

    def setup(self):
        if self.num_counters < 1:
            raise ValueError(f"num_counters = {self.num_counters} must be >= 1")
        harmonic_code(jnp.zeros(()), self.period)  # validates the period
        init = nn.initializers.normal(0.1 / self.gate_scale)
        C, b0 = self.num_counters, 10.0 / self.gate_scale
        # Logit -10: reset probability 5e-5; +10: increment 1 - 5e-5 ("count every token").
        # Far from 1/2 on purpose: a soft gate drifts the count by ~r·t²/2, which would move
        # long sequences off their positions.
        self.reset = nn.Dense(C, kernel_init=init, bias_init=nn.initializers.constant(-b0))
        self.increment = nn.Dense(C, kernel_init=init, bias_init=nn.initializers.constant(b0))

    @property
    def code_width(self) -> int:
        """Width of the code of all counters, C·period."""
        return self.num_counters * self.period

    def initial_state(self, batch_size: int, offsets: jax.Array | None = None) -> CounterState:
        """Counters at their origin: ``offsets`` [B] (default 0) for every counter."""
        shape = (batch_size, self.num_counters)
        origin = jnp.zeros(shape, jnp.float32)
        if offsets is not None:
            origin = origin + jnp.asarray(offsets, jnp.float32).reshape(batch_size, 1)
        return CounterState(origin, origin)

    def gates(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-token (reset, increment) gates in (0, 1): [..., D] -> 2 x [..., C]."""
        x, k = x.astype(jnp.float32), self.gate_scale
        return jax.nn.sigmoid(k * self.reset(x)), jax.nn.sigmoid(k * self.increment(x))

    def __call__(
        self, x: jax.Array, state: CounterState, separators: jax.Array | None = None
    ) -> tuple[jax.Array, CounterState]:
        """Counts and codes for a chunk of tokens.

        Args:
          x: token features [B, T, D].
          state: the carry before the chunk.
          separators: optional bool [B, T]: tokens that end a segment (data structure such as
            a delimiter, like the decoder start of an encoder-decoder); every counter returns
            to its origin there, so the next segment counts from the origin again.

        Returns:
          (codes [B, T, C·period] of the counts after each token, the carry after the chunk).
        """
        r, u = self.gates(x)  # [B, T, C]
        if separators is not None:
            sep = separators[..., None]  # [B, T, 1]
            r, u = jnp.where(sep, 1.0, r), jnp.where(sep, 0.0, u)
        a, b = 1.0 - r, r * state.origin[:, None] + u  # c_t = a_t · c_{t-1} + b_t
        a_cum, b_cum = jax.lax.associative_scan(_compose, (a, b), axis=1)  # [B, T, C]
        c = a_cum * state.counts[:, None] + b_cum  # [B, T, C]
        code = harmonic_code(c, self.period)  # [B, T, C, period]
        return code.reshape(*c.shape[:2], -1), CounterState(c[:, -1], state.origin)
