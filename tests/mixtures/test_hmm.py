"""HiddenMarkov against hmmlearn and a brute-force reference: total log-likelihoods at fixed
parameters, posteriors, Viterbi, scan vs associative scan, Baum-Welch monotonicity, lengths."""

import itertools
import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from aura.data.errors import DataError
from aura.mixtures.hmm import HiddenMarkov

hmm_lib = pytest.importorskip("hmmlearn.hmm")

START = np.array([0.6, 0.3, 0.1])
TRANS = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
MEANS = np.array([[0.0, 0.0], [3.0, 3.0], [-3.0, 3.0]])


def _data(seed=0, n_seq=40):
    gen = hmm_lib.GaussianHMM(3, covariance_type="diag")
    gen.startprob_, gen.transmat_, gen.means_ = START, TRANS, MEANS
    gen.covars_ = np.array([[1.0, 1.0], [0.5, 0.5], [1.0, 2.0]])
    lengths = np.random.default_rng(seed).integers(3, 30, size=n_seq)
    x, _ = gen.sample(int(lengths.sum()), random_state=seed)
    return x, lengths


def _random_params(ct, n_mix, seed=0, s=3, d=2):
    """Valid random HMM parameters (no fitting needed to compare at fixed parameters)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.2, 1.0, (s, d, d))
    full = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)  # [S, D, D] positive definite
    cov = {
        "full": full,
        "diag": rng.uniform(0.3, 2.0, (s, d)),
        "spherical": rng.uniform(0.3, 2.0, s),
    }
    covs = np.stack([cov[ct]] * n_mix, axis=1) * rng.uniform(
        0.7, 1.3, (s, n_mix) + (1,) * (cov[ct].ndim - 1)
    )
    return {
        "startprob": START, "transmat": TRANS,
        "weights": rng.dirichlet(np.ones(n_mix), size=s),
        "means": MEANS[:, None] + rng.normal(size=(s, n_mix, d)) * 0.7,
        "covariances": covs,
    }  # fmt: skip


def _fitted_ref(ct, n_mix, x, lengths):
    p = _random_params(ct, n_mix)
    if n_mix == 1:
        ref = hmm_lib.GaussianHMM(3, covariance_type=ct, init_params="")
        ref.means_ = p["means"][:, 0]
        ref.covars_ = p["covariances"][:, 0]
    else:
        ref = hmm_lib.GMMHMM(3, n_mix, covariance_type=ct, init_params="")
        ref.weights_, ref.means_, ref.covars_ = p["weights"], p["means"], p["covariances"]
    ref.startprob_, ref.transmat_ = p["startprob"], p["transmat"]
    ref.n_features = x.shape[1]
    hm = HiddenMarkov(3, n_mix, covariance_type=ct)
    hm.params = {k: np.asarray(v, np.float32) for k, v in p.items()}
    return ref, hm


@pytest.mark.parametrize(
    "ct,n_mix",
    [("diag", 1), ("full", 1), ("spherical", 1), ("diag", 2), ("full", 2), ("spherical", 2)],
)
def test_matches_hmmlearn_at_fixed_params(ct, n_mix):
    x, lengths = _data()
    ref, hm = _fitted_ref(ct, n_mix, x, lengths)
    total = ref.score(x, lengths)
    assert abs(hm.score(x, lengths) - total) <= 1e-3 * abs(total)
    hm_assoc = HiddenMarkov(3, n_mix, covariance_type=ct, method="associative")
    hm_assoc.params = hm.params
    assert abs(hm_assoc.score(x, lengths) - total) <= 1e-3 * abs(total)
    post = hm.predict_proba(x, lengths)
    flat = np.concatenate([post[i, :n] for i, n in enumerate(lengths)])
    np.testing.assert_allclose(flat, ref.predict_proba(x, lengths), atol=1e-3)
    ref_logp, ref_path = ref.decode(x, lengths)
    logp, paths = hm.decode(x, lengths)
    np.testing.assert_array_equal(
        np.concatenate([paths[i, :n] for i, n in enumerate(lengths)]), ref_path
    )
    assert abs(logp.sum() - ref_logp) <= 1e-3 * abs(ref_logp)
    assert (paths[np.arange(paths.shape[1])[None] >= lengths[:, None]] == -1).all()


def test_forward_equals_brute_force_path_enumeration():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 2)) * 2
    hm = HiddenMarkov(3, 1, covariance_type="diag")
    cov = np.array([[1.0, 0.5], [0.7, 1.3], [2.0, 1.0]])
    hm.params = {
        "startprob": START.astype(np.float32), "transmat": TRANS.astype(np.float32),
        "weights": np.ones((3, 1), np.float32), "means": MEANS[:, None].astype(np.float32),
        "covariances": cov[:, None].astype(np.float32),
    }  # fmt: skip
    dens = np.array([[multivariate_normal(MEANS[s], np.diag(cov[s])).pdf(xt) for s in range(3)]
                     for xt in x])  # fmt: skip
    total = 0.0
    for path in itertools.product(range(3), repeat=len(x)):
        p = START[path[0]] * dens[0, path[0]]
        for t in range(1, len(x)):
            p *= TRANS[path[t - 1], path[t]] * dens[t, path[t]]
        total += p
    assert abs(hm.score(x) - np.log(total)) <= 1e-4 * abs(np.log(total))


def test_padded_batch_equals_separate_sequences():
    x, lengths = _data(1, n_seq=6)
    hm = HiddenMarkov(3, 2, max_iter=5).fit(x, lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    each = [hm.score(x[s : s + n]) for s, n in zip(starts, lengths, strict=True)]
    np.testing.assert_allclose(hm.score_sequences(x, lengths), each, rtol=1e-5)
    padded = np.zeros((6, lengths.max(), 2), np.float32)
    for b, (s, n) in enumerate(zip(starts, lengths, strict=True)):
        padded[b, :n] = x[s : s + n]
    padded[0, lengths[0] :] = 1e6  # padding content must not matter
    np.testing.assert_allclose(hm.score_sequences(padded, lengths), each, rtol=1e-5)


@pytest.mark.parametrize("n_mix", [1, 2])
def test_baum_welch_never_decreases_and_fits_well(n_mix):
    x, lengths = _data(2)
    x_test, l_test = _data(5)
    hm = HiddenMarkov(3, n_mix, tol=1e-4, max_iter=200).fit(x, lengths)
    hist = hm.history_
    assert np.all(np.diff(hist) >= -1e-5 * np.abs(hist[1:])), np.diff(hist).min()
    gen = hmm_lib.GaussianHMM(3, covariance_type="diag")
    gen.startprob_, gen.transmat_, gen.means_ = START, TRANS, MEANS
    gen.covars_ = np.array([[1.0, 1.0], [0.5, 0.5], [1.0, 2.0]])
    true_ll = gen.score(x_test, l_test)
    assert hm.score(x_test, l_test) >= true_ll - 0.01 * abs(true_ll)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hmm_lib.GaussianHMM(3, n_iter=200, tol=1e-4, random_state=0).fit(x, lengths)
    assert hm.score(x_test, l_test) >= ref.score(x_test, l_test) - 0.005 * abs(true_ll)


def test_sample_shapes_and_transition_statistics():
    hm = HiddenMarkov(3, 1)
    hm.params = {
        "startprob": START.astype(np.float32), "transmat": TRANS.astype(np.float32),
        "weights": np.ones((3, 1), np.float32), "means": MEANS[:, None].astype(np.float32),
        "covariances": np.ones((3, 1, 2), np.float32),
    }  # fmt: skip
    xs, states = hm.sample(200, n_sequences=20, seed=0)
    assert xs.shape == (20, 200, 2) and states.shape == (20, 200)
    counts = np.zeros((3, 3))
    np.add.at(counts, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), TRANS, atol=0.04)
    np.testing.assert_allclose(hm.get_transition_matrix(), TRANS, rtol=1e-6)
    np.testing.assert_allclose(hm.get_initial_prob(), START, rtol=1e-6)


def test_bad_sequences_raise_clear_errors():
    x, lengths = _data()
    with pytest.raises(DataError, match="lengths sum to"):
        HiddenMarkov(2).fit(x, lengths[:-1])
    bad = x.copy()
    bad[7] = np.nan
    with pytest.raises(DataError, match="frame 7 contains NaN"):
        HiddenMarkov(2).fit(bad, lengths)
    with pytest.raises(DataError, match="length 0"):
        HiddenMarkov(2).fit(x, np.concatenate([lengths[:-1], [0, lengths[-1]]]))
    with pytest.raises(DataError, match="expected sequences"):
        HiddenMarkov(2).fit(x[:, 0])
    with pytest.raises(DataError, match="fewer than the 6 needed"):
        HiddenMarkov(3, 2).fit(x[:5])
    seq = np.zeros((2, 5, 2), np.float32)
    seq[1, 3] = np.inf
    with pytest.raises(DataError, match="sequence 1, step 3"):
        HiddenMarkov(1).fit(seq)


def test_dynamax_agrees_when_installed():
    dynamax = pytest.importorskip("dynamax.hidden_markov_model")
    x, lengths = _data(n_seq=1)
    _, hm = _fitted_ref("diag", 1, x, lengths)
    p = hm.params
    model = dynamax.DiagonalGaussianHMM(3, 2)
    params, _ = model.initialize(
        initial_probs=p["startprob"], transition_matrix=p["transmat"],
        emission_means=p["means"][:, 0], emission_scale_diags=np.sqrt(p["covariances"][:, 0]),
    )  # fmt: skip
    ref = float(model.marginal_log_prob(params, x.astype(np.float32)))
    assert abs(hm.score(x) - ref) <= 1e-3 * abs(ref)
