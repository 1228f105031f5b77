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
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from aura.brain.cloning import clone_expert
from aura.brain.novelty import GateBank, fit_expert_gate, gate_bias, gate_scores
from aura.data.augment import AffineRange, random_affine
from aura.data.mnist import SPLIT_MNIST_PAIRS
from aura.data.split_mnist import SplitData, load_split_data
from aura.nn.moe.core import LiquidMoE
from aura.nn.moe.router import RoutingControls

__all__ = ["SCENARIOS", "ContinualConfig", "ContinualState", "SplitData", "build_model"]
__all__ += ["evaluate", "forgetting", "load_split_data", "run", "train_baseline", "train_method"]

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


@struct.dataclass
class ContinualState:
    """What the method keeps between tasks: parameters, gates, tasks learned. No images."""

    params: Any
    gates: GateBank
    tasks_learned: int = struct.field(pytree_node=False, default=0)


def build_model(cfg: ContinualConfig) -> LiquidMoE:
    """The LiquidMoE of both the method and the baseline: E = T MLP experts, top-1, dropless."""
    num = len(cfg.pairs)
    # capacity_factor = E: the capacity buffer holds the whole batch, no token is ever dropped.
    return LiquidMoE(num, 784, cfg.hidden_dim, NUM_OUTPUTS, top_k=1, capacity_factor=float(num))


def _local(labels: np.ndarray, pair: Sequence[int]) -> np.ndarray:
    """int32 [N]: index of each label within its task's classes."""
    return np.argmax(labels[:, None] == np.asarray(pair)[None], axis=1).astype(np.int32)


def _targets(labels: np.ndarray, pair: Sequence[int], scenario: str) -> np.ndarray:
    """Digits, or (domain) the index of the digit within its pair."""
    return _local(labels, pair) if scenario == "domain" else labels.astype(np.int32)


def _heads(cfg: ContinualConfig) -> np.ndarray:
    """bool [T, V]: the outputs each task's expert answers with (its digits, or 0/1)."""
    heads = np.zeros((len(cfg.pairs), NUM_OUTPUTS), bool)
    for t, pair in enumerate(cfg.pairs):
        heads[t, list(range(len(pair))) if cfg.scenario == "domain" else list(pair)] = True
    return heads


def _is_expert_leaf(path) -> bool:
    return any(getattr(k, "key", None) == "experts" for k in path)


def _mask_updates(updates, rows: jax.Array, shared: jax.Array):
    """Zeroes updates of expert rows where ``~rows`` [E] and of shared leaves unless ``shared``."""

    def mask(path, u):
        if _is_expert_leaf(path):
            return jnp.where(rows.reshape((-1,) + (1,) * (u.ndim - 1)), u, jnp.zeros_like(u))
        return jnp.where(shared, u, jnp.zeros_like(u))

    return jax.tree_util.tree_map_with_path(mask, updates)


class _Phase(NamedTuple):
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


class _Fns:
    """The jitted train step, forward pass and gate scoring shared by method and baseline."""

    def __init__(self, cfg: ContinualConfig):
        self.model = model = build_model(cfg)
        self.tx = tx = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
        ranges = AffineRange()

        def loss_fn(params, x, y, ph: _Phase):
            logits, aux = model.apply({"params": params}, x, ph.controls)  # [B, V]
            logits = jnp.where(ph.head, logits, _MASKED)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            reg = aux.load_balance_loss + 0.1 * aux.router_z_loss
            return ce + ph.aux_weight * reg, ce

        def step(params, opt_state, x, y, ph: _Phase, key):
            key, sub = jax.random.split(key)
            if cfg.augment:
                img = x.reshape(-1, 28, 28, 1)  # [B, D] -> [B, 28, 28, 1]
                x = random_affine(img, sub, ranges).reshape(x.shape)  # -> [B, D]
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            (_, ce), grads = grad_fn(params, x, y, ph)
            updates, opt_state = tx.update(grads, opt_state, params)
            updates = _mask_updates(updates, ph.rows, ph.shared)
            return optax.apply_updates(params, updates), opt_state, ce, key

        def forward(params, x, controls):
            logits, _ = model.apply({"params": params}, x, controls)  # [N, V]
            r = model.apply({"params": params}, x, controls, method=LiquidMoE.compute_gate_weights)
            return logits, r.indices[:, 0]

        self.step = jax.jit(step)
        self.forward = jax.jit(forward)
        self.scores = jax.jit(lambda gates, x: gate_bias(gate_scores(gates, x)))

    def init(self, key: jax.Array, num: int):
        controls = RoutingControls.create(num)
        return jax.jit(self.model.init)(key, jnp.zeros((1, 784)), controls)["params"]

    def train_task(self, params, opt_state, x, y, ph: _Phase, cfg: ContinualConfig, key):
        """``epochs_per_task`` epochs over one task with fixed-size batches (static shapes)."""
        n, bs = len(y), cfg.batch_size
        steps = -(-n // bs)
        rng = np.random.default_rng(np.asarray(key, np.uint32))  # batch order from the task key
        ce = jnp.zeros(())
        for _ in range(cfg.epochs_per_task):
            order = np.resize(rng.permutation(n), steps * bs)  # wraps so every batch is full
            for s in range(steps):
                idx = order[s * bs : (s + 1) * bs]
                params, opt_state, ce, key = self.step(params, opt_state, x[idx], y[idx], ph, key)
        return params, opt_state, float(ce)

    def _batched(self, fn, x: np.ndarray, *rest: np.ndarray, bs: int):
        """Applies ``fn(x_b, *rest_b)`` over fixed-size, zero-padded batches; concatenates."""
        outs = []
        for i in range(0, len(x), bs):
            pad = bs - len(x[i : i + bs])
            args = [np.pad(a[i : i + bs], ((0, pad), (0, 0))) for a in (x, *rest)]
            out = fn(*args)
            outs.append([np.asarray(o)[: bs - pad] for o in out])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    def forward_all(self, params, x: np.ndarray, bias: np.ndarray, active: int, bs: int):
        """Logits [N, V] and routed expert [N] of the LiquidMoE under routing ``bias`` [N, E]."""
        num = bias.shape[1]

        def fn(xb, bb):
            return self.forward(params, xb, RoutingControls.create(num, active, bias=bb))

        return self._batched(fn, x, np.asarray(bias, np.float32), bs=bs)

    def gate_bias(self, gates: GateBank, x: np.ndarray, bs: int) -> np.ndarray:
        """Novelty-gate routing bias [N, E]."""
        return self._batched(lambda xb: (self.scores(gates, xb),), x, bs=bs)[0]


def _eval_set(data: SplitData, cfg: ContinualConfig, tasks: int):
    """Eval inputs [N, D], targets [N] and task ids [N] of tasks ``0 .. tasks-1``."""
    x = np.concatenate(data.eval_x[:tasks])
    ys = [_targets(data.eval_y[j], cfg.pairs[j], cfg.scenario) for j in range(tasks)]
    task_id = np.concatenate([np.full(len(y), j) for j, y in enumerate(ys)])
    return x, np.concatenate(ys), task_id


def _answer(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """argmax of ``logits`` [N, V] over the ``allowed`` [N, V] (or [V]) outputs."""
    return np.argmax(np.where(allowed, logits, -np.inf), axis=-1)


def _per_task(correct: np.ndarray, task_id: np.ndarray, tasks: int) -> list[float]:
    return [float(np.mean(correct[task_id == j])) for j in range(tasks)]


def evaluate(
    state: ContinualState, data: SplitData, cfg: ContinualConfig, fns: _Fns | None = None
) -> dict:
    """Method accuracy on the eval data of every task learned so far (one pass).

    ``fns`` reuses compiled functions (built from ``cfg`` when omitted).

    Returns:
      ``{"accuracy": [per task], "gate_accuracy": [per task], "routed": int [N]}``; gate
      accuracy is how often a task's digits were routed to its own expert (1.0 in ``task``).
    """
    fns = fns or _Fns(cfg)
    tasks, num = state.tasks_learned, len(cfg.pairs)
    x, target, task_id = _eval_set(data, cfg, tasks)
    if cfg.scenario == "task":
        bias = np.eye(num, dtype=np.float32)[task_id] * FORCE_BIAS  # [N, E] forced routing
    else:
        bias = fns.gate_bias(state.gates, x, cfg.eval_batch)  # [N, E] novelty gates
    logits, routed = fns.forward_all(state.params, x, bias, tasks, cfg.eval_batch)
    pred = _answer(logits, _heads(cfg)[routed])  # among the chosen expert's outputs
    return {
        "accuracy": _per_task(pred == target, task_id, tasks),
        "gate_accuracy": _per_task(routed == task_id, task_id, tasks),
        "routed": routed,
    }


def _check_frozen(params, snapshots: list[dict]) -> None:
    for j, snap in enumerate(snapshots):
        for name, leaf in params["experts"].items():
            if np.asarray(leaf[j]).tobytes() != snap[name].tobytes():
                raise RuntimeError(f"frozen expert {j} changed (leaf {name!r}); freezing is broken")


def _record(kind: str, t: int, pair, row: list) -> dict:
    learned = [a for a in row if a is not None]
    avg = float(np.mean(learned))
    return {"run": kind, "task": t, "classes": "/".join(map(str, pair)), "acc": row, "avg": avg}


def train_method(
    cfg: ContinualConfig,
    data: SplitData,
    echo: Callable[[dict], None] = lambda r: None,
    on_task: Callable[[int, ContinualState], None] | None = None,
) -> tuple[ContinualState, list[list[float | None]], dict]:
    """Trains the growing, freezing, gated LiquidMoE on the tasks in sequence.

    Args:
      cfg: validated config.
      data: per-task data.
      echo: called with one record per task (accuracy row, gate accuracy, seconds).
      on_task: called as ``on_task(t, state)`` after task t is learned and its gate fitted.

    Returns:
      (final state, accuracy matrix R [T][T] with None above the diagonal, extras dict with
      per-task gate accuracy and ``frozen_bit_identical``).

    Raises:
      RuntimeError: an earlier expert's parameters changed (freezing is broken).
    """
    num, heads, fns = len(cfg.pairs), _heads(cfg), _Fns(cfg)
    key, init_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params = fns.init(init_key, num)
    # The method's learned gate is zero: routing is decided by the bias (forced, or novelty).
    params = {**params, "router": jax.tree.map(jnp.zeros_like, params["router"])}
    state = ContinualState(params, GateBank.create([len(p) for p in cfg.pairs], 784, cfg.ppca_dim))
    matrix: list[list[float | None]] = []
    gate_acc: list[float] = []
    snapshots: list[dict] = []  # expert j's parameters right after task j (for the check)
    for t in range(num):
        t0 = time.time()
        params = state.params if t == 0 else clone_expert(state.params, t - 1, t)
        bias = np.eye(num, dtype=np.float32)[t] * FORCE_BIAS
        controls = RoutingControls.create(num, t + 1, frozen=tuple(range(t)), bias=bias)
        rows = jnp.asarray(np.arange(num) == t)  # only expert t moves
        ph = _Phase(jnp.asarray(heads[t]), controls, rows, jnp.asarray(False), jnp.asarray(0.0))
        x, labels = data.train_x[t], data.train_y[t]
        y = _targets(labels, cfg.pairs[t], cfg.scenario)
        key, sub = jax.random.split(key)
        params, _, ce = fns.train_task(params, fns.tx.init(params), x, y, ph, cfg, sub)
        _check_frozen(params, snapshots)
        snapshots.append({k: np.array(v[t]) for k, v in params["experts"].items()})
        local = _local(labels, cfg.pairs[t])
        gates = fit_expert_gate(state.gates, t, x, local, cfg.ppca_dim, cfg.noise_floor)
        state = ContinualState(params, gates, t + 1)
        if on_task is not None:
            on_task(t, state)
        ev = evaluate(state, data, cfg, fns)
        matrix.append(ev["accuracy"] + [None] * (num - t - 1))
        gate_acc.append(float(np.mean(ev["gate_accuracy"])))
        rec = _record("method", t, cfg.pairs[t], matrix[-1])
        echo({**rec, "gate": gate_acc[-1], "loss": ce, "time": time.time() - t0})
    return state, matrix, {"gate_accuracy": gate_acc, "frozen_bit_identical": True}


def train_baseline(
    cfg: ContinualConfig, data: SplitData, echo: Callable[[dict], None] = lambda r: None
) -> list[list[float | None]]:
    """Fine-tuning baseline: same LiquidMoE, all experts, learned router, no growth/freeze/gates.

    Returns:
      The accuracy matrix R [T][T] (None above the diagonal).
    """
    num, heads, fns = len(cfg.pairs), _heads(cfg), _Fns(cfg)
    key, init_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params = fns.init(init_key, num)
    opt_state = fns.tx.init(params)
    train_head = heads.any(axis=0)  # all digits (class, task) or {0, 1} (domain)
    controls = RoutingControls.create(num)
    everything = jnp.ones((num,), bool)
    ph = _Phase(jnp.asarray(train_head), controls, everything, jnp.asarray(True), jnp.asarray(0.01))
    matrix: list[list[float | None]] = []
    for t in range(num):
        t0 = time.time()
        y = _targets(data.train_y[t], cfg.pairs[t], cfg.scenario)
        key, sub = jax.random.split(key)
        params, opt_state, ce = fns.train_task(params, opt_state, data.train_x[t], y, ph, cfg, sub)
        x, target, task_id = _eval_set(data, cfg, t + 1)
        zero = np.zeros((len(x), num), np.float32)
        logits, _ = fns.forward_all(params, x, zero, num, cfg.eval_batch)
        # task: answer among the task's own digits; class: among all 10; domain: 0/1.
        pred = _answer(logits, heads[task_id] if cfg.scenario == "task" else train_head)
        row: list[float | None] = list(_per_task(pred == target, task_id, t + 1))
        matrix.append(row + [None] * (num - t - 1))
        rec = _record("baseline", t, cfg.pairs[t], matrix[-1])
        echo({**rec, "loss": ce, "time": time.time() - t0})
    return matrix


def forgetting(matrix: Sequence[Sequence[float | None]]) -> list[float]:
    """Per-task forgetting ``max_{j <= i < T-1} R[i][j] - R[T-1][j]`` for tasks j < T - 1."""
    last = len(matrix) - 1
    return [float(max(matrix[i][j] for i in range(j, last)) - matrix[last][j]) for j in range(last)]


def run(
    cfg: ContinualConfig, data: SplitData, echo: Callable[[dict], None] = lambda r: None
) -> dict:
    """Method and (unless ``cfg.baseline`` is False) baseline; returns the result record."""
    cfg.validate()
    t0 = time.time()
    state, matrix, extras = train_method(cfg, data, echo)
    method_s = time.time() - t0
    result = {
        "scenario": cfg.scenario,
        "average_accuracy": float(np.mean(matrix[-1])),
        "forgetting": forgetting(matrix),
        "accuracy_matrix": matrix,
        "gate_accuracy": extras["gate_accuracy"][-1],
        "frozen_bit_identical": extras["frozen_bit_identical"],
        "experts_active": state.tasks_learned,
        "epochs_per_task": cfg.epochs_per_task,
        "seed": cfg.seed,
        "method_wall_s": round(method_s, 2),
    }
    if cfg.baseline:
        t1 = time.time()
        base = train_baseline(cfg, data, echo)
        result.update(
            baseline_average_accuracy=float(np.mean(base[-1])),
            baseline_forgetting=forgetting(base),
            baseline_accuracy_matrix=base,
            baseline_wall_s=round(time.time() - t1, 2),
        )
    result["wall_s"] = round(time.time() - t0, 2)
    return result
