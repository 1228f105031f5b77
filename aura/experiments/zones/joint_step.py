"""Pure, jitted train and eval steps of the joint multi-zone model (:class:`ZoneBrain`).

Shapes: B batch, Z zones, E the widest zone's expert capacity, C classes.

The step's state carries the neural-signal bus next to the parameters: the forward pass reads
the previous step's bus (phasor context, lateral inhibition, the thalamus' balance bias) and the
step publishes every zone's new signals and statistics to it, all inside one ``jax.jit``.

Loss = cross-entropy of the combined output + ``local`` · Σ_z cross-entropy of zone z's own head
+ ``zone_balance`` · Switch load balance over zones + Σ_z (MoE load balance + router z-loss).
With ``broadcast`` on (the thalamic gradient broadcaster), every zone-local term reaches zone z
only through :func:`~aura.nn.thalamus.gradient_gate`, i.e. scaled per sample by the
thalamic routing weight, the zone's MoE terms are scaled by its share of the batch, and a zone
that received no sample gets an exactly zero update (AdamW's momentum and weight decay cannot
move it either). With it off every zone learns from every sample — the ablation. Frozen experts
(each zone's growth schedule and freeze policy) get zero update rows in every case.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from aura.models.zone_brain import ZoneBrain
from aura.nn import bus as bus_lib
from aura.nn import thalamus as tr


class JointState(NamedTuple):
    params: Any
    opt_state: Any
    bus: bus_lib.NeuralBus
    step: jax.Array  # int32 []


@dataclasses.dataclass(frozen=True)
class JointLossConfig:
    local: float = 1.0  # weight of the zone-local heads' losses
    zone_balance: float = 1e-2  # Switch load balance over zones
    load_balance: float = 1e-2  # each zone's MoE load balance
    z_loss: float = 1e-3  # each zone's router z-loss
    broadcast: bool = True  # the thalamic gradient broadcaster (False: the ablation)
    # EMA decay of the zones' merit statistics on the bus (routed accuracy, loss, gate entropy):
    # the hypothalamus' merit momentum when there is one. The routing share feeds the thalamus'
    # balance bias, a feedback loop, so it keeps a fast decay: a slow one lets a starved zone
    # look busy for long enough to be pushed further away.
    bus_decay: float = 0.9
    balance_decay: float = 0.9


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _routing_stats(out, labels, num_experts: int | None = None):
    """Per-zone routing statistics of one batch ([Z], [C, Z] or, given num_experts, [Z, E])."""
    Z = out.weights.shape[-1]
    top = jnp.argmax(out.weights, axis=-1)  # [B] each sample's first zone
    routed = jax.nn.one_hot(top, Z, dtype=jnp.float32).T  # [Z, B]
    combined_ok = (jnp.argmax(out.logits, -1) == labels).astype(jnp.float32)  # [B]
    local_ok = (jnp.argmax(out.zone_logits, -1) == labels[None]).astype(jnp.float32)  # [Z, B]
    onehot_y = jax.nn.one_hot(labels, out.logits.shape[-1], dtype=jnp.float32)  # [B, C]
    s = {
        "routed_count": routed.sum(1),
        "routed_correct": (routed * combined_ok).sum(1),
        "local_in_correct": (routed * local_ok).sum(1),
        "local_out_correct": ((1.0 - routed) * local_ok).sum(1),
        "class_zone": onehot_y.T @ routed.T,  # [C, Z] how each class was routed
        "gate_entropy": jnp.stack([col.aux.gate_entropy for col in out.columns]),
        "routed": routed,  # [Z, B] one-hot of each sample's zone (per batch, not summed)
    }
    if num_experts:  # per expert: the samples a zone got, by their first expert in that zone
        first = jnp.stack([jax.nn.one_hot(c.top_expert, num_experts) for c in out.columns])
        first = first * routed[:, :, None]  # [Z, B, E]
        s["expert_count"] = first.sum(1)
        s["expert_correct"] = jnp.einsum("zbe,b->ze", first, combined_ok)
    return s


def publish_step(bus, out, labels, s: dict, loss_cfg: JointLossConfig) -> bus_lib.NeuralBus:
    """Every zone publishes its phasor/attention summaries, statistics and expert load.

    ``s`` is :func:`_routing_stats` of this batch (computed once by the step).
    """
    shares = jnp.mean(out.weights > 0, axis=0).astype(jnp.float32)  # [Z]
    local = _ce(out.zone_logits, labels[None])  # [Z, B]
    decay = {k: loss_cfg.bus_decay for k in bus_lib.STATS}
    decay["routing_weight"] = loss_cfg.balance_decay
    for i, col in enumerate(out.columns):
        n = s["routed_count"][i]
        nan = jnp.float32(jnp.nan)  # a zone with no sample leaves its accuracy/loss EMA alone
        stats = {
            "gate_entropy": col.aux.gate_entropy,
            "routed_accuracy": jnp.where(n > 0, s["routed_correct"][i] / jnp.maximum(n, 1), nan),
            "loss": jnp.where(n > 0, (s["routed"][i] * local[i]).sum() / jnp.maximum(n, 1), nan),
            "routing_weight": shares[i],
        }
        bus = bus_lib.publish(
            bus, i, phasor=col.phasor, attention=col.attention, stats=stats,
            load=col.aux.load, decay=decay,
        )  # fmt: skip
    return bus


def build_train_step(model: ZoneBrain, optimizer, loss_cfg: JointLossConfig):
    """``step(state, (images, labels), controls) -> (state, metrics)``: pure (the loop jits it).

    ``optimizer`` must end with ``aura.train.optim.expert_row_mask`` (``make_optimizer`` does).
    """
    zones = tuple(model.config.zones)

    def loss_fn(params, images, labels, controls, bus):
        out = model.apply({"params": params}, images, controls, bus)
        weights = jax.lax.stop_gradient(out.weights)  # [B, Z]
        routed = jnp.mean(weights > 0, axis=0).astype(jnp.float32)  # [Z] f_z
        total = jnp.mean(_ce(out.logits, labels))
        zone_lb = len(zones) * jnp.sum(routed * jnp.mean(out.probs, 0))
        total = total + loss_cfg.zone_balance * zone_lb
        for i, col in enumerate(out.columns):
            zl = out.zone_logits[i]  # [B, C]
            if loss_cfg.broadcast:
                zl = tr.gradient_gate(zl, weights[:, i])
            moe = loss_cfg.load_balance * col.aux.load_balance_loss
            moe = moe + loss_cfg.z_loss * col.aux.router_z_loss
            share = jnp.mean(weights[:, i]) if loss_cfg.broadcast else 1.0
            total = total + loss_cfg.local * jnp.mean(_ce(zl, labels)) + share * moe
        return total, (out, zone_lb)  # total: the objective (zone-local terms unweighted)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: JointState, data, controls):
        images, labels = data
        (loss, (out, zone_lb)), grads = grad_fn(state.params, images, labels, controls, state.bus)
        # Frozen experts (growth, freeze policy) never move: not even by AdamW's weight decay.
        keep = {z: ~c.freeze_mask for z, c in zip(zones, controls, strict=True)}
        shared = None
        if loss_cfg.broadcast:
            # Zones that got no sample: exactly zero update (not even momentum or decay).
            routed = jnp.sum(out.weights > 0, axis=0) > 0  # [Z]
            keep = {z: keep[z] & routed[i] for i, z in enumerate(zones)}
            shared = {z: routed[i] for i, z in enumerate(zones)}
        updates, opt_state = optimizer.update(
            grads, state.opt_state, state.params, expert_keep=keep, shared_keep=shared
        )
        params = optax.apply_updates(state.params, updates)
        out = jax.lax.stop_gradient(out)
        s = _routing_stats(out, labels)
        bus = publish_step(state.bus, out, labels, s, loss_cfg)
        metrics = {
            "loss": loss,
            "ce": jnp.mean(_ce(out.logits, labels)),  # the combined output's cross-entropy
            "accuracy": jnp.mean(jnp.argmax(out.logits, -1) == labels),
            "zone_balance": zone_lb,
            "zone_share": jnp.mean(out.weights > 0, axis=0),
            "zone_entropy": jnp.mean(-jnp.sum(out.probs * jnp.log(out.probs + 1e-9), -1)),
            "gate_entropy": s["gate_entropy"],
        }
        return JointState(params, opt_state, bus, state.step + 1), metrics

    return step


def build_eval_step(model: ZoneBrain):
    """``evaluate(params, bus, images, labels, controls) -> sums``, jitted (reads the bus only)."""

    @jax.jit
    def evaluate(params, bus, images, labels, controls):
        out = model.apply({"params": params}, images, controls, bus)
        s = _routing_stats(out, labels, bus.utilisation.shape[1])
        del s["routed"]  # per sample: the eval loop sums over batches
        s["count"] = jnp.float32(labels.shape[0])
        s["correct"] = jnp.sum(jnp.argmax(out.logits, -1) == labels).astype(jnp.float32)
        width = bus.utilisation.shape[1]
        load = jnp.stack(
            [jnp.pad(c.aux.load, (0, width - c.aux.load.shape[0])) for c in out.columns]
        )
        # Batch means times the batch size, so sums over batches divide by the sample count.
        s["load"] = load * labels.shape[0]  # [Z, E]
        s["gate_entropy"] = s["gate_entropy"] * labels.shape[0]
        return s

    return evaluate
