"""A stack of pre-LayerNorm residual MLP layers (the router's "gray" block, the dense ablation).

Shapes: B batch (any leading axes), D width, F hidden width, L layers.

Layer l: ``x <- x + act(LN_l(x) W1_l + b1_l) W2_l + b2_l``. One layer has
``2D (LayerNorm) + D·F + F + F·D + D`` parameters, the same as one layer of a
``aura.nn.moe.ResidualMLPExperts`` expert, so a dense stack and an expert bank can be matched
parameter for parameter (:func:`residual_mlp_params`).
"""

from __future__ import annotations

import flax.linen as nn
import jax

__all__ = ["ResidualMLP", "residual_mlp_params"]


def residual_mlp_params(width: int, hidden: int, layers: int) -> int:
    """Parameters of :class:`ResidualMLP` (``layers`` layers of width D and hidden width F)."""
    return layers * (2 * width + width * hidden + hidden + hidden * width + width)


class ResidualMLP(nn.Module):
    """``num_layers`` pre-LN residual MLP layers of hidden width ``hidden`` (width preserved).

    Attributes:
      hidden: hidden width F.
      num_layers: layers L (>= 1).
      activation: a ``jax.nn`` activation name.
      dtype: compute dtype (parameters stay f32).
    """

    hidden: int
    num_layers: int = 2
    activation: str = "gelu"
    dtype: jax.typing.DTypeLike = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` [..., D] -> [..., D]."""
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers} must be >= 1")
        act = getattr(jax.nn, self.activation)
        width = x.shape[-1]
        for i in range(self.num_layers):
            h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=f"ln_{i}")(x)
            h = act(nn.Dense(self.hidden, dtype=self.dtype, name=f"up_{i}")(h))
            x = x + nn.Dense(width, dtype=self.dtype, name=f"down_{i}")(h)
        return x
