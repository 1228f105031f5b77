"""Continual learning on Split-MNIST with a growing LiquidMoE and per-expert novelty gates.

Shapes: B batch, D = 784 pixels, E experts (= number of tasks T), V = 10 output logits.

The method (one LiquidMoE, expert capacity E = T, top-1, dropless):

* Task t grows the active set to t + 1 experts. Expert t starts as a clone of expert t - 1
  (``aura.brain.cloning.clone_expert``) and is trained on task t only, with routing forced to it
  by a one-hot ``RoutingControls.bias`` and every earlier expert in ``freeze_mask`` (exactly zero
  gradient). AdamW's decoupled weight decay would still move frozen rows, so the optimizer's
  updates are also masked to the trainable expert; after each task the earlier experts are
  checked to be bit-identical (a change raises ``RuntimeError``: it would be a bug).
* After task t, its per-expert novelty gate (``aura.brain.novelty``) is fitted: per-class PPCA
  statistics, no images. At test time without a task label the gate scores become the routing
  bias (the learned gate of the method is zero, so the router's softmax is the posterior over
  experts) and the chosen expert's logits, restricted to its task's outputs, give the answer.

Scenarios (van de Ven & Tolias, 2019): ``task`` (task id given at test: routed to that expert,
2-way answer), ``class`` (no task id: the gate picks the expert, the answer is a digit) and
``domain`` (labels are the within-pair 0/1 and no task id: gate + expert, 2-way answer; each
expert uses its output units 0 and 1).

The fine-tuning baseline is the same LiquidMoE with all E experts active, its learned router
(trained through the load-balance and z losses), no growth, freezing or gates, trained on the
tasks in sequence with a softmax over all 10 digits (class, task) or over {0, 1} (domain).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aura.brain.novelty import GateBank, gate_bias, gate_scores
from aura.data.augment import AffineRange, random_affine
from aura.data.mnist import SPLIT_MNIST_PAIRS
from aura.data.split_mnist import SplitData
from aura.nn.moe.core import LiquidMoE
from aura.nn.moe.router import RoutingControls
from aura.train.optim import expert_row_mask

__all__ = ["SCENARIOS", "ContinualConfig", "ContinualFns", "Phase", "build_model", "forgetting"]

SCENARIOS = ("class", "task", "domain")
NUM_OUTPUTS = 10
FORCE_BIAS = 1e4  # one-hot gate-logit bias that forces routing to one expert
_MASKED = -1e9  # logit of an output outside the allowed head (finite: no NaN in softmax)


@dataclasses.dataclass(frozen=True)
class ContinualConfig:
    """Hyper-parameters of a continual run (validated by :meth:`validate`)."""

    scenario: str = "class"
    epochs_per_task: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hidden_dim: int = 400
    ppca_dim: int = 30
    noise_floor: float = 1e-2
    augment: bool = True
    seed: int = 0
    baseline: bool = True
    eval_batch: int = 1000
    pairs: tuple[tuple[int, ...], ...] = SPLIT_MNIST_PAIRS

    def validate(self) -> ContinualConfig:
        """Returns self; raises ValueError naming a bad value and its limit."""
        if self.scenario not in SCENARIOS:
            raise ValueError(
                f"--scenario {self.scenario!r} is unknown; valid scenarios: {', '.join(SCENARIOS)}"
            )
        for name in ("epochs_per_task", "batch_size", "hidden_dim", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} must be >= 1")
        if self.seed < 0:
            raise ValueError(f"seed = {self.seed} must be >= 0")
        if not 1 <= self.ppca_dim <= 783:
            raise ValueError(f"ppca_dim = {self.ppca_dim} must be in [1, 783]")
        if self.lr <= 0 or self.weight_decay < 0 or self.noise_floor <= 0:
            raise ValueError(
                f"lr = {self.lr} and noise_floor = {self.noise_floor} must be > 0, "
                f"weight_decay = {self.weight_decay} >= 0"
            )
        if len(self.pairs) < 2:
            raise ValueError(f"a continual run needs >= 2 tasks, got pairs {self.pairs}")
        if self.scenario == "domain" and any(len(p) != 2 for p in self.pairs):
            raise ValueError(f"the domain scenario needs 2 classes per task, got {self.pairs}")
        return self


def build_model(cfg: ContinualConfig) -> LiquidMoE:
    """The LiquidMoE of both the method and the baseline: E = T MLP experts, top-1, dropless."""
    num = len(cfg.pairs)
    # capacity_factor = E: the capacity buffer holds the whole batch, no token is ever dropped.
    return LiquidMoE(num, 784, cfg.hidden_dim, NUM_OUTPUTS, top_k=1, capacity_factor=float(num))


class Phase(NamedTuple):
    """What differs between training phases (all arrays, so one compiled step serves all).

    head: bool [V] outputs the loss may use; controls: routing; rows: bool [E] experts whose
    parameters may change; shared: bool [] whether non-expert parameters (router) may change;
    aux_weight: f32 [] weight of the load-balance + z losses.
    """

    head: jax.Array
    controls: RoutingControls
    rows: jax.Array
    shared: jax.Array
    aux_weight: jax.Array


def method_phase(cfg: ContinualConfig, t: int) -> Phase:
    """Task ``t`` of the method: routing forced to expert t, earlier experts frozen, only
    expert t trains (the learned router stays zero), the task's own outputs."""
    num = len(cfg.pairs)
    bias = np.eye(num, dtype=np.float32)[t] * FORCE_BIAS
    controls = RoutingControls.create(num, t + 1, frozen=tuple(range(t)), bias=bias)
    rows = jnp.asarray(np.arange(num) == t)
    return Phase(jnp.asarray(heads(cfg)[t]), controls, rows, jnp.asarray(False), jnp.asarray(0.0))


def baseline_phase(cfg: ContinualConfig) -> Phase:
    """The fine-tuning baseline: every expert and the router train, all outputs of the run."""
    num = len(cfg.pairs)
    everything = jnp.ones((num,), bool)
    train_head = jnp.asarray(heads(cfg).any(axis=0))  # all digits (class, task) or {0, 1}
    return Phase(train_head, RoutingControls.create(num), everything, jnp.asarray(True),
                 jnp.asarray(0.01))  # fmt: skip


class ContinualFns:
    """The pure train step (the loop jits it), jitted forward pass and gate scoring."""

    def __init__(self, cfg: ContinualConfig):
        self.cfg = cfg
        self.model = model = build_model(cfg)
        self.tx = tx = optax.chain(
            optax.adamw(cfg.lr, weight_decay=cfg.weight_decay), expert_row_mask()
        )
        ranges = AffineRange()

        def loss_fn(params, x, y, ph: Phase):
            logits, aux = model.apply({"params": params}, x, ph.controls)  # [B, V]
            logits = jnp.where(ph.head, logits, _MASKED)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            reg = aux.load_balance_loss + 0.1 * aux.router_z_loss
            return ce + ph.aux_weight * reg, ce

        def step(state, data, ph: Phase):
            x, y = data
            if cfg.augment:
                key = jax.random.fold_in(jax.random.key(cfg.seed), state["step"])
                img = x.reshape(-1, 28, 28, 1)  # [B, D] -> [B, 28, 28, 1]
                x = random_affine(img, key, ranges).reshape(x.shape)  # -> [B, D]
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            (_, ce), grads = grad_fn(state["params"], x, y, ph)
            updates, opt_state = tx.update(
                grads, state["opt_state"], state["params"], expert_keep=ph.rows,
                shared_keep=ph.shared,
            )  # fmt: skip
            params = optax.apply_updates(state["params"], updates)
            new = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}
            return new, {"ce": ce}

        def forward(params, x, controls):
            logits, _ = model.apply({"params": params}, x, controls)  # [N, V]
            r = model.apply({"params": params}, x, controls, method=LiquidMoE.compute_gate_weights)
            return logits, r.indices[:, 0]

        self.train_step = step
        self.forward = jax.jit(forward)
        self.scores = jax.jit(lambda gates, x: gate_bias(gate_scores(gates, x)))

    def init(self, key: jax.Array) -> Any:
        controls = RoutingControls.create(len(self.cfg.pairs))
        return self.model.init(key, jnp.zeros((1, 784)), controls)["params"]

    def _batched(self, fn, x: np.ndarray, *rest: np.ndarray, bs: int):
        """Applies ``fn(x_b, *rest_b)`` over fixed-size, zero-padded batches; concatenates."""
        outs = []
        for i in range(0, len(x), bs):
            pad = bs - len(x[i : i + bs])
            args = [np.pad(a[i : i + bs], ((0, pad), (0, 0))) for a in (x, *rest)]
            out = fn(*args)
            outs.append([np.asarray(o)[: bs - pad] for o in out])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    def forward_all(self, params, x: np.ndarray, bias: np.ndarray, active: int):
        """Logits [N, V] and routed expert [N] of the LiquidMoE under routing ``bias`` [N, E]."""
        num = bias.shape[1]

        def fn(xb, bb):
            return self.forward(params, xb, RoutingControls.create(num, active, bias=bb))

        return self._batched(fn, x, np.asarray(bias, np.float32), bs=self.cfg.eval_batch)

    def gate_bias(self, gates: GateBank, x: np.ndarray) -> np.ndarray:
        """Novelty-gate routing bias [N, E]."""
        return self._batched(lambda xb: (self.scores(gates, xb),), x, bs=self.cfg.eval_batch)[0]


def local_labels(labels: np.ndarray, pair: Sequence[int]) -> np.ndarray:
    """int32 [N]: index of each label within its task's classes."""
    return np.argmax(labels[:, None] == np.asarray(pair)[None], axis=1).astype(np.int32)


def targets(labels: np.ndarray, pair: Sequence[int], scenario: str) -> np.ndarray:
    """Digits, or (domain) the index of the digit within its pair."""
    return local_labels(labels, pair) if scenario == "domain" else labels.astype(np.int32)


def heads(cfg: ContinualConfig) -> np.ndarray:
    """bool [T, V]: the outputs each task's expert answers with (its digits, or 0/1)."""
    out = np.zeros((len(cfg.pairs), NUM_OUTPUTS), bool)
    for t, pair in enumerate(cfg.pairs):
        out[t, list(range(len(pair))) if cfg.scenario == "domain" else list(pair)] = True
    return out


def eval_set(data: SplitData, cfg: ContinualConfig, tasks: int):
    """Eval inputs [N, D], targets [N] and task ids [N] of tasks ``0 .. tasks-1``."""
    x = np.concatenate(data.eval_x[:tasks])
    ys = [targets(data.eval_y[j], cfg.pairs[j], cfg.scenario) for j in range(tasks)]
    task_id = np.concatenate([np.full(len(y), j) for j, y in enumerate(ys)])
    return x, np.concatenate(ys), task_id


def answer(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """argmax of ``logits`` [N, V] over the ``allowed`` [N, V] (or [V]) outputs."""
    return np.argmax(np.where(allowed, logits, -np.inf), axis=-1)


def per_task(correct: np.ndarray, task_id: np.ndarray, tasks: int) -> list[float]:
    return [float(np.mean(correct[task_id == j])) for j in range(tasks)]


def evaluate_method(params, gates: GateBank, tasks: int, data: SplitData, fns: ContinualFns):
    """Method accuracy on the eval data of the ``tasks`` learned so far (one pass).

    Returns:
      ``{"accuracy": [per task], "gate_accuracy": [per task]}``; gate accuracy is how often a
      task's digits were routed to its own expert (1.0 in ``task``).
    """
    cfg = fns.cfg
    num = len(cfg.pairs)
    x, target, task_id = eval_set(data, cfg, tasks)
    if cfg.scenario == "task":
        bias = np.eye(num, dtype=np.float32)[task_id] * FORCE_BIAS  # [N, E] forced routing
    else:
        bias = fns.gate_bias(gates, x)  # [N, E] novelty gates
    logits, routed = fns.forward_all(params, x, bias, tasks)
    pred = answer(logits, heads(cfg)[routed])  # among the chosen expert's outputs
    return {
        "accuracy": per_task(pred == target, task_id, tasks),
        "gate_accuracy": per_task(routed == task_id, task_id, tasks),
    }


def evaluate_baseline(params, tasks: int, data: SplitData, fns: ContinualFns) -> list[float]:
    """Baseline accuracy per learned task (task: among its own digits; class: all 10;
    domain: 0/1)."""
    cfg, num = fns.cfg, len(fns.cfg.pairs)
    x, target, task_id = eval_set(data, cfg, tasks)
    logits, _ = fns.forward_all(params, x, np.zeros((len(x), num), np.float32), num)
    allowed = heads(cfg)[task_id] if cfg.scenario == "task" else heads(cfg).any(axis=0)
    return per_task(answer(logits, allowed) == target, task_id, tasks)


def forgetting(matrix: Sequence[Sequence[float | None]]) -> list[float]:
    """Per-task forgetting ``max_{j <= i < T-1} R[i][j] - R[T-1][j]`` for tasks j < T - 1."""
    last = len(matrix) - 1
    return [float(max(matrix[i][j] for i in range(j, last)) - matrix[last][j]) for j in range(last)]
