"""Spiking building blocks: surrogate spike functions, LIF neurons, k-WTA and spiking attention.

Spikes are a Heaviside step in the forward pass; the backward pass uses a smooth surrogate
derivative (Neftci et al., 2019; the snnTorch forms), so spiking layers train with ordinary
gradients. Everything here is pure, static-shape and safe under `jit`, `grad` and `vmap`.

Shapes use the house alphabet: B batch, T tokens, D features, S spike steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

SpikeFn = Callable[[jax.Array], jax.Array]

RESET_MODES = ("subtract", "zero")


def _heaviside(x: jax.Array) -> jax.Array:
    """Spike where the (shifted) membrane is strictly positive, as snnTorch does."""
    return (x > 0).astype(x.dtype)


def _fast_sigmoid_grad(x: jax.Array, slope: float) -> jax.Array:
    return 1.0 / (1.0 + slope * jnp.abs(x)) ** 2


def _arctan_grad(x: jax.Array, alpha: float) -> jax.Array:
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


def _sigmoid_grad(x: jax.Array, slope: float) -> jax.Array:
    # sig(z) * sig(-z) rather than s * (1 - s): no cancellation to zero for large |z|.
    return slope * jax.nn.sigmoid(slope * x) * jax.nn.sigmoid(-slope * x)


def _make_spike(grad_fn: Callable[[jax.Array, float], jax.Array], name: str):
    """Builds a Heaviside whose JVP is `grad_fn(x, scale) * dx` (scale is static)."""

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def spike(x: jax.Array, scale: float) -> jax.Array:
        return _heaviside(x)

    @spike.defjvp
    def _spike_jvp(scale, primals, tangents):
        (x,), (dx,) = primals, tangents
        # The surrogate is computed in x's dtype (scale is a weakly typed Python float).
        return _heaviside(x), grad_fn(x, scale).astype(dx.dtype) * dx

    spike.__name__ = name
    return spike


# name -> (spike function with a custom JVP, default scale). Defaults follow snnTorch.
_SURROGATES: dict[str, tuple[Any, float]] = {
    "fast_sigmoid": (_make_spike(_fast_sigmoid_grad, "fast_sigmoid"), 25.0),
    "arctan": (_make_spike(_arctan_grad, "arctan"), 2.0),
    "sigmoid": (_make_spike(_sigmoid_grad, "sigmoid"), 25.0),
}
SURROGATES: tuple[str, ...] = tuple(sorted(_SURROGATES))


def _check_surrogate(name: str, scale: float | None) -> None:
    if name not in _SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; valid names: {', '.join(SURROGATES)}")
    if scale is not None and not (isinstance(scale, int | float) and 0 < scale < math.inf):
        raise ValueError(f"surrogate scale must be a finite number > 0, got {scale!r}")


def spike_fn(name: str = "fast_sigmoid", scale: float | None = None) -> SpikeFn:
    """Returns a spike function: exact Heaviside forward, surrogate derivative backward.

    Surrogate derivatives d spike / dx (x = membrane - threshold):

    * ``fast_sigmoid``: ``1 / (1 + scale * |x|)**2`` (scale = slope, default 25).
    * ``arctan``: ``(scale / 2) / (1 + (pi * scale * x / 2)**2)`` (scale = alpha, default 2).
    * ``sigmoid``: ``scale * sig(scale * x) * sig(-scale * x)`` (default 25).

    Args:
      name: surrogate name, one of `SURROGATES`.
      scale: slope/alpha of the surrogate; None picks the default above.

    Returns:
      A function x -> spikes with ``spikes = (x > 0)`` in x's dtype, differentiable.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or scale <= 0.
    """
    _check_surrogate(name, scale)
    fn, default = _SURROGATES[name]
    return functools.partial(fn, scale=float(default if scale is None else scale))


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons run for S steps with an explicit membrane carry.

    Per step (integrate, fire, reset in the same step):
    ``v = beta * v + i_t; s_t = spike(v - threshold); v -= s_t * threshold`` ("subtract")
    or ``v *= 1 - s_t`` ("zero"). Like snnTorch, the reset is detached from the gradient
    by default, so gradients flow through the leak and the surrogate only.

    Attributes:
      beta: membrane decay in [0, 1]; with `learn_beta` the initial value (then in (0, 1)).
      learn_beta: learn one decay per feature, ``beta = sigmoid(beta_logit)`` with
        `beta_logit` a [D] param, so it stays in (0, 1).
      threshold: firing threshold (> 0).
      surrogate: surrogate name (see `spike_fn`).
      surrogate_scale: slope/alpha of the surrogate; None for its default.
      reset: "subtract" or "zero".
      detach_reset: stop the gradient through the reset term.
      param_dtype: dtype of `beta_logit`.
    """

    beta: float = 0.9
    learn_beta: bool = False
    threshold: float = 1.0
    surrogate: str = "fast_sigmoid"
    surrogate_scale: float | None = None
    reset: str = "subtract"
    detach_reset: bool = True
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_surrogate(self.surrogate, self.surrogate_scale)
        if self.reset not in RESET_MODES:
            raise ValueError(f"unknown reset {self.reset!r}; valid: {', '.join(RESET_MODES)}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.learn_beta and not 0.0 < self.beta < 1.0:
            raise ValueError(f"learnable beta must start in (0, 1), got {self.beta}")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        super().__post_init__()

    def init_carry(self, batch: int, dim: int, dtype: Any = jnp.float32) -> jax.Array:
        """Resting membrane potential: zeros [B, D]."""
        return jnp.zeros((batch, dim), dtype)

    @nn.compact
    def __call__(
        self, inputs: jax.Array, carry: jax.Array | None = None, resets: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Runs the neurons over the S axis.

        Args:
          inputs: input currents [B, S, D] (floating; the computation runs in this dtype).
          carry: membrane potential [B, D] from a previous call, or None for rest (zeros).
          resets: optional bool [B, S]: the membrane is at rest (zero) before these steps
            (packed sequences: a new record starts there).

        Returns:
          (spikes [B, S, D] exactly 0/1 in the input dtype, final membrane v [B, D]).
          Feeding v back as `carry` continues the sequence exactly.
        """
        if inputs.ndim != 3:
            raise ValueError(f"LIF inputs must be [B, S, D], got shape {inputs.shape}")
        b, _, d = inputs.shape
        dtype = inputs.dtype
        if carry is None:
            carry = self.init_carry(b, d, dtype)
        if carry.shape != (b, d):
            raise ValueError(f"LIF carry must be [B, D] = {(b, d)}, got {carry.shape}")
        carry = carry.astype(dtype)
        if self.learn_beta:
            logit = math.log(self.beta / (1.0 - self.beta))
            beta_logit = self.param(
                "beta_logit", nn.initializers.constant(logit), (d,), self.param_dtype
            )
            beta = jax.nn.sigmoid(beta_logit).astype(dtype)  # [D]
        else:
            beta = jnp.asarray(self.beta, dtype)
        spike = spike_fn(self.surrogate, self.surrogate_scale)
        thr = jnp.asarray(self.threshold, dtype)

        def step(v: jax.Array, xs: tuple) -> tuple[jax.Array, jax.Array]:
            i_t, rest = xs
            leak = beta * v if rest is None else jnp.where(rest[:, None], 0.0, beta * v)
            v = leak + i_t
            s = spike(v - thr)
            r = lax.stop_gradient(s) if self.detach_reset else s
            v = v - r * thr if self.reset == "subtract" else v * (1 - r)
            return v, s

        rest = None if resets is None else jnp.swapaxes(resets, 0, 1).astype(bool)  # [S, B]
        v, spikes = lax.scan(step, carry, (jnp.swapaxes(inputs, 0, 1), rest))  # xs [S, B, D]
        return jnp.swapaxes(spikes, 0, 1), v  # [S, B, D] -> [B, S, D]


def _check_k(k: Any, d: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be a Python int (static), got {k!r}")
    if not 1 <= k <= d:
        raise ValueError(f"k must satisfy 1 <= k <= D = {d}, got k = {k}")


def _kwta_hard(
    scores: jax.Array, k: int, temperature: float, tiebreak: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """Exact top-k mask (ranks from a lexicographic sort) and the surrogate threshold."""
    axis = scores.ndim - 1
    d = scores.shape[-1]
    iota = lax.broadcasted_iota(jnp.int32, scores.shape, axis)  # [..., D]
    # Descending by score, then by tiebreak, then ascending index: a strict total order.
    keys = (-scores,) + (() if tiebreak is None else (-tiebreak,)) + (iota,)
    out = lax.sort(keys, dimension=axis, num_keys=len(keys))
    neg_sorted, order = out[0], out[-1]  # [..., D] each
    _, ranks = lax.sort((order, iota), dimension=axis, num_keys=1)  # inverse permutation
    hard = (ranks < k).astype(scores.dtype)  # exactly k ones per row
    kth = -neg_sorted[..., k - 1]
    tau = (kth + -neg_sorted[..., k]) / 2 if k < d else kth - temperature
    return hard, tau[..., None]


def kwta(
    scores: jax.Array,
    k: int,
    *,
    temperature: float = 1.0,
    tiebreak: jax.Array | None = None,
) -> jax.Array:
    """k-winners-take-all gains with a straight-through sigmoid surrogate.

    Forward: a {0, 1} mask with exactly k ones per row, at the k largest scores. Ties go to
    the larger `tiebreak` value, then to the lower index (a sort, never a threshold test).
    Backward: the gradient of ``sigmoid((scores - tau) / temperature)`` where tau is the
    midpoint between the k-th and (k+1)-th largest scores of the row (held constant; for
    k = D, tau = k-th largest - temperature). The value is ``hard + (soft - sg(soft))``, whose
    second term is exactly zero, so the forward mask is exactly 0/1.

    Args:
      scores: [..., D] floating scores.
      k: number of winners per row, a Python int with 1 <= k <= D.
      temperature: surrogate temperature (> 0), in units of the scores.
      tiebreak: optional [..., D] secondary key for rows with equal scores (no gradient).

    Returns:
      Gains [..., D] in the dtype of `scores`.

    Raises:
      ValueError: k outside [1, D], temperature <= 0, or a tiebreak of another shape.
    """
    scores = jnp.asarray(scores)
    if scores.ndim < 1:
        raise ValueError(f"kwta scores need a feature axis, got shape {scores.shape}")
    _check_k(k, scores.shape[-1])
    if not temperature > 0:
        raise ValueError(f"kwta temperature must be > 0, got {temperature}")
    if tiebreak is not None:
        if tiebreak.shape != scores.shape:
            raise ValueError(f"tiebreak shape {tiebreak.shape} != scores shape {scores.shape}")
        tiebreak = lax.stop_gradient(tiebreak.astype(scores.dtype))
    hard, tau = _kwta_hard(lax.stop_gradient(scores), k, temperature, tiebreak)
    soft = jax.nn.sigmoid((scores - tau) / temperature)
    return hard + (soft - lax.stop_gradient(soft))


class SpikingAttention(nn.Module):
    """Feature gating by spiking competition: Dense drive -> LIF for S steps -> rates -> k-WTA.

    Each feature's neuron is driven by a constant learned current for `steps` steps; its
    spike rate scores the feature, and the k most active features (rate ties broken by the
    drive) get gain 1, the rest 0. Gradients reach the drive through the k-WTA and spike
    surrogates.

    Attributes:
      k: active features per row (1 <= k <= D).
      steps: spike steps S (>= 1).
      surrogate: spike surrogate name (see `spike_fn`).
      surrogate_scale: slope/alpha of the surrogate; None for its default.
      threshold: LIF threshold.
      beta: LIF decay.
      learn_beta: learn the LIF decay per feature.
      reset: LIF reset mode.
      temperature: k-WTA surrogate temperature, in spike-rate units.
      dtype: computation dtype; None uses the input's dtype.
      param_dtype: parameter dtype.
    """

    k: int
    steps: int = 8
    surrogate: str = "fast_sigmoid"
    surrogate_scale: float | None = None
    threshold: float = 1.0
    beta: float = 0.9
    learn_beta: bool = False
    reset: str = "subtract"
    temperature: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an int >= 1, got {self.k!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        _check_surrogate(self.surrogate, self.surrogate_scale)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Gates the features of x.

        Args:
          x: [B, D] or [B, T, D] (any leading dims; they are flattened).

        Returns:
          (x * gains, gains), both shaped like x; gains are exactly 0/1 in the forward pass
          with exactly k ones per row.
        """
        if x.ndim < 2:
            raise ValueError(f"SpikingAttention input must be [..., D], got shape {x.shape}")
        d = x.shape[-1]
        _check_k(self.k, d)
        dtype = self.dtype or x.dtype
        xf = x.reshape(-1, d).astype(dtype)  # [B, T, D] -> [B*T, D]
        n = xf.shape[0]
        drive = nn.Dense(d, dtype=dtype, param_dtype=self.param_dtype, name="drive")(xf)
        currents = jnp.broadcast_to(drive[:, None, :], (n, self.steps, d))  # [B, S, D]
        lif = LIF(
            beta=self.beta,
            learn_beta=self.learn_beta,
            threshold=self.threshold,
            surrogate=self.surrogate,
            surrogate_scale=self.surrogate_scale,
            reset=self.reset,
            param_dtype=self.param_dtype,
            name="lif",
        )
        spikes, _ = lif(currents)
        rates = jnp.mean(spikes, axis=1)  # [B, S, D] -> [B, D]
        gains = kwta(rates, self.k, temperature=self.temperature, tiebreak=drive)
        gains = gains.reshape(x.shape).astype(x.dtype)  # [B*T, D] -> [B, T, D]
        return x * gains, gains
