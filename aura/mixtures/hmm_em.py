"""Pure, jit-able Baum-Welch for HMMs with Gaussian-mixture emissions.

Parameters are a plain dict: ``startprob [S]``, ``transmat [S, S]``, ``weights [S, M]``,
``means [S, M, D]`` and ``covariances`` ([S, M, D, D] full, [S, M, D] diag, [S, M] spherical).
Sequences come padded, ``x [B, T, D]`` with ``mask [B, T]``; padded steps and padded sequences
(all-False rows are allowed here: they add nothing) share one compiled function.

The E-step is `aura.nn.hmm.posteriors` (scan or associative scan); the M-step re-estimates the
start and transition probabilities from the state posteriors and the expected transition
counts, and each state's mixture from the per-mixture posteriors with the Gaussian M-step of
`aura.nn.gaussian.weighted_moments` (as hmmlearn's `GMMHMM` with flat priors).

Shapes: B sequences, T steps, D features, S states, M mixtures per state, L = max_iter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from aura.mixtures import gmm_em
from aura.mixtures.gmm_em import FitResult
from aura.nn import gaussian as gauss
from aura.nn import hmm as hmm_ops


def emission_terms(x: jax.Array, params: dict, cov_type: str) -> tuple[jax.Array, jax.Array]:
    """``(log_b [B, T, S], log_joint [B, T, S, M])``: state and per-mixture emission terms."""
    b, t, d = x.shape
    s, m = params["weights"].shape
    cov = params["covariances"]
    flat_cov = cov.reshape((s * m,) + cov.shape[2:])  # [S, M, ...] -> [S*M, ...]
    comp = gauss.component_log_prob(
        x.reshape(b * t, d), params["means"].reshape(s * m, d), flat_cov, cov_type
    )  # [B*T, S*M]
    log_joint = comp.reshape(b, t, s, m) + jnp.log(params["weights"])[None, None]
    return jax.nn.logsumexp(log_joint, axis=-1), log_joint


def sequence_log_lik(
    x: jax.Array, mask: jax.Array, params: dict, cov_type: str, method: str = "scan"
) -> jax.Array:
    """Per-sequence log-likelihood [B]."""
    log_b, _ = emission_terms(x, params, cov_type)
    _, ll = hmm_ops.forward(
        jnp.log(params["startprob"]), jnp.log(params["transmat"]), log_b, mask, method
    )
    return ll


def _normalise(counts: jax.Array, axis: int = -1) -> jax.Array:
    total = jnp.sum(counts, axis=axis, keepdims=True)
    uniform = jnp.full_like(counts, 1.0 / counts.shape[axis])
    return jnp.where(total > 0, counts / jnp.where(total > 0, total, 1.0), uniform)


def m_step(
    x: jax.Array,
    mask: jax.Array,
    gamma: jax.Array,
    xi_sum: jax.Array,
    log_joint: jax.Array,
    log_b: jax.Array,
    cov_type: str,
    reg_covar: float,
) -> dict:
    """New parameters from the E-step statistics."""
    b, t, d = x.shape
    s, m = log_joint.shape[-2:]
    seq_valid = mask[:, 0].astype(x.dtype)  # [B]: all-padding rows do not vote for startprob
    startprob = _normalise(jnp.einsum("b,bs->s", seq_valid, gamma[:, 0]))
    transmat = _normalise(xi_sum)
    resp = gamma[..., None] * jnp.exp(log_joint - log_b[..., None])  # [B, T, S, M]
    resp = resp.reshape(b * t, s * m)  # [B*T, S*M]
    nk, means, cov = gauss.weighted_moments(x.reshape(b * t, d), resp, cov_type, reg_covar)
    weights = _normalise(nk.reshape(s, m))
    return {
        "startprob": startprob,
        "transmat": transmat,
        "weights": weights,
        "means": means.reshape(s, m, d),
        "covariances": cov.reshape((s, m) + cov.shape[1:]),
    }


def e_step(x, mask, params, cov_type, method):
    """Total log-likelihood and the statistics `m_step` needs."""
    log_b, log_joint = emission_terms(x, params, cov_type)
    ll, gamma, xi_sum = hmm_ops.posteriors(
        jnp.log(params["startprob"]), jnp.log(params["transmat"]), log_b, mask, method
    )
    return jnp.sum(jnp.where(mask[:, 0], ll, 0.0)), gamma, xi_sum, log_joint, log_b


@functools.partial(jax.jit, static_argnames=("cov_type", "max_iter", "method"))
def baum_welch(
    x: jax.Array,
    mask: jax.Array,
    params0: dict,
    *,
    cov_type: str,
    reg_covar: float,
    tol: float,
    max_iter: int,
    method: str = "scan",
) -> FitResult:
    """EM until the TOTAL log-likelihood changes by < tol (hmmlearn's test) or max_iter.

    ``lower_bound`` and ``history`` hold total log-likelihoods (of the parameters before each
    M-step); stops early with ``singular`` set if an emission covariance degenerates.
    """
    hist0 = jnp.full((max_iter,), jnp.nan, x.dtype)
    bad0 = gauss.covariance_is_singular(_flat_cov(params0), cov_type)
    init = (params0, jnp.asarray(-jnp.inf, x.dtype), 0, False, bad0, hist0)

    def cond(c):
        _, _, it, conv, bad, _ = c
        return (it < max_iter) & ~conv & ~jnp.any(bad)

    def body(c):
        params, prev, it, _, _, hist = c
        ll, gamma, xi_sum, log_joint, log_b = e_step(x, mask, params, cov_type, method)
        new = m_step(x, mask, gamma, xi_sum, log_joint, log_b, cov_type, reg_covar)
        bad = gauss.covariance_is_singular(_flat_cov(new), cov_type)
        return new, ll, it + 1, jnp.abs(ll - prev) < tol, bad, hist.at[it].set(ll)

    params, ll, it, conv, bad, hist = lax.while_loop(cond, body, init)
    return FitResult(params, ll, hist, jnp.asarray(it, jnp.int32), conv, bad)


def _flat_cov(params: dict) -> jax.Array:
    cov = params["covariances"]
    s, m = params["weights"].shape
    return cov.reshape((s * m,) + cov.shape[2:])


def init_params(
    key: jax.Array,
    x: jax.Array,
    mask: jax.Array,
    s: int,
    m: int,
    cov_type: str,
    reg_covar: float,
    topology: str = "ergodic",
) -> dict:
    """k-means (k-means++ + Lloyd) on all valid frames gives the state centers; each state's
    M mixture means are its center plus small jitter (a tenth of the within-state spread);
    covariances start at the state's spread.

    ``topology="ergodic"``: uniform start and transition probabilities (as hmmlearn).
    ``topology="left_right"``: start in state 0; each state stays (p = 1/2) or moves to the
    next (the last one stays); the states are initialised from equal time slices of the
    sequences instead of k-means. EM keeps the zero transitions at zero, so the chain stays
    left-to-right (the usual model for handwriting and speech).
    """
    b, t, d = x.shape
    frames, w = x.reshape(b * t, d), mask.reshape(b * t).astype(x.dtype)
    k1, k2 = jax.random.split(key)
    if topology == "left_right":
        lengths = jnp.sum(mask, axis=1, keepdims=True)  # [B, 1]
        slot = jnp.minimum(jnp.arange(t)[None] * s // jnp.maximum(lengths, 1), s - 1)  # [B, T]
        resp = jax.nn.one_hot(slot.reshape(b * t), s, dtype=x.dtype)
        centers = (
            (resp * w[:, None]).T
            @ frames
            / jnp.maximum(jnp.sum(resp * w[:, None], axis=0), 1e-12)[:, None]
        )  # [S, D]
    else:
        centers = gmm_em.lloyd(frames, w, gmm_em.kmeans_plus_plus(k1, frames, w, s), 20)
        resp = jax.nn.one_hot(
            jnp.argmin(gmm_em._sq_dist(frames, centers), axis=1), s, dtype=x.dtype
        )
    nk, _, var = gauss.weighted_moments(frames, resp * w[:, None], "diag", reg_covar)  # [S, D]
    spread = jnp.sqrt(jnp.maximum(var, reg_covar))
    jitter = 0.1 * spread[:, None] * jax.random.normal(k2, (s, m, d), x.dtype)
    means = centers[:, None] + jitter * (m > 1)  # [S, M, D]
    if cov_type == "full":
        cov = jax.vmap(jnp.diag)(var)[:, None] * jnp.ones((1, m, 1, 1), x.dtype)  # [S, M, D, D]
    elif cov_type == "diag":
        cov = jnp.broadcast_to(var[:, None], (s, m, d))
    else:
        cov = jnp.broadcast_to(jnp.mean(var, axis=-1)[:, None], (s, m))
    if topology == "left_right":
        startprob = jnp.zeros((s,), x.dtype).at[0].set(1.0)
        stay = jnp.eye(s, dtype=x.dtype) * 0.5 + jnp.eye(s, k=1, dtype=x.dtype) * 0.5
        transmat = stay.at[s - 1, s - 1].set(1.0)
    else:
        startprob = jnp.full((s,), 1.0 / s, x.dtype)
        transmat = jnp.full((s, s), 1.0 / s, x.dtype)
    return {
        "startprob": startprob,
        "transmat": transmat,
        "weights": jnp.full((s, m), 1.0 / m, x.dtype),
        "means": means,
        "covariances": cov,
    }


@functools.partial(
    jax.jit, static_argnames=("s", "m", "cov_type", "max_iter", "method", "topology")
)
def fit_many(
    keys: jax.Array,
    x: jax.Array,
    mask: jax.Array,
    *,
    s: int,
    m: int,
    cov_type: str,
    reg_covar: float,
    tol: float,
    max_iter: int,
    method: str = "scan",
    topology: str = "ergodic",
) -> FitResult:
    """Initialises and fits one HMM per key [I] under vmap (the n_init restarts)."""

    def one(key):
        p0 = init_params(key, x, mask, s, m, cov_type, reg_covar, topology)
        return baum_welch(
            x, mask, p0, cov_type=cov_type, reg_covar=reg_covar, tol=tol, max_iter=max_iter,
            method=method,
        )  # fmt: skip

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("cov_type", "method"))
def score_and_posteriors(x, mask, params, cov_type: str, method: str = "scan"):
    """``(log_lik [B], gamma [B, T, S])`` for fitted parameters."""
    log_b, _ = emission_terms(x, params, cov_type)
    ll, gamma, _ = hmm_ops.posteriors(
        jnp.log(params["startprob"]), jnp.log(params["transmat"]), log_b, mask, method
    )
    return ll, gamma


@functools.partial(jax.jit, static_argnames=("cov_type", "method"))
def log_lik(x, mask, params, cov_type: str, method: str = "scan"):
    """Per-sequence log-likelihood [B] (forward pass only)."""
    return sequence_log_lik(x, mask, params, cov_type, method)


@functools.partial(jax.jit, static_argnames=("cov_type",))
def decode(x, mask, params, cov_type: str):
    """Viterbi ``(paths [B, T] (-1 on padding), log_prob [B])``."""
    log_b, _ = emission_terms(x, params, cov_type)
    return hmm_ops.viterbi(jnp.log(params["startprob"]), jnp.log(params["transmat"]), log_b, mask)
