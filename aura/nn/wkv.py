"""The RWKV-4 WKV recurrence, numerically stable: a recurrent step, a scan, an associative scan.

For one channel with per-step log-decay ``w < 0`` (the block uses ``w = -exp(w_raw)``; each step
multiplies the past by ``exp(w)``) and bonus ``u`` for the current token:

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{(t-1-i) w + k_i}       + e^{u + k_t})

The running sums are kept as ``(a, b, p)``: numerator and denominator scaled by ``e^{-p}``, with
p the running maximum exponent (Peng et al., 2023, the RWKV-4 kernel), so no exponential ever
overflows. The empty state is ``a = b = 0, p = -1e38`` (finite, so ``p + w`` stays finite).

* `wkv_step`: one token, O(1) in the context length (generation).
* `wkv_scan`: `lax.scan` of `wkv_step` over T (training; the default, exact same arithmetic).
* `wkv_assoc`: `lax.associative_scan` over T (O(log T) depth; for accelerators). Its combine of
  two segments ``(d1, a1, b1, p1) . (d2, a2, b2, p2)`` with d the segment's total log-decay is
  ``p = max(p1 + d2, p2); a = a1 e^{p1 + d2 - p} + a2 e^{p2 - p}`` (same for b), which is
  associative and as stable as the step.

All three compute in float32 whatever the input dtype and return float32.
Shapes: B batch, T tokens, D channels.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

WKV_IMPLS = ("scan", "assoc")
EMPTY_P = -1e38


class WKVState(NamedTuple):
    """Running WKV sums [B, D] (float32): ``a / b`` scaled by ``exp(-p)``."""

    a: jax.Array
    b: jax.Array
    p: jax.Array


def init_wkv_state(batch: int, dim: int) -> WKVState:
    """The empty state: a = b = 0, p = -1e38, each [B, D] float32."""
    zeros = jnp.zeros((batch, dim), jnp.float32)
    return WKVState(zeros, zeros, jnp.full((batch, dim), EMPTY_P, jnp.float32))


def _f32(*xs: jax.Array) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(x).astype(jnp.float32) for x in xs)


def wkv_step(
    w: jax.Array, u: jax.Array, k: jax.Array, v: jax.Array, state: WKVState
) -> tuple[jax.Array, WKVState]:
    """One WKV step.

    Args:
      w: per-channel log-decay [D] (negative).
      u: per-channel bonus [D].
      k, v: key and value of the current token [B, D].
      state: WKVState [B, D] before the token.

    Returns:
      (wkv [B, D] float32, state after the token).
    """
    w, u, k, v = _f32(w, u, k, v)
    a, b, p = state
    ww = u + k  # the current token's exponent, with bonus
    q = jnp.maximum(p, ww)
    e1, e2 = jnp.exp(p - q), jnp.exp(ww - q)
    out = (e1 * a + e2 * v) / (e1 * b + e2)
    ww = p + w  # decay the past by one step, then add the current token without bonus
    q = jnp.maximum(ww, k)
    e1, e2 = jnp.exp(ww - q), jnp.exp(k - q)
    return out, WKVState(e1 * a + e2 * v, e1 * b + e2, q)


def wkv_scan(
    w: jax.Array, u: jax.Array, k: jax.Array, v: jax.Array, state: WKVState
) -> tuple[jax.Array, WKVState]:
    """WKV over a sequence by `lax.scan` of `wkv_step`.

    Args:
      w, u: [D] log-decay (negative) and bonus.
      k, v: [B, T, D].
      state: initial WKVState [B, D].

    Returns:
      (wkv [B, T, D] float32, final state).
    """
    w, u = _f32(w, u)

    def body(carry: WKVState, kv: tuple[jax.Array, jax.Array]):
        out, carry = wkv_step(w, u, kv[0], kv[1], carry)
        return carry, out

    xs = (jnp.swapaxes(k, 0, 1), jnp.swapaxes(v, 0, 1))  # [B, T, D] -> [T, B, D]
    state, out = lax.scan(body, WKVState(*_f32(*state)), xs)
    return jnp.swapaxes(out, 0, 1), state  # [T, B, D] -> [B, T, D]


def _combine(left: tuple, right: tuple) -> tuple:
    d1, a1, b1, p1 = left
    d2, a2, b2, p2 = right
    shifted = p1 + d2  # the left segment's exponent after the right segment's decay
    p = jnp.maximum(shifted, p2)
    e1, e2 = jnp.exp(shifted - p), jnp.exp(p2 - p)
    return d1 + d2, e1 * a1 + e2 * a2, e1 * b1 + e2 * b2, p


def wkv_assoc(
    w: jax.Array, u: jax.Array, k: jax.Array, v: jax.Array, state: WKVState
) -> tuple[jax.Array, WKVState]:
    """WKV over a sequence by `lax.associative_scan` (same contract as `wkv_scan`)."""
    w, u, k, v = _f32(w, u, k, v)
    a0, b0, p0 = _f32(*state)
    bsz, t, dim = k.shape
    # Element 0 is the incoming state (no decay of its own); element i + 1 is token i alone:
    # a = v_i, b = 1, p = k_i, with a one-step decay w.
    d = jnp.concatenate(
        [jnp.zeros((bsz, 1, dim), jnp.float32), jnp.broadcast_to(w, (bsz, t, dim))], axis=1
    )  # [B, T + 1, D]
    a = jnp.concatenate([a0[:, None], v], axis=1)  # [B, T + 1, D]
    b = jnp.concatenate([b0[:, None], jnp.ones_like(v)], axis=1)  # [B, T + 1, D]
    p = jnp.concatenate([p0[:, None], k], axis=1)  # [B, T + 1, D]
    _, a, b, p = lax.associative_scan(_combine, (d, a, b, p), axis=1)  # inclusive prefixes
    ap, bp, pp = a[:, :-1], b[:, :-1], p[:, :-1]  # state before token i: [B, T, D]
    ww = u + k
    q = jnp.maximum(pp, ww)
    e1, e2 = jnp.exp(pp - q), jnp.exp(ww - q)
    out = (e1 * ap + e2 * v) / (e1 * bp + e2)
    return out, WKVState(a[:, -1], b[:, -1], p[:, -1])


def wkv(
    w: jax.Array,
    u: jax.Array,
    k: jax.Array,
    v: jax.Array,
    state: WKVState,
    impl: str = "scan",
) -> tuple[jax.Array, WKVState]:
    """WKV over [B, T, D]; T == 1 always takes the single recurrent step.

    Raises:
      ValueError: unknown impl (the message lists the valid ones).
    """
    if impl not in WKV_IMPLS:
        raise ValueError(f"unknown wkv impl {impl!r}; valid: {', '.join(WKV_IMPLS)}")
    if k.shape[1] == 1:
        out, state = wkv_step(w, u, k[:, 0], v[:, 0], WKVState(*_f32(*state)))
        return out[:, None], state  # [B, D] -> [B, 1, D]
    return (wkv_scan if impl == "scan" else wkv_assoc)(w, u, k, v, state)
