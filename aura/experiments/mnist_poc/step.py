"""Pure, jitted train and eval steps of the MNIST expert POC.

Shapes: N dataset size, B batch, E expert capacity, D feature width.

One step: augment (random affine warps), forward with the routing controls of the brain, loss =
cross-entropy + load-balance + router z-loss + predictive-head loss (+ EMC soft freeze,
+ distillation of a newly activated expert), AdamW update with *routed learning*: only experts
that received tokens this batch (or the expert being taught) change, and frozen experts never do
— their rows of the update are zeroed (``aura.train.optim.expert_row_mask``), so AdamW's weight
decay and momentum cannot move them either.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from aura.brain.orchestrator import DistillArgs
from aura.data.augment import AffineRange, random_affine
from aura.models.mnist_poc import MnistPOC
from aura.nn.moe import RoutingControls
from aura.nn.moe.reference import dense_combine_weights
from aura.train.optim import TrainState


@dataclasses.dataclass(frozen=True)
class LossConfig:
    load_balance: float = 1e-2
    z_loss: float = 1e-3
    predictive: float = 0.1
    emc_lambda: float = 1e-4
    distill_weight: float = 0.1
    distill_mode: str = "pair"  # "pair" (teacher expert) | "committee" (weighted top-k)
    label_smoothing: float = 0.0
    augment: AffineRange = AffineRange()  # random affine warps (AffineRange(0, 0, 0, 0): off)

    def __post_init__(self):
        if self.distill_mode not in ("pair", "committee"):
            raise ValueError(f"distill_mode = {self.distill_mode!r}; valid: pair, committee")


def with_experts(params, experts):
    """``params`` with ``params['core']['experts']`` replaced (shallow copies only)."""
    core = dict(params["core"])
    core["experts"] = experts
    out = dict(params)
    out["core"] = core
    return out


def routed_stats(indices, correct, num_experts: int):
    """Top-1 expert of each sample -> (routed_count [E], routed_correct [E])."""
    onehot = jax.nn.one_hot(indices[:, 0], num_experts, dtype=jnp.float32)  # [B, E]
    return onehot.sum(0), (onehot * correct[:, None]).sum(0)


def build_loss(model: MnistPOC, loss_cfg: LossConfig):
    """``loss_fn(params, x, y, controls, distill, anchor) -> (loss, metrics)``: cross-entropy +
    load balance + z-loss + predictive head (+ EMC soft freeze, + distillation when on)."""
    E = model.config.num_experts

    def loss_fn(params, x, y, controls: RoutingControls, distill: DistillArgs, anchor):
        out = model.apply({"params": params}, x, controls)
        logits = out.logits.astype(jnp.float32)
        labels = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), loss_cfg.label_smoothing)
        ce = optax.softmax_cross_entropy(logits, labels).mean()
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)  # [B]
        g = out.gate
        dense_w = dense_combine_weights(g.indices, g.weights, g.valid, E)  # [B, E]
        target = jax.lax.stop_gradient(dense_w * correct[:, None])
        predictive = jnp.mean(jnp.square(out.utility - target))
        aux = out.aux
        loss = (
            ce + loss_cfg.load_balance * aux.load_balance_loss + loss_cfg.z_loss * aux.router_z_loss
        )
        loss = loss + loss_cfg.predictive * predictive
        feats = jax.lax.stop_gradient(out.expert_features)  # [B, D]: side losses train experts only
        emc = jnp.zeros((), jnp.float32)
        if loss_cfg.emc_lambda > 0:
            outs = model.apply({"params": params}, feats, controls, method=MnistPOC.expert_outputs)
            old = model.apply(
                {"params": with_experts(params, anchor)},
                feats,
                controls,
                method=MnistPOC.expert_outputs,
            )
            drift = jnp.mean(jnp.square(outs - jax.lax.stop_gradient(old)), axis=-1)  # [E, B]
            not_selected = (dense_w == 0) & controls.routable()[None]  # [B, E]
            emc = jnp.sum(jnp.where(not_selected.T, drift, 0.0)) / x.shape[0]
            loss = loss + loss_cfg.emc_lambda * emc
        if loss_cfg.distill_mode == "pair":
            dist = model.apply(
                {"params": params},
                feats,
                distill.teacher,
                distill.student,
                controls,
                method=MnistPOC.distill,
            )
        else:
            dist = model.apply(
                {"params": params},
                feats,
                distill.student,
                controls,
                jax.lax.stop_gradient(out.gate_features),
                method=MnistPOC.committee_distill,
            )
        loss = loss + jnp.where(distill.on, loss_cfg.distill_weight * distill.alpha * dist, 0.0)
        count, right = routed_stats(g.indices, correct, E)
        metrics = dict(
            loss=loss,
            ce=ce,
            accuracy=correct.mean(),
            load=aux.load,
            gate_entropy=aux.gate_entropy,
            load_balance=aux.load_balance_loss,
            z_loss=aux.router_z_loss,
            dropped=aux.dropped_fraction,
            thalamic=jnp.mean(jnp.abs(out.thalamic)),
            predictive=predictive,
            emc=emc,
            distill=dist,
            routed_count=count,
            routed_correct=right,
        )
        return loss, metrics

    return loss_fn


def build_train_step(model: MnistPOC, optimizer, loss_cfg: LossConfig, seed: int = 0):
    """Returns ``step(state, (images, labels), (controls, distill)) -> (state, metrics)``, pure.

    ``state`` is ``{"train": TrainState, "brain": BrainState, "anchor": expert params}``; the
    anchor is the expert sub-tree the EMC penalty measures drift against. The augmentation key
    is ``fold_in(key(seed + 1), step)``: a pure function of the step (exact resume).
    ``optimizer`` must end with ``aura.train.optim.expert_row_mask`` (``make_optimizer`` does).
    """
    E = model.config.num_experts
    loss_fn = build_loss(model, loss_cfg)

    def step(state, data, extras):
        (images, labels), (controls, distill) = data, extras
        train, anchor = state["train"], state["anchor"]
        key = jax.random.fold_in(jax.random.key(seed + 1), train.step)
        x = random_affine(images, key, loss_cfg.augment)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(
            train.params, x, labels, controls, distill, anchor
        )
        student = jnp.arange(E) == distill.student
        keep = ((metrics["load"] > 0) | (distill.on & student)) & ~controls.freeze_mask
        updates, opt_state = optimizer.update(
            grads, train.opt_state, train.params, expert_keep=keep
        )
        params = optax.apply_updates(train.params, updates)
        new = {**state, "train": TrainState(params, opt_state, train.step + 1)}
        return new, metrics

    return step


def build_eval_step(model: MnistPOC):
    """Returns ``evaluate(params, images [B, ...], labels [B], controls) -> sums`` (jitted)."""
    E = model.config.num_experts

    def evaluate(params, images, labels, controls):
        out = model.apply({"params": params}, images, controls)
        correct = (jnp.argmax(out.logits, -1) == labels).astype(jnp.float32)
        count, right = routed_stats(out.gate.indices, correct, E)
        return dict(
            correct=correct.sum(),
            count=jnp.asarray(labels.shape[0], jnp.float32),
            routed_count=count,
            routed_correct=right,
            load=out.aux.load * labels.shape[0],
            gate_entropy=out.aux.gate_entropy * labels.shape[0],
        )

    return jax.jit(evaluate)
