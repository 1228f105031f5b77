"""Phase 1: the router learns to read the memory back from noisy copies of the contexts.

Shapes: B batch, D embedding width, M memory slots, K top-k, S noise levels.

Each step draws B training contexts (the memory's first slots, see ``MemoryLayout``; the step
reads only those, so the router never learns to avoid the held-out contexts) and, for each, a
noise level from ``phase1.sigmas`` (the levels it is reported at: trained at the sigma it is
tested at) and a noisy query ``normalize(x + sigma * N(0, I))`` — a pure function of
``(seed, step)``. The router maps the
query into the memory space; the memory is read with every slot's softmax (``mode="full"``, so
the read-out is differentiable); the loss is ``1 - cos(retrieved, target)`` plus
``ce_weight`` x the ranking cross-entropy over the whole memory,
``logsumexp(beta * cos(routed, x_m)) - beta * cos(routed, target)`` (its log-sum-exp comes from
the retrieval itself: ``logits[0] - log(weights[0])``, no ``[B, M]`` array).

:func:`phase1_report` measures recall@1/5/10 and mean cos(retrieved, target) on noisy copies of
the report split's contexts (never trained on) at each sigma, beside exact cosine nearest
neighbour over the same memory without the router, and how the read-out sharpens with beta.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
from aura.train import loop
from aura.train.optim import make_optimizer

__all__ = ["Phase1Experiment", "noisy_copies", "phase1_report", "retrieval_metrics"]

EVAL_BATCH = 512


def noisy_copies(clean: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``normalize(x + sigma * N(0, I))`` row by row (``sigma`` [B] or a scalar)."""
    sigma = np.broadcast_to(np.asarray(sigma, np.float32), (len(clean),))
    x = clean + sigma[:, None] * rng.standard_normal(clean.shape, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Phase1Experiment(loop.Experiment):
    """Trains the router against the (frozen, parameter-free) memory of every context."""

    def __init__(self, cfg: CortexConfig, data: CortexData, devices: int = 1):
        self.cfg, self.data = cfg, data
        self.reader = RouterReader(data.dim, cfg.router, cfg.memory)
        self.tx = make_optimizer(cfg.phase1.lr, cfg.phase1.steps, cfg.phase1.weight_decay)
        self.capacity = memory_capacity(len(data.contexts), devices)
        self.layout = MemoryLayout(data)
        self.final: dict[str, Any] | None = None
        if cfg.phase1.batch_size % devices:
            raise ValueError(
                f"config.phase1.batch_size={cfg.phase1.batch_size} must be a multiple of the "
                f"{devices} devices of the mesh"
            )

    def init_state(self) -> dict[str, Any]:
        params = self.reader.init(jax.random.key(self.cfg.seed))
        return {"params": params, "opt_state": self.tx.init(params),
                "memory": empty_memory(self.capacity, self.data.dim)}  # fmt: skip

    def before_step(self, state, step: int):
        if step:
            return state
        return {**state, "memory": fill_memory(state["memory"], self.layout.patterns)}

    def batch(self, step: int):
        p = self.cfg.phase1
        rng = np.random.default_rng([self.cfg.seed, 1, step])
        target = rng.integers(0, self.layout.n_train, p.batch_size).astype(np.int32)  # slots
        sigma = rng.choice(np.asarray(p.sigmas, np.float32), p.batch_size)
        clean = self.layout.patterns[target]
        return {"noisy": noisy_copies(clean, sigma, rng), "clean": clean, "target": target}, {}

    def train_step(self, state, data, extras):
        beta, w_ce = float(self.cfg.memory.beta), float(self.cfg.phase1.ce_weight)

        # Training reads the training contexts' slots only (see MemoryLayout).
        memory = {**state["memory"], "count": jnp.int32(self.layout.n_train)}

        def loss_fn(params):
            routed, retrieved, weights, idx, logits = self.reader.read(
                params, memory, data["noisy"], mode="full"
            )
            norm = jnp.maximum(jnp.linalg.norm(retrieved, axis=-1), 1e-12)
            cos = jnp.sum(retrieved * data["clean"], axis=-1) / norm  # [B]
            lse = logits[:, 0] - jnp.log(weights[:, 0])  # log-sum-exp over every slot
            ce = lse - beta * jnp.sum(routed * data["clean"], axis=-1)  # [B]
            loss = jnp.mean(1.0 - cos) + w_ce * jnp.mean(ce)
            hit = jnp.mean((idx[:, 0] == data["target"]).astype(jnp.float32))
            return loss, {"loss": loss, "cos": jnp.mean(cos), "ce": jnp.mean(ce), "recall@1": hit}

        grads, metrics = jax.grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
        return {**state, "params": params, "opt_state": opt_state}, metrics

    def evaluate(self, state, step: int, train: dict) -> dict:
        """The train means plus dev recall@1 / cos at the largest sigma (cheap; for curves)."""
        sigma = max(self.cfg.phase1.sigmas)
        dev = self.layout.slot[self.data.split_contexts["dev"]]
        m = retrieval_metrics(self.reader, state["params"], state["memory"],
                              self.layout.patterns, dev, sigma, draws=1,
                              seed=self.cfg.seed + 7)  # fmt: skip
        return {**train, f"dev_recall@1_s{sigma:g}": m["recall@1"], f"dev_cos_s{sigma:g}": m["cos"]}

    def meta(self) -> dict:
        c = self.cfg
        return {"router": dataclasses.asdict(c.router), "phase1": dataclasses.asdict(c.phase1),
                "memory": dataclasses.asdict(c.memory), "data_key": self.data.key,
                "seed": c.seed}  # fmt: skip

    def summary(self, state, history) -> dict:
        self.final = jax.device_get({"params": state["params"], "memory": state["memory"]})
        return {}


def _read_fn(reader: RouterReader, beta=None, route=True):
    @jax.jit
    def fn(params, memory, q):
        _, retrieved, weights, idx, _ = reader.read(params, memory, q, beta=beta, route=route)
        return retrieved, weights, idx

    return fn


def retrieval_metrics(reader, params, memory, patterns, slots, sigma, *, draws, seed,
                      beta=None, route=True, fn=None) -> dict[str, float]:  # fmt: skip
    """recall@1/5/10, mean cos(retrieved, target), mean top-1 weight and read-out entropy on
    ``draws`` noisy copies (``sigma``) of the patterns in ``slots`` (noise fixed by ``seed``);
    ``patterns`` [M, D] are the memory's embeddings in slot order."""
    target = np.repeat(np.asarray(slots, np.int32), draws)
    rng = np.random.default_rng([seed, 2, round(sigma * 1e6)])
    queries = noisy_copies(patterns[target], sigma, rng)
    fn = fn or _read_fn(reader, beta, route)
    retrieved, weights, idx = batched_eval(lambda q: fn(params, memory, q), (queries,), EVAL_BATCH)
    hits = idx == target[:, None]  # [N, K]
    unit = retrieved / np.maximum(np.linalg.norm(retrieved, axis=1, keepdims=True), 1e-12)
    p = np.clip(weights, 1e-30, 1.0)
    return {
        "recall@1": float(hits[:, :1].any(1).mean()),
        "recall@5": float(hits[:, :5].any(1).mean()),
        "recall@10": float(hits[:, :10].any(1).mean()),
        "cos": float(np.mean(np.sum(unit * patterns[target], axis=1))),
        "top1_weight": float(np.mean(weights[:, 0])),
        "entropy": float(np.mean(-np.sum(np.where(weights > 0, weights * np.log(p), 0.0), 1))),
    }


def phase1_report(exp: Phase1Experiment, state, split: str) -> dict[str, Any]:
    """Router and exact-NN retrieval per sigma on ``split``'s contexts, and the beta sweep."""
    cfg, data = exp.cfg, exp.data
    ctx = exp.layout.slot[data.split_contexts[split]]
    pats = exp.layout.patterns
    params, memory = state["params"], state["memory"]
    routed_fn, nn_fn = _read_fn(exp.reader), _read_fn(exp.reader, route=False)
    report: dict[str, Any] = {"split": split, "contexts_evaluated": int(len(ctx)),
                              "draws": cfg.phase1.eval_draws, "beta": cfg.memory.beta}  # fmt: skip
    for sigma in cfg.phase1.sigmas:
        key = f"{sigma:g}"
        kw = dict(draws=cfg.phase1.eval_draws, seed=cfg.seed + 1000)
        r = retrieval_metrics(exp.reader, params, memory, pats, ctx, sigma, fn=routed_fn, **kw)
        n = retrieval_metrics(exp.reader, params, memory, pats, ctx, sigma, fn=nn_fn, **kw)
        for name in ("recall@1", "recall@5", "recall@10", "cos"):
            report.setdefault(name, {})[key] = r[name]
            report.setdefault(f"nn_{name}", {})[key] = n[name]
    sigma = 0.1 if 0.1 in cfg.phase1.sigmas else max(cfg.phase1.sigmas)
    sweep = []
    for beta in cfg.memory.beta_grid:
        m = retrieval_metrics(exp.reader, params, memory, pats, ctx, sigma, beta=beta,
                              draws=cfg.phase1.eval_draws, seed=cfg.seed + 1000)  # fmt: skip
        sweep.append({"beta": beta, **{k: m[k] for k in ("top1_weight", "entropy", "cos",
                                                         "recall@1")}})  # fmt: skip
    report["beta_sweep"] = {"sigma": sigma, "rows": sweep}
    return report
