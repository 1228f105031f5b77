"""Gaussian and Gaussian-mixture log-densities in log space (pure JAX, no state).

Shapes: N points, D features, K mixture components. A covariance comes in one of three
parameterisations, named as in scikit-learn:

* ``"full"``: ``[K, D, D]`` symmetric positive-definite matrices,
* ``"diag"``: ``[K, D]`` per-feature variances,
* ``"spherical"``: ``[K]`` one variance per component.

Everything here is jit-able and vmap-able and works for any leading component layout once the
components are flattened to ``K`` (the HMM's ``[S, M]`` state-by-mixture grid is reshaped to
``[S * M]`` by its caller). Densities are computed directly on ``x - mu`` (never through the
``x^2 - 2 x mu + mu^2`` expansion), which keeps float32 accurate when the data sit far from the
origin.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

COVARIANCE_TYPES = ("full", "diag", "spherical")
_LOG_2PI = math.log(2.0 * math.pi)


def check_covariance_type(covariance_type: str) -> str:
    """Returns `covariance_type` or raises ValueError naming the valid choices."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type={covariance_type!r} is not supported; use one of {COVARIANCE_TYPES}"
        )
    return covariance_type


def covariance_shape(covariance_type: str, k: int, d: int) -> tuple[int, ...]:
    """The array shape of K covariances of dimension D in the given parameterisation."""
    check_covariance_type(covariance_type)
    return {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


def precision_cholesky(covariances: jax.Array) -> jax.Array:
    """Upper-triangular P with ``P P^T = Sigma^-1`` for each full covariance [K, D, D].

    A covariance that is not positive definite yields NaNs (JAX's Cholesky does not raise);
    callers check with `covariance_is_singular`.
    """
    chol = jnp.linalg.cholesky(covariances)  # [K, D, D] lower, Sigma = L L^T
    eye = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype), chol.shape)
    inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)  # [K, D, D] = L^-1
    return jnp.swapaxes(inv, -1, -2)  # [K, D, D] = L^-T


def component_log_prob(
    x: jax.Array, means: jax.Array, covariances: jax.Array, covariance_type: str
) -> jax.Array:
    """log N(x_n | mu_k, Sigma_k) for every point and component.

    Args:
      x: points [N, D].
      means: [K, D].
      covariances: [K, D, D] ("full"), [K, D] ("diag") or [K] ("spherical").
      covariance_type: one of `COVARIANCE_TYPES`.

    Returns:
      [N, K] log-densities.
    """
    d = x.shape[-1]
    if covariance_type == "full":
        prec = precision_cholesky(covariances)  # [K, D, D]
        y = jnp.einsum("nd,kde->nke", x, prec) - jnp.einsum("kd,kde->ke", means, prec)  # [N,K,D]
        maha = jnp.sum(jnp.square(y), axis=-1)  # [N, K]
        half_logdet = -jnp.sum(jnp.log(jnp.diagonal(prec, axis1=-2, axis2=-1)), axis=-1)  # [K]
    elif covariance_type == "diag":
        diff = x[:, None, :] - means[None]  # [N, K, D]
        maha = jnp.sum(jnp.square(diff) / covariances[None], axis=-1)  # [N, K]
        half_logdet = 0.5 * jnp.sum(jnp.log(covariances), axis=-1)  # [K]
    elif covariance_type == "spherical":
        diff = x[:, None, :] - means[None]  # [N, K, D]
        maha = jnp.sum(jnp.square(diff), axis=-1) / covariances[None]  # [N, K]
        half_logdet = 0.5 * d * jnp.log(covariances)  # [K]
    else:
        check_covariance_type(covariance_type)
        raise AssertionError
    return -0.5 * (d * _LOG_2PI + maha) - half_logdet[None]


def mixture_log_prob(
    x: jax.Array,
    log_weights: jax.Array,
    means: jax.Array,
    covariances: jax.Array,
    covariance_type: str,
) -> tuple[jax.Array, jax.Array]:
    """Per-point mixture log-density and log-responsibilities.

    Args:
      x: [N, D]; log_weights: [K]; means: [K, D]; covariances as in `component_log_prob`.
      covariance_type: one of `COVARIANCE_TYPES`.

    Returns:
      ``(log_p [N], log_resp [N, K])`` with ``log_resp`` normalised over K.
    """
    joint = component_log_prob(x, means, covariances, covariance_type) + log_weights[None]
    log_p = jax.nn.logsumexp(joint, axis=-1)  # [N]
    return log_p, joint - log_p[:, None]


def weighted_moments(
    x: jax.Array, resp: jax.Array, covariance_type: str, reg_covar: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The Gaussian M-step: component masses, means and covariances from responsibilities.

    Rows of `resp` that are all zero (padding, masked points) contribute nothing.

    Args:
      x: [N, D] points.
      resp: [N, K] non-negative responsibilities (already multiplied by any sample mask).
      covariance_type: one of `COVARIANCE_TYPES`.
      reg_covar: added to the diagonal of every covariance (as scikit-learn's `reg_covar`).

    Returns:
      ``(nk [K], means [K, D], covariances)``. ``nk`` gets scikit-learn's ``10 * eps`` floor so
      an empty component never divides by zero.
    """
    eps = jnp.finfo(x.dtype).eps
    nk = jnp.sum(resp, axis=0) + 10.0 * eps  # [K]
    means = (resp.T @ x) / nk[:, None]  # [K, D]
    diff = x[:, None, :] - means[None]  # [N, K, D]
    if covariance_type == "full":
        wdiff = jnp.sqrt(resp)[..., None] * diff  # [N, K, D]
        cov = jnp.einsum("nkd,nke->kde", wdiff, wdiff) / nk[:, None, None]  # [K, D, D]
        cov = cov + reg_covar * jnp.eye(x.shape[-1], dtype=x.dtype)[None]
    elif covariance_type == "diag":
        cov = jnp.einsum("nk,nkd->kd", resp, jnp.square(diff)) / nk[:, None] + reg_covar  # [K, D]
    elif covariance_type == "spherical":
        var = jnp.einsum("nk,nkd->kd", resp, jnp.square(diff)) / nk[:, None]  # [K, D]
        cov = jnp.mean(var, axis=-1) + reg_covar  # [K]
    else:
        check_covariance_type(covariance_type)
        raise AssertionError
    return nk, means, cov


def covariance_is_singular(covariances: jax.Array, covariance_type: str) -> jax.Array:
    """Bool [K]: which covariances are not (numerically) positive definite."""
    if covariance_type == "full":
        chol = jnp.linalg.cholesky(covariances)  # [K, D, D]
        diag = jnp.diagonal(chol, axis1=-2, axis2=-1)  # [K, D]
        return jnp.any(~jnp.isfinite(diag) | (diag <= 0), axis=-1)
    bad = ~jnp.isfinite(covariances) | (covariances <= 0)
    return jnp.any(bad, axis=-1) if covariance_type == "diag" else bad


def sample_components(
    key: jax.Array, means: jax.Array, covariances: jax.Array, covariance_type: str
) -> jax.Array:
    """One draw from each of N chosen Gaussians: means [N, D], covariances per N -> [N, D]."""
    eps = jax.random.normal(key, means.shape, means.dtype)  # [N, D]
    if covariance_type == "full":
        chol = jnp.linalg.cholesky(covariances)  # [N, D, D]
        return means + jnp.einsum("nde,ne->nd", chol, eps)
    if covariance_type == "diag":
        return means + jnp.sqrt(covariances) * eps
    return means + jnp.sqrt(covariances)[:, None] * eps


def num_covariance_params(covariance_type: str, k: int, d: int) -> int:
    """Free parameters of K covariances (for BIC/AIC, as scikit-learn counts them)."""
    check_covariance_type(covariance_type)
    return {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k}[covariance_type]
