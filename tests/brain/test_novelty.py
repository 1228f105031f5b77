"""Per-expert novelty gates: PPCA densities against a naive Gaussian, and task inference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.brain.novelty import (
    NEG_INF,
    PPCA,
    GateBank,
    fit_expert_gate,
    fit_ppca,
    gate_bias,
    gate_scores,
    ppca_covariance,
    ppca_log_likelihood,
)


def _naive_logpdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Multivariate normal log-density with a full covariance (float64 reference)."""
    d = mean.shape[0]
    diff = x.astype(np.float64) - mean
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (d * np.log(2 * np.pi) + logdet + maha)


def _low_rank_data(rng, n: int, d: int, rank: int, noise: float) -> np.ndarray:
    basis = rng.normal(size=(rank, d)) * 2.0
    return (rng.normal(size=(n, rank)) @ basis + noise * rng.normal(size=(n, d)) + 3.0).astype(
        np.float32
    )


def test_ppca_log_likelihood_matches_naive_gaussian_with_ppca_covariance():
    rng = np.random.default_rng(0)
    d, q = 6, 2
    x = _low_rank_data(rng, 200, d, rank=3, noise=0.3)
    p = fit_ppca(x, q, noise_floor=1e-3)
    mean = p.mean[0].astype(np.float64)
    u = p.components[0].astype(np.float64)
    lam = p.variances[0].astype(np.float64)
    sigma2 = float(p.noise[0])
    # Tipping & Bishop: W = U (Lambda - sigma^2 I)^(1/2), C = W W^T + sigma^2 I.
    w = u * np.sqrt(lam - sigma2)[None]
    cov = w @ w.T + sigma2 * np.eye(d)
    np.testing.assert_allclose(np.asarray(ppca_covariance(p))[0], cov, rtol=1e-5, atol=1e-6)
    test = (x[:7] + rng.normal(size=(7, d))).astype(np.float32)
    got = np.asarray(ppca_log_likelihood(p, jnp.asarray(test)))[:, 0]
    np.testing.assert_allclose(got, _naive_logpdf(test, mean, cov), rtol=1e-5, atol=1e-4)


def test_fit_ppca_is_the_maximum_likelihood_solution():
    rng = np.random.default_rng(1)
    d, q = 8, 3
    x = _low_rank_data(rng, 500, d, rank=q, noise=0.5)
    p = fit_ppca(x, q, noise_floor=1e-4)
    xc = x.astype(np.float64) - x.mean(0)
    lam = np.sort(np.linalg.eigvalsh(xc.T @ xc / len(x)))[::-1]
    # sigma^2 is the mean discarded eigenvalue; the kept ones are the top sample eigenvalues.
    np.testing.assert_allclose(p.noise[0], lam[q:].mean(), rtol=1e-4)
    np.testing.assert_allclose(p.variances[0], lam[:q], rtol=1e-4)
    np.testing.assert_allclose(p.components[0].T @ p.components[0], np.eye(q), atol=1e-5)
    # The ML fit beats a perturbed model on the training data (mean log-likelihood).
    best = float(np.mean(ppca_log_likelihood(p, jnp.asarray(x))))
    worse = p._replace(noise=p.noise * 1.5)
    assert best > float(np.mean(ppca_log_likelihood(worse, jnp.asarray(x))))
    worse = p._replace(mean=p.mean + 0.2)
    assert best > float(np.mean(ppca_log_likelihood(worse, jnp.asarray(x))))


def test_fit_ppca_with_fewer_samples_than_dims_stays_proper():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(5, 30)).astype(np.float32)
    p = fit_ppca(x, q=10, noise_floor=1e-2)
    # Rank <= 4: the residual variance comes from the floor, unused directions sit at it.
    assert p.noise[0] == np.float32(1e-2)
    assert np.all(p.variances[0] >= p.noise[0])
    np.testing.assert_array_equal(p.variances[0][4:], p.noise[0])
    ll = np.asarray(ppca_log_likelihood(p, jnp.asarray(rng.uniform(size=(4, 30)), jnp.float32)))
    assert np.all(np.isfinite(ll))


@pytest.mark.parametrize(
    ("q", "floor", "match"),
    [(0, 1e-2, "q = 0"), (6, 1e-2, r"q = 6 must be in \[1, D - 1 = 5\]"), (2, 0.0, "noise_floor")],
)
def test_fit_ppca_rejects_bad_settings(q, floor, match):
    with pytest.raises(ValueError, match=match):
        fit_ppca(np.ones((4, 6), np.float32), q, floor)


def _clusters(rng, n_per: int, d: int = 20, experts: int = 3):
    """Six well-separated Gaussian clusters: expert e owns clusters 2e and 2e + 1."""
    centres = rng.normal(size=(2 * experts, d)) * 6.0
    x, owner, local = [], [], []
    for c in range(2 * experts):
        x.append(centres[c] + rng.normal(size=(n_per, d)) * (0.5 + 0.2 * c / experts))
        owner += [c // 2] * n_per
        local += [c % 2] * n_per
    return np.concatenate(x).astype(np.float32), np.array(owner), np.array(local)


def _fitted_bank(rng, experts: int = 3, q: int = 3):
    x, owner, local = _clusters(rng, 60, experts=experts)
    bank = GateBank.create([2] * experts, x.shape[1], q)
    for e in range(experts):
        bank = fit_expert_gate(bank, e, x[owner == e], local[owner == e], q)
    return bank


def test_gate_picks_the_right_expert_on_separated_clusters():
    rng = np.random.default_rng(3)
    bank = _fitted_bank(rng)
    test_x, owner, _ = _clusters(np.random.default_rng(3), 30)  # same centres, fresh noise
    test_x = test_x + 0.1 * np.random.default_rng(4).normal(size=test_x.shape).astype(np.float32)
    scores = np.asarray(gate_scores(bank, jnp.asarray(test_x)))
    np.testing.assert_array_equal(np.argmax(scores, axis=1), owner)
    # The score of an expert is the log-sum-exp of its classes' PPCA log-likelihoods.
    ll = np.asarray(ppca_log_likelihood(bank.stats, jnp.asarray(test_x)))
    np.testing.assert_allclose(scores[:, 1], np.logaddexp(ll[:, 2], ll[:, 3]), rtol=1e-6)


def test_gate_bias_is_the_posterior_over_fitted_experts():
    rng = np.random.default_rng(5)
    x, owner, local = _clusters(rng, 40)
    bank = GateBank.create([2, 2, 2, 2], x.shape[1], 3)  # a 4th, never fitted, expert
    for e in range(3):
        bank = fit_expert_gate(bank, e, x[owner == e], local[owner == e], 3)
    scores = gate_scores(bank, jnp.asarray(x[:50]))
    bias = np.asarray(gate_bias(scores))
    assert np.all(bias[:, 3] == NEG_INF)  # an unfitted expert never wins
    np.testing.assert_allclose(bias[:, :3].max(axis=1), 0.0)
    s = np.asarray(scores, np.float64)[:, :3]
    posterior = np.exp(s - s.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(bias[:, :3])), posterior, atol=1e-6)


def test_fitting_more_experts_keeps_shapes_and_does_not_retrace():
    rng = np.random.default_rng(6)
    x, owner, local = _clusters(rng, 30)
    bank = GateBank.create([2, 2, 2], x.shape[1], 3)
    scored = jax.jit(gate_scores)
    shapes = jax.tree.map(np.shape, bank)
    for e in range(3):
        bank = fit_expert_gate(bank, e, x[owner == e], local[owner == e], 3)
        assert jax.tree.map(np.shape, bank) == shapes
        scored(bank, jnp.asarray(x[:8]))
    assert scored._cache_size() == 1


def test_gate_stores_statistics_not_samples():
    rng = np.random.default_rng(7)
    x, owner, local = _clusters(rng, 37)  # 37 per class, 74 per expert, 222 in all
    bank = GateBank.create([2, 2, 2], x.shape[1], 3)
    for e in range(3):
        bank = fit_expert_gate(bank, e, x[owner == e], local[owner == e], 3)
    for leaf in jax.tree.leaves(bank):
        assert not {37, 74, 222} & set(np.shape(leaf)), np.shape(leaf)
    total = sum(np.size(leaf) for leaf in jax.tree.leaves(bank))
    assert total < x.size / 2  # far smaller than the data it summarises


def test_missing_class_stays_unfitted_and_bad_labels_are_rejected():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 5)).astype(np.float32)
    bank = GateBank.create([2], 5, 2)
    bank = fit_expert_gate(bank, 0, x, np.zeros(20, np.int32), 2)
    np.testing.assert_array_equal(bank.valid, [True, False])
    with pytest.raises(ValueError, match="local labels must be in"):
        fit_expert_gate(bank, 0, x, np.full(20, 2), 2)
    with pytest.raises(ValueError, match="expert 3 out of range"):
        fit_expert_gate(bank, 3, x, np.zeros(20, np.int32), 2)
    assert isinstance(bank.stats, PPCA)
