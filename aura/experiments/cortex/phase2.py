"""Phase 2: a reasoner (MoE or the matched dense ablation) on top of the frozen phase 1.

Shapes: B batch, D embedding width, E experts, K top-k.

The state holds the reasoner's parameters and optimizer state, and under ``"frozen"`` the phase 1
router's parameters and the memory (written at the first step from phase 1's final state). Each
step routes the questions with the frozen router, reads the memory (top-k read-out), and trains
the reasoner to map ``(retrieved, question)`` to the answer-window embedding with
``1 - cos`` (+ the MoE's load-balance and router z-losses), in train mode: the reasoner's
input noise and dropout (both kinds alike) draw from a PRNG key that is a pure function of
``(seed, step)`` (``batch`` hands it over as an extra), so a resumed run repeats them. The
frozen part goes through ``jax.lax.stop_gradient`` and is not in the optimizer: it gets
exactly zero gradient (:func:`frozen_grads` shows it) and stays bit-identical
(:meth:`Phase2Experiment.summary` checks it against phase 1).

Model selection on dev: every ``phase2.select_every`` steps (and before the first step) the
reasoner is scored on the dev split (close_answer_mean); the state keeps the best parameters
under ``"best"`` (checkpointed, so a resumed run selects the same), and the report uses them.
The report split is never looked at during training. ``select_every = 0`` reports the last step.

Parameter averaging: with ``phase2.ema = d > 0`` the state also keeps a Polyak (exponential
moving) average of the reasoner's parameters under ``"ema"`` (:func:`ema_update`; both kinds
alike), and dev selection, the curves and the report score the average instead of the raw
iterate; training itself is unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aura.experiments.cortex.config import CortexConfig
from aura.experiments.cortex.data import CortexData
from aura.experiments.cortex.memory import (
    MemoryLayout,
    RouterReader,
    batched_eval,
    empty_memory,
    fill_memory,
    memory_capacity,
)
from aura.models.cortex import Reasoner
from aura.train import loop
from aura.train.optim import make_optimizer

__all__ = ["Phase2Experiment", "cosine", "ema_update", "frozen_grads", "peak_lr"]

EVAL_BATCH = 512


def cosine(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Row-wise cosine similarity [B]."""
    num = jnp.sum(pred * target, axis=-1)
    return num / jnp.maximum(jnp.linalg.norm(pred, axis=-1) * jnp.linalg.norm(target, axis=-1),
                             1e-12)  # fmt: skip


def make_reasoner(cfg: CortexConfig, dim: int, kind: str) -> Reasoner:
    """The reasoner of ``kind`` ("moe" or "dense") from the config."""
    return Reasoner(dim=dim, kind=kind, **dataclasses.asdict(cfg.reasoner))


def peak_lr(cfg: CortexConfig, kind: str) -> float:
    """The peak learning rate of ``kind``: ``phase2.dense_lr`` for the dense ablation when set
    (each family's rate is chosen on dev), else ``phase2.lr``."""
    p2 = cfg.phase2
    return p2.dense_lr if kind == "dense" and p2.dense_lr is not None else p2.lr


def ema_update(ema: dict, params, decay: float) -> dict:
    """One step of the parameter average ``{"params", "count"}``: ``avg <- r avg + (1 - r)
    params`` with ``r = min(decay, n / (n + 1))`` after ``n`` updates: the plain mean of the
    iterates so far (the initial parameters get no weight) until ``n`` reaches ``decay / (1 -
    decay)``, then an exponential average over about ``1 / (1 - decay)`` steps."""
    n = ema["count"].astype(jnp.float32)
    r = jnp.minimum(decay, n / (n + 1.0))
    avg = optax.incremental_update(params, ema["params"], step_size=1.0 - r)
    return {"params": avg, "count": ema["count"] + 1}


class Phase2Experiment(loop.Experiment):
    """Trains one reasoner on the frozen router + memory of a finished phase 1."""

    def __init__(self, cfg: CortexConfig, data: CortexData, kind: str, phase1: dict,
                 devices: int = 1):  # fmt: skip
        self.cfg, self.data, self.kind, self.phase1 = cfg, data, kind, phase1
        self.reader = RouterReader(data.dim, cfg.router, cfg.memory)
        self.model = make_reasoner(cfg, data.dim, kind)
        self.tx = make_optimizer(peak_lr(cfg, kind), cfg.phase2.steps, cfg.phase2.weight_decay)
        self.capacity = memory_capacity(len(data.contexts), devices)
        self.layout = MemoryLayout(data)
        self.train_q = data.split_questions["train"]
        self.final: dict[str, Any] | None = None
        self._jitted, self._last_dev = None, None
        if cfg.phase2.batch_size % devices:
            raise ValueError(
                f"config.phase2.batch_size={cfg.phase2.batch_size} must be a multiple of the "
                f"{devices} devices of the mesh"
            )

    def init_state(self) -> dict[str, Any]:
        d = self.data.dim
        key = jax.random.key(self.cfg.seed + 2)
        params = self.model.init(key, jnp.zeros((1, d)), jnp.zeros((1, d)))["params"]
        frozen = {"router": self.reader.init(key), "memory": empty_memory(self.capacity, d)}
        best = {"params": params, "score": jnp.full((), -jnp.inf), "step": jnp.zeros((), jnp.int32)}
        state = {"params": params, "opt_state": self.tx.init(params), "frozen": frozen,
                 "best": best}  # fmt: skip
        if self.cfg.phase2.ema:
            state["ema"] = {"params": params, "count": jnp.zeros((), jnp.int32)}
        return state

    def eval_params(self, state):
        """The parameters that are scored: the average with ``phase2.ema``, else the iterate."""
        return state["ema"]["params"] if self.cfg.phase2.ema else state["params"]

    def _dev_score(self, state, params) -> float:
        dev = self.data.split_questions["dev"]
        out = self.predict({**state, "params": params}, self.data.q_emb[dev])
        return float(np.mean(np.asarray(cosine(out["pred"], self.data.a_emb[dev]))))

    def _select(self, state, done: int):
        """The state with ``best`` replaced when the current parameters score higher on dev."""
        params = self.eval_params(state)
        score = self._dev_score(state, params)
        self._last_dev = (done, score)
        if score <= float(state["best"]["score"]):
            return state
        best = {"params": params, "score": jnp.asarray(score, jnp.float32),
                "step": jnp.asarray(done, jnp.int32)}  # fmt: skip
        return {**state, "best": best}

    def after_step(self, state, step: int, metrics):
        every, done = self.cfg.phase2.select_every, step + 1
        if every and (done % every == 0 or done == self.cfg.phase2.steps):
            return self._select(state, done)
        return state

    def before_step(self, state, step: int):
        if step:
            return state
        router = jax.tree.map(lambda p, like: jax.device_put(np.asarray(p), like.sharding),
                              self.phase1["params"], state["frozen"]["router"])  # fmt: skip
        memory = fill_memory(state["frozen"]["memory"], self.layout.patterns)
        state = {**state, "frozen": {"router": router, "memory": memory}}
        return self._select(state, 0) if self.cfg.phase2.select_every else state

    def batch(self, step: int):
        rng = np.random.default_rng([self.cfg.seed, 3, step])
        idx = rng.choice(self.train_q, self.cfg.phase2.batch_size)
        key = np.asarray(jax.random.key_data(jax.random.key(self.cfg.seed * 100003 + step)))
        return {"q": self.data.q_emb[idx], "a": self.data.a_emb[idx]}, {"key": key}

    def loss(self, params, frozen, q, a, key=None):
        """``(loss, metrics)``; ``frozen`` (router + memory) passes through stop_gradient.
        ``key`` (a PRNG key): train mode, the reasoner's input noise and dropout draw from it."""
        frozen = jax.lax.stop_gradient(frozen)
        _, retrieved, *_ = self.reader.read(frozen["router"], frozen["memory"], q)
        train = {} if key is None else {"train": True, "rngs": {"dropout": key}}
        pred, aux = self.model.apply({"params": params}, retrieved, q, **train)
        cos = cosine(pred, a)
        p2 = self.cfg.phase2
        loss = (jnp.mean(1.0 - cos) + p2.load_balance_weight * aux["load_balance_loss"]
                + p2.z_loss_weight * aux["router_z_loss"])  # fmt: skip
        return loss, {"loss": loss, "cos": jnp.mean(cos)}

    def train_step(self, state, data, extras):
        key = jax.random.wrap_key_data(extras["key"])
        grads, metrics = jax.grad(self.loss, has_aux=True)(
            state["params"], state["frozen"], data["q"], data["a"], key
        )
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
        state = {**state, "params": params, "opt_state": opt_state}
        if self.cfg.phase2.ema:
            state["ema"] = ema_update(state["ema"], params, self.cfg.phase2.ema)
        return state, metrics

    def _predict_fn(self):
        if self._jitted is None:
            model, reader = self.model, self.reader

            @jax.jit
            def fn(params, frozen, q):
                _, retrieved, _, idx, _ = reader.read(frozen["router"], frozen["memory"], q)
                pred, _ = model.apply({"params": params}, retrieved, q)
                out = {"pred": pred, "top1_slot": idx[:, 0]}
                if model.kind == "moe":
                    out["gates"] = model.apply({"params": params}, retrieved, q,
                                               method=Reasoner.gates)  # fmt: skip
                return out

            self._jitted = fn
        return self._jitted

    def predict(self, state, questions: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions, retrieval and (MoE) gates for question embeddings [N, D]."""
        fn = self._predict_fn()
        return batched_eval(lambda q: fn(state["params"], state["frozen"], q), (questions,),
                            EVAL_BATCH)  # fmt: skip

    def evaluate(self, state, step: int, train: dict) -> dict:
        """The train means plus the dev split's close_answer_mean (for curves)."""
        last = self._last_dev
        score = (last[1] if last and last[0] == step
                 else self._dev_score(state, self.eval_params(state)))  # fmt: skip
        return {
            **train,
            "dev_close_answer_mean": score,
            "best_dev": float(state["best"]["score"]),
            "best_step": int(state["best"]["step"]),
        }

    def meta(self) -> dict:
        c = self.cfg
        return {"kind": self.kind, "reasoner": dataclasses.asdict(c.reasoner),
                "phase2": dataclasses.asdict(c.phase2), "data_key": self.data.key,
                "seed": c.seed}  # fmt: skip

    def summary(self, state, history) -> dict:
        host = jax.device_get(state)
        same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                            host["frozen"]["router"], self.phase1["params"])  # fmt: skip
        if not all(jax.tree.leaves(same)):
            raise RuntimeError("the frozen phase 1 router changed during phase 2")
        selected = self.cfg.phase2.select_every > 0
        self.final = {"params": host["best"]["params"] if selected else self.eval_params(host),
                      "frozen": host["frozen"]}  # fmt: skip
        return {
            "phase1_frozen_bit_identical": True,
            "selected_step": int(host["best"]["step"]) if selected else self.cfg.phase2.steps,
            "dev_close_answer_mean": self._dev_score(host, self.final["params"]),
        }


def frozen_grads(exp: Phase2Experiment, state, q: np.ndarray, a: np.ndarray):
    """Gradients of the phase 2 loss w.r.t. ``(reasoner params, frozen phase 1)``: the second
    part is exactly zero (stop_gradient), which the tests check."""
    grad = jax.grad(lambda p, f: exp.loss(p, f, q, a)[0], argnums=(0, 1), allow_int=True)
    return jax.jit(grad)(state["params"], state["frozen"])
