"""``MocaLayer``: contextual counters, a token router, a slot memory and LiquidMoE experts.

Shapes: B batch, T tokens, N = B·T, D width, H router hidden width, E experts, M slots,
C counters, U memory value width.

Per token (one layer)::

    hn = LN(x + W_pos · code(counts))           counters: causal, learned-gate token counts
    u  = gelu(W_r · hn)                           router trunk (shared by slots and experts)
    slots   = top-k_m of softmax(W_m u + W_a code) / T   exactly 0 off the active slots
    read    = memory(hn, code, slots)             read the past, then write this token
    z  = x + W_o · read                           positions address; the stream holds content
    experts = top-k of softmax(W_e u / T)          the LiquidMoE gate, fed the router trunk
    y  = z + LiquidMoE(LN(z))                      sparse dispatch: cost grows with k

How tokens mix. A token-wise MoE never lets one token see another (why the original copy task
stalled). Here two causal paths carry information forward: the contextual counters (each a
cumulative sum of a learned per-token gate, so a token knows *which* content token or query it
is), and the memory (what a token writes, later tokens read). The counters make the memory
addressable by position: a content token writes a key carrying its index, a query token after
the delimiter reads with a query carrying its own index, and the harmonic code's
shift-equivariant dot product matches them at lengths never trained on. Without the memory,
nothing but the counts crosses tokens, which is why the no-memory ablation fails copy.

Compute. Slots and experts both follow ``routing.select_from_probs``: of the top-k candidates
only those with ``p >= min_ratio · p_best`` run. For experts this is applied through the
per-token logit bias of :class:`RoutingControls` (``NEG_INF`` on skipped experts), so the
LiquidMoE dispatch (capacity, ragged or expert-parallel) runs unchanged on exactly the active
(token, expert) pairs. ``MocaAux`` returns the hard and the expected activation fractions and
the Switch load balance for both (``budget.py``).

The carry (:class:`MocaCarry`: counts and memory) goes in and out of ``__call__``, so a whole
sequence, chunks, or single tokens (``step``) give the same outputs (streaming inference).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aura.nn.moca.budget import RoutingStats, routing_stats
from aura.nn.moca.memory import MemoryState, SlotMemory
from aura.nn.moca.position import ContextualCounters, CounterState, location_addresses
from aura.nn.moca.routing import Selection, active_mask, select_from_probs, select_top_k
from aura.nn.moe import LiquidMoE, RoutingControls
from aura.nn.moe.router import NEG_INF


class MocaCarry(NamedTuple):
    """Streaming state of one layer: the counters and the memory (None without a memory)."""

    counters: CounterState
    memory: MemoryState | None


class MocaAux(NamedTuple):
    """Routing outputs of one layer: expert and slot :class:`RoutingStats` (slots None without
    a memory), the LiquidMoE router z-loss and dropped fraction."""

    experts: RoutingStats
    slots: RoutingStats | None
    router_z_loss: jax.Array
    dropped_fraction: jax.Array


class MocaLayer(nn.Module):
    """One MOCA layer (see the module docstring).

    Attributes:
      dim: token width D.
      num_experts, expert_hidden, top_k: the LiquidMoE experts (E, F, K).
      expert_min_ratio: a candidate expert runs when ``p >= ratio · p_best`` (0: all top-k).
      num_slots, slot_top_k, slot_min_ratio: the memory routing (M, k_m, ratio).
      key_dim, value_dim: memory key width A and value width U.
      position_key_dim: key/query dimensions that carry the position code (init-tied).
      router_hidden: router trunk width H.
      num_counters, position_period: the contextual counters (C, code period).
      location_prior: init scale of the slot router's position skip path (slot m <-> count m
        modulo the period; 0: no prior).
      use_memory: False drops the memory (ablation): only the counts cross tokens.
      sharpness: slope of the activity surrogate used by the budget.
      capacity_factor, dispatch: LiquidMoE dispatch settings.
    """

    dim: int
    num_experts: int = 4
    expert_hidden: int = 256
    top_k: int = 2
    expert_min_ratio: float = 0.0
    num_slots: int = 64
    slot_top_k: int = 16
    slot_min_ratio: float = 0.0
    key_dim: int = 64
    value_dim: int = 128
    position_key_dim: int = 32
    router_hidden: int = 64
    num_counters: int = 4
    position_period: int = 64
    location_prior: float = 4.0
    use_memory: bool = True
    sharpness: float = 10.0
    capacity_factor: float = 2.0
    dispatch: str = "auto"

    def setup(self):
        if not 1 <= self.slot_top_k <= self.num_slots:
            raise ValueError(
                f"slot_top_k = {self.slot_top_k} must be in [1, num_slots={self.num_slots}]"
            )
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k = {self.top_k} must be in [1, num_experts={self.num_experts}]")
        self.counters = ContextualCounters(self.num_counters, self.position_period, name="counters")
        self.pos_proj = nn.Dense(self.dim, name="pos_proj")
        self.norm_h = nn.LayerNorm(name="norm_h")
        self.router_trunk = nn.Dense(self.router_hidden, name="router_trunk")
        self.slot_gate = nn.Dense(
            self.num_slots, kernel_init=nn.initializers.normal(0.02), name="slot_gate"
        )
        C, P, M = self.num_counters, self.position_period, self.num_slots
        prior = self.location_prior

        def address_init(key, shape):
            del key  # deterministic: location-based addressing, scaled by the prior
            return prior * location_addresses(C, P, M).reshape(shape)

        self.slot_address = self.param("slot_address", address_init, (C * P, M))
        if self.use_memory:
            self.memory = SlotMemory(
                self.num_slots,
                self.key_dim,
                self.value_dim,
                position_width=self.num_counters * self.position_period,
                position_dim=self.position_key_dim,
                name="memory",
            )
            self.read_proj = nn.Dense(self.dim, name="read_proj")
        self.norm_z = nn.LayerNorm(name="norm_z")
        self.moe = LiquidMoE(
            num_experts=self.num_experts,
            in_dim=self.dim,
            hidden_dim=self.expert_hidden,
            top_k=self.top_k,
            capacity_factor=self.capacity_factor,
            dispatch=self.dispatch,
            name="moe",
        )

    def initial_carry(self, batch_size: int, offsets: jax.Array | None = None) -> MocaCarry:
        """Fresh state: counters at origin ``offsets`` [B] (default 0); the learned slots."""
        counters = self.counters.initial_state(batch_size, offsets)
        memory = self.memory.initial_state(batch_size) if self.use_memory else None
        return MocaCarry(counters, memory)

    def _controls(self, controls: RoutingControls | None) -> RoutingControls:
        return RoutingControls.create(self.num_experts) if controls is None else controls

    def _experts(self, z, u, controls, mask) -> tuple[jax.Array, RoutingStats, object]:
        zn = self.norm_z(z)
        probs = self.moe.compute_gate_weights(zn, controls, gate_features=u).probs  # [N, E]
        sel = select_from_probs(
            probs, self.top_k, min_ratio=self.expert_min_ratio, sharpness=self.sharpness
        )
        if self.expert_min_ratio > 0:
            # Every expert but the active candidates gets a NEG_INF logit bias: probability
            # exactly 0, and the gate renormalises over the experts that run. (Masking only the
            # skipped candidates would let the MoE's own top-k pick the next-best expert.)
            skip = ~active_mask(sel)  # [N, E]
            bias = jnp.broadcast_to(controls.bias, skip.shape) + jnp.where(skip, NEG_INF, 0.0)
            controls = controls.replace(bias=bias)
        y, moe_aux = self.moe(zn, controls, gate_features=u)
        return y, routing_stats(sel, mask), moe_aux

    def __call__(
        self,
        x: jax.Array,
        carry: MocaCarry | None = None,
        controls: RoutingControls | None = None,
        mask: jax.Array | None = None,
        separators: jax.Array | None = None,
    ) -> tuple[jax.Array, MocaCarry, MocaAux]:
        """Runs a chunk of tokens.

        Args:
          x: token features [B, T, D].
          carry: state before the chunk (a previous call's; default ``initial_carry(B)``).
          controls: expert routing controls (temperature also used for the slots).
          mask: bool [B, T], tokens that count in the statistics (default all).
          separators: bool [B, T], segment ends: the counters return to their origin.

        Returns:
          (y [B, T, D], the carry after the chunk, MocaAux).
        """
        controls = self._controls(controls)
        carry = self.initial_carry(x.shape[0]) if carry is None else carry
        codes, counters = self.counters(x, carry.counters, separators)  # [B, T, C·P]
        # Positions steer routing and addressing; the residual stream carries content only.
        hn = self.norm_h(x + self.pos_proj(codes))
        u = jax.nn.gelu(self.router_trunk(hn))  # [B, T, H]
        memory, slot_stats = carry.memory, None
        z = x
        if self.use_memory:
            slots = self._slots(u, codes, controls)
            reads, memory = self.memory(hn, slots, slots, carry.memory, codes)  # [B, T, U]
            z = x + self.read_proj(reads)
            slot_stats = routing_stats(slots, mask)
        y, expert_stats, moe_aux = self._experts(z, u, controls, mask)
        aux = MocaAux(expert_stats, slot_stats, moe_aux.router_z_loss, moe_aux.dropped_fraction)
        return z + y, MocaCarry(counters, memory), aux

    def step(
        self,
        x: jax.Array,
        carry: MocaCarry,
        controls: RoutingControls | None = None,
        separators: jax.Array | None = None,
    ) -> tuple[jax.Array, MocaCarry, MocaAux]:
        """One token per sequence, x [B, D] -> y [B, D]; separators bool [B, 1] (streaming)."""
        y, carry, aux = self(x[:, None], carry, controls, separators=separators)
        return y[:, 0], carry, aux

    def _slots(self, u: jax.Array, codes: jax.Array, controls: RoutingControls) -> Selection:
        logits = self.slot_gate(u) + codes @ self.slot_address  # [B, T, M]
        return select_top_k(
            logits,
            self.slot_top_k,
            temperature=controls.temperature,
            min_ratio=self.slot_min_ratio,
            sharpness=self.sharpness,
        )

    def slot_selection(
        self,
        x: jax.Array,
        carry: MocaCarry,
        controls: RoutingControls | None = None,
        separators: jax.Array | None = None,
    ) -> Selection:
        """The slot routing of a chunk, without running the memory (analysis and tests)."""
        controls = self._controls(controls)
        codes, _ = self.counters(x, carry.counters, separators)
        u = jax.nn.gelu(self.router_trunk(self.norm_h(x + self.pos_proj(codes))))
        return self._slots(u, codes, controls)
