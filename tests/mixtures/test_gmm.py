"""GaussianMixture against scikit-learn: likelihoods at fixed parameters, EM monotonicity,
fitted quality from the same initialisation, and bad inputs."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGMM

from aura.data.errors import DataError
from aura.mixtures.gmm import GaussianMixture

COV_TYPES = ("full", "diag", "spherical")


def _blobs(seed, n_per=300, d=4, offset=50.0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0] * d, [4.0] * d, [-4.0, 4.0] + [0.0] * (d - 2)])
    scales = np.array([1.0, 0.5, 1.5])
    x = np.concatenate(
        [c + s * rng.normal(size=(n_per, d)) for c, s in zip(centers, scales, strict=True)]
    )
    return (x + offset)[rng.permutation(len(x))]


def _with_params(ct, sk):
    gm = GaussianMixture(3, covariance_type=ct)
    gm.params = {
        "weights": sk.weights_.astype(np.float32),
        "means": sk.means_.astype(np.float32),
        "covariances": sk.covariances_.astype(np.float32),
    }
    return gm


@pytest.mark.parametrize("ct", COV_TYPES)
def test_log_likelihood_matches_sklearn_at_fixed_params(ct):
    x, x_test = _blobs(0), _blobs(1, n_per=100)
    sk = SkGMM(3, covariance_type=ct, random_state=0).fit(x)  # float64 reference
    gm = _with_params(ct, sk)
    np.testing.assert_allclose(gm.score_samples(x_test), sk.score_samples(x_test), rtol=1e-3)
    assert abs(gm.score(x_test) - sk.score(x_test)) <= 1e-3 * abs(sk.score(x_test))
    np.testing.assert_allclose(gm.predict_proba(x_test), sk.predict_proba(x_test), atol=1e-3)
    np.testing.assert_array_equal(gm.predict(x_test), sk.predict(x_test))
    assert abs(gm.bic(x_test) - sk.bic(x_test)) <= 1e-3 * abs(sk.bic(x_test))
    assert abs(gm.aic(x_test) - sk.aic(x_test)) <= 1e-3 * abs(sk.aic(x_test))


def _same_init(ct, x, k=3, seed=0):
    rng = np.random.default_rng(seed)
    means = x[rng.choice(len(x), k, replace=False)]
    d = x.shape[1]
    var = x.var(axis=0).mean()
    shape = {"full": None, "diag": (k, d), "spherical": (k,)}[ct]
    cov = np.tile(np.eye(d) * var, (k, 1, 1)) if ct == "full" else np.full(shape, var)
    return np.full(k, 1.0 / k), means, cov


@pytest.mark.parametrize("ct", COV_TYPES)
def test_em_never_decreases_and_matches_sklearn_from_same_init(ct):
    x, x_test = _blobs(2), _blobs(3, n_per=150)
    w0, m0, c0 = _same_init(ct, x)
    gm = GaussianMixture(
        3, covariance_type=ct, tol=1e-6, max_iter=300,
        weights_init=w0, means_init=m0, covariances_init=c0,
    ).fit(x)  # fmt: skip
    hist = gm.history_
    assert len(hist) >= 2
    # Monotone up to float32 rounding of a mean over 900 points.
    assert np.all(np.diff(hist) >= -1e-5 * np.abs(hist[1:])), np.diff(hist).min()
    prec = np.linalg.inv(c0) if ct == "full" else 1.0 / c0
    sk = SkGMM(
        3, covariance_type=ct, tol=1e-6, max_iter=300,
        weights_init=w0, means_init=m0, precisions_init=prec,
    ).fit(x)  # fmt: skip
    ours, ref = gm.score(x_test), sk.score(x_test)
    assert ours >= ref - 0.005 * abs(ref), (ours, ref)


def test_default_fit_n_init_and_gradient_fit():
    x, x_test = _blobs(4), _blobs(5, n_per=100)
    em = GaussianMixture(3, covariance_type="diag", n_init=3).fit(x)
    assert em.converged_ and em.n_iter_ >= 1
    sk = SkGMM(3, covariance_type="diag", n_init=3, random_state=0).fit(x)
    assert em.score(x_test) >= sk.score(x_test) - 0.005 * abs(sk.score(x_test))
    gd = GaussianMixture(3, covariance_type="diag", fit_method="gradient", max_iter=400).fit(x)
    assert gd.history_[-1] > gd.history_[0]
    assert gd.score(x_test) >= em.score(x_test) - 0.02 * abs(em.score(x_test))


@pytest.mark.parametrize("ct", COV_TYPES)
def test_sample_follows_the_model(ct):
    x = _blobs(6)
    gm = GaussianMixture(3, covariance_type=ct).fit(x)
    xs, labels = gm.sample(3000, seed=1)
    assert xs.shape == (3000, 4) and labels.shape == (3000,)
    freq = np.bincount(labels, minlength=3) / 3000
    np.testing.assert_allclose(freq, gm.get_weights(), atol=0.03)
    for k in range(3):
        np.testing.assert_allclose(xs[labels == k].mean(0), gm.get_means()[k], atol=0.25)


def test_bad_inputs_raise_clear_errors():
    x = _blobs(7)
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(DataError, match="row 5 contains NaN"):
        GaussianMixture(2).fit(bad)
    bad[5, 1] = np.inf
    with pytest.raises(DataError, match="row 5 contains inf"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(DataError, match=r"expected points of shape \[N, D\]"):
        GaussianMixture(2).fit(x[:, 0])
    with pytest.raises(DataError, match="fewer than the 5 needed"):
        GaussianMixture(5).fit(x[:3])
    const = x.copy()
    const[:, 2] = 1.0
    with pytest.raises(DataError, match="feature 2 is constant"):
        GaussianMixture(2, reg_covar=0.0).fit(const)
    dup = np.repeat(x[:2], 20, axis=0)  # two distinct points in 4-D: singular covariances
    dup[:, 3] = np.arange(40)  # no constant feature, but rank 2 < 4
    with pytest.raises(DataError, match="singular"):
        GaussianMixture(2, reg_covar=0.0).fit(dup)
    gm = GaussianMixture(2).fit(x)
    with pytest.raises(DataError, match="has 3 features but the model was fitted on 4"):
        gm.score(x[:, :3])
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="tied")
    with pytest.raises(ValueError, match="not fitted"):
        GaussianMixture(2).score(x)
