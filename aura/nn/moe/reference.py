"""Naive compute-every-expert MoE combine: the reference the optimized dispatch is tested against.

Cost grows with E (every expert runs on every token), which is why it is used only in tests,
in ``LiquidMoE.expert_outputs`` (distillation needs all outputs) and as a benchmark baseline.
Shapes: N tokens, K top-k, E experts, D input width, O output width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dense_combine_weights(indices: jax.Array, weights: jax.Array, valid: jax.Array, E: int):
    """[N, K] routing -> dense [N, E] combine weights (0 for unchosen experts)."""
    onehot = jax.nn.one_hot(indices, E, dtype=weights.dtype)  # [N, K, E]
    return jnp.einsum("nke,nk->ne", onehot, jnp.where(valid, weights, 0.0))  # [N, E]


def reference_moe(x: jax.Array, indices, weights, valid, run_batched, num_experts: int):
    """y [N, O] = sum_e w[n, e] · expert_e(x[n]), computing every expert on every token."""
    E = num_experts
    outs = run_batched(jnp.broadcast_to(x[None], (E, *x.shape)))  # [E, N, O]
    dense = dense_combine_weights(indices, weights, valid, E).astype(outs.dtype)  # [N, E]
    return jnp.einsum("ne,eno->no", dense, outs)  # [N, O]
