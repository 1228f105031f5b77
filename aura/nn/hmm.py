"""Hidden Markov model inference in log space: forward-backward, posteriors and Viterbi.

Shapes: B sequences, T time steps (padded), S hidden states. Every function takes the emission
log-likelihoods ``log_b [B, T, S]`` (``log p(x_t | state)``, from any emission model) and a
validity mask ``mask [B, T]`` (True for the first ``length_b`` steps of sequence b, False on the
padding); padded steps leave the recursions unchanged, so one batch holds sequences of different
lengths and one compiled function serves them all. Every sequence must have length >= 1.

Two evaluation orders give the same numbers:

* ``method="scan"``: the textbook O(T S^2) recursions as `lax.scan` over time.
* ``method="associative"``: the forward and backward messages as prefix/suffix products of
  per-step transfer matrices in the (logsumexp, +) semiring, by `lax.associative_scan`
  (O(T S^3) work but O(log T) depth: for long sequences on parallel hardware).

Pure functions of arrays (differentiable; used inside models too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

HMM_METHODS = ("scan", "associative")
_NEG = -1e30  # a finite "log 0" for padding elements (keeps gradients finite)


def lengths_mask(lengths: jax.Array, t: int) -> jax.Array:
    """Bool [B, T]: True for the first lengths[b] steps of each row."""
    return jnp.arange(t)[None, :] < lengths[:, None]


def _check_method(method: str) -> None:
    if method not in HMM_METHODS:
        raise ValueError(f"method={method!r} is not supported; use one of {HMM_METHODS}")


def _forward_scan(log_pi, log_a, log_b, mask):
    alpha0 = log_pi[None] + log_b[:, 0]  # [B, S]

    def step(alpha, inputs):
        lb, m = inputs  # [B, S], [B]
        new = jax.nn.logsumexp(alpha[:, :, None] + log_a[None], axis=1) + lb  # [B, S]
        alpha = jnp.where(m[:, None], new, alpha)
        return alpha, alpha

    xs = (jnp.swapaxes(log_b[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))  # [T-1, B, ...]
    _, rest = lax.scan(step, alpha0, xs)
    return jnp.concatenate([alpha0[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)  # [B, T, S]


def _backward_scan(log_a, log_b, mask):
    b, _, s = log_b.shape
    beta_last = jnp.zeros((b, s), log_b.dtype)

    def step(beta, inputs):
        lb_next, m_next = inputs  # emissions and mask at t + 1
        new = jax.nn.logsumexp(log_a[None] + (lb_next + beta)[:, None, :], axis=2)  # [B, S]
        beta = jnp.where(m_next[:, None], new, 0.0)
        return beta, beta

    xs = (jnp.swapaxes(log_b[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))  # [T-1, B, ...]
    _, rest = lax.scan(step, beta_last, xs, reverse=True)
    return jnp.concatenate([jnp.swapaxes(rest, 0, 1), beta_last[:, None]], axis=1)  # [B, T, S]


def _log_matmul(x: jax.Array, y: jax.Array) -> jax.Array:
    """(logsumexp, +) product of [..., S, S] matrices."""
    return jax.nn.logsumexp(x[..., :, :, None] + y[..., None, :, :], axis=-2)


def _transfer_matrices(log_pi, log_a, log_b, mask):
    """[B, T, S, S]: step 0 holds pi*b_0 in every row; padded steps hold the identity."""
    s = log_a.shape[0]
    ident = jnp.where(jnp.eye(s, dtype=bool), 0.0, _NEG).astype(log_b.dtype)  # [S, S]
    steps = log_a[None, None] + log_b[:, :, None, :]  # [B, T, S, S]
    steps = jnp.where(mask[:, :, None, None], steps, ident)
    first = jnp.broadcast_to((log_pi[None] + log_b[:, 0])[:, None, :], steps.shape[:1] + (s, s))
    return steps.at[:, 0].set(first)


def _forward_assoc(log_pi, log_a, log_b, mask):
    mats = _transfer_matrices(log_pi, log_a, log_b, mask)  # [B, T, S, S]
    prefix = lax.associative_scan(_log_matmul, mats, axis=1)  # [B, T, S, S]
    return prefix[:, :, 0, :]  # every row of the prefix product equals alpha_t


def _backward_assoc(log_a, log_b, mask):
    mats = _transfer_matrices(jnp.zeros(log_a.shape[0], log_b.dtype), log_a, log_b, mask)
    # suffix[t] = M_t (x) M_{t+1} (x) ... ; beta_t = row sums (logsumexp) of suffix[t + 1].
    suffix = lax.associative_scan(lambda x, y: _log_matmul(y, x), mats, axis=1, reverse=True)
    beta = jax.nn.logsumexp(suffix[:, 1:], axis=-1)  # [B, T-1, S]
    zeros = jnp.zeros_like(beta[:, :1])
    return jnp.concatenate([beta, zeros], axis=1)  # [B, T, S]


def forward(
    log_pi: jax.Array,
    log_a: jax.Array,
    log_b: jax.Array,
    mask: jax.Array,
    method: str = "scan",
) -> tuple[jax.Array, jax.Array]:
    """Forward messages and sequence log-likelihoods.

    Args:
      log_pi: [S] initial log-probabilities.
      log_a: [S, S] transition log-probabilities (row: from, column: to).
      log_b: [B, T, S] emission log-likelihoods.
      mask: [B, T] bool validity (prefix of each row).
      method: "scan" or "associative".

    Returns:
      ``(log_alpha [B, T, S], log_lik [B])``; on padded steps alpha repeats the last valid one.
    """
    _check_method(method)
    fn = _forward_scan if method == "scan" else _forward_assoc
    log_alpha = fn(log_pi, log_a, log_b, mask)
    return log_alpha, jax.nn.logsumexp(log_alpha[:, -1], axis=-1)


def backward(
    log_a: jax.Array, log_b: jax.Array, mask: jax.Array, method: str = "scan"
) -> jax.Array:
    """Backward messages log_beta [B, T, S] (0 on the last valid step and on padding)."""
    _check_method(method)
    fn = _backward_scan if method == "scan" else _backward_assoc
    return fn(log_a, log_b, mask)


def posteriors(
    log_pi: jax.Array,
    log_a: jax.Array,
    log_b: jax.Array,
    mask: jax.Array,
    method: str = "scan",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """State posteriors and expected transition counts (the Baum-Welch E-step).

    Args:
      log_pi, log_a, log_b, mask, method: as in `forward`.

    Returns:
      ``(log_lik [B], gamma [B, T, S], xi_sum [S, S])``: gamma is p(state_t | x) (zero on
      padding); xi_sum sums p(state_{t-1}=i, state_t=j | x) over all valid steps t >= 1 and
      all sequences.
    """
    log_alpha, log_lik = forward(log_pi, log_a, log_b, mask, method)
    log_beta = backward(log_a, log_b, mask, method)
    gamma = jnp.exp(log_alpha + log_beta - log_lik[:, None, None]) * mask[..., None]
    log_xi = (
        log_alpha[:, :-1, :, None]
        + log_a[None, None]
        + (log_b[:, 1:] + log_beta[:, 1:])[:, :, None, :]
        - log_lik[:, None, None, None]
    )  # [B, T-1, S, S]
    xi_sum = jnp.einsum("bt,btij->ij", mask[:, 1:].astype(log_b.dtype), jnp.exp(log_xi))
    return log_lik, gamma, xi_sum


def viterbi(
    log_pi: jax.Array, log_a: jax.Array, log_b: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Most likely state paths.

    Args:
      log_pi, log_a, log_b, mask: as in `forward`.

    Returns:
      ``(paths int32 [B, T], log_prob [B])``: paths hold -1 on padding; log_prob is the joint
      log-probability of each best path with its sequence.
    """
    b, t, s = log_b.shape
    delta0 = log_pi[None] + log_b[:, 0]  # [B, S]
    ident = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))

    def step(delta, inputs):
        lb, m = inputs
        scores = delta[:, :, None] + log_a[None]  # [B, S(from), S(to)]
        best = jnp.argmax(scores, axis=1).astype(jnp.int32)  # [B, S]
        new = jnp.max(scores, axis=1) + lb
        return jnp.where(m[:, None], new, delta), jnp.where(m[:, None], best, ident)

    xs = (jnp.swapaxes(log_b[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))  # [T-1, B, ...]
    delta, back = lax.scan(step, delta0, xs)  # back [T-1, B, S]
    last = jnp.argmax(delta, axis=-1).astype(jnp.int32)  # [B]

    def trace(state, ptr):
        prev = jnp.take_along_axis(ptr, state[:, None], axis=1)[:, 0]
        return prev, state

    first, states = lax.scan(trace, last, back, reverse=True)  # states [T-1, B] for t >= 1
    paths = jnp.concatenate([first[None], states], axis=0).T  # [T, B] -> [B, T]
    return jnp.where(mask, paths, -1), jnp.max(delta, axis=-1)
