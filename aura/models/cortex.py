"""Cortex: the phase 1 router (query -> memory space) and the phase 2 reasoner (MoE or dense).

Shapes: B batch, D embedding width (the sentence encoder's), W model width, F hidden width,
T settling steps, E experts, K top-k, L layers per expert (or dense layers).

* :class:`CortexRouter`: input projection -> residual MLP ("gray") -> a 3-layer GRU with
  LayerNorm ("brown") settling for T steps on the gray output -> projection ("blue") back to D.
  With ``residual=True`` (the default) the blue projection starts at zero and is added to the
  query, so an untrained router is the identity (exact nearest neighbour) and training can only
  move it from there; the output is L2-normalised (the memory is read on the cosine scale).
* :class:`Reasoner`: ``[retrieved, question]`` [B, 2D] -> input projection to W -> either a
  ``LiquidMoE`` of E experts of L residual layers each (top-K routing, one gate per sample), or
  a dense :class:`~aura.nn.residual.ResidualMLP` of L layers whose hidden width is chosen so
  that both blocks have the same parameter count (:func:`matched_dense_hidden`) -> LayerNorm ->
  output projection to D, plus a linear skip ``[retrieved, question] -> D`` shared by both,
  added to the retrieved vector. The output projection and the skip start at zero, so an
  untrained reasoner answers with what the memory returned (the top-1 context baseline, softened
  by the top-k read-out) and training learns the correction from context to answer window.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from aura.nn.bert import l2_normalize
from aura.nn.moe import LiquidMoE, RoutingControls
from aura.nn.recurrent import GRUStack
from aura.nn.residual import ResidualMLP, residual_mlp_params

__all__ = [
    "REASONING_KINDS",
    "CortexRouter",
    "Reasoner",
    "block_params",
    "matched_dense_hidden",
    "moe_block_params",
]

REASONING_KINDS = ("moe", "dense")


class CortexRouter(nn.Module):
    """Routes a query embedding into the memory space (unit vectors).

    Attributes:
      dim: embedding width D (in and out).
      width: model width W.
      gray_hidden: hidden width of the gray residual MLP.
      gray_layers: its layers.
      gru_layers: layers of the brown GRU stack.
      settle_steps: T, steps the GRU runs on the (constant) gray output.
      residual: add the blue output to the query (blue initialised to zero).
    """

    dim: int
    width: int = 256
    gray_hidden: int = 512
    gray_layers: int = 2
    gru_layers: int = 3
    settle_steps: int = 2
    residual: bool = True

    @nn.compact
    def __call__(self, query: jax.Array) -> jax.Array:
        """``query`` [B, D] -> unit [B, D]."""
        if self.settle_steps < 1:
            raise ValueError(f"settle_steps={self.settle_steps} must be >= 1")
        h = nn.Dense(self.width, name="input_proj")(query)
        h = ResidualMLP(self.gray_hidden, self.gray_layers, name="gray")(h)
        seq = jnp.broadcast_to(h[:, None], (h.shape[0], self.settle_steps, self.width))  # [B,T,W]
        out, _ = GRUStack(self.width, self.gru_layers, name="brown")(seq)
        init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
        y = nn.Dense(self.dim, kernel_init=init, name="blue")(out[:, -1])  # [B, D]
        return l2_normalize(query + y if self.residual else y)


def moe_block_params(width: int, num_experts: int, expert_layers: int, expert_hidden: int) -> int:
    """Parameters of the reasoner's MoE block: the gate (W·E + E) and the E experts."""
    gate = width * num_experts + num_experts
    return gate + num_experts * residual_mlp_params(width, expert_hidden, expert_layers)


def matched_dense_hidden(
    width: int, num_experts: int, expert_layers: int, expert_hidden: int
) -> int:
    """Hidden width of an ``expert_layers``-layer dense residual MLP with (as nearly as an integer
    width allows) the MoE block's parameter count: the dense block has the same depth and
    ``L·(3W + F_d·(2W + 1))`` parameters; ``F_d`` is rounded to the nearest integer."""
    target = moe_block_params(width, num_experts, expert_layers, expert_hidden)
    per_unit = expert_layers * (2 * width + 1)
    return max(1, round((target - expert_layers * 3 * width) / per_unit))


def block_params(kind: str, width: int, num_experts: int, expert_layers: int,
                 expert_hidden: int) -> int:  # fmt: skip
    """Parameters of the reasoning block of ``kind`` ("moe" or "dense", the matched one)."""
    if kind == "moe":
        return moe_block_params(width, num_experts, expert_layers, expert_hidden)
    hidden = matched_dense_hidden(width, num_experts, expert_layers, expert_hidden)
    return residual_mlp_params(width, hidden, expert_layers)


class Reasoner(nn.Module):
    """Maps (retrieved context, question) embeddings to the answer-window embedding.

    Attributes:
      dim: embedding width D.
      kind: "moe" or "dense".
      width: model width W.
      num_experts, expert_layers, expert_hidden, top_k: the MoE block (E, L, F, K); the dense
        block has L layers and the matched hidden width.
      capacity_factor: MoE capacity buffer size relative to a perfect balance.
    """

    dim: int
    kind: str = "moe"
    width: int = 128
    num_experts: int = 16
    expert_layers: int = 4
    expert_hidden: int = 64
    top_k: int = 4
    capacity_factor: float = 2.0

    def setup(self):
        if self.kind not in REASONING_KINDS:
            raise ValueError(f"reasoning kind {self.kind!r}; valid: {', '.join(REASONING_KINDS)}")
        self.input_proj = nn.Dense(self.width, name="input_proj")
        if self.kind == "moe":
            self.block = LiquidMoE(
                num_experts=self.num_experts, in_dim=self.width, hidden_dim=self.expert_hidden,
                top_k=self.top_k, expert_kind="resmlp", expert_layers=self.expert_layers,
                capacity_factor=self.capacity_factor, expert_axis=None, name="moe",
            )  # fmt: skip
        else:
            hidden = matched_dense_hidden(
                self.width, self.num_experts, self.expert_layers, self.expert_hidden
            )
            self.block = ResidualMLP(hidden, self.expert_layers, name="dense")
        self.out_norm = nn.LayerNorm(epsilon=1e-6, name="out_norm")
        zeros = nn.initializers.zeros
        self.output_proj = nn.Dense(self.dim, kernel_init=zeros, name="output_proj")
        self.skip = nn.Dense(self.dim, use_bias=False, kernel_init=zeros, name="skip")

    def __call__(self, retrieved: jax.Array, question: jax.Array) -> tuple[jax.Array, dict]:
        """Returns (prediction [B, D], aux): aux has ``load_balance_loss`` and
        ``router_z_loss`` (zeros for the dense block) and ``load`` [E] for the MoE."""
        x = jnp.concatenate([retrieved, question], axis=-1)  # [B, 2D]
        h = self.input_proj(x)
        if self.kind == "moe":
            h, moe_aux = self.block(h, RoutingControls.create(self.num_experts))
            aux = {"load_balance_loss": moe_aux.load_balance_loss,
                   "router_z_loss": moe_aux.router_z_loss, "load": moe_aux.load,
                   "dropped_fraction": moe_aux.dropped_fraction}  # fmt: skip
        else:
            h = self.block(h)
            zero = jnp.zeros((), jnp.float32)
            aux = {"load_balance_loss": zero, "router_z_loss": zero}
        return retrieved + self.output_proj(self.out_norm(h)) + self.skip(x), aux

    def gates(self, retrieved: jax.Array, question: jax.Array) -> jax.Array:
        """Per-sample gate probabilities [B, E] of the MoE block (its routing, no experts run)."""
        if self.kind != "moe":
            raise ValueError("only the MoE reasoner has gates")
        h = self.input_proj(jnp.concatenate([retrieved, question], axis=-1))
        return self.block.compute_gate_weights(h, RoutingControls.create(self.num_experts)).probs
