"""Pure training and evaluation steps for MOCA-Net (copy and text classification).

Shapes: B batch, T tokens, V vocabulary, L labels.

The state is a plain pytree (:class:`MocaState`: params and optimizer state). A step is
``train_step(state, data, extras) -> (state, metrics)`` with ``data`` the batch dict (host
arrays) and ``extras`` the replicated :class:`RoutingControls`, the shape the shared training
loop jits and donates. The objective is

    task loss + budget_weight · max(0, expected_compute - budget)
              + balance_weight · (expert_balance + slot_balance)
              + z_weight · router_z_loss

where the task loss is the cross-entropy on the scored positions (copy: the answer segment;
text: the label), ``expected_compute`` the differentiable activation fraction of
``aura.nn.moca.budget`` and the balances the Switch load-balance terms. Metrics carry the
accuracy, the compute actually used (hard activations) and the budget.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from aura.models.moca import MocaNet, summarize
from aura.nn.moca import budget_loss
from aura.nn.moe import RoutingControls

Metrics = dict[str, jax.Array]


@struct.dataclass
class MocaState:
    """Training state: params (plain pytree) and the optax state."""

    params: dict
    opt_state: optax.OptState


def loss_config() -> ml_collections.ConfigDict:
    """Defaults of the auxiliary objective (budget 0.3 and weight 0.05 as in the original)."""
    c = ml_collections.ConfigDict()
    c.budget = 0.3
    c.budget_weight = 0.05
    c.balance_weight = 0.01
    c.z_weight = 1e-3
    c.label_smoothing = 0.0  # text: share of the target mass spread over all labels
    return c


def make_optimizer(
    lr: float, warmup: int, total_steps: int, clip: float, weight_decay=0.01, frozen=(), own=None
):
    """Gradient clipping, then AdamW with linear warmup and cosine decay to ``lr / 10``.

    ``frozen``: top-level parameter names that never change (no update, no weight decay; see
    :func:`frozen_params`). ``own``: ``{top-level name: (lr, weight_decay)}`` for parameters with
    their own peak rate and decay (same schedule shape and clipping, e.g. the wide path of a
    wide-and-deep classifier: a linear model wants a far larger rate than the deep part). With
    neither, the optimizer state is the plain chain's.
    """
    if lr <= 0 or warmup < 0 or total_steps < 1 or clip <= 0:
        raise ValueError(
            f"optimizer settings lr={lr}, warmup={warmup}, steps={total_steps}, clip={clip}: "
            "need lr > 0, warmup >= 0, steps >= 1, clip > 0"
        )
    own = dict(own or {})
    warmup = max(warmup, 1)

    def chain(peak, decay):
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup, max(total_steps, warmup + 1), end_value=peak / 10
        )
        return optax.chain(
            optax.clip_by_global_norm(clip), optax.adamw(schedule, weight_decay=decay)
        )

    tx = chain(lr, weight_decay)
    if not frozen and not own:
        return tx

    def labels(params):
        def label(name, tree):
            group = "frozen" if name in frozen else (name if name in own else "train")
            return jax.tree.map(lambda _: group, tree)

        return {k: label(k, v) for k, v in params.items()}

    groups = {"train": tx, "frozen": optax.set_to_zero()}
    groups.update({name: chain(*own[name]) for name in own})
    return optax.multi_transform(groups, labels)


def frozen_params(model_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Top-level parameters a model config keeps fixed (``freeze_embed``: the token table)."""
    return ("embed",) if model_cfg.get("freeze_embed", False) else ()


def own_rates(model_cfg: ml_collections.ConfigDict, wide_lr: float, wide_decay: float) -> dict:
    """``{"wide": (lr, weight_decay)}`` for a wide-and-deep model, else ``{}``."""
    return {"wide": (wide_lr, wide_decay)} if model_cfg.get("wide_buckets", 0) else {}


def init_state(model: MocaNet, optimizer, rng: jax.Array, example_tokens: jax.Array) -> MocaState:
    """Initial parameters from ``example_tokens`` [B, T] and a fresh optimizer state."""
    params = model.init(rng, example_tokens)["params"]
    return MocaState(params, optimizer.init(params))


def _aux_objective(s: Metrics, cfg: ml_collections.ConfigDict) -> jax.Array:
    return (
        cfg.budget_weight * budget_loss(s["expected_compute"], cfg.budget)
        + cfg.balance_weight * (s["expert_balance"] + s["slot_balance"])
        + cfg.z_weight * s["router_z_loss"]
    )


def _routing_metrics(s: Metrics, cfg) -> Metrics:
    keys = ("compute", "expected_compute", "expert_fraction", "slot_fraction")
    out = {k: s[k] for k in keys}
    out.update(
        expert_balance=s["expert_balance"],
        slot_balance=s["slot_balance"],
        budget=jnp.asarray(cfg.budget, jnp.float32),
    )
    return out


def sequence_loss(model: MocaNet, params, data: dict, controls, cfg) -> tuple[jax.Array, Metrics]:
    """Copy objective: cross-entropy and accuracy on the ``loss_mask`` positions only."""
    tokens = data["tokens"]
    logits, _, auxes = model.apply(
        {"params": params}, tokens, None, controls, tokens != 0, data["offsets"]
    )
    m = data["loss_mask"].astype(jnp.float32)  # [B, T]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, data["targets"])  # [B, T]
    n = jnp.maximum(m.sum(), 1.0)
    task = jnp.sum(ce * m) / n
    correct = (jnp.argmax(logits, -1) == data["targets"]).astype(jnp.float32)  # [B, T]
    seq_ok = jnp.all((correct > 0) | (m == 0), axis=1)  # [B]
    s = summarize(auxes)
    metrics = {
        "task_loss": task,
        "token_acc": jnp.sum(correct * m) / n,
        "seq_acc": jnp.mean(seq_ok.astype(jnp.float32)),
        **_routing_metrics(s, cfg),
    }
    loss = task + _aux_objective(s, cfg)
    metrics["loss"] = loss
    return loss, metrics


def classification_loss(
    model: MocaNet, params, data: dict, controls, cfg
) -> tuple[jax.Array, Metrics]:
    """Text objective: cross-entropy of the pooled classifier; ``weight`` [B] masks padding rows."""
    tokens = data["tokens"]
    wide = (data["wide_ids"], data["wide_vals"]) if "wide_ids" in data else None
    logits, _, auxes = model.apply(
        {"params": params}, tokens, None, controls, tokens != 0, None, data.get("pool_bias"), wide
    )
    w = data["weight"].astype(jnp.float32)  # [B]; 0 for rows that only pad the batch
    smooth = cfg.get("label_smoothing", 0.0)
    target = optax.smooth_labels(jax.nn.one_hot(data["labels"], logits.shape[-1]), smooth)
    ce = optax.softmax_cross_entropy(logits, target)  # [B]
    n = jnp.maximum(w.sum(), 1.0)
    task = jnp.sum(ce * w) / n
    correct = (jnp.argmax(logits, -1) == data["labels"]).astype(jnp.float32)
    s = summarize(auxes)
    metrics = {"task_loss": task, "accuracy": jnp.sum(correct * w) / n, **_routing_metrics(s, cfg)}
    loss = task + _aux_objective(s, cfg)
    metrics["loss"] = loss
    return loss, metrics


LOSSES: dict[str, Callable] = {"copy": sequence_loss, "textcls": classification_loss}


def build_train_step(model: MocaNet, optimizer, cfg: ml_collections.ConfigDict, task: str):
    """``train_step(state, data, controls) -> (state, metrics)``: pure, ready for ``jax.jit``."""
    if task not in LOSSES:
        raise ValueError(f"task = {task!r}; valid: {', '.join(LOSSES)}")
    loss_of = LOSSES[task]

    def train_step(state: MocaState, data: dict, controls: RoutingControls):
        grad_fn = jax.value_and_grad(lambda p: loss_of(model, p, data, controls, cfg), has_aux=True)
        (_, metrics), grads = grad_fn(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.tree_utils.tree_norm(grads)
        return MocaState(params, opt_state), metrics

    return train_step


def build_eval_step(model: MocaNet, cfg: ml_collections.ConfigDict, task: str):
    """``eval_step(params, data, controls) -> metrics`` (no update): pure, ready for jit."""
    loss_of = LOSSES[task]

    def eval_step(params, data: dict, controls: RoutingControls):
        return loss_of(model, params, data, controls, cfg)[1]

    return eval_step
