"""A linear layer over hashed sparse features: the "wide" half of a wide-and-deep classifier.

Shapes: B batch, K kept features per row, F hash buckets, L outputs.

Each row is given sparse and fixed-size: bucket ids int32 [B, K] and their weights f32 [B, K]
(zero weight for padding), e.g. the TF-IDF rows of ``aura.data.hashed_tfidf``. The layer
gathers the K kernel rows a row uses and weighs them, ``y[b] = sum_k w[b, k] · W[id[b, k]]``,
the dense product ``x @ W`` without building ``x`` [B, F]. The kernel starts at zero, so the
wide path adds nothing until it is trained (and a deep model it is summed with starts as
before). There is no bias: the model it is added to has one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class SparseLinear(nn.Module):
    """``features`` outputs from ``num_buckets`` hashed sparse inputs."""

    num_buckets: int
    features: int

    @nn.compact
    def __call__(self, ids: jax.Array, weights: jax.Array) -> jax.Array:
        """(ids int [B, K], weights f32 [B, K]) -> f32 [B, L]."""
        kernel = self.param(
            "kernel", nn.initializers.zeros_init(), (self.num_buckets, self.features), jnp.float32
        )  # [F, L]
        rows = jnp.take(kernel, ids, axis=0)  # [B, K, L]
        return jnp.einsum("bk,bkl->bl", weights.astype(jnp.float32), rows)  # [B, L]
