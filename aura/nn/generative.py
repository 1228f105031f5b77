"""Deep generative blocks: a VAE encoder/decoder and a small DDPM (cosine schedule, residual MLP
denoiser, ancestral sampler).

* `VAEEncoder`: x -> (mu, logvar) of a diagonal Gaussian posterior; `reparameterize` draws z;
  `gaussian_kl` is KL(q(z|x) || N(0, I)).
* `VAEDecoder`: z -> reconstruction (``"sigmoid"`` for data in [0, 1], ``"linear"`` otherwise).
* `cosine_schedule(T)`: the cosine noise schedule of Nichol & Dhariwal (2021).
* `TinyDiffusionBlock`: a residual-MLP noise predictor eps(x_t, t[, cond]) with a sinusoidal
  step embedding; `diffusion_loss` is the simple epsilon-MSE objective of DDPM (Ho et al. 2020);
  `ddpm_sample` runs the ancestral sampler as one `lax.scan`, optionally from a partially
  noised input (``start_step < T``: refine an existing vector, SDEdit-style).

Shapes: B batch, D data width, F hidden width, Z latent width, T diffusion steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "DiffusionSchedule",
    "TinyDiffusionBlock",
    "VAEDecoder",
    "VAEEncoder",
    "cosine_schedule",
    "ddpm_sample",
    "diffusion_loss",
    "gaussian_kl",
    "q_sample",
    "reparameterize",
    "timestep_embedding",
]


class VAEEncoder(nn.Module):
    """x [..., D] -> (mu, logvar) [..., Z]; logvar is clipped to [-10, 10] for stability."""

    hidden_dim: int
    z_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.relu(nn.Dense(self.hidden_dim, name="fc1")(x))
        mu = nn.Dense(self.z_dim, name="fc_mu")(h)
        logvar = jnp.clip(nn.Dense(self.z_dim, name="fc_logvar")(h), -10.0, 10.0)
        return mu, logvar


class VAEDecoder(nn.Module):
    """z [..., Z] -> reconstruction [..., D]."""

    hidden_dim: int
    out_dim: int
    output: str = "linear"  # "linear" or "sigmoid"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        if self.output not in ("linear", "sigmoid"):
            raise ValueError(f"VAEDecoder.output={self.output!r}; use 'linear' or 'sigmoid'")
        h = nn.relu(nn.Dense(self.hidden_dim, name="fc1")(z))
        out = nn.Dense(self.out_dim, name="fc_out")(h)
        return jax.nn.sigmoid(out) if self.output == "sigmoid" else out


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mu + exp(logvar / 2) * eps."""
    return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the last axis: [...]."""
    return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


class DiffusionSchedule(NamedTuple):
    """Per-step arrays [T] of a DDPM noise schedule (step index 0 .. T-1)."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array


def cosine_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> DiffusionSchedule:
    """The cosine schedule: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T) + s) / (1 + s) pi/2).

    Raises:
      ValueError: num_steps < 1.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    t = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    f = jnp.cos((t + s) / (1.0 + s) * math.pi / 2.0) ** 2
    abar = f / f[0]
    betas = jnp.clip(1.0 - abar[1:] / abar[:-1], 0.0, max_beta)
    alphas = 1.0 - betas
    return DiffusionSchedule(betas, alphas, jnp.cumprod(alphas))


def q_sample(
    schedule: DiffusionSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise [B, D], t int [B]."""
    abar = schedule.alpha_bars[t][:, None]
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of integer steps t [B] -> [B, dim] (dim even)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]  # [B, dim/2]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TinyDiffusionBlock(nn.Module):
    """Residual-MLP noise predictor: eps_hat = f(x_t, t, cond) [B, D].

    x_t is projected to width F and the step (and optional condition) embeddings are added;
    `num_blocks` pre-LN residual MLP blocks follow, then a projection back to D.

    Attributes:
      dim: data width D.
      hidden_dim: residual width F (default 2 D, as the original block).
      num_blocks: residual blocks.
      time_dim: sinusoidal step-embedding width (even).
    """

    dim: int
    hidden_dim: int | None = None
    num_blocks: int = 2
    time_dim: int = 32

    @nn.compact
    def __call__(self, x_t: jax.Array, t: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        hidden = self.hidden_dim or 2 * self.dim
        h = nn.Dense(hidden, name="fc_in")(x_t)  # [B, F]
        h = h + nn.Dense(hidden, name="time")(timestep_embedding(t, self.time_dim))
        if cond is not None:
            h = h + nn.Dense(hidden, name="cond")(cond)
        for i in range(self.num_blocks):
            y = nn.silu(nn.Dense(hidden, name=f"fc{i}a")(nn.LayerNorm(name=f"ln{i}")(h)))
            h = h + nn.Dense(hidden, name=f"fc{i}b")(y)  # residual block
        return nn.Dense(self.dim, name="fc_out")(nn.silu(nn.LayerNorm(name="ln_out")(h)))


EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def diffusion_loss(
    eps_fn: EpsFn, schedule: DiffusionSchedule, x0: jax.Array, key: jax.Array
) -> jax.Array:
    """DDPM's simple loss: mean ||eps - eps_fn(x_t, t)||^2 at uniformly drawn steps."""
    k_t, k_n = jax.random.split(key)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, schedule.betas.shape[0])
    noise = jax.random.normal(k_n, x0.shape, x0.dtype)
    pred = eps_fn(q_sample(schedule, x0, t, noise), t)
    return jnp.mean(jnp.square(pred - noise))


def ddpm_sample(
    eps_fn: EpsFn,
    schedule: DiffusionSchedule,
    key: jax.Array,
    shape: tuple[int, int],
    x_init: jax.Array | None = None,
    start_step: int | None = None,
) -> jax.Array:
    """Ancestral DDPM sampling from step `start_step` - 1 down to 0.

    Args:
      eps_fn: the noise predictor eps(x_t, t [B]).
      schedule: the noise schedule (T steps).
      key: PRNG key.
      shape: (B, D).
      x_init: optional [B, D] to refine: it is noised to `start_step` first (SDEdit).
      start_step: number of reverse steps (default T; with `x_init`, fewer steps keep more of
        it).

    Returns:
      Samples [B, D].
    """
    num = schedule.betas.shape[0]
    start = num if start_step is None else int(start_step)
    if not 1 <= start <= num:
        raise ValueError(f"start_step={start_step} must be in 1..{num}")
    k0, kloop = jax.random.split(key)
    noise = jax.random.normal(k0, shape)
    if x_init is None:
        x = noise
    else:
        x = q_sample(schedule, x_init, jnp.full((shape[0],), start - 1), noise)

    def step(x, inputs):
        t, k = inputs
        tb = jnp.full((shape[0],), t)
        eps = eps_fn(x, tb)
        beta, alpha, abar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
        mean = (x - beta / jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(alpha)
        abar_prev = jnp.where(t > 0, schedule.alpha_bars[jnp.maximum(t - 1, 0)], 1.0)
        var = beta * (1.0 - abar_prev) / (1.0 - abar)  # posterior variance beta-tilde
        z = jax.random.normal(k, shape)
        return mean + jnp.where(t > 0, jnp.sqrt(var), 0.0) * z, None

    steps = jnp.arange(start - 1, -1, -1)
    x, _ = lax.scan(step, x, (steps, jax.random.split(kloop, start)))
    return x
