"""Auxiliary routing objectives and statistics, returned explicitly by the MoE core.

Shapes: N tokens, E experts.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from aura.nn.moe.router import NEG_INF


class MoEAux(NamedTuple):
    """Auxiliary outputs of one LiquidMoE call (all f32).

    load_balance_loss: [] Switch-style ``E_r · sum_e f_e · P_e`` (1.0 when perfectly balanced),
      E_r the number of routable experts.
    router_z_loss: [] mean squared log-partition of the gate logits (ST-MoE).
    load: [E] fraction of routed (token, choice) pairs per expert.
    importance: [E] mean gate probability per expert.
    gate_entropy: [] mean per-token entropy of the gate distribution (nats).
    dropped_fraction: [] pairs dropped by capacity dispatch (0 for dropless paths).
    """

    load_balance_loss: jax.Array
    router_z_loss: jax.Array
    load: jax.Array
    importance: jax.Array
    gate_entropy: jax.Array
    dropped_fraction: jax.Array


def load_balance_loss(load: jax.Array, probs: jax.Array, routable: jax.Array) -> jax.Array:
    """Switch Transformer loss ``E_r · sum_e f_e · mean_n p[n, e]`` over routable experts."""
    importance = jnp.mean(probs, axis=0)  # [E]
    n_routable = jnp.maximum(jnp.sum(routable), 1).astype(jnp.float32)
    return n_routable * jnp.sum(jnp.where(routable, load * importance, 0.0))


def router_z_loss(logits: jax.Array, routable: jax.Array) -> jax.Array:
    """``mean_n logsumexp(logits[n, routable])^2``: keeps gate logits small (ST-MoE)."""
    z = jax.nn.logsumexp(jnp.where(routable, logits, NEG_INF), axis=-1)  # [N]
    return jnp.mean(jnp.square(z))


def gate_entropy(probs: jax.Array) -> jax.Array:
    """Mean per-token entropy ``-sum_e p log p`` (0·log 0 = 0)."""
    plogp = jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0)
    return -jnp.mean(jnp.sum(plogp, axis=-1))
