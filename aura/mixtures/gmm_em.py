"""Pure, jit-able Gaussian-mixture fitting: k-means++ init, EM and gradient (optax) fitting.

Parameters are a plain dict ``{"weights" [K], "means" [K, D], "covariances"}`` (covariances in
one of `aura.nn.gaussian.COVARIANCE_TYPES`). Points come with a weight vector ``w [N]`` (1 for
real points, 0 for padding), so padded batches of any fill share one compiled function.

EM follows scikit-learn's `GaussianMixture` step for step (same M-step, same ``10 * eps`` mass
floor, same `reg_covar`, same convergence test on the change of the mean log-likelihood), so
that from the same initial parameters both reach the same optimum. The whole loop is one
`lax.while_loop`; several initialisations run at once under `vmap`.

Shapes: N points, D features, K components, I initialisations, L = max_iter.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from aura.nn import gaussian as gauss

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
FIT_METHODS = ("em", "gradient")


class FitResult(NamedTuple):
    """Outcome of one fit (leaves gain a leading [I] axis under vmap)."""

    params: dict
    lower_bound: jax.Array  # mean log-likelihood at the last E-step (scikit-learn's lower_bound_)
    history: jax.Array  # [L] mean log-likelihood per iteration (NaN after the last)
    n_iter: jax.Array  # int32
    converged: jax.Array  # bool
    singular: jax.Array  # bool [K]: a covariance stopped being positive definite


def mean_ll(x: jax.Array, w: jax.Array, params: dict, cov_type: str) -> jax.Array:
    """Weighted mean per-point log-likelihood."""
    log_p, _ = gauss.mixture_log_prob(
        x, jnp.log(params["weights"]), params["means"], params["covariances"], cov_type
    )
    return jnp.sum(w * log_p) / jnp.sum(w)


def m_step(x: jax.Array, w: jax.Array, resp: jax.Array, cov_type: str, reg_covar: float) -> dict:
    """Parameters from responsibilities [N, K] (rows scaled by the point weights w [N])."""
    nk, means, cov = gauss.weighted_moments(x, resp * w[:, None], cov_type, reg_covar)
    return {"weights": nk / jnp.sum(nk), "means": means, "covariances": cov}


def _sq_dist(x: jax.Array, centers: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(x[:, None, :] - centers[None]), axis=-1)  # [N, K]


def kmeans_plus_plus(key: jax.Array, x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding (D^2 sampling) over the points with w > 0: centers [K, D]."""
    keys = jax.random.split(key, k)
    logw = jnp.where(w > 0, 0.0, -jnp.inf)
    first = jax.random.categorical(keys[0], logw)
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = jnp.sum(jnp.square(x - x[first]), axis=-1)  # [N]

    def body(i, carry):
        centers, d2 = carry
        logits = jnp.where(w > 0, jnp.log(d2 + 1e-30), -jnp.inf)
        c = x[jax.random.categorical(keys[i], logits)]
        return centers.at[i].set(c), jnp.minimum(d2, jnp.sum(jnp.square(x - c), axis=-1))

    centers, _ = lax.fori_loop(1, k, body, (centers, d2))
    return centers


def lloyd(x: jax.Array, w: jax.Array, centers: jax.Array, steps: int) -> jax.Array:
    """`steps` weighted Lloyd iterations; an empty cluster keeps its center."""

    def body(_, c):
        onehot = jax.nn.one_hot(jnp.argmin(_sq_dist(x, c), axis=1), c.shape[0]) * w[:, None]
        counts = jnp.sum(onehot, axis=0)  # [K]
        new = (onehot.T @ x) / jnp.maximum(counts, 1e-12)[:, None]  # [K, D]
        return jnp.where(counts[:, None] > 0, new, c)

    return lax.fori_loop(0, steps, body, centers)


def init_params(
    key: jax.Array, x: jax.Array, w: jax.Array, k: int, cov_type: str, reg_covar: float, method: str
) -> dict:
    """Initial parameters: responsibilities from `method`, then one M-step (as scikit-learn)."""
    if method == "random":
        resp = jax.random.uniform(key, (x.shape[0], k), x.dtype)
        resp = resp / jnp.sum(resp, axis=1, keepdims=True)
    else:
        if method == "random_from_data":
            idx = jax.random.choice(key, x.shape[0], (k,), replace=False, p=w / jnp.sum(w))
            centers = x[idx]
        else:
            centers = kmeans_plus_plus(key, x, w, k)
            if method == "kmeans":
                centers = lloyd(x, w, centers, 20)
        resp = jax.nn.one_hot(jnp.argmin(_sq_dist(x, centers), axis=1), k, dtype=x.dtype)
    return m_step(x, w, resp, cov_type, reg_covar)


def _bad(params: dict, cov_type: str) -> jax.Array:
    return gauss.covariance_is_singular(params["covariances"], cov_type)


@functools.partial(jax.jit, static_argnames=("cov_type", "max_iter"))
def em(
    x: jax.Array,
    w: jax.Array,
    params0: dict,
    *,
    cov_type: str,
    reg_covar: float,
    tol: float,
    max_iter: int,
) -> FitResult:
    """Runs EM from `params0` until the mean log-likelihood changes by < tol or max_iter.

    Stops early (with ``singular`` set) if a covariance stops being positive definite.
    """
    hist0 = jnp.full((max_iter,), jnp.nan, x.dtype)
    init = (params0, jnp.asarray(-jnp.inf, x.dtype), 0, False, _bad(params0, cov_type), hist0)

    def cond(c):
        _, _, it, conv, bad, _ = c
        return (it < max_iter) & ~conv & ~jnp.any(bad)

    def body(c):
        params, lb_prev, it, _, _, hist = c
        log_p, log_resp = gauss.mixture_log_prob(
            x, jnp.log(params["weights"]), params["means"], params["covariances"], cov_type
        )
        lb = jnp.sum(w * log_p) / jnp.sum(w)
        new = m_step(x, w, jnp.exp(log_resp), cov_type, reg_covar)
        conv = jnp.abs(lb - lb_prev) < tol
        return new, lb, it + 1, conv, _bad(new, cov_type), hist.at[it].set(lb)

    params, lb, it, conv, bad, hist = lax.while_loop(cond, body, init)
    return FitResult(params, lb, hist, jnp.asarray(it, jnp.int32), conv, bad)


def _unconstrained(params: dict, cov_type: str) -> dict:
    cov = params["covariances"]
    if cov_type == "full":
        chol = jnp.linalg.cholesky(cov)  # [K, D, D]
        d = jnp.diagonal(chol, axis1=-2, axis2=-1)
        raw = chol - jax.vmap(jnp.diag)(d) + jax.vmap(jnp.diag)(jnp.log(d))
    else:
        raw = jnp.log(cov)
    return {"logits": jnp.log(params["weights"]), "means": params["means"], "cov": raw}


def _constrained(u: dict, cov_type: str, reg_covar: float) -> dict:
    if cov_type == "full":
        low = jnp.tril(u["cov"], k=-1)
        chol = low + jax.vmap(jnp.diag)(jnp.exp(jnp.diagonal(u["cov"], axis1=-2, axis2=-1)))
        eye = jnp.eye(u["cov"].shape[-1], dtype=u["cov"].dtype)
        cov = jnp.einsum("kde,kfe->kdf", chol, chol) + reg_covar * eye  # [K, D, D] = L L^T
    else:
        cov = jnp.exp(u["cov"]) + reg_covar
    return {"weights": jax.nn.softmax(u["logits"]), "means": u["means"], "covariances": cov}


@functools.partial(jax.jit, static_argnames=("cov_type", "max_iter"))
def gradient_fit(
    x: jax.Array,
    w: jax.Array,
    params0: dict,
    *,
    cov_type: str,
    reg_covar: float,
    tol: float,
    max_iter: int,
    learning_rate: float,
) -> FitResult:
    """Maximises the mean log-likelihood with Adam for `max_iter` full-batch steps.

    ``converged`` says whether the last step changed the objective by less than `tol`.
    """
    opt = optax.adam(learning_rate)
    u0 = _unconstrained(params0, cov_type)

    def loss(u):
        return -mean_ll(x, w, _constrained(u, cov_type, reg_covar), cov_type)

    def step(carry, _):
        u, state = carry
        value, grads = jax.value_and_grad(loss)(u)
        updates, state = opt.update(grads, state, u)
        return (optax.apply_updates(u, updates), state), -value

    (u, _), hist = lax.scan(step, (u0, opt.init(u0)), None, length=max_iter)
    params = _constrained(u, cov_type, reg_covar)
    final = mean_ll(x, w, params, cov_type)
    conv = jnp.abs(final - hist[-1]) < tol
    n_iter = jnp.asarray(max_iter, jnp.int32)
    return FitResult(params, final, hist, n_iter, conv, _bad(params, cov_type))


@functools.partial(
    jax.jit, static_argnames=("k", "cov_type", "init_method", "fit_method", "max_iter")
)
def fit_many(
    keys: jax.Array,
    x: jax.Array,
    w: jax.Array,
    *,
    k: int,
    cov_type: str,
    reg_covar: float,
    tol: float,
    max_iter: int,
    init_method: str,
    fit_method: str = "em",
    learning_rate: float = 0.05,
) -> FitResult:
    """Initialises and fits one model per key [I] in one vmapped call (the n_init restarts)."""

    def one(key):
        p0 = init_params(key, x, w, k, cov_type, reg_covar, init_method)
        kw = dict(cov_type=cov_type, reg_covar=reg_covar, tol=tol, max_iter=max_iter)
        if fit_method == "gradient":
            return gradient_fit(x, w, p0, learning_rate=learning_rate, **kw)
        return em(x, w, p0, **kw)

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("cov_type",))
def score_samples(x: jax.Array, params: dict, cov_type: str) -> tuple[jax.Array, jax.Array]:
    """``(log_p [N], log_resp [N, K])`` under a fitted mixture."""
    return gauss.mixture_log_prob(
        x, jnp.log(params["weights"]), params["means"], params["covariances"], cov_type
    )
