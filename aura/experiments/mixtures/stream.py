"""The regime-change stream of the Cerebrum experiment: data, held-out evaluation, the plot.

A stream of batches whose regime changes every `batches_per_regime` steps (5 regimes by
default: Gaussians in D dimensions at random, well-separated centres with random per-feature
scales). Every batch is a pure function of its step (`stream_batch`), held-out data of a regime
never appears in the stream (`regime_heldout`), and `oracle_ll` is the held-out log-likelihood
under the true regime density (the ceiling). `evaluate_regimes` scores a `Cerebrum` on the
held-out data of the regimes seen so far (mixture log-likelihood and top-1 routing),
`dp_gmm_components` counts the components scikit-learn's Dirichlet-process mixture finds on the
same stream (None when scikit-learn is not installed: it is a test/benchmark dependency), and
`plot_timeline` draws the novel fraction and the active experts per step.

The experiment on the shared loop is `aura.experiments.mixtures.cerebrum_stream`.

Shapes: R regimes, B batch, D features.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aura.mixtures.cerebrum import Cerebrum

__all__ = [
    "StreamSpec",
    "dp_gmm_components",
    "evaluate_regimes",
    "make_stream",
    "oracle_ll",
    "plot_timeline",
    "regime_heldout",
    "stream_batch",
    "warmup_data",
]


class StreamSpec(NamedTuple):
    """A regime-change stream: centres [R, D], per-feature scales [R, D], schedule."""

    means: np.ndarray
    scales: np.ndarray
    batches_per_regime: int
    batch_size: int
    seed: int

    @property
    def n_regimes(self) -> int:
        return int(self.means.shape[0])

    @property
    def total_steps(self) -> int:
        return self.n_regimes * self.batches_per_regime


def make_stream(
    n_regimes: int = 5,
    dim: int = 8,
    *,
    batches_per_regime: int = 12,
    batch_size: int = 256,
    separation: float = 4.0,
    seed: int = 0,
) -> StreamSpec:
    """Random well-separated regimes (centres ~ N(0, separation^2), scales in [0.5, 1.5])."""
    least = {"n_regimes": (n_regimes, 1), "dim": (dim, 1), "batch_size": (batch_size, 2),
             "batches_per_regime": (batches_per_regime, 1)}  # fmt: skip
    for name, (value, low) in least.items():
        if value < low:
            raise ValueError(f"{name}={value} must be >= {low}")
    rng = np.random.default_rng([seed, 7])
    means = rng.normal(size=(n_regimes, dim)) * separation
    scales = rng.uniform(0.5, 1.5, size=(n_regimes, dim))
    return StreamSpec(means, scales, int(batches_per_regime), int(batch_size), int(seed))


def _draw(spec: StreamSpec, regime: int, n: int, stream: list[int]) -> np.ndarray:
    rng = np.random.default_rng([spec.seed] + stream)
    x = spec.means[regime] + spec.scales[regime] * rng.normal(size=(n, spec.means.shape[1]))
    return x.astype(np.float32)


def stream_batch(spec: StreamSpec, step: int) -> tuple[np.ndarray, int]:
    """Batch `step` of the stream and its regime: a pure function of the step."""
    regime = min(step // spec.batches_per_regime, spec.n_regimes - 1)
    return _draw(spec, regime, spec.batch_size, [1, step]), regime


def warmup_data(spec: StreamSpec, n: int = 1000) -> np.ndarray:
    """Samples of regime 0 for a warm-started legacy expert (never part of the stream)."""
    return _draw(spec, 0, n, [3])


def regime_heldout(spec: StreamSpec, regime: int, n: int = 500) -> np.ndarray:
    """Held-out samples of a regime (never part of the stream)."""
    return _draw(spec, regime, n, [2, regime])


def evaluate_regimes(cer: Cerebrum, spec: StreamSpec, upto: int, n: int = 500) -> dict:
    """Mixture log-likelihood and top-1 routing of held-out data of regimes 0..upto."""
    out = {}
    for r in range(upto + 1):
        x = regime_heldout(spec, r, n)
        ids, _ = cer.route(x)
        top = [row[0] for row in ids]
        owner = max(set(top), key=top.count)
        out[r] = {
            "ll": float(np.mean(cer.score(x))),
            "owner": owner,
            "accuracy": top.count(owner) / len(top),
        }
    return out


def oracle_ll(spec: StreamSpec, regime: int, n: int = 500) -> float:
    """Mean log-likelihood of the held-out samples under the regime's true Gaussian."""
    x = regime_heldout(spec, regime, n).astype(np.float64)
    mean, scale = spec.means[regime], spec.scales[regime]
    z = (x - mean) / scale
    return float(np.mean(-0.5 * np.sum(z**2 + np.log(2 * np.pi * scale**2), axis=1)))


def dp_gmm_components(spec: StreamSpec, capacity: int, seed: int) -> int | None:
    """Components (weight > 2%) of a Dirichlet-process mixture on 4,000 stream samples."""
    try:  # optional comparison: scikit-learn is a test/benchmark dependency only
        from sklearn.mixture import BayesianGaussianMixture
    except ImportError:
        return None
    x = np.concatenate([stream_batch(spec, s)[0] for s in range(spec.total_steps)])
    x = x[np.random.default_rng(seed).permutation(len(x))[:4000]]
    dp = BayesianGaussianMixture(
        n_components=max(capacity, 10),
        weight_concentration_prior_type="dirichlet_process",
        covariance_type="diag",
        max_iter=500,
        random_state=seed,
    ).fit(x)
    return int(np.sum(dp.weights_ > 0.02))


def plot_timeline(path: str | os.PathLike[str], timeline: dict, spec: StreamSpec) -> None:
    """Writes the PNG: novel fraction and active experts per step, regime changes dotted,
    spawns annotated (timeline: ``novel_fraction``/``active`` lists per step and ``spawns``
    [{step, id, active}]); through a temporary name, then renamed (never a torn file)."""
    steps = np.arange(len(timeline["active"]))
    fig = Figure(figsize=(9, 5))
    FigureCanvasAgg(fig)
    a1, a2 = fig.subplots(2, 1, sharex=True)
    a1.plot(steps, timeline["novel_fraction"], lw=1.2, label="novel fraction")
    a1.set_ylabel("novel fraction")
    a2.step(steps, timeline["active"], where="post", color="C1")
    a2.set_ylabel("active experts")
    a2.set_xlabel("step")
    for ax in (a1, a2):
        for r in range(1, spec.n_regimes):
            ax.axvline(r * spec.batches_per_regime - 0.5, color="grey", ls=":", lw=0.8)
    for s in timeline["spawns"]:
        a2.annotate(s["id"], (s["step"], s["active"]), fontsize=7, rotation=30)
    a1.set_title("Cerebrum on a regime-change stream (dotted: regime changes)")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
