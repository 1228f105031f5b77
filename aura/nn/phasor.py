"""Phasor bank: learnable damped oscillators that turn a static input into temporal features.

Each of P oscillators is a 2-D damped resonator driven by a learned projection of the input:
``z_{t+1} = exp(-lambda) * R(omega) @ z_t + (u_t, 0)`` with R the rotation by omega radians per
step, read out through a phase rotation R(phi). The rotation is written with real cos/sin
arithmetic (no complex dtypes, which Apple Metal lacks). Frequencies start on a log-spaced
grid, so different oscillators resonate at different rates.

Shapes use the house alphabet: B batch, T tokens, D features, S steps; P is the number of
oscillators.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DRIVE_MODES = ("step", "impulse")


def _inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0 (stable for large y)."""
    return y + math.log(-math.expm1(-y))


def _log_spaced(lo: float, hi: float):
    """Initializer: omegas on a geometric grid from lo to hi (one oscillator: their mean)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        del key  # deterministic grid
        (p,) = shape
        if p == 1:
            return jnp.full(shape, math.sqrt(lo * hi), dtype)
        return jnp.geomspace(lo, hi, p).astype(dtype)

    return init


def _uniform_phase(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -math.pi, math.pi)


class PhasorBank(nn.Module):
    """A bank of P learnable damped oscillators run for S steps.

    Parameters (one per oscillator, shape [P]): `omega` (radians per step), `phi` (readout
    phase) and `decay_raw` with ``lambda = softplus(decay_raw) >= 0`` so that the per-step gain
    ``exp(-lambda) <= 1``. The drive ``u = Dense(P)(x)`` enters the first state component every
    step ("step" drive: the response to a constant input) or only at the first step
    ("impulse" drive: the free ringing of each oscillator). With ``z_0 = 0`` the outputs are
    ``z_1 .. z_S``, so ``z_1 = (u, 0)``.

    Readout per step: ``(c, s) = R(phi) z``, features ``[c_1..c_P, s_1..s_P]``. The summary
    is ``[mean_t |z_t| (P), c_S (P)]``: a mean amplitude (nonlinear, phase free) and the
    last in-phase value (signed).

    The recurrence runs in float32 (at least) and the outputs are cast to the computation
    dtype, so bf16 inputs give bf16 outputs without a bf16 accumulation.

    Attributes:
      num_oscillators: P (>= 1).
      steps: S (>= 1).
      summary: return [..., 2P] summary features instead of [..., S, 2P].
      drive: "step" or "impulse".
      omega_min: lowest initial frequency (radians/step, > 0).
      omega_max: highest initial frequency (radians/step, > omega_min; pi is Nyquist).
      init_decay: initial lambda (> 0).
      dtype: computation dtype; None uses the input's dtype.
      param_dtype: parameter dtype.
    """

    num_oscillators: int
    steps: int = 16
    summary: bool = False
    drive: str = "step"
    omega_min: float = 0.05
    omega_max: float = 3.0
    init_decay: float = 0.05
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        p, s = self.num_oscillators, self.steps
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"num_oscillators must be an int >= 1, got {p!r}")
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"steps must be an int >= 1, got {s!r}")
        if self.drive not in DRIVE_MODES:
            raise ValueError(f"unknown drive {self.drive!r}; valid: {', '.join(DRIVE_MODES)}")
        if not 0 < self.omega_min < self.omega_max:
            raise ValueError(
                f"need 0 < omega_min < omega_max, got omega_min = {self.omega_min}, "
                f"omega_max = {self.omega_max}"
            )
        if not self.init_decay > 0:
            raise ValueError(f"init_decay must be > 0, got {self.init_decay}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Runs the bank.

        Args:
          x: [B, D] or [B, T, D] (any leading dims; they are flattened and restored).

        Returns:
          Features [..., S, 2P], or [..., 2P] when `summary` is set.
        """
        if x.ndim < 2:
            raise ValueError(f"PhasorBank input must be [..., D], got shape {x.shape}")
        p, n_steps = self.num_oscillators, self.steps
        dtype = self.dtype or x.dtype
        state_dtype = jnp.promote_types(dtype, jnp.float32)
        lead = x.shape[:-1]
        xf = x.reshape(-1, x.shape[-1]).astype(dtype)  # [B, T, D] -> [B*T, D]

        omega = self.param(
            "omega", _log_spaced(self.omega_min, self.omega_max), (p,), self.param_dtype
        )
        phi = self.param("phi", _uniform_phase, (p,), self.param_dtype)
        decay_raw = self.param(
            "decay_raw",
            nn.initializers.constant(_inverse_softplus(self.init_decay)),
            (p,),
            self.param_dtype,
        )
        u = nn.Dense(p, dtype=dtype, param_dtype=self.param_dtype, name="drive")(xf)  # [B, P]
        u = u.astype(state_dtype)

        omega, phi = omega.astype(state_dtype), phi.astype(state_dtype)
        rho = jnp.exp(-jax.nn.softplus(decay_raw.astype(state_dtype)))  # [P], in (0, 1]
        rc, rs = rho * jnp.cos(omega), rho * jnp.sin(omega)  # damped rotation entries
        if self.drive == "step":
            gate = jnp.ones((n_steps,), state_dtype)
        else:
            gate = jnp.zeros((n_steps,), state_dtype).at[0].set(1)

        def step(z: tuple[jax.Array, jax.Array], g: jax.Array):
            a, b = z
            a, b = rc * a - rs * b + g * u, rs * a + rc * b
            return (a, b), (a, b)

        zeros = jnp.zeros_like(u)
        _, (a, b) = lax.scan(step, (zeros, zeros), gate)  # a, b: [S, B, P]
        cp, sp = jnp.cos(phi), jnp.sin(phi)
        c = cp * a - sp * b  # in-phase readout [S, B, P]
        s = sp * a + cp * b  # quadrature readout [S, B, P]

        if self.summary:
            # sqrt of a floor keeps the gradient finite where the state is exactly zero.
            amp = jnp.sqrt(jnp.maximum(a * a + b * b, 1e-12))  # [S, B, P]
            out = jnp.concatenate([jnp.mean(amp, axis=0), c[-1]], axis=-1)  # [B, 2P]
            return out.reshape(lead + (2 * p,)).astype(dtype)  # [B*T, 2P] -> [B, T, 2P]
        feats = jnp.concatenate([c, s], axis=-1)  # [S, B, 2P]
        feats = jnp.swapaxes(feats, 0, 1)  # [S, B, 2P] -> [B, S, 2P]
        return feats.reshape(lead + (n_steps, 2 * p)).astype(dtype)  # -> [B, T, S, 2P]
