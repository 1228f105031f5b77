"""Phase 2 analysis against naive references: MI, permutation p-values, ridge, PCA, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.metrics import mutual_info_score

from aura.experiments.cortex.analysis import (
    answer_metrics,
    encode_labels,
    mutual_information,
    pca_2d,
    permutation_test,
    plot_gate_pca,
    ridge_fit,
    utilisation,
)


def _naive_mi(a, b) -> float:
    """Sum over every (x, y) pair of p(x,y) log(p(x,y) / (p(x) p(y))), counted by loops."""
    n = len(a)
    total = 0.0
    for x in set(a):
        for y in set(b):
            pxy = sum(1 for i in range(n) if a[i] == x and b[i] == y) / n
            if pxy:
                px = sum(1 for v in a if v == x) / n
                py = sum(1 for v in b if v == y) / n
                total += pxy * math.log(pxy / (px * py))
    return total


def test_mutual_information_matches_naive_and_sklearn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 300)
    b = (a + rng.integers(0, 2, 300)) % 4  # dependent on a
    assert mutual_information(a, b) == pytest.approx(_naive_mi(a.tolist(), b.tolist()), abs=1e-12)
    assert mutual_information(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-12)
    assert mutual_information(a, a) == pytest.approx(mutual_info_score(a, a), abs=1e-12)
    assert mutual_information(np.zeros(10, int), a[:10]) == 0.0


def test_permutation_test_matches_a_naive_loop_and_detects_dependence():
    rng = np.random.default_rng(1)
    types = rng.integers(0, 3, 120)
    expert = np.where(rng.random(120) < 0.8, types, rng.integers(0, 3, 120))  # specialised
    mi, p = permutation_test(expert, types, n=200, seed=5)
    naive_rng = np.random.default_rng(5)
    perms = [_naive_mi(expert.tolist(), naive_rng.permutation(types).tolist()) for _ in range(200)]
    want = (1 + sum(x >= _naive_mi(expert.tolist(), types.tolist()) - 1e-12 for x in perms)) / 201
    assert p == pytest.approx(want) and mi == pytest.approx(mutual_info_score(expert, types))
    assert p == pytest.approx(1 / 201)  # no shuffle reaches the observed MI
    independent = rng.integers(0, 3, 120)
    _, p_ind = permutation_test(independent, types, n=200, seed=5)
    assert p_ind > 0.05


def test_ridge_matches_sklearn_and_metrics_are_cosines():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((50, 6)), rng.standard_normal((50, 4))
    w, b = ridge_fit(x, y, alpha=3.0)
    ref = Ridge(alpha=3.0).fit(x, y)
    np.testing.assert_allclose(w, ref.coef_.T, atol=1e-10)
    np.testing.assert_allclose(b, ref.intercept_, atol=1e-10)
    m = answer_metrics(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [1.0, 0.0]]))
    assert m["close_answer_mean"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert m["exact_match"] == 0.5


def test_pca_utilisation_labels_and_png(tmp_path):
    rng = np.random.default_rng(3)
    gates = rng.dirichlet(np.ones(5), 40)
    np.testing.assert_allclose(np.abs(pca_2d(gates)), np.abs(PCA(2).fit_transform(gates)),
                               atol=1e-10)  # fmt: skip
    u = utilisation(gates, top_k=2)
    assert len(u["top1"]) == 5 and sum(u["top1"]) == pytest.approx(1.0, abs=1e-3)
    assert sum(u["topk"]) == pytest.approx(1.0, abs=1e-3)
    codes, names = encode_labels(["b", "a", "b"])
    assert names == ["a", "b"] and codes.tolist() == [1, 0, 1]
    path = plot_gate_pca(gates, ["x", "y"] * 20, str(tmp_path / "g.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
