"""Split-MNIST continual learning on the shared loop: the method and the fine-tuning baseline.

Shapes: B batch, D = 784 pixels, E experts (= T tasks).

Each run (method or baseline) is one :class:`ContinualExperiment` in its own directory
(``<workdir>/method``, ``<workdir>/baseline``): its steps walk the tasks in sequence
(``epochs_per_task`` epochs each, fixed-size batches whose order is a pure function of
``(seed, task, epoch)``), so SIGTERM saves mid-task and the same command resumes exactly. At a
task's first step the method clones the previous expert into the new one and resets the
optimizer; at its last step it checks that every earlier expert is bit-identical (against copies
kept in the state) and fits the task's novelty gate; then the loop evaluates every task learned
so far — one row of the accuracy matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aura.brain.cloning import clone_expert
from aura.brain.novelty import GateBank, fit_expert_gate
from aura.data.split_mnist import SplitData
from aura.experiments.continual.method import (
    ContinualConfig,
    ContinualFns,
    baseline_phase,
    evaluate_baseline,
    evaluate_method,
    forgetting,
    local_labels,
    method_phase,
    targets,
)
from aura.train import loop
from aura.train.metrics import format_line
from aura.train.rundir import RunLock

__all__ = ["ContinualExperiment", "run"]


class ContinualExperiment(loop.Experiment):
    """One run over the tasks: the method (``baseline=False``) or the fine-tuning baseline."""

    def __init__(self, cfg: ContinualConfig, data: SplitData, *, baseline: bool = False):
        self.cfg, self.data, self.baseline = cfg.validate(), data, baseline
        self.fns = ContinualFns(cfg)
        self.train_step = self.fns.train_step
        self.num = len(cfg.pairs)
        if len(data.train_y) < self.num:
            raise ValueError(f"{len(cfg.pairs)} tasks configured, the data has {len(data.train_y)}")
        bs = cfg.batch_size
        train_y = data.train_y[: self.num]
        self.steps_per_epoch = [-(-len(y) // bs) for y in train_y]  # the last batch wraps
        per_task = [cfg.epochs_per_task * s for s in self.steps_per_epoch]
        self.task_end = np.cumsum(per_task)  # global step after which task t is learned
        self.total_steps = int(self.task_end[-1])
        self.y = [targets(y, p, cfg.scenario) for y, p in zip(train_y, cfg.pairs, strict=True)]
        self.phases = (
            [baseline_phase(cfg)] * self.num
            if baseline
            else [method_phase(cfg, t) for t in range(self.num)]
        )

    # -- where a global step falls ----------------------------------------------------------
    def locate(self, step: int) -> tuple[int, int, int]:
        """(task, epoch within the task, batch within the epoch) of global ``step``."""
        t = int(np.searchsorted(self.task_end, step, side="right"))
        first = int(self.task_end[t - 1]) if t else 0
        epoch, pos = divmod(step - first, self.steps_per_epoch[t])
        return t, epoch, pos

    def init_state(self) -> dict[str, Any]:
        params = self.fns.init(jax.random.key(self.cfg.seed))
        if not self.baseline:  # the method's learned gate is zero: routing comes from the bias
            params = {**params, "router": jax.tree.map(jnp.zeros_like, params["router"])}
        gates = GateBank.create([len(p) for p in self.cfg.pairs], 784, self.cfg.ppca_dim)
        return {"params": params, "opt_state": self.fns.tx.init(params), "gates": gates,
                "frozen_ref": params["experts"], "step": jnp.asarray(0, jnp.int32)}  # fmt: skip

    def before_step(self, state, step: int):
        t, epoch, pos = self.locate(step)
        if self.baseline or t == 0 or epoch or pos:
            return state
        params = clone_expert(state["params"], t - 1, t)  # a new task: grow by one clone
        return {**state, "params": params, "opt_state": self.fns.tx.init(params)}

    def batch(self, step: int):
        t, epoch, pos = self.locate(step)
        n, bs = len(self.y[t]), self.cfg.batch_size
        rng = np.random.default_rng([self.cfg.seed, t, epoch])
        order = np.resize(rng.permutation(n), self.steps_per_epoch[t] * bs)  # wraps: full batches
        idx = order[pos * bs : (pos + 1) * bs]
        return (self.data.train_x[t][idx], self.y[t][idx]), self.phases[t]

    def is_eval_step(self, done: int) -> bool:
        return bool(np.any(self.task_end == done))

    def after_step(self, state, step: int, metrics):
        t = self.locate(step)[0]
        if self.baseline or step + 1 != self.task_end[t]:
            return state
        experts = state["params"]["experts"]
        for j in range(t):  # every earlier expert must be exactly as its own task left it
            for name, leaf in experts.items():
                if (
                    np.asarray(leaf[j]).tobytes()
                    != np.asarray(state["frozen_ref"][name][j]).tobytes()
                ):
                    raise RuntimeError(
                        f"frozen expert {j} changed (leaf {name!r}); freezing is broken"
                    )
        ref = jax.tree.map(lambda r, p: r.at[t].set(p[t]), state["frozen_ref"], experts)
        x, labels = self.data.train_x[t], self.data.train_y[t]
        local = local_labels(labels, self.cfg.pairs[t])
        gates = fit_expert_gate(
            state["gates"], t, x, local, self.cfg.ppca_dim, self.cfg.noise_floor
        )
        return {**state, "gates": gates, "frozen_ref": ref}

    def evaluate(self, state, step: int, train: dict) -> dict:
        t = self.locate(step - 1)[0]
        if self.baseline:
            acc, gate = evaluate_baseline(state["params"], t + 1, self.data, self.fns), None
        else:
            ev = evaluate_method(state["params"], state["gates"], t + 1, self.data, self.fns)
            acc, gate = ev["accuracy"], float(np.mean(ev["gate_accuracy"]))
        row = acc + [None] * (self.num - t - 1)
        pair = "/".join(map(str, self.cfg.pairs[t]))
        record = {"run": "baseline" if self.baseline else "method", "task": t, "classes": pair,
                  "acc": row, "avg": float(np.mean(acc)), "loss": train.get("ce")}  # fmt: skip
        if gate is not None:
            record["gate"] = gate
        return record

    def format_record(self, record: dict) -> str:
        """``method   task 2 (4/5) | R 0.996 0.968 0.994   -     -   | avg_acc 98.6% | ...``."""
        row = " ".join("  -  " if a is None else f"{a:.3f}" for a in record["acc"])
        head = f"{record['run']:<8} task {record['task']} ({record['classes']}) | R {row}"
        names = {"avg": "avg_acc", "gate": "gate_acc"}
        skip = ("run", "task", "classes", "acc")
        rest = {names.get(k, k): v for k, v in record.items() if k not in skip}
        return f"{head} | {format_line(rest)}"

    def meta(self) -> dict:
        return {"config": dataclasses.asdict(self.cfg), "baseline": self.baseline}


def run(
    cfg: ContinualConfig,
    data: SplitData,
    workdir: str,
    *,
    tensorboard: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """The method and (unless ``cfg.baseline`` is False) the baseline, each resumable.

    Returns:
      The result record (accuracy matrices, average accuracy, forgetting, gate accuracy, wall
      seconds), with ``interrupted: true`` if SIGTERM/SIGINT stopped a run (rerun to resume).
    """
    cfg.validate()
    with RunLock(workdir):  # method and baseline: one writer for the whole run
        return _run(cfg, data, workdir, tensorboard, log)


def _run(cfg, data, workdir, tensorboard, log) -> dict:
    runs = [("method", False)] + ([("baseline", True)] if cfg.baseline else [])
    result: dict[str, Any] = {"scenario": cfg.scenario, "epochs_per_task": cfg.epochs_per_task,
                              "seed": cfg.seed, "interrupted": False}  # fmt: skip
    for name, is_baseline in runs:
        exp = ContinualExperiment(cfg, data, baseline=is_baseline)
        loop_cfg = loop.LoopConfig(
            workdir=f"{workdir}/{name}", total_steps=exp.total_steps, tensorboard=tensorboard,
            desc=name,
        )  # fmt: skip
        out = loop.run(exp, loop_cfg, log=log)
        matrix = [r["acc"] for r in out["history"]]
        if out["interrupted"]:
            log(f"interrupted: {name} saved at step {out['steps']}; rerun the same command")
            return {**result, "interrupted": True}
        prefix = "" if name == "method" else "baseline_"
        result.update({
            f"{prefix}average_accuracy": float(np.mean(matrix[-1])),
            f"{prefix}forgetting": forgetting(matrix),
            f"{prefix}accuracy_matrix": matrix,
            f"{prefix}wall_s": out["wall_s"],
        })  # fmt: skip
        if name == "method":
            result["gate_accuracy"] = out["history"][-1]["gate"]
            result["frozen_bit_identical"] = True  # after_step raises otherwise
            result["experts_active"] = len(matrix)
            result["method_wall_s"] = result.pop("wall_s")
    return result
