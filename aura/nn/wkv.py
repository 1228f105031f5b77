"""The RWKV-4 WKV recurrence, numerically stable: a recurrent step, a scan, an associative scan
and a chunked-parallel form.

For one channel with per-step log-decay ``w < 0`` (the block uses ``w = -exp(w_raw)``; each step
multiplies the past by ``exp(w)``) and bonus ``u`` for the current token:

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{(t-1-i) w + k_i}       + e^{u + k_t})

The running sums are kept as ``(a, b, p)``: numerator and denominator scaled by ``e^{-p}``, with
p the running maximum exponent (Peng et al., 2023, the RWKV-4 kernel), so no exponential ever
overflows. The empty state is ``a = b = 0, p = -1e38`` (finite, so ``p + w`` stays finite).

* `wkv_step`: one token, O(1) in the context length (generation).
* `wkv_scan`: `lax.scan` of `wkv_step` over T (the exact same arithmetic; fastest on CPU).
* `wkv_assoc`: `lax.associative_scan` over T (O(log T) depth). Its combine of two segments
  ``(d1, a1, b1, p1) . (d2, a2, b2, p2)`` with d the segment's total log-decay is
  ``p = max(p1 + d2, p2); a = a1 e^{p1 + d2 - p} + a2 e^{p2 - p}`` (same for b), which is
  associative and as stable as the step.
* `wkv_chunked`: T split into chunks of c tokens; every token of a chunk at once from the
  chunk's incoming state plus a [c, c] block of pairwise terms in log space, and a recurrence
  over the T / c chunks (the default on GPU/TPU; see its docstring for the math).

All of them compute in float32 whatever the input dtype and return float32.
Shapes: B batch, T tokens, D channels, c tokens per chunk, n = T / c chunks.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

WKV_IMPLS = ("auto", "scan", "assoc", "chunked")
DEFAULT_CHUNK = 16
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


def _chunk_summary(w, k, v):
    """Each chunk on its own from the empty state: its end state (a, b, p), each [n, B, D].

    k, v: [n, c, B, D]. Token i of a chunk reaches the chunk's end with exponent
    ``(c - 1 - i) w + k_i``; p is their maximum, so every weight is e^(<= 0).
    """
    c = k.shape[1]
    lag = (c - 1 - jnp.arange(c, dtype=jnp.float32))[:, None, None]  # [c, 1, 1]
    ex = lag * w + k  # [n, c, B, D]
    p = lax.stop_gradient(jnp.max(ex, axis=1))  # [n, B, D]
    e = jnp.exp(ex - p[:, None])
    return jnp.sum(e * v, axis=1), jnp.sum(e, axis=1), p


def _chunk_outputs(w, u, k, v, a0, b0, p0):
    """wkv of every token of every chunk from the chunk's incoming state (a0, b0, p0) [n, B, D].

    Token t of a chunk sums three kinds of terms, all in log space against one per-token
    maximum q_t (so the largest weight is exactly e^0 = 1): the incoming state decayed t steps
    (exponent ``p0 + t w``), the chunk's earlier tokens i < t (``(t - 1 - i) w + k_i``, a
    [c, c] lower-triangular block per channel) and the token's own bonus term (``u + k_t``).
    """
    c = k.shape[1]
    pos = jnp.arange(c)
    before = (pos[None, :] < pos[:, None])[:, :, None, None]  # [c(t), c(i), 1, 1]: i < t
    lag = (pos[:, None] - 1 - pos[None, :]).astype(jnp.float32)[:, :, None, None]  # [c, c, 1, 1]
    pair = jnp.where(before, lag * w + k[:, None], -jnp.inf)  # [n, c(t), c(i), B, D]
    state = p0[:, None] + pos.astype(jnp.float32)[:, None, None] * w  # [n, c, B, D]
    bonus = u + k  # [n, c, B, D]
    q = lax.stop_gradient(jnp.maximum(jnp.maximum(state, jnp.max(pair, axis=2)), bonus))
    e_pair = jnp.where(before, jnp.exp(pair - q[:, :, None]), 0.0)  # [n, c, c, B, D]
    e_state, e_bonus = jnp.exp(state - q), jnp.exp(bonus - q)  # [n, c, B, D]
    num = e_state * a0[:, None] + jnp.sum(e_pair * v[:, None], axis=2) + e_bonus * v
    den = e_state * b0[:, None] + jnp.sum(e_pair, axis=2) + e_bonus
    return num / den  # [n, c, B, D]


def _wkv_chunks(w, u, k, v, state: WKVState, c: int) -> tuple[jax.Array, WKVState]:
    """Chunked WKV over time-major k, v [T, B, D] with T a multiple of c."""
    t, bsz, dim = k.shape
    k = k.reshape(t // c, c, bsz, dim)  # [T, B, D] -> [n, c, B, D]
    v = v.reshape(t // c, c, bsz, dim)
    summary = _chunk_summary(w, k, v)  # each [n, B, D]

    def carry_over(st: WKVState, chunk: tuple) -> tuple[WKVState, WKVState]:
        a, b, p = st
        ca, cb, cp = chunk
        decayed = p + c * w  # the incoming state after the chunk's c decay steps
        q = jnp.maximum(decayed, cp)
        e1, e2 = jnp.exp(decayed - q), jnp.exp(cp - q)
        return WKVState(e1 * a + e2 * ca, e1 * b + e2 * cb, q), st

    final, starts = lax.scan(carry_over, state, summary)  # starts: the state entering each chunk
    # Recomputed in the backward pass: the pairwise block is c times the size of k.
    out = jax.checkpoint(_chunk_outputs)(w, u, k, v, *starts)  # [n, c, B, D]
    return out.reshape(t, bsz, dim), final


def wkv_chunked(
    w: jax.Array,
    u: jax.Array,
    k: jax.Array,
    v: jax.Array,
    state: WKVState,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[jax.Array, WKVState]:
    """WKV over a sequence in chunks of ``chunk`` tokens (same contract as `wkv_scan`).

    The math (the flash-linear-attention chunk decomposition, specialised to RWKV-4): split T
    into n chunks of c tokens. A token's sum over the past splits into the chunks before its
    own and the earlier tokens of its own chunk. Because RWKV-4's state is per channel (a
    diagonal decay, not a matrix), the contribution of all earlier chunks to every token of a
    chunk is one rank-1 term per channel: the chunk's incoming state (a, b, p) decayed by the
    token's offset. So:

    1. each chunk's own end state from empty, ``p = max_i((c-1-i) w + k_i)``,
       ``a = sum_i e^{(c-1-i) w + k_i - p} v_i`` (parallel over chunks);
    2. a recurrence over the n chunks (``lax.scan``, n = T / c dependent steps instead of T)
       combines them into every chunk's incoming state, with the same max-normalised combine
       as `wkv_assoc`;
    3. every token in parallel: its incoming-state term, a [c, c] block of pairwise terms
       ``(t-1-i) w + k_i`` for the chunk's earlier tokens, and the bonus term.

    Stability: every exponential is taken of an exponent minus the maximum of the exponents it
    is summed with (per token in step 3, per chunk in steps 1 and 2), so each weight lies in
    [0, 1] with the largest exactly 1; nothing overflows, and a term only underflows when it is
    below e^-87 of the largest one, where it cannot change the float32 result. Factorised
    forms (``e^{(t-1)w} · e^{k_i - i w}``, one matmul per chunk) would overflow for fast decays
    or wide key ranges within a chunk; the log-space block avoids that at c times the
    elementwise work of a step. The maxima are stop-gradients (the result does not depend on
    them), so gradients are exact.

    Args:
      w, u: [D] log-decay (negative) and bonus.
      k, v: [B, T, D] (any float dtype; computed in float32).
      state: incoming WKVState [B, D].
      chunk: c >= 1; a tail of T mod c tokens runs as one shorter chunk.

    Returns:
      (wkv [B, T, D] float32, final state).

    Raises:
      ValueError: chunk < 1.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"wkv chunk must be an int >= 1, got {chunk!r}")
    w, u = _f32(w, u)
    state = WKVState(*_f32(*state))
    k = jnp.swapaxes(jnp.asarray(k).astype(jnp.float32), 0, 1)  # [B, T, D] -> [T, B, D]
    v = jnp.swapaxes(jnp.asarray(v).astype(jnp.float32), 0, 1)
    t = k.shape[0]
    c = min(chunk, t)
    main = t - t % c
    out, state = _wkv_chunks(w, u, k[:main], v[:main], state, c)
    if main < t:  # the tail as one shorter chunk, continuing the state
        tail, state = _wkv_chunks(w, u, k[main:], v[main:], state, t - main)
        out = jnp.concatenate([out, tail], axis=0)
    return jnp.swapaxes(out, 0, 1), state  # [T, B, D] -> [B, T, D]


def resolve_wkv_impl(impl: str) -> str:
    """Maps ``"auto"`` to ``"scan"`` on CPU and ``"chunked"`` on GPU/TPU; checks the name.

    On CPU (2 cores, measured with ``tools/bench_lm.py``) the sequential scan is the fastest
    form: its loop costs little there and it does the least arithmetic. On accelerators a loop
    iteration costs a kernel launch or a dependent step, so the chunked form (T / c dependent
    steps) is preferred.

    Raises:
      ValueError: unknown impl (the message lists the valid ones).
    """
    if impl not in WKV_IMPLS:
        raise ValueError(f"unknown wkv impl {impl!r}; valid: {', '.join(WKV_IMPLS)}")
    if impl == "auto":
        return "chunked" if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else "scan"
    return impl


def wkv(
    w: jax.Array,
    u: jax.Array,
    k: jax.Array,
    v: jax.Array,
    state: WKVState,
    impl: str = "auto",
    chunk: int = DEFAULT_CHUNK,
) -> tuple[jax.Array, WKVState]:
    """WKV over [B, T, D]; T == 1 always takes the single recurrent step.

    Args:
      w, u: [D] log-decay (negative) and bonus.
      k, v: [B, T, D].
      state: incoming WKVState [B, D].
      impl: "auto" | "scan" | "assoc" | "chunked" (see `resolve_wkv_impl`).
      chunk: tokens per chunk for "chunked" (>= 1).

    Raises:
      ValueError: unknown impl (the message lists the valid ones) or chunk < 1.
    """
    impl = resolve_wkv_impl(impl)
    if k.shape[1] == 1:
        out, state = wkv_step(w, u, k[:, 0], v[:, 0], WKVState(*_f32(*state)))
        return out[:, None], state  # [B, D] -> [B, 1, D]
    if impl == "chunked":
        return wkv_chunked(w, u, k, v, state, chunk)
    return (wkv_scan if impl == "scan" else wkv_assoc)(w, u, k, v, state)
