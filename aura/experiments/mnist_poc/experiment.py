"""The MNIST expert POC on the shared loop: data -> model -> steps with the brain -> records.

Used by ``python -m aura.build mnist`` (and ``demo``, and the hippocampus zone). One call of
:func:`train` runs or resumes a run in ``workdir`` (``aura.train.loop``: orbax checkpoints every
epoch and on SIGTERM/SIGINT, metrics JSONL + TensorBoard); per epoch the brain's controllers
grow/clone experts (:meth:`PocExperiment.before_step`), after every step they react to the
routing statistics (pruning, neurogenesis, bandits), and the evaluation writes a routing plot and
saves each active expert on its own under ``<workdir>/hippocampus/expert_<i>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aura.brain.orchestrator import Brain, BrainConfig
from aura.data.batching import StepBatcher
from aura.data.mnist import load_digit_split
from aura.experiments.mnist_poc.plots import plot_routing
from aura.experiments.mnist_poc.step import LossConfig, build_eval_step, build_train_step
from aura.experiments.zones.layout import save_zone_experts
from aura.models.mnist_poc import MnistPOC, default_config
from aura.nn.moe import RoutingControls
from aura.train import loop
from aura.train.optim import TrainState, make_optimizer

ZONE = "hippocampus"  # the POC's experts are the hippocampus zone's memory experts


@dataclasses.dataclass
class RunConfig:
    """Everything a POC run needs; the command builds it from flags."""

    workdir: str
    data: str | None = None
    eval_data: str | None = None
    eval_fraction: float = 0.125
    epochs: int = 15
    batch_size: int = 128
    seed: int = 0
    lr: float = 3e-3
    weight_decay: float = 1e-4
    resume: bool = True
    model: ml_collections.ConfigDict = dataclasses.field(default_factory=default_config)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    brain: BrainConfig | None = None
    tensorboard: bool = True
    save_experts: bool = True
    mesh: dict | None = None

    def brain_config(self) -> BrainConfig:
        return self.brain or BrainConfig(capacity=self.model.num_experts)

    def validate(self) -> RunConfig:
        """Returns self; raises ValueError naming a bad value."""
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 < self.eval_fraction < 1:
            raise ValueError(
                f"lr={self.lr} must be > 0, weight_decay={self.weight_decay} >= 0 and "
                f"eval_fraction={self.eval_fraction} in (0, 1)"
            )
        if not 1 <= self.model.top_k <= self.model.num_experts:
            raise ValueError(
                f"top_k={self.model.top_k} must be in [1, num_experts={self.model.num_experts}]"
            )
        return self


def evaluate(eval_step, params, images, labels, controls, batch: int = 1000) -> dict:
    """Accuracy, per-expert routed accuracy and utilisation over a whole dataset."""
    sums: dict[str, Any] = {}
    for i in range(0, len(labels), batch):
        out = eval_step(params, images[i : i + batch], labels[i : i + batch], controls)
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + np.asarray(v)
    n = sums["count"]
    return dict(
        accuracy=float(sums["correct"] / n),
        # None for an expert that was nobody's top-1 choice (no accuracy to speak of).
        routed_accuracy=[
            float(c / k) if k > 0 else None
            for c, k in zip(sums["routed_correct"], sums["routed_count"], strict=True)
        ],
        utilisation=(sums["load"] / n).tolist(),
        gate_entropy=float(sums["gate_entropy"] / n),
    )


def _eval_controls(controls: RoutingControls) -> RoutingControls:
    """Evaluation routes without the bandit's exploration bonus (bias only from the model)."""
    return controls.replace(bias=jnp.zeros_like(controls.bias))


def run_config(c: ml_collections.ConfigDict, **paths: Any) -> RunConfig:
    """A validated :class:`RunConfig` from a ``configs/mnist.py`` preset plus paths/run flags
    (workdir, data, eval_data, resume, tensorboard, mesh).

    Raises:
      ValueError: a bad value (naming the field).
    """
    model = ml_collections.ConfigDict(c.model.to_dict())
    model.capacity_factor = model.num_experts / model.top_k  # dropless: C = batch
    brain = BrainConfig(capacity=model.num_experts, **c.brain.to_dict())
    run = RunConfig(
        epochs=c.epochs, batch_size=c.batch_size, seed=c.seed, lr=c.lr,
        weight_decay=c.weight_decay, eval_fraction=c.eval_fraction, model=model,
        loss=LossConfig(**c.loss.to_dict()), brain=brain, **paths,
    )  # fmt: skip
    return run.validate()


class PocExperiment(loop.Experiment):
    """The POC on the shared loop. State: ``{"train", "brain", "anchor"}``."""

    host_metrics = True  # the brain's controllers read every step's routing statistics

    def __init__(self, cfg: RunConfig, log=print):
        self.cfg, self.log = cfg.validate(), log
        self.train_x, self.train_y, eval_x, eval_y = load_digit_split(
            cfg.data, cfg.eval_fraction, cfg.eval_data
        )
        self.eval_x, self.eval_y = jnp.asarray(eval_x), jnp.asarray(eval_y)
        self.batches = StepBatcher(len(self.train_y), cfg.batch_size, cfg.seed)
        self.total_steps = self.batches.steps_per_epoch * cfg.epochs
        self.brain = Brain(cfg.brain_config())
        self.model = MnistPOC(cfg.model)
        self.optimizer = make_optimizer(cfg.lr, self.total_steps, cfg.weight_decay)
        self.train_step = build_train_step(self.model, self.optimizer, cfg.loss, cfg.seed)
        self.eval_fn = build_eval_step(self.model)
        self.key = jax.random.key(cfg.seed + 1)
        self.bst0 = self.brain.init()  # host-side: the controllers read concrete values
        self.routing = self.brain.routing(self.bst0)

    def init_state(self):
        bst, (controls, _) = self.bst0, self.routing
        x = jnp.zeros((2, 28, 28, 1), jnp.float32)
        params = self.model.init(jax.random.key(self.cfg.seed), x, controls)["params"]
        anchor = jax.tree.map(jnp.copy, params["core"]["experts"])
        state = TrainState(params, self.optimizer.init(params), jnp.asarray(0, jnp.int32))
        return {"train": state, "brain": bst, "anchor": anchor}

    def before_step(self, state, step: int):
        bst, train = state["brain"], state["train"]
        if step % self.batches.steps_per_epoch == 0:  # epoch start: growth, cloning
            epoch = self.batches.epoch_of(step)
            trees = [train.params, train.opt_state]
            key = jax.random.fold_in(self.key, epoch)
            bst, trees, events = self.brain.begin_epoch(bst, epoch, trees, key)
            train = train._replace(params=trees[0], opt_state=trees[1])
            anchor = jax.tree.map(jnp.copy, train.params["core"]["experts"])
            state = {"train": train, "brain": bst, "anchor": anchor}
            for ev in events:
                self.log(ev)
        self.routing = self.brain.routing(bst)  # this step's controls (read by ``batch``)
        return state

    def batch(self, step: int):
        idx = self.batches.indices(step)
        return (self.train_x[idx], self.train_y[idx]), self.routing

    def after_step(self, state, step: int, metrics):
        train = state["train"]
        trees = [train.params, train.opt_state]
        key = jax.random.fold_in(self.key, int(train.step))
        bst, trees, events = self.brain.after_step(state["brain"], metrics, trees, key)
        if events:
            train = train._replace(params=trees[0], opt_state=trees[1])
            for ev in events:
                self.log(ev)
        return {**state, "train": train, "brain": bst}

    def evaluate(self, state, step: int, train: dict) -> dict:
        bst, params = state["brain"], state["train"].params
        controls, _ = self.brain.routing(bst)
        ev = evaluate(self.eval_fn, params, self.eval_x, self.eval_y, _eval_controls(controls))
        record = {
            "epoch": self.batches.epoch_of(step - 1),
            "loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "test_accuracy": ev["accuracy"],
            "gate_entropy": train["gate_entropy"],
            "utilisation": train["load"],
            "routed_accuracy": ev["routed_accuracy"],
            "thalamic": train["thalamic"],
            "dropped": train["dropped"],
            "active": int(bst.active),
            "pruned": np.asarray(bst.pruned).astype(int).tolist(),
        }
        plot_routing([*self.history, record], f"{self.cfg.workdir}/routing.png")
        if self.cfg.save_experts:
            self.save_experts(params, bst, step, record)
        return record

    def save_experts(self, params, bst, step: int, record: dict) -> None:
        """Each active expert's rows under ``<workdir>/hippocampus/expert_<i>``."""
        n = int(bst.active)
        metrics = [
            {"utilisation": record["utilisation"][i],
             "routed_accuracy": record["routed_accuracy"][i],
             "test_accuracy": record["test_accuracy"]}
            for i in range(n)
        ]  # fmt: skip
        flags = [
            {"pruned": bool(np.asarray(bst.pruned)[i]), "frozen": bool(np.asarray(bst.frozen)[i])}
            for i in range(n)
        ]
        experts = params["core"]["experts"]
        save_zone_experts(self.cfg.workdir, ZONE, experts, n, step=step, metrics=metrics,
                          per_expert=flags)  # fmt: skip

    def meta(self) -> dict:
        c = self.cfg
        return {"model": c.model.to_dict(), "epochs": c.epochs, "batch_size": c.batch_size,
                "seed": c.seed, "lr": c.lr, "data": c.data}  # fmt: skip

    def summary(self, state, history: list[dict]) -> dict:
        last, bst = (history[-1] if history else {}), state["brain"]
        return {
            "test_accuracy": last.get("test_accuracy"),
            "utilisation": last.get("utilisation"),
            "routed_accuracy": last.get("routed_accuracy"),
            "experts_active": int(bst.active),
            "experts_pruned": int(np.sum(np.asarray(bst.pruned))),
            "epochs": len(history),
        }


def train(cfg: RunConfig, log=print) -> dict:
    """Runs (or resumes) a POC run; returns the final summary dict."""
    exp = PocExperiment(cfg, log)
    loop_cfg = loop.LoopConfig(
        workdir=cfg.workdir,
        total_steps=exp.total_steps,
        eval_every=exp.batches.steps_per_epoch,
        resume=cfg.resume,
        mesh=cfg.mesh,
        tensorboard=cfg.tensorboard,
        desc="mnist",
    )
    result = loop.run(exp, loop_cfg, log=log)
    result.pop("history")
    result["steps_per_sec"] = result.pop("train").get("steps_per_sec")
    return result
