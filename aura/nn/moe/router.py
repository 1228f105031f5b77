"""Routing for the LiquidMoE core: controls, masked (hierarchical) softmax gating and top-k.

Shapes: N tokens (flattened B·T), D gate-feature width, E expert capacity, G groups, K top-k.

Everything that changes while a model keeps learning (how many experts are active, which are
frozen or pruned, the additive logit bias from merit/personality/thalamic heads, the gate
temperature) lives in :class:`RoutingControls`, a pytree of arrays passed to every call. Changing
a value never changes a shape, so growth and pruning never retrace a jitted step.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

NEG_INF = -1e30  # finite "minus infinity": exp() underflows to exactly 0, no NaN in max-subtraction


@struct.dataclass
class RoutingControls:
    """Per-call routing state of a LiquidMoE with capacity E (all fields are arrays).

    Attributes:
      active_count: int32 []; experts ``0 .. active_count-1`` are routable.
      freeze_mask: bool [E]; frozen experts get exactly zero gradient.
      inactive_mask: bool [E]; pruned experts are never routed.
      bias: f32 [E] or [N, E]; added to the gate logits (merit, personality, thalamic, predictive).
      temperature: f32 []; gate logits are divided by it.
    """

    active_count: jax.Array
    freeze_mask: jax.Array
    inactive_mask: jax.Array
    bias: jax.Array
    temperature: jax.Array

    @classmethod
    def create(
        cls,
        num_experts: int,
        active: int | None = None,
        *,
        frozen: tuple[int, ...] | np.ndarray | jax.Array = (),
        pruned: tuple[int, ...] | np.ndarray | jax.Array = (),
        bias: np.ndarray | jax.Array | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> RoutingControls:
        """Builds validated controls.

        Args:
          num_experts: the capacity E.
          active: number of routable experts (default: all).
          frozen: indices of frozen experts, or a bool [E] mask.
          pruned: indices of pruned experts, or a bool [E] mask.
          bias: additive gate-logit bias, [E] or [N, E].
          temperature: gate temperature (> 0).
          top_k: if given, also check that at least ``top_k`` experts are routable.
        """
        active = num_experts if active is None else int(active)
        if not 1 <= active <= num_experts:
            raise ValueError(
                f"active experts = {active} must be in [1, capacity={num_experts}]; "
                "raise the capacity (num_experts) or activate fewer experts"
            )
        if temperature <= 0:
            raise ValueError(f"gate temperature = {temperature} must be > 0")
        freeze = _as_mask(frozen, num_experts, "frozen")
        inactive = _as_mask(pruned, num_experts, "pruned")
        if top_k is not None:
            routable = int(np.sum((np.arange(num_experts) < active) & ~np.asarray(inactive)))
            if top_k > routable:
                raise ValueError(
                    f"top_k = {top_k} is larger than the {routable} routable experts "
                    f"({active} active, {int(np.sum(inactive))} pruned); "
                    "activate more experts or lower top_k"
                )
        if bias is None:
            bias = jnp.zeros((num_experts,), jnp.float32)
        bias = jnp.asarray(bias, jnp.float32)
        if bias.shape[-1] != num_experts:
            raise ValueError(
                f"bias last dim = {bias.shape[-1]} must equal num_experts = {num_experts}"
            )
        return cls(
            active_count=jnp.asarray(active, jnp.int32),
            freeze_mask=jnp.asarray(freeze),
            inactive_mask=jnp.asarray(inactive),
            bias=bias,
            temperature=jnp.asarray(temperature, jnp.float32),
        )

    @property
    def num_experts(self) -> int:
        return self.freeze_mask.shape[-1]

    def with_active(self, n: int) -> RoutingControls:
        """Returns controls with ``n`` active experts (validated; same shapes, no retrace)."""
        if not 1 <= int(n) <= self.num_experts:
            raise ValueError(
                f"cannot activate {n} experts: capacity is {self.num_experts}; "
                "raise num_experts at init (capacity is fixed so shapes never change)"
            )
        return self.replace(active_count=jnp.asarray(n, jnp.int32))

    def routable(self) -> jax.Array:
        """bool [E]: active and not pruned."""
        idx = jnp.arange(self.num_experts)
        return (idx < self.active_count) & ~self.inactive_mask


def _as_mask(value, num_experts: int, name: str) -> np.ndarray | jax.Array:
    if isinstance(value, jax.Array | np.ndarray) and value.dtype == bool:
        if value.shape != (num_experts,):
            raise ValueError(f"{name} mask shape {value.shape} must be ({num_experts},)")
        return value
    mask = np.zeros((num_experts,), bool)
    for i in np.asarray(value, dtype=np.int64).reshape(-1):
        if not 0 <= i < num_experts:
            raise ValueError(f"{name} expert index {int(i)} out of range [0, {num_experts})")
        mask[i] = True
    return mask


def masked_softmax(logits: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax over ``mask``-ed entries; masked entries (and all-masked rows) get exactly 0."""
    logits = jnp.where(mask, logits, NEG_INF)
    shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=axis, keepdims=True))
    e = jnp.where(mask, jnp.exp(shifted), 0.0)
    denom = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(denom > 0, denom, 1.0)


class RouterOutput(NamedTuple):
    """What the gate computed for N tokens.

    logits: f32 [N, E] biased, tempered expert logits (masked entries at NEG_INF).
    probs: f32 [N, E] gate probabilities (0 on non-routable experts; sum 1 per row).
    weights: f32 [N, K] top-k probabilities renormalised over the chosen experts.
    indices: int32 [N, K] chosen experts, best first.
    valid: bool [N, K] whether the slot holds a routable expert (False when fewer than K are).
    """

    logits: jax.Array
    probs: jax.Array
    weights: jax.Array
    indices: jax.Array
    valid: jax.Array


class Router(nn.Module):
    """Softmax gate over gate features with optional hierarchical group gating and top-k.

    With ``group_count`` G > 1 the probability of expert e in group g is
    ``softmax_groups(h)[g] * softmax_within_g(l)[e]`` (groups with no routable expert get 0).
    """

    num_experts: int
    top_k: int = 2
    group_count: int = 1

    def setup(self):
        if self.top_k < 1 or self.top_k > self.num_experts:
            raise ValueError(f"top_k = {self.top_k} must be in [1, num_experts={self.num_experts}]")
        if self.group_count < 1 or self.num_experts % self.group_count:
            raise ValueError(
                f"group_count = {self.group_count} must divide the expert capacity "
                f"{self.num_experts} (e.g. {_divisors(self.num_experts)})"
            )
        # Router weights start small so the initial gate is near uniform (stable early growth).
        init = nn.initializers.normal(stddev=0.02)
        self.expert_gate = nn.Dense(self.num_experts, kernel_init=init, name="expert_gate")
        if self.group_count > 1:
            self.group_gate = nn.Dense(self.group_count, kernel_init=init, name="group_gate")

    def __call__(self, g: jax.Array, controls: RoutingControls) -> RouterOutput:
        """Routes N tokens given gate features ``g`` [N, Dg] (computed in f32)."""
        g = g.astype(jnp.float32)
        routable = controls.routable()  # [E]
        temp = controls.temperature
        logits = (self.expert_gate(g) + controls.bias) / temp  # [N, E]
        if self.group_count == 1:
            probs = masked_softmax(logits, routable)
        else:
            G, Eg = self.group_count, self.num_experts // self.group_count
            within = masked_softmax(logits.reshape(-1, G, Eg), routable.reshape(G, Eg))  # [N,G,Eg]
            group_ok = jnp.any(routable.reshape(G, Eg), axis=-1)  # [G]
            group_p = masked_softmax(self.group_gate(g) / temp, group_ok)  # [N, G]
            probs = (group_p[..., None] * within).reshape(-1, self.num_experts)  # [N, E]
        logits = jnp.where(routable, logits, NEG_INF)
        top_p, top_i = jax.lax.top_k(probs, self.top_k)  # [N, K]
        valid = top_p > 0
        weights = top_p / jnp.maximum(jnp.sum(top_p, axis=-1, keepdims=True), 1e-30)
        return RouterOutput(logits, probs, weights, top_i.astype(jnp.int32), valid)


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
