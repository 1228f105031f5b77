"""The Cerebrum regime stream as an experiment on THE shared loop (``aura.build cerebrum``).

A `Cerebrum` (one legacy GMM fitted on warm-up data of regime 0, or none with
``warm_start=False``) observes the stream of `aura.experiments.mixtures.stream` batch by batch;
it spawns an adapter expert when a batch is novel for every expert. `CerebrumStreamExperiment`
is an `aura.train.loop.Experiment`, so the run is resumable, saves on SIGTERM/SIGINT mid-stream
and logs metrics JSONL + TensorBoard through the loop:

* state: ``{"cerebrum": CerebrumState, "legacy": the warm-start GMM's arrays, "timeline":
  per-step arrays}``. Everything a resumed run needs is in it: the controller (the spawn itself
  is in-graph: capacity fixed at init, activity a mask; the feature standardisation and the
  novelty calibration are state leaves too), the legacy expert that ``batch`` scores with (a
  resumed run puts the restored arrays back into the host model before its first batch, so it
  never depends on refitting bit-identically), and the per-step novel fraction / active experts
  / spawned slot that the summary and the plot read. The adapter ids are a function of the state
  (`Cerebrum.name_adapters`, slot order).
* ``batch(step)`` is a pure function of the step: features [B, D] and the host-computed
  log-likelihoods of the legacy experts [B, E] (legacy models are any registered `MM` type,
  scored on the host); ``train_step`` is the pure `cerebrum_core.train_step` (the loop jits it
  and donates the state); ``after_step`` names newly spawned adapters (host-side ids) and logs
  the spawn; every regime end is an evaluation: the held-out log-likelihood and top-1 routing
  of every regime seen so far (the rows of the forgetting table).

The run's summary: experts spawned over time (spawn events, active experts per regime), per-regime
log-likelihood right after the regime and at the end (forgetting = after - end), routing
accuracy, the oracle log-likelihoods, scikit-learn's Dirichlet-process estimate (if installed),
the PNG timeline and the saved controller (``<workdir>/cerebrum``).

Shapes: R regimes, B batch, D features, E expert slots, T stream steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aura.experiments.mixtures import stream as st
from aura.mixtures import cerebrum_core as core
from aura.mixtures.cerebrum import Cerebrum, CerebrumConfig
from aura.train import loop
from aura.train.metrics import format_line
from aura.train.rundir import write_json_atomic

__all__ = ["CerebrumStreamExperiment", "StreamConfig", "run_cerebrum_stream"]

_WARM_GMM = {"n_components": 2, "covariance_type": "diag"}


@dataclasses.dataclass
class StreamConfig:
    """The stream run: `make_stream` arguments, the controller and the run settings.

    Attributes:
      n_regimes, dim, batches_per_regime, batch_size: the stream (`stream.make_stream`).
      capacity: expert slots of the controller.
      warm_start: begin with a legacy GMM fitted on 1,000 warm-up samples of regime 0.
      dp_gmm: also fit scikit-learn's Dirichlet-process mixture (skipped if not installed).
      seed: stream and controller seed.
      controller: overrides of `CerebrumConfig` fields.
      workdir, resume, tensorboard: as the loop's (`aura.train.loop.LoopConfig`).
    """

    n_regimes: int = 5
    dim: int = 8
    batches_per_regime: int = 12
    batch_size: int = 256
    capacity: int = 8
    warm_start: bool = True
    dp_gmm: bool = True
    seed: int = 0
    controller: dict = dataclasses.field(default_factory=dict)
    workdir: str = "checkpoints/cerebrum"
    resume: bool = True
    tensorboard: bool = True

    def validated(self) -> StreamConfig:
        """Returns self; raises ValueError naming a bad value."""
        st.make_stream(self.n_regimes, self.dim, batches_per_regime=self.batches_per_regime,
                       batch_size=self.batch_size)  # fmt: skip
        self.controller_config()
        return self

    def controller_config(self) -> CerebrumConfig:
        fields = {f.name for f in dataclasses.fields(CerebrumConfig)} - {"dim", "capacity"}
        unknown = sorted(set(self.controller) - fields)
        if unknown:
            raise ValueError(f"unknown controller settings {unknown}; valid: {sorted(fields)}")
        return CerebrumConfig(dim=self.dim, capacity=self.capacity, **self.controller)


class CerebrumStreamExperiment(loop.Experiment):
    """The stream on the shared loop (see the module docstring)."""

    host_metrics = True  # after_step names spawned adapters as they appear

    def __init__(self, cfg: StreamConfig, log: Callable[[str], None] = print) -> None:
        self.cfg, self.log = cfg.validated(), log
        self.spec = st.make_stream(
            cfg.n_regimes, cfg.dim, batch_size=cfg.batch_size,
            batches_per_regime=cfg.batches_per_regime, seed=cfg.seed,
        )  # fmt: skip
        self.total_steps = self.spec.total_steps
        self.cer = Cerebrum(cfg.controller_config(), seed=cfg.seed)
        if cfg.warm_start:
            self.cer.fit_and_add(st.warmup_data(self.spec), "gmm", _WARM_GMM, "legacy_0")
        else:  # fixes the feature standardisation from batch 0 (a function of the config)
            self.cer.step_inputs(st.stream_batch(self.spec, 0)[0])
        self.initial = self.cer.state  # never donated: init_state copies it under jit
        self.synced = False

    # -- the loop's hooks -------------------------------------------------------------------
    def init_state(self) -> dict[str, Any]:
        t = self.total_steps
        timeline = {"novel_fraction": jnp.zeros((t,)), "active": jnp.zeros((t,), jnp.int32),
                    "spawned": jnp.full((t,), -1, jnp.int32)}  # fmt: skip
        legacy = {str(s): m.arrays for s, m in self.cer.legacy.items()}
        return {"cerebrum": self.initial, "legacy": legacy, "timeline": timeline}

    def batch(self, step: int) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
        x, _ = st.stream_batch(self.spec, step)
        feats, legacy_ll = self.cer.step_inputs(x)  # [B, D], [B, E]
        return (feats, legacy_ll), {}

    def train_step(self, state, data, extras):
        feats, legacy_ll = data
        cer, i = state["cerebrum"], state["cerebrum"].step
        cer, m = core.train_step(self.cer.config, cer, feats, legacy_ll, self.cer.step_key(i))
        tl = state["timeline"]  # [T] each
        timeline = {
            "novel_fraction": tl["novel_fraction"].at[i].set(m["novel_fraction"]),
            "active": tl["active"].at[i].set(m["active"]),
            "spawned": tl["spawned"].at[i].set(m["spawned"]),
        }
        metrics = {k: m[k] for k in ("novel_fraction", "active", "gate_ce", "load_balance")}
        metrics["spawns"] = (m["spawned"] >= 0).astype(jnp.float32)
        return {"cerebrum": cer, "legacy": state["legacy"], "timeline": timeline}, metrics

    def before_step(self, state, step: int):
        self._sync(state)
        return state

    def after_step(self, state, step: int, metrics: dict):
        if metrics["spawns"] > 0:
            for new in self.cer.name_adapters(jax.device_get(state["cerebrum"].kind)):
                regime = step // self.spec.batches_per_regime
                self.log(f"step {step} (regime {regime}): spawned {new}, "
                         f"{int(metrics['active'])} experts active")  # fmt: skip
        return state

    def evaluate(self, state, step: int, train: dict) -> dict:
        regime = (step - 1) // self.spec.batches_per_regime
        with self._at(state):
            ev = st.evaluate_regimes(self.cer, self.spec, regime)
            active = len(self.cer.active_ids())
        return {
            "regime": regime, "active": active, "novel_fraction": train.get("novel_fraction"),
            "ll": [ev[r]["ll"] for r in sorted(ev)],
            "routing": [ev[r]["accuracy"] for r in sorted(ev)],
            "owner": [ev[r]["owner"] for r in sorted(ev)],
        }  # fmt: skip

    def format_record(self, record: dict) -> str:
        lls = " ".join(f"{v:.3f}" for v in record["ll"])
        rest = {k: record[k] for k in ("step", "active", "novel_fraction")}
        return f"regime {record['regime']} done | held-out ll {lls} | {format_line(rest)}"

    def meta(self) -> dict:
        out = dataclasses.asdict(self.cfg)
        for k in ("workdir", "resume", "tensorboard"):
            out.pop(k)
        return out

    def summary(self, state, history: list[dict]) -> dict:
        if int(state["cerebrum"].step) < self.total_steps:
            return {}  # interrupted: the rerun reports
        self._sync(state)
        with self._at(state):
            return self._report(jax.device_get(state["timeline"]), history)

    # -- helpers ----------------------------------------------------------------------------
    def _sync(self, state) -> None:
        """Once per process (fresh or resumed run): the host side from the state: the legacy
        experts' arrays and the ids of the adapters spawned before an interruption."""
        if self.synced:
            return
        for slot, arrays in jax.device_get(state["legacy"]).items():
            self.cer.legacy[int(slot)].arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.cer.name_adapters(jax.device_get(state["cerebrum"].kind))
        self.synced = True

    @contextlib.contextmanager
    def _at(self, state) -> Iterator[None]:
        """The host `Cerebrum` with the loop's state for a moment (the loop donates its state
        at the next step, so the host object must not keep it)."""
        self.cer.state = state["cerebrum"]
        try:
            yield
        finally:
            self.cer.state = self.initial

    def _report(self, tl: dict, history: list[dict]) -> dict:
        spec, bpr = self.spec, self.spec.batches_per_regime
        after = {h["regime"]: h["ll"][h["regime"]] for h in history}
        final = history[-1]
        regimes = range(spec.n_regimes)
        spawns = [
            {"step": int(s), "regime": int(s) // bpr, "id": self.cer.ids[int(tl["spawned"][s])],
             "active": int(tl["active"][s])}
            for s in np.flatnonzero(tl["spawned"] >= 0)
        ]  # fmt: skip
        out = {
            "n_regimes": spec.n_regimes, "experts_final": len(self.cer.active_ids()),
            "active_ids": self.cer.kinds(), "spawn_events": spawns,
            "experts_by_regime": [int(tl["active"][(r + 1) * bpr - 1]) for r in regimes],
            "ll_after_regime": [after[r] for r in regimes], "ll_final": final["ll"],
            "ll_oracle": [st.oracle_ll(spec, r) for r in regimes],
            "forgetting": [after[r] - final["ll"][r] for r in regimes],
            "routing_accuracy": float(np.mean(final["routing"])),
            "regime_owner": final["owner"], "distinct_owners": len(set(final["owner"])),
        }  # fmt: skip
        seed = self.cfg.seed
        out["dp_gmm_components"] = (
            st.dp_gmm_components(spec, self.cfg.capacity, seed) if self.cfg.dp_gmm else None
        )
        work = Path(self.cfg.workdir)
        timeline = {"novel_fraction": tl["novel_fraction"].tolist(),
                    "active": tl["active"].tolist(), "spawns": spawns}  # fmt: skip
        out["png"] = str(work / "cerebrum_timeline.png")
        st.plot_timeline(out["png"], timeline, spec)
        self.cer.save(work / "cerebrum")
        write_json_atomic(work / "record.json", {**out, "timeline": timeline})
        return out


def run_cerebrum_stream(cfg: StreamConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) the stream on the shared loop; returns the run's record.

    Returns:
      ``experts_final``, ``active_ids``, ``spawn_events``, ``experts_by_regime``,
      ``ll_after_regime``, ``ll_final``, ``ll_oracle``, ``forgetting``, ``routing_accuracy``,
      ``distinct_owners``, ``dp_gmm_components``, ``png``, ``wall_s``, ``steps``; with
      ``interrupted: true`` (and no results) when SIGTERM/SIGINT stopped it (rerun to resume).

    Raises:
      ValueError: bad settings; RunLockedError: the workdir is in use; CheckpointError: the
      workdir holds a checkpoint of another configuration.
    """
    exp = CerebrumStreamExperiment(cfg.validated(), log)
    loop_cfg = loop.LoopConfig(
        workdir=cfg.workdir, total_steps=exp.total_steps, eval_every=cfg.batches_per_regime,
        resume=cfg.resume, tensorboard=cfg.tensorboard, desc="cerebrum",
    )  # fmt: skip
    result = loop.run(exp, loop_cfg, log=log)
    result.pop("history")
    result.pop("train")
    return result
