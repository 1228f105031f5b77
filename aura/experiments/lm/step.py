"""Pure language-model train and eval steps: masked next-token loss, accumulation, sharding.

Shapes: A accumulation micro-steps, B batch (global), T tokens, V vocabulary.

The loss is the next-token cross-entropy over response tokens only (the mask from the
instruction formatter), averaged over the masked tokens of the whole accumulated batch, plus the
MoE's load-balance and z-losses. Gradient accumulation scans over A micro-batches inside one
jitted step (so it is exactly the gradient of the full batch), and the optimizer updates f32
master weights; the model computes in its configured dtype (bf16 on accelerators).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from aura.models.adapter import SelfTeachingAdapter
from aura.train.optim import TrainState


@dataclasses.dataclass(frozen=True)
class LMLossConfig:
    load_balance: float = 1e-2
    z_loss: float = 1e-3


def masked_next_token_loss(logits: jax.Array, tokens: jax.Array, mask: jax.Array):
    """Sum of next-token cross-entropy where ``mask`` is 1, and the count of such tokens.

    Args:
      logits: [B, T, V] predictions for positions 0..T-1.
      tokens: [B, T] input ids; the target of position t is ``tokens[t + 1]``.
      mask: [B, T] 1 where ``tokens[t]`` is a response token whose prediction is scored.

    Returns:
      (sum of losses [], number of scored tokens []).
    """
    targets = tokens[:, 1:]  # [B, T-1]
    weights = mask[:, 1:].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits[:, :-1].astype(jnp.float32), targets
    )
    return jnp.sum(ce * weights), jnp.sum(weights)


def build_lm_train_step(model: SelfTeachingAdapter, optimizer, loss_cfg=LMLossConfig()):
    """Returns ``step(state, tokens [A, B, T], mask [A, B, T]) -> (state, metrics)``.

    Not jitted: the caller jits it with its shardings. The objective is
    ``sum(masked CE) / (masked tokens of all A micro-batches) + mean_A(aux losses)``; the token
    count is known from the mask before the scan, so the accumulated gradient is exactly the
    full batch's.
    """

    def micro_objective(params, tokens, mask, count, A):
        logits, _, aux = model.apply({"params": params}, tokens)
        total, _ = masked_next_token_loss(logits, tokens, mask)
        side = loss_cfg.load_balance * aux.load_balance_loss + loss_cfg.z_loss * aux.router_z_loss
        return total / count + side / A, (total, side, aux.gate_entropy)

    grad_fn = jax.grad(micro_objective, has_aux=True)

    def step(state: TrainState, tokens, mask):
        A = tokens.shape[0]
        count = jnp.maximum(jnp.sum(mask[:, :, 1:].astype(jnp.float32)), 1.0)

        def accumulate(carry, batch):
            grads, total, side, ent = carry
            g, (t, s, e) = grad_fn(state.params, *batch, count, A)
            return (jax.tree.map(jnp.add, grads, g), total + t, side + s, ent + e), None

        init = (jax.tree.map(jnp.zeros_like, state.params), 0.0, 0.0, 0.0)
        (grads, total, side, ent), _ = jax.lax.scan(accumulate, init, (tokens, mask))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": total / count,
            "tokens": count,
            "aux_loss": side / A,
            "gate_entropy": ent / A,
            "grad_norm": optax.tree.norm(grads),
        }
        return TrainState(params, opt_state, state.step + 1), metrics

    return step


def build_lm_eval(model: SelfTeachingAdapter):
    """Returns ``evaluate(params, tokens [B, T], mask [B, T]) -> (sum CE nats, scored tokens)``."""

    def evaluate(params, tokens, mask):
        logits, _, _ = model.apply({"params": params}, tokens)
        return masked_next_token_loss(logits, tokens, mask)

    return evaluate
