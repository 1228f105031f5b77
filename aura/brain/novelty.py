"""Per-expert novelty gates: class-conditional PPCA densities that tell which expert applies.

Shapes: N samples, D input width, Q principal directions, K class slots (over all experts),
E experts.

After an expert has learned its task, :func:`fit_expert_gate` fits one probabilistic PCA
density (Tipping & Bishop, 1999) per class of that task's training inputs and stores only its
statistics: the mean ``mu`` [D], the top-Q eigenvectors ``U`` [D, Q] of the class covariance,
their eigenvalues ``lam`` [Q] and the isotropic residual variance ``sigma2`` (the mean of the
other D - Q eigenvalues), with floors so the density stays proper when a class has fewer samples
than dimensions. The model covariance is the maximum-likelihood PPCA one,

    C = W W^T + sigma2 I,   W = U (diag(lam) - sigma2 I)^(1/2)
      = U diag(lam) U^T + sigma2 (I - U U^T),

so ``log N(x; mu, C)`` needs no D x D matrix: with ``z = U^T (x - mu)`` and the residual
``r = (x - mu) - U z``, ``log|C| = sum log lam + (D - Q) log sigma2`` and the Mahalanobis term
is ``sum z^2 / lam + |r|^2 / sigma2``.

At test time, without a task label, the gate score of expert e is the log-sum-exp over its
classes of these log-likelihoods, ``log sum_c p(x | c)`` (equal class priors), i.e. the
expert's log-evidence for x. :func:`gate_bias` turns the scores into an additive gate-logit
bias for ``RoutingControls.bias``; with a zero learned gate the LiquidMoE router's softmax is
then exactly the posterior ``p(expert | x)`` and top-1 routing picks the most likely expert.

Why this is not replay: a gate is a fixed-size summary (Q + 1 vectors and Q + 1 numbers per
class, whatever the number of images), fitted once from the current task's data while that
data is available and never used to train any network. No image, and no sample drawn from
the densities, is ever fed back to an expert (earlier experts are frozen anyway); the gates
only score new inputs. The :class:`GateBank` has static shapes (one slot per class of every
planned task) so scoring is jit-safe and never retraces as tasks are added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "GateBank",
    "PPCA",
    "fit_expert_gate",
    "fit_ppca",
    "gate_bias",
    "gate_scores",
    "ppca_covariance",
    "ppca_log_likelihood",
]

NEG_INF = -1e30  # finite "minus infinity" (same convention as the router)
_LOG_2PI = float(np.log(2.0 * np.pi))


class PPCA(NamedTuple):
    """Statistics of PPCA densities, stacked on a leading class-slot axis K.

    mean: f32 [K, D]; components: f32 [K, D, Q] orthonormal columns; variances: f32 [K, Q]
    (eigenvalues, each >= noise); noise: f32 [K] isotropic residual variance sigma^2.
    """

    mean: np.ndarray | jax.Array
    components: np.ndarray | jax.Array
    variances: np.ndarray | jax.Array
    noise: np.ndarray | jax.Array


def fit_ppca(x: np.ndarray, q: int, noise_floor: float = 1e-2) -> PPCA:
    """Maximum-likelihood PPCA of samples ``x`` [N, D] (one class), as a K = 1 stack.

    Args:
      x: samples [N, D] (N >= 1); converted to float32.
      q: number of principal directions Q, in [1, D - 1].
      noise_floor: lower bound on the residual variance sigma^2 (> 0); every kept eigenvalue is
        also raised to at least sigma^2, so C is positive definite even when N <= D.

    Returns:
      PPCA with leading dim 1.

    Raises:
      ValueError: empty ``x``, ``q`` outside [1, D - 1] or a non-positive floor.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"fit_ppca needs samples [N >= 1, D], got shape {x.shape}")
    d = x.shape[1]
    if not 1 <= q <= d - 1:
        raise ValueError(f"PPCA dimension q = {q} must be in [1, D - 1 = {d - 1}]")
    if noise_floor <= 0:
        raise ValueError(f"noise_floor = {noise_floor} must be > 0")
    mean = x.mean(axis=0)
    xc = x - mean
    cov = (xc.T @ xc) / np.float32(x.shape[0])  # [D, D]
    lam, vec = np.linalg.eigh(cov)  # ascending
    lam, vec = lam[::-1].astype(np.float32), vec[:, ::-1].astype(np.float32)
    sigma2 = max(float(np.mean(np.maximum(lam[q:], 0.0))), noise_floor)
    variances = np.maximum(lam[:q], sigma2)
    return PPCA(
        mean=mean[None],
        components=np.ascontiguousarray(vec[:, :q])[None],
        variances=variances[None].astype(np.float32),
        noise=np.full((1,), sigma2, np.float32),
    )


def ppca_covariance(p: PPCA) -> jax.Array:
    """Model covariances ``W W^T + sigma^2 I`` [K, D, D] (for tests and analysis; O(D^2))."""
    noise = jnp.asarray(p.noise)[:, None]  # [K, 1]
    scale = jnp.sqrt(jnp.maximum(jnp.asarray(p.variances) - noise, 0.0))  # [K, Q]
    w = jnp.asarray(p.components) * scale[:, None, :]  # [K, D, Q]
    d = w.shape[1]
    return jnp.einsum("kdq,keq->kde", w, w) + noise[:, :, None] * jnp.eye(d)  # [K, D, D]


def ppca_log_likelihood(p: PPCA, x: jax.Array) -> jax.Array:
    """``log N(x; mean_k, C_k)`` for every sample and class slot: [N, K] (jit-safe).

    Args:
      p: stacked PPCA statistics (K slots).
      x: samples [N, D].
    """
    x = jnp.asarray(x, jnp.float32)
    mean, comps = jnp.asarray(p.mean), jnp.asarray(p.components)
    lam, noise = jnp.asarray(p.variances), jnp.asarray(p.noise)
    d, q = comps.shape[1], comps.shape[2]
    diff = x[:, None, :] - mean[None]  # [N, K, D]
    z = jnp.einsum("nkd,kdq->nkq", diff, comps)  # [N, K, Q]
    resid = diff - jnp.einsum("nkq,kdq->nkd", z, comps)  # [N, K, D]
    maha = jnp.sum(z * z / lam[None], axis=-1) + jnp.sum(resid * resid, axis=-1) / noise[None]
    logdet = jnp.sum(jnp.log(lam), axis=-1) + (d - q) * jnp.log(noise)  # [K]
    return -0.5 * (d * _LOG_2PI + logdet[None] + maha)


@struct.dataclass
class GateBank:
    """Novelty gates of all experts: PPCA statistics in fixed class slots.

    Attributes:
      stats: PPCA stacked over K slots (slots of unfitted classes hold harmless placeholders).
      owner: int32 [K], the expert each slot belongs to.
      local: int32 [K], the class index within its expert's task.
      valid: bool [K], whether the slot has been fitted.
      num_experts: E (static).
    """

    stats: PPCA
    owner: np.ndarray
    local: np.ndarray
    valid: np.ndarray
    num_experts: int = struct.field(pytree_node=False)

    @classmethod
    def create(cls, classes_per_expert: Sequence[int], dim: int, q: int) -> GateBank:
        """An empty bank with one slot per class of each planned expert.

        Args:
          classes_per_expert: number of classes each expert's task has (length E).
          dim: input width D.
          q: PPCA dimension Q.
        """
        if not classes_per_expert or min(classes_per_expert) < 1:
            raise ValueError(
                f"classes_per_expert = {list(classes_per_expert)} must be non-empty and >= 1 each"
            )
        if not 1 <= q <= dim - 1:
            raise ValueError(f"PPCA dimension q = {q} must be in [1, D - 1 = {dim - 1}]")
        owner = np.repeat(np.arange(len(classes_per_expert)), classes_per_expert).astype(np.int32)
        local = np.concatenate([np.arange(c) for c in classes_per_expert]).astype(np.int32)
        k = owner.shape[0]
        eye = np.zeros((dim, q), np.float32)
        eye[np.arange(q), np.arange(q)] = 1.0  # orthonormal placeholder columns
        stats = PPCA(
            mean=np.zeros((k, dim), np.float32),
            components=np.broadcast_to(eye, (k, dim, q)).copy(),
            variances=np.ones((k, q), np.float32),
            noise=np.ones((k,), np.float32),
        )
        return cls(stats, owner, local, np.zeros((k,), bool), len(classes_per_expert))


def fit_expert_gate(
    bank: GateBank,
    expert: int,
    x: np.ndarray,
    local_labels: np.ndarray,
    q: int,
    noise_floor: float = 1e-2,
) -> GateBank:
    """Fits the gate of ``expert`` from its task's training inputs (statistics only).

    Args:
      bank: the gate bank.
      expert: expert index e.
      x: that task's training inputs [N, D].
      local_labels: int [N], class index within the task (0 .. classes of e - 1).
      q: PPCA dimension Q.
      noise_floor: residual variance floor.

    Returns:
      A new bank where every class of ``expert`` present in ``local_labels`` is fitted; classes
      without examples stay unfitted and never score.

    Raises:
      ValueError: unknown expert, label out of range, or shapes that do not match the bank.
    """
    if not 0 <= expert < bank.num_experts:
        raise ValueError(f"expert {expert} out of range [0, {bank.num_experts})")
    x = np.asarray(x, np.float32)
    local_labels = np.asarray(local_labels)
    slots = np.flatnonzero(bank.owner == expert)
    if x.ndim != 2 or x.shape[1] != bank.stats.mean.shape[1]:
        raise ValueError(f"inputs {x.shape} must be [N, D = {bank.stats.mean.shape[1]}]")
    if local_labels.shape != (x.shape[0],):
        raise ValueError(f"local_labels shape {local_labels.shape} must be ({x.shape[0]},)")
    if local_labels.size and not 0 <= local_labels.min() <= local_labels.max() < slots.size:
        raise ValueError(
            f"local labels must be in [0, {slots.size}) for expert {expert}, got "
            f"[{local_labels.min()}, {local_labels.max()}]"
        )
    stats = [np.array(a) for a in bank.stats]  # copies: the bank is treated as immutable
    valid = np.array(bank.valid)
    for slot in slots:
        xs = x[local_labels == bank.local[slot]]
        if xs.shape[0] == 0:
            continue
        fitted = fit_ppca(xs, q, noise_floor)
        for arr, new in zip(stats, fitted, strict=True):
            arr[slot] = new[0]
        valid[slot] = True
    return bank.replace(stats=PPCA(*stats), valid=valid)


def gate_scores(bank: GateBank, x: jax.Array) -> jax.Array:
    """Per-expert novelty score ``log sum_{c of e} p(x | c)``: f32 [N, E] (jit-safe).

    Experts without a fitted class score ``NEG_INF``.
    """
    ll = ppca_log_likelihood(bank.stats, x)  # [N, K]
    ll = jnp.where(jnp.asarray(bank.valid)[None], ll, -jnp.inf)
    member = jnp.asarray(bank.owner)[:, None] == jnp.arange(bank.num_experts)[None]  # [K, E]
    per = jnp.where(member[None], ll[:, :, None], -jnp.inf)  # [N, K, E]
    scores = jax.scipy.special.logsumexp(per, axis=1)  # [N, E]
    return jnp.where(jnp.isfinite(scores), scores, NEG_INF)


def gate_bias(scores: jax.Array) -> jax.Array:
    """Routing bias [N, E] from gate scores: shifted so each row's best expert is at 0.

    A softmax over the bias of the fitted experts is the posterior ``p(expert | x)`` under
    equal priors; unfitted experts stay at ``NEG_INF``.
    """
    best = jnp.max(scores, axis=-1, keepdims=True)
    return jnp.where(scores > NEG_INF / 2, scores - best, NEG_INF)
