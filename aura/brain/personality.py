"""PersonalityEngine: traits plus per-batch signals -> per-batch routing/learning controls.

Four traits in [0, 1] shape how the mixture explores and consolidates:

* curiosity: explores more: a hotter gate and a bonus for under-used experts, stronger when
  routing has collapsed (low gate entropy);
* caution: leans on teachers: a cooler gate and a larger distillation weight, more so when the
  loss is rising;
* stability: consolidates: a slower merit average (higher momentum) that only loosens when the
  loss rises;
* sociability: shares work: a load-balancing bonus for under-used experts and a larger
  distillation weight.

`controls` is a pure, jit-safe function; each output is clipped to a documented range:

=================  ===============  ====================================================
control            range            meaning
=================  ===============  ====================================================
bias_logits [E]    [-2, 2]          added to gate logits; 0 for inactive experts
temperature        [0.5, 2.0]       gate softmax temperature (logits / temperature)
distill_alpha      [0.0, 1.0]       weight of the distillation term for students
merit_momentum     [0.5, 0.999]     momentum of `MeritBoard.update`
=================  ===============  ====================================================

At neutral traits (all 0.5) and neutral signals (flat loss, uniform routing) the controls are
bias 0, temperature 1, distill_alpha 0.5 and merit_momentum 0.9.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "RANGES",
    "PersonalityControls",
    "PersonalityEngine",
    "Signals",
    "Traits",
    "controls",
    "parse_traits",
]

RANGES = {
    "bias_logits": (-2.0, 2.0),
    "temperature": (0.5, 2.0),
    "distill_alpha": (0.0, 1.0),
    "merit_momentum": (0.5, 0.999),
}


class Traits(NamedTuple):
    """Personality traits, each in [0, 1] (0.5 is neutral)."""

    curiosity: float | jax.Array = 0.5
    caution: float | jax.Array = 0.5
    stability: float | jax.Array = 0.5
    sociability: float | jax.Array = 0.5


class Signals(NamedTuple):
    """Per-batch signals.

    Attributes:
      loss_trend: relative change of the recent loss, e.g. `(loss_fast_ema - loss_slow_ema) /
        loss_slow_ema`; positive means the loss is rising.
      gate_entropy: gate entropy normalised to [0, 1] (entropy / ln(active experts)).
      utilisation: optional `[E]` share of tokens per expert; `None` means uniform.
    """

    loss_trend: float | jax.Array = 0.0
    gate_entropy: float | jax.Array = 1.0
    utilisation: jax.Array | None = None


class PersonalityControls(NamedTuple):
    """Per-batch controls (ranges in `RANGES`)."""

    bias_logits: jax.Array  # [E]
    temperature: jax.Array  # []
    distill_alpha: jax.Array  # []
    merit_momentum: jax.Array  # []


def controls(
    traits: Traits,
    signals: Signals,
    num_experts: int,
    active_mask: jax.Array | None = None,
) -> PersonalityControls:
    """Maps traits and signals to this batch's controls (pure, jit-safe).

    Args:
      traits: trait values in [0, 1] (clipped).
      signals: this batch's signals.
      num_experts: expert capacity E (static).
      active_mask: optional boolean `[E]`; inactive experts get no bias and are excluded from
        the fair share.

    Returns:
      `PersonalityControls`, each clipped to its range in `RANGES`.
    """
    cur, cau, sta, soc = (jnp.clip(jnp.asarray(x, jnp.float32), 0.0, 1.0) for x in traits)
    trend = jnp.asarray(signals.loss_trend, jnp.float32)
    rising = jnp.tanh(10.0 * jnp.maximum(trend, 0.0))  # 0 (flat/falling) .. 1 (rising fast)
    collapse = 1.0 - jnp.clip(jnp.asarray(signals.gate_entropy, jnp.float32), 0.0, 1.0)

    # Hotter with curiosity (more so when routing collapsed), cooler with caution.
    log_temp = 0.6 * (cur - 0.5) * (1.0 + collapse) - 0.4 * (cau - 0.5)
    temperature = jnp.exp(log_temp)

    # Consolidate with stability; adapt faster when the loss rises and stability is low.
    merit_momentum = 0.9 + 0.18 * (sta - 0.5) - 0.2 * rising * (1.0 - sta)

    # Rely on teachers with caution and sociability, more when the loss rises.
    distill_alpha = 0.5 + 0.4 * (cau - 0.5) + 0.2 * (soc - 0.5) + 0.3 * rising * cau

    # Bonus for under-used experts, relative to the fair share among active experts.
    active = (
        jnp.ones((num_experts,), bool) if active_mask is None else jnp.asarray(active_mask, bool)
    )
    n_active = jnp.maximum(active.sum(), 1).astype(jnp.float32)
    fair = jnp.where(active, 1.0 / n_active, 0.0)
    util = fair if signals.utilisation is None else jnp.asarray(signals.utilisation, jnp.float32)
    deficit = (fair - util) * n_active  # 0 at the fair share, 1 for an unused expert
    strength = 2.0 * cur * collapse + 1.0 * soc
    bias = jnp.where(active, strength * deficit, 0.0)

    return PersonalityControls(
        bias_logits=jnp.clip(bias, *RANGES["bias_logits"]),
        temperature=jnp.clip(temperature, *RANGES["temperature"]),
        distill_alpha=jnp.clip(distill_alpha, *RANGES["distill_alpha"]),
        merit_momentum=jnp.clip(merit_momentum, *RANGES["merit_momentum"]),
    )


@dataclasses.dataclass(frozen=True)
class PersonalityEngine:
    """A fixed personality; `engine.controls(signals, E)` is `controls(engine.traits, ...)`."""

    traits: Traits = Traits()

    def __post_init__(self) -> None:
        for name, value in self.traits._asdict().items():
            if isinstance(value, int | float) and not 0.0 <= value <= 1.0:
                raise ValueError(f"trait {name}={value} must be in [0, 1]")

    def controls(
        self, signals: Signals, num_experts: int, active_mask: jax.Array | None = None
    ) -> PersonalityControls:
        """Controls for one batch; see the module-level `controls`."""
        return controls(self.traits, signals, num_experts, active_mask)


def parse_traits(spec: str) -> Traits:
    """Parses `"curiosity=0.8,caution=0.2"` (unnamed traits stay 0.5; empty -> neutral).

    Raises:
      ValueError: malformed text, an unknown trait (lists the valid ones) or a value outside
        [0, 1].
    """
    values: dict[str, float] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, sep, raw = (p.strip() for p in item.partition("="))
        if not sep:
            raise ValueError(f"personality {spec!r}: item {item!r} is not 'trait=value'")
        if name not in Traits._fields:
            raise ValueError(
                f"personality {spec!r}: unknown trait {name!r}; valid: {', '.join(Traits._fields)}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"personality {spec!r}: {raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"personality {spec!r}: {name}={value} must be in [0, 1]")
        values[name] = value
    return Traits(**values)
