"""SRWKV: a SpikeGPT-style spiking RWKV stack with a sequence form and a recurrent form that agree.

One block (Zhu et al., 2023, "SpikeGPT"; Peng et al., 2023, "RWKV"), pre-LayerNorm with residuals:

    x = x + LIF(TimeMix(LN1(x)));   x = x + LIF(ChannelMix(LN2(x)))

* TimeMix: token shift (``xk = h_t * mix_k + h_{t-1} * (1 - mix_k)``, likewise v and r, with
  learned per-channel mixes), key/value/receptance projections, the WKV recurrence of
  `aura.nn.wkv` with learned per-channel decay ``w = -exp(decay_raw)`` and bonus ``u``, then
  ``sigmoid(r) * wkv`` through an output projection.
* ChannelMix: token shift, ``value(relu(key(xk))**2) * sigmoid(receptance(xr))``.
* LIF: the branch outputs become spikes (SpikeGPT: spikingjelly's LIF with tau = 2, threshold 1,
  hard reset and an arctan surrogate, alpha = 2). It is `aura.nn.spiking.LIF` run along the token
  axis with ``v = beta * v + (1 - beta) * input`` (beta = 1 - 1/tau = 0.5), reset to zero, so the
  membrane carries from token to token. ``spiking=False`` drops the LIF (a plain RWKV-4 stack, for
  the Transformer comparison and for debugging).

The sequence form (`__call__` over [B, T, D]) runs its blocks time-major ([T, B, D]: one
transpose in and one out, instead of one around every recurrence), shifts by a shifted copy and
runs the WKV over T;
the recurrent form (`step` over [B, D]) does the same for one token with O(1) cost and memory.
Both take and return an explicit `SRWKVState`, so a prompt is consumed once by the sequence form
and generation continues with `step`.

Shapes: B batch, T tokens, D width, F channel-mix hidden width, L layers.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aura.nn.spiking import LIF, spike_fn
from aura.nn.wkv import DEFAULT_CHUNK, EMPTY_P, WKV_IMPLS, WKVState, wkv


class SRWKVState(NamedTuple):
    """Recurrent carry of an SRWKV stack; every field is [L, B, D] float32.

    Attributes:
      shift_att: the last token's LN1 output (time-mix token shift).
      shift_ffn: the last token's LN2 output (channel-mix token shift).
      wkv_a, wkv_b, wkv_p: WKV numerator, denominator and running max exponent.
      mem_att, mem_ffn: LIF membranes after the time-mix and channel-mix branches (stay zero
        when spiking is off).
    """

    shift_att: jax.Array
    shift_ffn: jax.Array
    wkv_a: jax.Array
    wkv_b: jax.Array
    wkv_p: jax.Array
    mem_att: jax.Array
    mem_ffn: jax.Array


def init_srwkv_state(num_layers: int, batch: int, dim: int) -> SRWKVState:
    """The empty state (zeros; WKV max exponent -1e38) for L layers, batch B, width D."""
    zeros = jnp.zeros((num_layers, batch, dim), jnp.float32)
    p = jnp.full((num_layers, batch, dim), EMPTY_P, jnp.float32)
    return SRWKVState(zeros, zeros, zeros, zeros, p, zeros, zeros)


def _const(values: np.ndarray):
    """Initializer returning fixed values (the RWKV-4 per-channel schedules)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        del key
        return jnp.asarray(values, dtype).reshape(shape)

    return init


def _shifted(h: jax.Array, last: jax.Array) -> jax.Array:
    """Token shift, time-major: [last, h_0, ..., h_{T-2}] for h [T, B, D] and last [B, D]."""
    return jnp.concatenate([last[None].astype(h.dtype), h[:-1]], axis=0)  # [T, B, D]


def _swap(a: jax.Array) -> jax.Array:
    """[T, B, D] <-> [B, T, D]. Around a scan that runs over T on a time-major array, XLA folds
    this swap with the scan's own swap back to time-major, so it moves no data."""
    return jnp.swapaxes(a, 0, 1)


class TimeMix(nn.Module):
    """RWKV-4 time mixing over time-major [T, B, D] with an explicit (shift, WKV) carry."""

    dim: int
    layer_id: int
    num_layers: int
    wkv_impl: str = "auto"
    wkv_chunk: int = DEFAULT_CHUNK
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, h: jax.Array, last: jax.Array, state: WKVState
    ) -> tuple[jax.Array, jax.Array, WKVState]:
        d = self.dim
        r01 = self.layer_id / max(self.num_layers - 1, 1)  # 0 at the first layer, 1 at the last
        r10 = 1.0 - self.layer_id / self.num_layers  # 1 at the first layer, towards 0
        ramp = np.arange(d) / d
        chan = np.arange(d) / max(d - 1, 1)
        decay0 = -5.0 + 8.0 * chan ** (0.7 + 1.3 * r01)  # slow to fast decays across channels
        bonus0 = math.log(0.3) + ((np.arange(d) + 1) % 3 - 1) * 0.5
        pd = self.param_dtype
        mix_k = self.param("mix_k", _const(ramp**r10), (d,), pd)
        mix_v = self.param("mix_v", _const(ramp**r10 + 0.3 * r01), (d,), pd)
        mix_r = self.param("mix_r", _const(ramp ** (0.5 * r10)), (d,), pd)
        decay_raw = self.param("decay_raw", _const(decay0), (d,), pd)
        bonus = self.param("bonus", _const(bonus0), (d,), pd)

        prev = _shifted(h, last)  # [T, B, D]
        dense = lambda name: nn.Dense(
            d, use_bias=False, dtype=self.dtype, param_dtype=pd, name=name
        )

        def mixed(m: jax.Array) -> jax.Array:
            m = m.astype(h.dtype)
            return h * m + prev * (1 - m)

        k = dense("key")(mixed(mix_k))
        v = dense("value")(mixed(mix_v))
        r = dense("receptance")(mixed(mix_r))
        w = -jnp.exp(decay_raw.astype(jnp.float32))  # [D], < 0: per-step decay exp(w) < 1
        y, state = wkv(w, bonus, _swap(k), _swap(v), state, self.wkv_impl, self.wkv_chunk)
        y = _swap(y)  # [B, T, D] -> [T, B, D] float32
        out = dense("output")(jax.nn.sigmoid(r) * y.astype(self.dtype))
        return out, h[-1], state


class ChannelMix(nn.Module):
    """RWKV-4 channel mixing (squared-ReLU MLP with a receptance gate), time-major [T, B, D]."""

    dim: int
    hidden: int
    layer_id: int
    num_layers: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, last: jax.Array) -> tuple[jax.Array, jax.Array]:
        d, pd = self.dim, self.param_dtype
        ramp = (np.arange(d) / d) ** (1.0 - self.layer_id / self.num_layers)
        mix_k = self.param("mix_k", _const(ramp), (d,), pd).astype(h.dtype)
        mix_r = self.param("mix_r", _const(ramp), (d,), pd).astype(h.dtype)
        prev = _shifted(h, last)  # [T, B, D]
        dense = lambda n, name: nn.Dense(
            n, use_bias=False, dtype=self.dtype, param_dtype=pd, name=name
        )
        k = dense(self.hidden, "key")(h * mix_k + prev * (1 - mix_k))  # [T, B, F]
        kv = dense(d, "value")(jnp.square(jax.nn.relu(k)))  # [T, B, D]
        r = dense(d, "receptance")(h * mix_r + prev * (1 - mix_r))
        return jax.nn.sigmoid(r) * kv, h[-1]


class SRWKVBlock(nn.Module):
    """One pre-LN spiking RWKV block over time-major [T, B, D] with a per-layer carry (7 [B, D])."""

    dim: int
    hidden: int
    layer_id: int
    num_layers: int
    spiking: bool = True
    lif_beta: float = 0.5
    lif_threshold: float = 1.0
    surrogate: str = "arctan"
    surrogate_scale: float | None = None
    wkv_impl: str = "auto"
    wkv_chunk: int = DEFAULT_CHUNK
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _spikes(self, y: jax.Array, mem: jax.Array, name: str) -> tuple[jax.Array, jax.Array]:
        if not self.spiking:
            return y, mem
        lif = LIF(
            beta=self.lif_beta,
            threshold=self.lif_threshold,
            surrogate=self.surrogate,
            surrogate_scale=self.surrogate_scale,
            reset="zero",
            param_dtype=self.param_dtype,
            name=name,
        )
        # LIF's step axis is the token axis here: the membrane carries across tokens.
        spikes, mem = lif(_swap((1.0 - self.lif_beta) * y), mem.astype(y.dtype))  # [B, T, D]
        return _swap(spikes), mem.astype(jnp.float32)

    @nn.compact
    def __call__(self, x: jax.Array, carry: tuple) -> tuple[jax.Array, tuple]:
        shift_att, shift_ffn, a, b, p, mem_att, mem_ffn = carry
        ln = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        common = dict(
            dim=self.dim,
            layer_id=self.layer_id,
            num_layers=self.num_layers,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        h = ln("ln1")(x)
        att, shift_att, wkv_state = TimeMix(
            wkv_impl=self.wkv_impl, wkv_chunk=self.wkv_chunk, name="att", **common
        )(h, shift_att, WKVState(a, b, p))
        att, mem_att = self._spikes(att, mem_att, "lif_att")
        x = x + att.astype(x.dtype)
        h = ln("ln2")(x)
        ffn, shift_ffn = ChannelMix(hidden=self.hidden, name="ffn", **common)(h, shift_ffn)
        ffn, mem_ffn = self._spikes(ffn, mem_ffn, "lif_ffn")
        x = x + ffn.astype(x.dtype)
        f32 = lambda t: t.astype(jnp.float32)
        return x, (f32(shift_att), f32(shift_ffn), *wkv_state, mem_att, mem_ffn)


class SRWKV(nn.Module):
    """A stack of L spiking RWKV blocks with an input LayerNorm and an optional final LayerNorm.

    Attributes:
      num_layers: L (>= 1).
      dim: model width D (>= 1).
      ffn_mult: channel-mix hidden width F = round(ffn_mult * D) (>= 1).
      spiking: LIF spikes on the branch outputs (False: plain RWKV-4).
      lif_beta: LIF membrane decay in [0, 1) (0.5 = spikingjelly tau 2, as in SpikeGPT).
      lif_threshold: LIF threshold (> 0).
      surrogate, surrogate_scale: spike surrogate (see `aura.nn.spiking.spike_fn`).
      wkv_impl: "auto" (default: "scan" on CPU, "chunked" on GPU/TPU), "scan", "assoc" or
        "chunked" (`aura.nn.wkv`) for sequences; a single token always takes the recurrent step.
      wkv_chunk: tokens per chunk of the "chunked" WKV (>= 1).
      final_norm: apply a LayerNorm to the output.
      dtype: computation dtype (the WKV always runs in float32).
      param_dtype: parameter dtype.
    """

    num_layers: int
    dim: int
    ffn_mult: float = 4
    spiking: bool = True
    lif_beta: float = 0.5
    lif_threshold: float = 1.0
    surrogate: str = "arctan"
    surrogate_scale: float | None = None
    wkv_impl: str = "auto"
    wkv_chunk: int = DEFAULT_CHUNK
    final_norm: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        for name in ("num_layers", "dim"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"SRWKV {name} must be an int >= 1, got {val!r}")
        if not (isinstance(self.ffn_mult, int | float) and self.ffn_mult > 0):
            raise ValueError(f"SRWKV ffn_mult must be > 0, got {self.ffn_mult!r}")
        if round(self.ffn_mult * self.dim) < 1:
            raise ValueError(
                f"SRWKV hidden width round(ffn_mult * dim) = {round(self.ffn_mult * self.dim)} "
                "must be >= 1"
            )
        if self.wkv_impl not in WKV_IMPLS:
            raise ValueError(f"unknown wkv_impl {self.wkv_impl!r}; valid: {', '.join(WKV_IMPLS)}")
        chunk = self.wkv_chunk
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"SRWKV wkv_chunk must be an int >= 1, got {chunk!r}")
        if not 0.0 <= self.lif_beta < 1.0:
            raise ValueError(f"lif_beta must be in [0, 1), got {self.lif_beta}")
        if not self.lif_threshold > 0:
            raise ValueError(f"lif_threshold must be > 0, got {self.lif_threshold}")
        spike_fn(self.surrogate, self.surrogate_scale)  # validates the surrogate
        super().__post_init__()

    def setup(self) -> None:
        ln = lambda: nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)
        self.ln0 = ln()
        self.blocks = [
            SRWKVBlock(
                dim=self.dim,
                hidden=round(self.ffn_mult * self.dim),
                layer_id=i,
                num_layers=self.num_layers,
                spiking=self.spiking,
                lif_beta=self.lif_beta,
                lif_threshold=self.lif_threshold,
                surrogate=self.surrogate,
                surrogate_scale=self.surrogate_scale,
                wkv_impl=self.wkv_impl,
                wkv_chunk=self.wkv_chunk,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )
            for i in range(self.num_layers)
        ]
        if self.final_norm:
            self.ln_out = ln()

    def init_state(self, batch: int) -> SRWKVState:
        """The empty recurrent state for `batch` sequences (no parameters needed)."""
        return init_srwkv_state(self.num_layers, batch, self.dim)

    def _check(self, x: jax.Array, state: SRWKVState | None, ndim: int) -> SRWKVState:
        want = "[B, T, D]" if ndim == 3 else "[B, D]"
        if x.ndim != ndim or x.shape[-1] != self.dim:
            raise ValueError(f"SRWKV input must be {want} with D = {self.dim}, got {x.shape}")
        if state is None:
            return self.init_state(x.shape[0])
        expect = (self.num_layers, x.shape[0], self.dim)
        for name, leaf in zip(SRWKVState._fields, state, strict=True):
            if leaf.shape != expect:
                raise ValueError(
                    f"SRWKV state.{name} must be [L, B, D] = {expect}, got {leaf.shape}"
                )
        return state

    def __call__(
        self, x: jax.Array, state: SRWKVState | None = None
    ) -> tuple[jax.Array, SRWKVState]:
        """Sequence form.

        Args:
          x: [B, T, D] inputs.
          state: carry from a previous call or `step` (None: the empty state).

        Returns:
          (y [B, T, D] in `dtype`, state after the last token).
        """
        state = self._check(x, state, 3)
        x = _swap(self.ln0(x.astype(self.dtype)))  # time-major inside: [B, T, D] -> [T, B, D]
        new = []
        for i, block in enumerate(self.blocks):
            x, carry = block(x, tuple(leaf[i] for leaf in state))
            new.append(carry)
        x = _swap(x)  # [T, B, D] -> [B, T, D]
        if self.final_norm:
            x = self.ln_out(x)
        stacked = SRWKVState(*(jnp.stack(leaves) for leaves in zip(*new, strict=True)))  # [L, B, D]
        return x, stacked

    def step(self, x: jax.Array, state: SRWKVState) -> tuple[jax.Array, SRWKVState]:
        """Recurrent form: one token per sequence, O(1) in the context length.

        Args:
          x: [B, D], the next token's input.
          state: carry (from `init_state`, `__call__` or `step`).

        Returns:
          (y [B, D], state after this token).
        """
        state = self._check(x, state, 2)
        y, state = self(x[:, None], state)  # [B, D] -> [B, 1, D]: the WKV takes its single step
        return y[:, 0], state
