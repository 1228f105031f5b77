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
  that both blocks have the same parameter count (:func:`matched_dense_hidden`); with
  ``shared_experts=S`` the MoE block is an always-on shared expert (hidden S·F) plus E - S routed
  experts, the dense block matched to that total -> LayerNorm ->
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
    "ROUTE_ON",
    "CortexRouter",
    "Reasoner",
    "block_params",
    "matched_dense_hidden",
    "moe_block_params",
]

REASONING_KINDS = ("moe", "dense")
ROUTE_ON = ("input", "question")


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


def moe_block_params(width: int, num_experts: int, expert_layers: int, expert_hidden: int,
                     shared: int = 0, gate_in: int | None = None) -> int:  # fmt: skip
    """Parameters of the reasoner's MoE block: the gate over the E - S routed experts from its
    ``gate_in`` features (default W: ``gate_in·(E - S) + E - S``), the routed experts, and
    (S > 0) the shared expert, one residual MLP of hidden width S·F."""
    routed = num_experts - shared
    gate = (gate_in or width) * routed + routed
    total = gate + routed * residual_mlp_params(width, expert_hidden, expert_layers)
    if shared:
        total += residual_mlp_params(width, shared * expert_hidden, expert_layers)
    return total


def matched_dense_hidden(width: int, num_experts: int, expert_layers: int, expert_hidden: int,
                         shared: int = 0, gate_in: int | None = None) -> int:  # fmt: skip
    """Hidden width of an ``expert_layers``-layer dense residual MLP with (as nearly as an integer
    width allows) the MoE block's parameter count: the dense block has the same depth and
    ``L·(3W + F_d·(2W + 1))`` parameters; ``F_d`` is rounded to the nearest integer."""
    target = moe_block_params(width, num_experts, expert_layers, expert_hidden, shared, gate_in)
    per_unit = expert_layers * (2 * width + 1)
    return max(1, round((target - expert_layers * 3 * width) / per_unit))


def block_params(kind: str, width: int, num_experts: int, expert_layers: int, expert_hidden: int,
                 shared: int = 0, gate_in: int | None = None) -> int:  # fmt: skip
    """Parameters of the reasoning block of ``kind`` ("moe" or "dense", the matched one)."""
    if kind == "moe":
        return moe_block_params(width, num_experts, expert_layers, expert_hidden, shared, gate_in)
    hidden = matched_dense_hidden(width, num_experts, expert_layers, expert_hidden, shared,
                                  gate_in)  # fmt: skip
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
      shared_experts: S of the E expert slots form one always-on shared expert (a residual MLP
        of hidden width S·F added to the routed output, DeepSeek-MoE style); the gate routes
        top-K among the other E - S. The dense block is matched to the whole MoE block.
      route_on: "input" (the gate reads the block input, W wide) or "question" (it reads the
        question embedding alone, D wide: the reasoning a question needs, not the context's
        content, picks the experts).
      input_noise: sigma of the training noise on the branch inputs (0: none).
      gate_noise: sigma of Gaussian noise added to the MoE gate logits in training (noisy top-k
        gating; 0: none; the dense block has no gate).
      dropout: dropout rate on the block output during training (0: none).
    """

    dim: int
    kind: str = "moe"
    width: int = 128
    num_experts: int = 16
    expert_layers: int = 4
    expert_hidden: int = 64
    top_k: int = 4
    capacity_factor: float = 2.0
    shared_experts: int = 0
    route_on: str = "input"
    input_noise: float = 0.0
    gate_noise: float = 0.0
    dropout: float = 0.0

    def setup(self):
        if self.kind not in REASONING_KINDS:
            raise ValueError(f"reasoning kind {self.kind!r}; valid: {', '.join(REASONING_KINDS)}")
        if self.route_on not in ROUTE_ON:
            raise ValueError(f"route_on {self.route_on!r}; valid: {', '.join(ROUTE_ON)}")
        self.input_proj = nn.Dense(self.width, name="input_proj")
        routed = self.num_experts - self.shared_experts
        if self.kind == "moe":
            self.block = LiquidMoE(
                num_experts=routed, in_dim=self.width, hidden_dim=self.expert_hidden,
                top_k=self.top_k, expert_kind="resmlp", expert_layers=self.expert_layers,
                capacity_factor=self.capacity_factor, expert_axis=None, name="moe",
            )  # fmt: skip
            if self.shared_experts:
                self.shared = ResidualMLP(self.shared_experts * self.expert_hidden,
                                          self.expert_layers, name="moe_shared")  # fmt: skip
        else:
            hidden = matched_dense_hidden(self.width, self.num_experts, self.expert_layers,
                                          self.expert_hidden, self.shared_experts,
                                          self.gate_in())  # fmt: skip
            self.block = ResidualMLP(hidden, self.expert_layers, name="dense")
        self.out_norm = nn.LayerNorm(epsilon=1e-6, name="out_norm")
        zeros = nn.initializers.zeros
        self.output_proj = nn.Dense(self.dim, kernel_init=zeros, name="output_proj")
        self.skip = nn.Dense(self.dim, use_bias=False, kernel_init=zeros, name="skip")
        self.drop = nn.Dropout(self.dropout, name="drop")

    def _branch_input(self, retrieved: jax.Array, question: jax.Array, train: bool) -> jax.Array:
        """``[retrieved, question]`` [B, 2D], each half noised when training with input_noise."""
        parts = [retrieved, question]
        if train and self.input_noise > 0:
            keys = jax.random.split(self.make_rng("dropout"), 2)
            parts = [l2_normalize(v + self.input_noise * jax.random.normal(k, v.shape, v.dtype))
                     for k, v in zip(keys, parts, strict=True)]  # fmt: skip
        return jnp.concatenate(parts, axis=-1)  # [B, 2D]

    def __call__(
        self, retrieved: jax.Array, question: jax.Array, train: bool = False
    ) -> tuple[jax.Array, dict]:
        """Returns (prediction [B, D], aux): aux has ``load_balance_loss`` and
        ``router_z_loss`` (zeros for the dense block) and ``load`` [E] for the MoE. ``train``
        turns on input_noise and dropout (they need a ``"dropout"`` rng)."""
        x = self._branch_input(retrieved, question, train)  # [B, 2D]
        h = self.input_proj(x)
        if self.kind == "moe":
            controls = self._controls(len(h) if train and self.gate_noise > 0 else 0)
            routed, moe_aux = self.block(h, controls, self._gate_features(x))
            # each residual path returns h + its update: add the shared update to the routed one
            h = routed + self.shared(h) - h if self.shared_experts else routed
            aux = {"load_balance_loss": moe_aux.load_balance_loss,
                   "router_z_loss": moe_aux.router_z_loss, "load": moe_aux.load,
                   "dropped_fraction": moe_aux.dropped_fraction}  # fmt: skip
        else:
            h = self.block(h)
            zero = jnp.zeros((), jnp.float32)
            aux = {"load_balance_loss": zero, "router_z_loss": zero}
        h = self.drop(h, deterministic=not train or self.dropout == 0)
        return retrieved + self.output_proj(self.out_norm(h)) + self.skip(x), aux

    def gates(self, retrieved: jax.Array, question: jax.Array) -> jax.Array:
        """Per-sample gate probabilities [B, E - S] of the MoE block (routing only, no experts)."""
        if self.kind != "moe":
            raise ValueError("only the MoE reasoner has gates")
        x = jnp.concatenate([retrieved, question], axis=-1)  # [B, 2D]
        return self.block.compute_gate_weights(self.input_proj(x), self._controls(),
                                               self._gate_features(x)).probs  # fmt: skip

    def gate_in(self) -> int | None:
        """Width of the gate's features (None: the block width W)."""
        return self.dim if self.route_on == "question" else None

    def _gate_features(self, x: jax.Array) -> jax.Array | None:
        """The question half of the branch input [B, D] when routing on it, else None."""
        return x[..., self.dim :] if self.route_on == "question" else None

    def _controls(self, noisy: int = 0) -> RoutingControls:
        """All E - S routed experts active; ``noisy`` = B > 0: a logit bias [B, E - S] of
        ``gate_noise`` x N(0, 1) drawn from the ``"dropout"`` rng (training)."""
        routed = self.num_experts - self.shared_experts
        bias = None
        if noisy:
            bias = self.gate_noise * jax.random.normal(self.make_rng("dropout"), (noisy, routed))
        return RoutingControls.create(routed, bias=bias)
