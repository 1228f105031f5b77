"""A stack of GRU layers with LayerNorm on each layer's input (the router's "brown" block).

Shapes: B batch, T time steps, D input width, H hidden width, L layers.

``GRUStack`` runs L ``flax.linen.GRUCell`` layers over ``[B, T, D]`` inputs; layer l reads
``LN_l(previous layer's outputs)``. The recurrent state is an explicit carry (a tuple of L
``[B, H]`` arrays, zeros when not given) that goes in and comes out, so a caller can continue a
sequence or settle a fixed input for several steps.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["GRUStack"]


class GRUStack(nn.Module):
    """``num_layers`` GRU layers of width ``features``, pre-LayerNorm.

    Attributes:
      features: hidden width H of every layer.
      num_layers: layers L (>= 1).
    """

    features: int
    num_layers: int = 3

    @nn.compact
    def __call__(
        self, x: jax.Array, carry: tuple[jax.Array, ...] | None = None
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Runs the stack over ``x`` [B, T, D].

        Args:
          x: inputs [B, T, D].
          carry: L states [B, H] (default: zeros).

        Returns:
          (outputs of the last layer [B, T, H], the L final states).
        """
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers} must be >= 1")
        if x.ndim != 3:
            raise ValueError(f"GRUStack input must be [B, T, D], got shape {x.shape}")
        if carry is None:
            carry = tuple(jnp.zeros((x.shape[0], self.features), x.dtype)
                          for _ in range(self.num_layers))  # fmt: skip
        if len(carry) != self.num_layers:
            raise ValueError(f"carry has {len(carry)} states for {self.num_layers} layers")
        out, states = x, []
        for i in range(self.num_layers):
            h = nn.LayerNorm(epsilon=1e-6, name=f"ln_{i}")(out)
            rnn = nn.RNN(nn.GRUCell(self.features, name=f"gru_{i}"), return_carry=True)
            state, out = rnn(h, initial_carry=carry[i])  # [B, H], [B, T, H]
            states.append(state)
        return out, tuple(states)
