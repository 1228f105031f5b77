"""The MNIST expert POC training loop: data -> model -> steps with the brain -> checkpoints.

Used by ``python -m aura.build mnist`` (and ``demo``). One call of :func:`train` runs or resumes
a run in ``workdir``: orbax checkpoints every epoch (and on SIGTERM/SIGINT, with the data
position, so the same command resumes mid-epoch), metrics JSONL + TensorBoard, a routing plot,
and each active expert saved on its own under ``<workdir>/hippocampus/expert_<i>``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import aura
from aura.brain.orchestrator import Brain, BrainConfig
from aura.data import batching
from aura.data.mnist import holdout_split, load_digits, to_float
from aura.models.mnist_poc import MnistPOC, default_config
from aura.nn.moe import RoutingControls
from aura.train import checkpoint as ckpt_lib
from aura.train.metrics import MetricsLogger, format_line, progress
from aura.train.plots import plot_routing
from aura.train.poc_step import (
    LossConfig,
    TrainState,
    build_eval_step,
    build_train_step,
    make_optimizer,
)
from aura.train.preemption import PreemptionGuard

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

    def brain_config(self) -> BrainConfig:
        return self.brain or BrainConfig(capacity=self.model.num_experts)


def load_data(cfg: RunConfig):
    """Validated (train_x, train_y, eval_x, eval_y) as float images [N, 28, 28, 1] and int32."""
    return load_digit_split(cfg.data, cfg.eval_fraction, cfg.eval_data)


def load_digit_split(data: str | None, eval_fraction: float, eval_data: str | None = None):
    """Digits from ``data`` (default: the embedded ones) with a fixed held-out split, or
    ``eval_data`` as the held-out set: (train_x, train_y, eval_x, eval_y), floats and int32."""
    images, labels = load_digits(data)
    if eval_data:
        eval_images, eval_labels = load_digits(eval_data)
    else:
        tr, ev = holdout_split(len(labels), eval_fraction, seed=0)
        images, labels, eval_images, eval_labels = images[tr], labels[tr], images[ev], labels[ev]
    return to_float(images), labels, to_float(eval_images), eval_labels


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


def train(cfg: RunConfig, log=print) -> dict:
    """Runs (or resumes) a POC run; returns the final summary dict."""
    t_start = time.time()
    train_x, train_y, eval_x, eval_y = load_data(cfg)
    n = len(train_y)
    steps_per_epoch = batching.steps_per_epoch(n, cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    brain = Brain(cfg.brain_config())
    model = MnistPOC(cfg.model)
    optimizer = make_optimizer(cfg.lr, total_steps, cfg.weight_decay)
    step_fn = build_train_step(model, optimizer, cfg.loss)
    eval_fn = build_eval_step(model)

    bst0 = brain.init()
    controls0, _ = brain.routing(bst0)

    def fresh():
        # One compiled init instead of hundreds of small eager kernels (seconds at start-up).
        init = jax.jit(model.init)
        params = init(jax.random.key(cfg.seed), jnp.asarray(train_x[:2]), controls0)["params"]
        anchor = jax.tree.map(jnp.copy, params["core"]["experts"])
        state = TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))
        return {"train": state, "brain": bst0, "anchor": anchor}

    checkpointer = ckpt_lib.TrainCheckpointer(f"{cfg.workdir}/ckpt", max_to_keep=2)
    meta = {"epoch": 0, "step_in_epoch": 0, "history": [], "wall_s": 0.0}
    template = jax.eval_shape(fresh)
    if cfg.resume and checkpointer.latest_step() is not None:
        tree, meta = checkpointer.restore(abstract_state=template)
        log(f"resumed from step {int(tree['train'].step)} (epoch {meta['epoch']})")
    else:
        tree = fresh()
    state, bst, anchor = tree["train"], tree["brain"], tree["anchor"]
    logger = MetricsLogger(cfg.workdir, tensorboard=cfg.tensorboard)
    images, labels = jnp.asarray(train_x), jnp.asarray(train_y)
    eval_images, eval_labels = jnp.asarray(eval_x), jnp.asarray(eval_y)
    key = jax.random.key(cfg.seed + 1)
    history = list(meta["history"])
    epoch, start = int(meta["epoch"]), int(meta["step_in_epoch"])
    wall_before = float(meta["wall_s"])
    interrupted = False

    def save(epoch_, step_in_epoch_, force=False):
        m = {
            "epoch": epoch_,
            "step_in_epoch": step_in_epoch_,
            "history": history,
            "wall_s": wall_before + time.time() - t_start,
            "config": cfg.model.to_dict(),
            "version": aura.__version__,
        }
        tree_ = {"train": state, "brain": bst, "anchor": anchor}
        checkpointer.save(int(state.step), tree_, m, force=force)

    with PreemptionGuard() as guard:
        while epoch < cfg.epochs and not interrupted:
            t_epoch = time.time()
            if start == 0:
                trees = [state.params, state.opt_state]
                bst, trees, events = brain.begin_epoch(
                    bst, epoch, trees, jax.random.fold_in(key, epoch)
                )
                state = state._replace(params=trees[0], opt_state=trees[1])
                anchor = jax.tree.map(jnp.copy, state.params["core"]["experts"])
                for ev in events:
                    log(ev)
            sums: dict[str, Any] = {}
            batches = batching.iterate_batches(n, cfg.batch_size, cfg.seed, epoch, start)
            bar = progress(batches, total=steps_per_epoch - start, desc=f"epoch {epoch}")
            for i, idx in enumerate(bar, start=start):
                controls, distill = brain.routing(bst)
                state, m = step_fn(
                    state, images, labels, jnp.asarray(idx), controls, distill, anchor, key
                )
                host = jax.device_get(m)
                for k, v in host.items():
                    sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
                trees = [state.params, state.opt_state]
                bst, trees, events = brain.after_step(
                    bst, host, trees, jax.random.fold_in(key, int(state.step))
                )
                if events:
                    state = state._replace(params=trees[0], opt_state=trees[1])
                    for ev in events:
                        log(ev)
                if guard.requested:
                    save(epoch, i + 1, force=True)
                    checkpointer.wait()
                    step_now = int(state.step)
                    log(f"interrupted: saved step {step_now}; rerun the same command to resume")
                    interrupted = True
                    break
            if interrupted:
                break
            done = steps_per_epoch - start
            controls, _ = brain.routing(bst)
            ev = evaluate(eval_fn, state.params, eval_images, eval_labels, _eval_controls(controls))
            record = {
                "epoch": epoch,
                "step": int(state.step),
                "loss": float(sums["loss"] / done),
                "train_accuracy": float(sums["accuracy"] / done),
                "test_accuracy": ev["accuracy"],
                "gate_entropy": float(sums["gate_entropy"] / done),
                "utilisation": (sums["load"] / done).tolist(),
                "routed_accuracy": ev["routed_accuracy"],
                "thalamic": float(sums["thalamic"] / done),
                "dropped": float(sums["dropped"] / done),
                "active": int(bst.active),
                "pruned": np.asarray(bst.pruned).astype(int).tolist(),
                "epoch_s": time.time() - t_epoch,
            }
            history.append(record)
            logger.log(int(state.step), record, prefix="epoch")
            log(format_line(record))
            plot_routing(history, f"{cfg.workdir}/routing.png")
            epoch, start = epoch + 1, 0
            save(epoch, 0)
            if cfg.save_experts:
                save_experts(cfg.workdir, state.params, bst, int(state.step), record)
    checkpointer.wait()
    checkpointer.close()
    logger.close()
    last = history[-1] if history else {}
    return {
        "test_accuracy": last.get("test_accuracy"),
        "utilisation": last.get("utilisation"),
        "routed_accuracy": last.get("routed_accuracy"),
        "experts_active": int(bst.active),
        "experts_pruned": int(np.sum(np.asarray(bst.pruned))),
        "epochs": epoch,
        "steps": int(state.step),
        "wall_s": round(wall_before + time.time() - t_start, 2),
        "interrupted": interrupted,
        "workdir": cfg.workdir,
    }


def save_experts(workdir: str, params, bst, step: int, record: dict) -> None:
    """Saves each active expert's parameter rows to ``<workdir>/hippocampus/expert_<i>``."""
    experts = params["core"]["experts"]
    for i in range(int(bst.active)):
        manifest = {
            "zone": ZONE,
            "expert": i,
            "step": step,
            "metrics": {
                "utilisation": record["utilisation"][i],
                "routed_accuracy": record["routed_accuracy"][i],
                "test_accuracy": record["test_accuracy"],
            },
            "pruned": bool(np.asarray(bst.pruned)[i]),
            "frozen": bool(np.asarray(bst.frozen)[i]),
        }
        rows = ckpt_lib.expert_rows(experts, i)
        ckpt_lib.save_expert(ckpt_lib.expert_ckpt_path(workdir, ZONE, i), rows, manifest)
