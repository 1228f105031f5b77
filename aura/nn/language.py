"""`SpikingLanguageCore`: the generating core of the language path, "lif" or "srwkv" backend.

Both backends share one API with an explicit state, so a prompt is consumed once by the sequence
form and generation continues token by token at a cost that does not grow with the context:

* ``__call__(x [B, T, D], state=None) -> (y [B, T, D], state)``
* ``step(x [B, D], state, position=None) -> (y [B, D], state)``
* ``init_state(batch) -> LanguageState`` (no parameters needed)

The state holds the backend's carry and the next token's position per sequence ([B] int32).

Backends:

* ``"srwkv"``: `aura.nn.srwkv.SRWKV`. With ``use_rope`` its input is rotated by the token
  position (RWKV has no dot-product attention; the rotation gives the recurrence an absolute
  phase per position).
* ``"lif"``: per layer, pre-LN ``h``, a causal token mixer (token shift with a learned mix, a
  drive and a sigmoid gate projection, and a gated linear recurrence ``c_t = lam * c_{t-1} +
  (1 - lam) * u_t`` with learned per-channel ``lam`` in (0, 1)), then LIF neurons
  (`aura.nn.spiking.LIF`) run for S = ``internal_steps`` steps per token on the drive
  ``gate * c_t``, their spike rate read out by a projection into the residual. The membrane carries
  across tokens. With ``use_rope`` the drive of internal step s of token t is rotated to the
  fractional position ``t + s / S`` (rotate by t, then by the phase s / S: `aura.nn.rope`), so
  the S steps sweep each feature pair through the angle between tokens t and t + 1 and the token
  positions keep the usual RoPE meaning (limit: ``rope_max_len`` tokens).

Shapes: B batch, T tokens, D width, S internal spike steps, L layers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from aura.nn import rope as rope_lib
from aura.nn.spiking import LIF, spike_fn
from aura.nn.srwkv import SRWKV, SRWKVState, init_srwkv_state
from aura.nn.wkv import DEFAULT_CHUNK

LANG_BACKENDS = ("lif", "srwkv")
_DEFAULT_BETA = {"lif": 0.9, "srwkv": 0.5}


class LIFCoreState(NamedTuple):
    """Carry of the "lif" backend; each field is [L, B, D] float32.

    Attributes:
      shift: the last token's pre-LN output (token shift).
      trace: the gated linear recurrence c.
      mem: the LIF membrane after the last internal step.
    """

    shift: jax.Array
    trace: jax.Array
    mem: jax.Array


class LanguageState(NamedTuple):
    """State of a `SpikingLanguageCore`: the backend carry and the next position [B] int32."""

    core: SRWKVState | LIFCoreState
    position: jax.Array


def _timescale_logits(d: int) -> np.ndarray:
    """Initial logit(lam) for memory time constants from 2 to 64 tokens across the channels."""
    tau = np.geomspace(2.0, 64.0, d) if d > 1 else np.array([8.0])
    lam = 1.0 - 1.0 / tau
    return np.log(lam / (1.0 - lam))


class LIFMixerLayer(nn.Module):
    """One "lif" layer: token mixer -> LIF for S steps per token -> spike-rate readout."""

    dim: int
    steps: int
    use_rope: bool
    rope_max_len: int
    rope_base: float
    lif_beta: float
    lif_threshold: float
    surrogate: str
    surrogate_scale: float | None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, positions: jax.Array, carry: tuple[jax.Array, ...]
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        shift, trace, mem = carry
        b, t, d = x.shape
        s, pd = self.steps, self.param_dtype
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=pd, name="ln")(x)
        prev = jnp.concatenate([shift[:, None].astype(h.dtype), h[:, :-1]], axis=1)  # [B, T, D]
        mix = self.param("mix", nn.initializers.constant(0.5), (d,), pd).astype(h.dtype)
        xs = h * mix + prev * (1 - mix)
        dense = lambda name: nn.Dense(d, dtype=self.dtype, param_dtype=pd, name=name)
        u = dense("drive")(xs)
        gate = jax.nn.sigmoid(dense("gate")(xs))
        logit = self.param(
            "lam_logit", lambda k, sh, dt: jnp.asarray(_timescale_logits(d), dt), (d,), pd
        )
        lam = jax.nn.sigmoid(logit.astype(jnp.float32))  # [D] in (0, 1)

        def recur(c: jax.Array, u_t: jax.Array) -> tuple[jax.Array, jax.Array]:
            c = lam * c + (1.0 - lam) * u_t
            return c, c

        u32 = jnp.swapaxes(u.astype(jnp.float32), 0, 1)  # [B, T, D] -> [T, B, D]
        trace, c = lax.scan(recur, trace.astype(jnp.float32), u32)
        drive = gate * jnp.swapaxes(c, 0, 1).astype(self.dtype)  # [T, B, D] -> [B, T, D]
        if self.use_rope:
            drive = rope_lib.apply_rope(
                drive, positions, max_len=self.rope_max_len, base=self.rope_base
            )  # rotated to token position t
            cos, sin = rope_lib.substep_tables(s, d, self.rope_base)  # [S, D/2]
            # [B, T, 1, D] rotated by the phases s / S -> [B, T, S, D]
            drive = rope_lib.rotate(drive[:, :, None, :], jnp.asarray(cos), jnp.asarray(sin))
        else:
            drive = jnp.broadcast_to(drive[:, :, None, :], (b, t, s, d))  # [B, T, S, D]
        lif = LIF(
            beta=self.lif_beta,
            threshold=self.lif_threshold,
            surrogate=self.surrogate,
            surrogate_scale=self.surrogate_scale,
            param_dtype=pd,
            name="lif",
        )
        spikes, mem = lif(drive.reshape(b, t * s, d), mem.astype(drive.dtype))  # [B, T*S, D]
        rate = jnp.mean(spikes.reshape(b, t, s, d), axis=2)  # [B, T*S, D] -> [B, T, S, D] -> mean S
        x = x + dense("readout")(rate).astype(x.dtype)
        f32 = lambda a: a.astype(jnp.float32)
        return x, (f32(h[:, -1]), trace, f32(mem))


class SpikingLanguageCore(nn.Module):
    """Spiking language core with a sequence form and a constant-cost recurrent step.

    Attributes:
      lang_backend: "lif" or "srwkv".
      num_layers: L (>= 1).
      dim: width D (>= 1; even when `use_rope`).
      use_rope: rotary position embeddings (see the module docstring for where).
      rope_max_len: positions must be < this (concrete positions raise ValueError; outputs at
        traced positions past the limit are NaN).
      rope_base: RoPE frequency base (> 1).
      internal_steps: S, LIF steps per token ("lif" backend).
      ffn_mult: SRWKV channel-mix width multiplier ("srwkv").
      spiking: SRWKV LIF spikes on/off ("srwkv"; the "lif" backend always spikes).
      lif_beta: LIF decay; None for the backend default (0.9 "lif", 0.5 "srwkv" = SpikeGPT).
      lif_threshold: LIF threshold (> 0).
      surrogate, surrogate_scale: spike surrogate (None: "fast_sigmoid" for "lif", "arctan"
        for "srwkv").
      wkv_impl: "auto" | "scan" | "assoc" | "chunked" ("srwkv"; see `aura.nn.wkv`).
      wkv_chunk: tokens per chunk of the "chunked" WKV ("srwkv").
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    lang_backend: str = "srwkv"
    num_layers: int = 2
    dim: int = 256
    use_rope: bool = True
    rope_max_len: int = 2048
    rope_base: float = 10000.0
    internal_steps: int = 4
    ffn_mult: float = 4
    spiking: bool = True
    lif_beta: float | None = None
    lif_threshold: float = 1.0
    surrogate: str | None = None
    surrogate_scale: float | None = None
    wkv_impl: str = "auto"
    wkv_chunk: int = DEFAULT_CHUNK
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if self.lang_backend not in LANG_BACKENDS:
            raise ValueError(
                f"unknown lang_backend {self.lang_backend!r}; valid: {', '.join(LANG_BACKENDS)}"
            )
        for name in ("num_layers", "dim", "internal_steps"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"SpikingLanguageCore {name} must be an int >= 1, got {val!r}")
        if self.use_rope:
            rope_lib.check_rope_config(self.rope_max_len, self.dim, self.rope_base)
        if not 0.0 <= self._beta() < 1.0:
            raise ValueError(f"lif_beta must be in [0, 1), got {self.lif_beta}")
        if not self.lif_threshold > 0:
            raise ValueError(f"lif_threshold must be > 0, got {self.lif_threshold}")
        spike_fn(self._surrogate(), self.surrogate_scale)  # validates the surrogate
        super().__post_init__()

    def _beta(self) -> float:
        return _DEFAULT_BETA[self.lang_backend] if self.lif_beta is None else self.lif_beta

    def _surrogate(self) -> str:
        if self.surrogate is not None:
            return self.surrogate
        return "fast_sigmoid" if self.lang_backend == "lif" else "arctan"

    def setup(self) -> None:
        common = dict(
            lif_beta=self._beta(),
            lif_threshold=self.lif_threshold,
            surrogate=self._surrogate(),
            surrogate_scale=self.surrogate_scale,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if self.lang_backend == "srwkv":
            self.core = SRWKV(
                num_layers=self.num_layers,
                dim=self.dim,
                ffn_mult=self.ffn_mult,
                spiking=self.spiking,
                wkv_impl=self.wkv_impl,
                wkv_chunk=self.wkv_chunk,
                **common,
            )
        else:
            self.layers = [
                LIFMixerLayer(
                    dim=self.dim,
                    steps=self.internal_steps,
                    use_rope=self.use_rope,
                    rope_max_len=self.rope_max_len,
                    rope_base=self.rope_base,
                    **common,
                )
                for _ in range(self.num_layers)
            ]
            self.ln_out = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)

    def init_state(self, batch: int) -> LanguageState:
        """The empty state for `batch` sequences, starting at position 0."""
        shape = (self.num_layers, batch, self.dim)
        if self.lang_backend == "srwkv":
            core = init_srwkv_state(*shape)
        else:
            zeros = jnp.zeros(shape, jnp.float32)
            core = LIFCoreState(zeros, zeros, zeros)
        return LanguageState(core, jnp.zeros((batch,), jnp.int32))

    def __call__(
        self, x: jax.Array, state: LanguageState | None = None
    ) -> tuple[jax.Array, LanguageState]:
        """Sequence form.

        Args:
          x: [B, T, D].
          state: from `init_state`, `__call__` or `step`; None starts at position 0.

        Returns:
          (y [B, T, D] in `dtype`, state after the last token).

        Raises:
          ValueError: bad shapes, or (with `use_rope`) a concrete position >= rope_max_len.
        """
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"language core input must be [B, T, D = {self.dim}], got {x.shape}")
        b, t, _ = x.shape
        if state is None:
            if self.use_rope:  # positions 0 .. T - 1 are static: check them here
                rope_lib.check_positions(np.array([t - 1]), self.rope_max_len, "token position")
            state = self.init_state(b)
        if state.position.shape != (b,):
            raise ValueError(f"state.position must be [B] = ({b},), got {state.position.shape}")
        if self.use_rope and not isinstance(state.position, jax.core.Tracer):
            last = np.asarray(state.position) + (t - 1)  # each sequence's last position
            rope_lib.check_positions(last, self.rope_max_len, "token position")
        positions = state.position[:, None] + jnp.arange(t, dtype=jnp.int32)  # [B, T]
        x = x.astype(self.dtype)
        if self.lang_backend == "srwkv":
            if self.use_rope:
                x = rope_lib.apply_rope(
                    x, positions, max_len=self.rope_max_len, base=self.rope_base
                )
            y, core = self.core(x, state.core)
        else:
            y, core = self._lif_stack(x, positions, state.core)
        if self.use_rope:
            # Traced positions past the table cannot raise; make those outputs NaN explicitly
            # (a spike threshold would otherwise swallow the NaN rotation silently).
            ok = (positions >= 0) & (positions < self.rope_max_len)  # [B, T]
            y = jnp.where(ok[..., None], y, jnp.asarray(jnp.nan, y.dtype))
        return y, LanguageState(core, state.position + t)

    def _lif_stack(
        self, x: jax.Array, positions: jax.Array, core: LIFCoreState
    ) -> tuple[jax.Array, LIFCoreState]:
        expect = (self.num_layers, x.shape[0], self.dim)
        for name, leaf in zip(LIFCoreState._fields, core, strict=True):
            if leaf.shape != expect:
                raise ValueError(
                    f"state.core.{name} must be [L, B, D] = {expect}, got {leaf.shape}"
                )
        new = []
        for i, layer in enumerate(self.layers):
            x, carry = layer(x, positions, tuple(leaf[i] for leaf in core))
            new.append(carry)
        stacked = LIFCoreState(*(jnp.stack(leaves) for leaves in zip(*new, strict=True)))
        return self.ln_out(x), stacked  # [L, B, D] leaves

    def step(
        self,
        x: jax.Array,
        state: LanguageState,
        position: int | jax.Array | None = None,
    ) -> tuple[jax.Array, LanguageState]:
        """Recurrent form: one token per sequence at constant cost.

        Args:
          x: [B, D].
          state: the carry.
          position: this token's position (int or [B]); None uses `state.position`.

        Returns:
          (y [B, D], state with position + 1).
        """
        if x.ndim != 2:
            raise ValueError(f"language core step input must be [B, D], got {x.shape}")
        if position is not None:
            pos = jnp.broadcast_to(jnp.asarray(position, jnp.int32), (x.shape[0],))  # [B]
            if self.use_rope and not isinstance(position, jax.core.Tracer):
                rope_lib.check_positions(position, self.rope_max_len, "token position")
            state = state._replace(position=pos)
        y, state = self(x[:, None], state)  # [B, D] -> [B, 1, D]
        return y[:, 0], state
