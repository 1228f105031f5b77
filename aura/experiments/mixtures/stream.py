"""`run_cerebrum_stream`: the library call behind ``python -m aura.build cerebrum``.

A stream of batches whose regime changes every `batches_per_regime` steps (5 regimes by
default: Gaussians in D dimensions at random, well-separated centres with random per-feature
scales). A `Cerebrum` starts with one legacy GMM fitted on warm-up data of regime 0 (or empty,
``warm_start=False``) and observes the batches one by one; it spawns an adapter expert when a
batch is novel for every expert. Reported:

* experts over time (the spawn events: step, regime, id) and the final active experts;
* per-regime held-out log-likelihood of the controller's top-k mixture right after the regime
  ends and at the end of the stream (forgetting = before - after), and under the true regime
  density (``ll_oracle``, the ceiling);
* routing accuracy: the share of each regime's held-out samples whose top-1 expert is the
  regime's majority expert (and whether every regime got its own expert);
* the number of components scikit-learn's Dirichlet-process `BayesianGaussianMixture` finds on
  the same stream (scikit-learn is imported lazily; the field is None when it is absent);
* a PNG timeline (``<workdir>/cerebrum_timeline.png``).

The pieces are shaped for the shared training loop: `CerebrumStreamExperiment` has the
loop's ``init_state`` / ``batch(step)`` (a pure function of the step) / ``train_step`` (the
pure controller step over the state pytree) / ``after_step`` / ``evaluate``;
`run_cerebrum_stream` drives it with a plain for-loop until the command moves onto the loop.

Shapes: R regimes, B batch, D features.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aura.mixtures import cerebrum_core as core
from aura.mixtures.cerebrum import Cerebrum, CerebrumConfig

__all__ = [
    "CerebrumStreamExperiment",
    "StreamSpec",
    "evaluate_regimes",
    "make_stream",
    "oracle_ll",
    "regime_heldout",
    "run_cerebrum_stream",
    "stream_batch",
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
    if n_regimes < 1 or dim < 1 or batches_per_regime < 1 or batch_size < 2:
        raise ValueError("n_regimes, dim, batches_per_regime >= 1 and batch_size >= 2 required")
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


def _dp_gmm_components(spec: StreamSpec, capacity: int, seed: int) -> int | None:
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


def _plot(path: Path, timeline: list[dict], spec: StreamSpec, spawns: list[dict]) -> None:
    steps = [t["step"] for t in timeline]
    fig = Figure(figsize=(9, 5))
    FigureCanvasAgg(fig)
    a1, a2 = fig.subplots(2, 1, sharex=True)
    a1.plot(steps, [t["novel_fraction"] for t in timeline], lw=1.2, label="novel fraction")
    a1.set_ylabel("novel fraction")
    a2.step(steps, [t["active"] for t in timeline], where="post", color="C1")
    a2.set_ylabel("active experts")
    a2.set_xlabel("step")
    for ax in (a1, a2):
        for r in range(1, spec.n_regimes):
            ax.axvline(r * spec.batches_per_regime - 0.5, color="grey", ls=":", lw=0.8)
    for s in spawns:
        a2.annotate(s["id"], (s["step"], s["active"]), fontsize=7, rotation=30)
    a1.set_title("Cerebrum on a regime-change stream (dotted: regime changes)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


class CerebrumStreamExperiment:
    """The stream as an experiment of the shared training loop (aura.train.loop protocol).

    State: the `CerebrumState` pytree. ``batch(step)`` -> ``(features [B, D], {"legacy_ll":
    [B, E], "regime": int})``; ``train_step`` is `core.train_step` (jit-able, pure);
    ``after_step`` names newly spawned adapters on the host; ``evaluate`` scores held-out data
    of the regimes seen so far.
    """

    def __init__(self, spec: StreamSpec, cerebrum: Cerebrum) -> None:
        self.spec, self.cer = spec, cerebrum

    def init_state(self) -> core.CerebrumState:
        return self.cer.state

    def batch(self, step: int) -> tuple[np.ndarray, dict]:
        x, regime = stream_batch(self.spec, step)
        feats, legacy = self.cer.step_inputs(x)
        return feats, {"legacy_ll": legacy, "regime": regime}

    def train_step(self, state, data, extras):
        key = self.cer.step_key(state.step)
        return core.train_step(self.cer.config, state, data, extras["legacy_ll"], key)

    def after_step(self, state, step: int, metrics: dict) -> core.CerebrumState:
        metrics["spawned_ids"] = self.cer.adopt(state)
        return state

    def evaluate(self, state, step: int, train: dict) -> dict:
        self.cer.adopt(state)
        regime = min(step // self.spec.batches_per_regime, self.spec.n_regimes - 1)
        ev = evaluate_regimes(self.cer, self.spec, regime)
        return {f"ll_regime_{r}": v["ll"] for r, v in ev.items()}


def _summary(cer: Cerebrum, spec: StreamSpec, spawns: list, ll_after: dict) -> dict[str, Any]:
    final = evaluate_regimes(cer, spec, spec.n_regimes - 1)
    regimes = range(spec.n_regimes)
    owners = [final[r]["owner"] for r in regimes]
    return {
        "n_regimes": spec.n_regimes,
        "steps": spec.total_steps,
        "experts_final": len(cer.active_ids()),
        "active_ids": cer.kinds(),
        "spawn_events": spawns,
        "ll_after_regime": [ll_after[r] for r in regimes],
        "ll_final": [final[r]["ll"] for r in regimes],
        "ll_oracle": [oracle_ll(spec, r) for r in regimes],
        "forgetting": [ll_after[r] - final[r]["ll"] for r in regimes],
        "routing_accuracy": float(np.mean([final[r]["accuracy"] for r in regimes])),
        "regime_owner": owners,
        "distinct_owners": len(set(owners)),
    }


def run_cerebrum_stream(
    workdir: str | Path | None = None,
    *,
    n_regimes: int = 5,
    dim: int = 8,
    batches_per_regime: int = 12,
    batch_size: int = 256,
    capacity: int = 8,
    warm_start: bool = True,
    controller: dict | None = None,
    dp_gmm: bool = True,
    seed: int = 0,
    log=None,
) -> dict[str, Any]:
    """Runs the stream and returns its record (see the module docstring).

    Args:
      workdir: where the PNG timeline, ``record.json`` and the saved controller go (None:
        nothing is written).
      n_regimes, dim, batches_per_regime, batch_size: the stream (`make_stream`).
      capacity: expert slots of the controller.
      warm_start: begin with a legacy GMM fitted on 1,000 warm-up samples of regime 0.
      controller: overrides of `CerebrumConfig` fields.
      dp_gmm: also fit scikit-learn's Dirichlet-process mixture (if installed).
      seed: stream and controller seed.
      log: optional callable for one progress line per regime.

    Returns:
      The record: ``experts_final``, ``active_ids``, ``spawn_events``, ``ll_after_regime``,
      ``ll_final``, ``forgetting``, ``routing_accuracy``, ``distinct_owners``,
      ``dp_gmm_components``, ``wall_s``, ``timeline`` (per step), ``png``.
    """
    t0 = time.perf_counter()
    spec = make_stream(
        n_regimes, dim, batches_per_regime=batches_per_regime, batch_size=batch_size, seed=seed
    )
    cfg = CerebrumConfig(dim=dim, capacity=capacity, **(controller or {}))
    cer = Cerebrum(cfg, seed=seed)
    if warm_start:
        warm = _draw(spec, 0, 1000, [3])
        cer.fit_and_add(warm, "gmm", {"n_components": 2, "covariance_type": "diag"}, "legacy_0")
    exp = CerebrumStreamExperiment(spec, cer)
    state = exp.init_state()
    timeline, spawns, ll_after = [], [], {}
    for step in range(spec.total_steps):  # stand-in for the shared loop
        data, extras = exp.batch(step)
        state, metrics = exp.train_step(state, data, extras)
        m = {k: v.item() for k, v in jax.device_get(metrics).items()}
        state = exp.after_step(state, step, m)
        regime = extras["regime"]
        m["spawned"] = m.pop("spawned_ids")[0] if m["spawned"] >= 0 else None
        timeline.append({"step": step, "regime": regime, **m})
        if m["spawned"]:
            spawns.append(
                {"step": step, "regime": regime, "id": m["spawned"], "active": m["active"]}
            )
        if (step + 1) % spec.batches_per_regime == 0:
            ll_after[regime] = exp.evaluate(state, step, m)[f"ll_regime_{regime}"]
            if log is not None:
                ll = ll_after[regime]
                log(f"regime {regime} done: {m['active']} experts, held-out ll {ll:.3f}")
    record = _summary(cer, spec, spawns, ll_after)
    record["stream_s"] = time.perf_counter() - t0
    record["dp_gmm_components"] = _dp_gmm_components(spec, capacity, seed) if dp_gmm else None
    record["wall_s"] = time.perf_counter() - t0
    record["timeline"] = timeline
    record["png"] = None
    if workdir is not None:
        out = Path(workdir)
        out.mkdir(parents=True, exist_ok=True)
        record["png"] = str(out / "cerebrum_timeline.png")
        _plot(Path(record["png"]), timeline, spec, spawns)
        cer.save(out / "cerebrum")
        (out / "record.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
