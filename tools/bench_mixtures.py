"""Benchmark: EM fit time of aura's JAX GMM/HMM against scikit-learn and hmmlearn.

    python tools/bench_mixtures.py [--json PATH] [--repeats 3] [--quick]

Problems (issue #14): a GMM on N = 100,000 points (D = 16, K = 8; full and diagonal
covariances) against scikit-learn's `GaussianMixture`, and an HMM on 1,000 sequences (lengths
30..70, D = 8, S = 6 states; Gaussian emissions and 2-mixture GMM emissions) against
hmmlearn's `GaussianHMM` / `GMMHMM`. Both sides start from the SAME initial parameters and run
the SAME number of EM iterations (tol = 0; 30 for the GMM, 10 for the HMM), so the times
compare equal work (hmmlearn's GMMHMM is timed once: it takes minutes); the final
log-likelihoods are printed beside them to show it. aura's time is measured warm (after one
compiling fit on the same shapes); its first-call time (with compilation) is reported too.
Medians over `--repeats` runs in this one process; the ratio is reference / aura (> 1: aura is
faster). scikit-learn and hmmlearn are the `dev` extra's test/benchmark dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import jax
import numpy as np
from hmmlearn import hmm as hmmlearn_hmm
from sklearn.mixture import GaussianMixture as SkGMM

from aura.mixtures.gmm import GaussianMixture
from aura.mixtures.hmm import HiddenMarkov


def _timed(fn, repeats: int) -> tuple[list[float], object]:
    samples, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return samples, out


def bench_gmm(n: int, d: int, k: int, cov: str, iters: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(k, d)) * 3
    x = (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    means0 = x[rng.choice(n, k, replace=False)]
    var = float(x.var(0).mean())
    cov0 = np.tile(np.eye(d) * var, (k, 1, 1)) if cov == "full" else np.full((k, d), var)
    w0 = np.full(k, 1.0 / k)
    ours = lambda: GaussianMixture(
        k, covariance_type=cov, tol=0.0, max_iter=iters,
        weights_init=w0, means_init=means0, covariances_init=cov0,
    ).fit(x)  # fmt: skip
    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    aura_s, gm = _timed(ours, repeats)
    prec0 = np.linalg.inv(cov0) if cov == "full" else 1.0 / cov0
    x64 = x.astype(np.float64)

    def ref():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "did not converge" with tol=0 is intended
            return SkGMM(
                k, covariance_type=cov, tol=0.0, max_iter=iters,
                weights_init=w0, means_init=means0, precisions_init=prec0,
            ).fit(x64)  # fmt: skip

    ref_s, sk = _timed(ref, repeats)
    return {
        "problem": f"GMM {cov} N={n} D={d} K={k}", "iterations": iters,
        "aura_s": aura_s, "aura_first_call_s": first, "ref_s": ref_s, "reference": "sklearn",
        "aura_ll": float(gm.score(x)), "ref_ll": float(sk.score(x64)),
    }  # fmt: skip


def bench_hmm(
    n_seq: int, d: int, s: int, n_mix: int, iters: int, repeats: int, ref_repeats: int
) -> dict:
    rng = np.random.default_rng(1)
    lengths = rng.integers(30, 71, n_seq)
    centers = rng.normal(size=(s, d)) * 2
    states = rng.integers(0, s, int(lengths.sum()))
    x = (centers[states] + rng.normal(size=(len(states), d))).astype(np.float32)
    init = {
        "startprob": np.full(s, 1.0 / s), "transmat": np.full((s, s), 1.0 / s),
        "weights": np.full((s, n_mix), 1.0 / n_mix),
        "means": x[rng.choice(len(x), s * n_mix, replace=False)].reshape(s, n_mix, d),
        "covariances": np.ones((s, n_mix, d)),
    }  # fmt: skip
    ours = lambda: HiddenMarkov(
        s, n_mix, covariance_type="diag", tol=0.0, max_iter=iters, params_init=init
    ).fit(x, lengths)
    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    aura_s, hm = _timed(ours, repeats)
    x64 = x.astype(np.float64)

    def ref():
        if n_mix == 1:
            model = hmmlearn_hmm.GaussianHMM(s, "diag", n_iter=iters, tol=0.0, init_params="")
            model.means_, model.covars_ = init["means"][:, 0], init["covariances"][:, 0]
        else:
            model = hmmlearn_hmm.GMMHMM(s, n_mix, "diag", n_iter=iters, tol=0.0, init_params="")
            model.weights_, model.means_ = init["weights"], init["means"]
            model.covars_ = init["covariances"]
        model.startprob_, model.transmat_ = init["startprob"], init["transmat"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.fit(x64, lengths)

    ref_s, ref_model = _timed(ref, ref_repeats)
    name = "GaussianHMM" if n_mix == 1 else "GMMHMM"
    return {
        "problem": f"HMM diag {n_seq} seqs (T 30..70) D={d} S={s} M={n_mix}",
        "iterations": iters, "aura_s": aura_s, "aura_first_call_s": first, "ref_s": ref_s,
        "reference": f"hmmlearn {name}", "aura_ll": float(hm.score(x, lengths)),
        "ref_ll": float(ref_model.score(x64, lengths)),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small problems (smoke test)")
    args = ap.parse_args()
    n, n_seq = (5_000, 50) if args.quick else (100_000, 1_000)
    gmm_iters, hmm_iters = (5, 5) if args.quick else (30, 10)
    rows = [
        bench_gmm(n, 16, 8, "full", gmm_iters, args.repeats),
        bench_gmm(n, 16, 8, "diag", gmm_iters, args.repeats),
        bench_hmm(n_seq, 8, 6, 1, hmm_iters, args.repeats, args.repeats),
        # hmmlearn's GMMHMM M-step loops in Python: one reference run (about a minute or more).
        bench_hmm(n_seq, 8, 6, 2, hmm_iters, args.repeats, 1),
    ]
    print(f"{'problem':48s} {'ref':>20s} {'ref s':>8s} {'aura s':>8s} {'ratio':>7s}  ll ref / aura")
    for r in rows:
        r["aura_median_s"] = statistics.median(r["aura_s"])
        r["ref_median_s"] = statistics.median(r["ref_s"])
        r["ratio_ref_over_aura"] = r["ref_median_s"] / r["aura_median_s"]
        print(
            f"{r['problem']:48s} {r['reference']:>20s} {r['ref_median_s']:8.2f} "
            f"{r['aura_median_s']:8.2f} {r['ratio_ref_over_aura']:6.1f}x  "
            f"{r['ref_ll']:.4g} / {r['aura_ll']:.4g}"
        )
    out = {
        "rows": rows, "repeats": args.repeats, "quick": args.quick, "jax": jax.__version__,
        "backend": jax.default_backend(), "cpus": os.cpu_count(), "machine": platform.machine(),
        "note": "shared machine: other processes may run; times are medians in one process",
    }  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
