"""Rotary position embeddings (RoPE; Su et al., 2021, "RoFormer"), written without complex dtypes.

Convention ("rotate half", as in GPT-NeoX and LLaMA): the feature axis D (even) is split into
halves ``x = [x1, x2]``; feature pair i is ``(x1[i], x2[i]) = (x[i], x[i + D/2])`` and rotates by
the angle ``pos * theta_i`` with ``theta_i = base ** (-2 i / D)``, i in [0, D/2):

    rope(x, pos) = [x1 * cos - x2 * sin,  x2 * cos + x1 * sin]

A rotation is orthogonal, so norms are preserved, and rotations compose, so
``rope(q, m) . rope(k, n)`` depends on m - n only (the relative-position property).

The cos/sin tables ``[max_len, D/2]`` are computed once per (max_len, D, base) on the host in
float64 and stored as float32 constants; the rotation runs in x's dtype. Positions that are
concrete (eager calls, or static offsets) are checked against ``max_len`` and raise ValueError;
traced positions cannot be checked, so out-of-range rows read NaN (never a silently wrong angle).

`substep_tables` gives the extra rotation for fractional positions ``s / S`` (s in [0, S)):
rotating by ``t`` and then by ``s / S`` equals rotating by ``t + s / S``, which is how the LIF
language core places its S internal spike steps between tokens t and t + 1.

Shapes: B batch, T tokens, H heads, D features, S sub-steps.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _check_dim(dim: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"RoPE feature width D must be an even int >= 2, got D = {dim!r}")


def check_rope_config(max_len: int, dim: int, base: float) -> None:
    """Validates a RoPE configuration.

    Raises:
      ValueError: D odd or < 2, max_len < 1, or base <= 1 (the message names the value).
    """
    _check_dim(dim)
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"rope_max_len must be an int >= 1, got {max_len!r}")
    if not (isinstance(base, int | float) and 1 < base < math.inf):
        raise ValueError(f"rope_base must be a finite number > 1, got {base!r}")


def rope_frequencies(dim: int, base: float = 10000.0) -> np.ndarray:
    """Angular frequencies ``theta_i = base ** (-2 i / D)`` [D/2] (float64, host)."""
    _check_dim(dim)
    return base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)


@functools.lru_cache(maxsize=32)
def _tables(max_len: int, dim: int, base: float, denom: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.arange(max_len, dtype=np.float64) / denom  # [max_len]
    ang = pos[:, None] * rope_frequencies(dim, base)[None, :]  # [max_len, D/2]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    cos.flags.writeable = False  # cached: shared between callers
    sin.flags.writeable = False
    return cos, sin


def rope_tables(max_len: int, dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed (cos, sin) tables [max_len, D/2] (float32) for integer positions.

    Args:
      max_len: number of positions (rows), >= 1.
      dim: feature width D, even.
      base: frequency base (> 1).

    Returns:
      (cos, sin), read-only numpy float32 arrays of shape [max_len, D/2]; row p holds
      cos/sin of ``p * theta_i``.
    """
    check_rope_config(max_len, dim, base)
    return _tables(max_len, dim, float(base), 1)


def substep_tables(steps: int, dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [S, D/2] (float32) of the fractional positions ``s / S``, s in [0, S).

    Raises:
      ValueError: steps < 1, D odd, or base <= 1.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sub-steps S must be an int >= 1, got {steps!r}")
    check_rope_config(1, dim, base)
    return _tables(steps, dim, float(base), steps)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates the feature pairs ``(x[i], x[i + D/2])`` by the angles given as cos/sin.

    Args:
      x: [..., D] with D even.
      cos, sin: [..., D/2], broadcastable against x's leading axes.

    Returns:
      ``[x1 * cos - x2 * sin, x2 * cos + x1 * sin]`` in x's dtype, shaped like x.
    """
    _check_dim(x.shape[-1])
    half = x.shape[-1] // 2
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]  # [..., D/2] each
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _is_traced(x: object) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_positions(positions: object, max_len: int, what: str = "RoPE position") -> None:
    """Raises ValueError when concrete positions fall outside [0, max_len); traced: no-op."""
    if _is_traced(positions):
        return
    arr = np.asarray(positions)
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"{what} {lo} is negative; positions must be >= 0")
    if hi >= max_len:
        raise ValueError(
            f"{what} {hi} is beyond rope_max_len = {max_len} (valid positions are "
            f"0 .. {max_len - 1}); raise rope_max_len or shorten the context"
        )


def _positions(positions: int | jax.Array, b: int, t: int, max_len: int) -> jax.Array:
    """Normalises positions to int32 [B, T], checking concrete values."""
    if isinstance(positions, int | np.integer) and not isinstance(positions, bool):
        offset = int(positions)
        check_positions(np.array([offset, offset + t - 1]), max_len)
        return jnp.broadcast_to(offset + jnp.arange(t, dtype=jnp.int32), (b, t))
    pos = jnp.asarray(positions)
    if not jnp.issubdtype(pos.dtype, jnp.integer):
        raise ValueError(f"RoPE positions must be integers, got dtype {pos.dtype}")
    if pos.ndim == 0:  # a (possibly traced) offset
        if not _is_traced(positions):
            offset = int(pos)
            check_positions(np.array([offset, offset + t - 1]), max_len)
        pos = pos + jnp.arange(t, dtype=pos.dtype)  # [T]
    elif pos.shape not in ((t,), (b, t)):
        raise ValueError(
            f"RoPE positions must be an int, [T] or [B, T] = {(b, t)}; got {pos.shape}"
        )
    else:
        check_positions(positions, max_len)
    return jnp.broadcast_to(pos.astype(jnp.int32), (b, t))


def apply_rope(
    x: jax.Array,
    positions: int | jax.Array = 0,
    *,
    max_len: int = 2048,
    base: float = 10000.0,
) -> jax.Array:
    """Applies rotary position embeddings (rotate-half convention, see the module docstring).

    Args:
      x: [B, T, D] or [B, T, H, D] (one rotation shared by the H heads); D even.
      positions: an int offset (positions offset .. offset + T - 1; may be a traced int32
        scalar), or int positions [T] or [B, T].
      max_len: table length, the `rope_max_len` (positions must be < max_len).
      base: frequency base, the `rope_base`.

    Returns:
      The rotated x, same shape and dtype.

    Raises:
      ValueError: D odd, x not 3-D/4-D, or concrete positions outside [0, max_len) (the
        message names the position and the limit). Traced out-of-range positions give NaN.
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"apply_rope input must be [B, T, D] or [B, T, H, D], got {x.shape}")
    d = x.shape[-1]
    check_rope_config(max_len, d, base)
    b, t = x.shape[:2]
    pos = _positions(positions, b, t, max_len)  # [B, T]
    cos_tab, sin_tab = (jnp.asarray(a) for a in _tables(max_len, d, float(base), 1))
    # Out-of-range traced positions read NaN instead of a clamped (wrong) row.
    cos = jnp.take(cos_tab, pos, axis=0, mode="fill", fill_value=jnp.nan)  # [B, T, D/2]
    sin = jnp.take(sin_tab, pos, axis=0, mode="fill", fill_value=jnp.nan)  # [B, T, D/2]
    if x.ndim == 4:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [B, T, 1, D/2]: shared by heads
    return rotate(x, cos, sin)
