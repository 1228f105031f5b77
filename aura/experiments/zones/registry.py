"""The brain-zone registry: what each zone's experts are, how they grow, freeze and are saved.

AURA organises its experts in five zones. Each zone keeps its own LiquidMoE preset (expert kind,
capacity, top-k, hidden width), growth schedule, freeze policy and checkpoint directory
(``<root>/<zone>/``), and — for the three controller zones — one small head that steers the
others at inference:

==============  ================================================  ==========================
zone            experts / role                                    artefact under <root>/<zone>
==============  ================================================  ==========================
hippocampus     memory experts (the MNIST POC's), grown 1->3->6   expert_<i>/
amygdala        affect: affect vector -> routing bias             bias_head/
hypothalamus    homeostasis: generation temperature, momentum     control_head/
thalamus        relay: routing centroids, inter-zone gate         gate_head/
language        the adapter's LiquidMoE retrieval experts         expert_<i>/ (+ the adapter)
==============  ================================================  ==========================

Freeze policies (what :func:`zone_controls` freezes): ``"none"`` (every expert trains),
``"grown"`` (when the zone grows, the experts that existed before are frozen: continual learning
without forgetting), ``"all"`` (the zone is consolidated; nothing trains). Passing
``freeze_experts=True`` freezes every active expert whatever the policy.

Pure Python and arrays: this module never touches files (the layout is ``layout.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from aura.brain import growth
from aura.nn.moe import EXPERT_KINDS, RoutingControls

__all__ = [
    "FREEZE_POLICIES",
    "ZONES",
    "ZONE_PRESETS",
    "ZoneSpec",
    "build_core_kwargs_for_zone",
    "fit_schedule",
    "get_zone",
    "parse_zones",
    "registry_from_config",
    "zone_controls",
]

FREEZE_POLICIES = ("none", "grown", "all")


@dataclasses.dataclass(frozen=True)
class ZoneSpec:
    """One zone's preset.

    Attributes:
      name: the zone's name (also its directory under the checkpoint root).
      role: one line on what the zone does.
      expert_kind: LiquidMoE expert kind ("mlp" or "conv1d").
      capacity: expert slots E (fixed; growth activates them).
      top_k: experts per token.
      hidden_mult: expert hidden width F = hidden_mult * D.
      growth_schedule: "epoch:active,..." (see ``aura.brain.growth``).
      freeze_policy: one of FREEZE_POLICIES.
      head: name of the zone's head directory ("" for zones that only have experts).
      capacity_factor: capacity-dispatch buffer size relative to a perfect balance.
    """

    name: str
    role: str
    expert_kind: str
    capacity: int
    top_k: int
    hidden_mult: int
    growth_schedule: str
    freeze_policy: str
    head: str = ""
    capacity_factor: float = 2.0

    def __post_init__(self):
        if self.expert_kind not in EXPERT_KINDS:
            raise ValueError(
                f"zone {self.name}: expert_kind={self.expert_kind!r}; valid: "
                f"{', '.join(EXPERT_KINDS)}"
            )
        if not 1 <= self.top_k <= self.capacity:
            raise ValueError(
                f"zone {self.name}: top_k={self.top_k} must be in [1, capacity={self.capacity}]"
            )
        if self.hidden_mult < 1:
            raise ValueError(f"zone {self.name}: hidden_mult={self.hidden_mult} must be >= 1")
        if self.freeze_policy not in FREEZE_POLICIES:
            raise ValueError(
                f"zone {self.name}: freeze_policy={self.freeze_policy!r}; valid: "
                f"{', '.join(FREEZE_POLICIES)}"
            )
        growth.parse_growth_schedule(self.growth_schedule, self.capacity)

    def hidden_dim(self, width: int) -> int:
        """Expert hidden width F for token width D = ``width``."""
        return self.hidden_mult * int(width)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (written into zone manifests)."""
        return dataclasses.asdict(self)


# The zone registry as data: ``configs/zones.py`` puts it in the pretrain_zones config (so a run
# can override any field, e.g. ``--config.registry.hippocampus.capacity=8``); this is the default.
ZONE_PRESETS: dict[str, dict[str, Any]] = {
    "hippocampus": dict(
        role="memory experts: the MNIST POC's LiquidMoE experts, grown 1 -> 3 -> 6",
        expert_kind="mlp", capacity=6, top_k=2, hidden_mult=2,
        growth_schedule="0:1,2:3,4:6", freeze_policy="grown",
    ),
    "amygdala": dict(
        role="affect: maps a valence/arousal/dominance vector to a routing bias",
        expert_kind="conv1d", capacity=2, top_k=1, hidden_mult=1,
        growth_schedule="0:1,1:2", freeze_policy="all", head="bias_head",
    ),
    "hypothalamus": dict(
        role="homeostasis: sets the generation temperature and the merit momentum",
        expert_kind="mlp", capacity=2, top_k=1, hidden_mult=1,
        growth_schedule="0:1", freeze_policy="all", head="control_head",
    ),
    "thalamus": dict(
        role="relay: routing centroids that bias the gate; decides which zones contribute",
        expert_kind="mlp", capacity=4, top_k=1, hidden_mult=1,
        growth_schedule="0:2,1:4", freeze_policy="none", head="gate_head",
    ),
    "language": dict(
        role="the SelfTeachingAdapter's LiquidMoE retrieval experts",
        expert_kind="mlp", capacity=8, top_k=2, hidden_mult=2,
        growth_schedule="0:4,2:8", freeze_policy="none",
    ),
}  # fmt: skip


def registry_from_config(presets: Mapping[str, Mapping[str, Any]]) -> dict[str, ZoneSpec]:
    """Zone name -> validated :class:`ZoneSpec` from config data (a dict or ConfigDict).

    Raises:
      ValueError: a bad field value (naming the zone and the field), or an unknown field.
    """
    out = {}
    fields = {f.name for f in dataclasses.fields(ZoneSpec)} - {"name"}
    for name, spec in dict(presets).items():
        spec = dict(spec)
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise ValueError(f"zone {name}: unknown fields {unknown}; valid: {sorted(fields)}")
        out[name] = ZoneSpec(name=name, **spec)
    return out


ZONES: dict[str, ZoneSpec] = registry_from_config(ZONE_PRESETS)


def get_zone(zone: str, registry: Mapping[str, ZoneSpec] | None = None) -> ZoneSpec:
    """The preset of ``zone`` (in ``registry``; default: :data:`ZONES`).

    Raises:
      ValueError: an unknown zone (the message lists the valid ones).
    """
    registry = ZONES if registry is None else registry
    if zone not in registry:
        raise ValueError(f"unknown zone {zone!r}; valid zones: {', '.join(registry)}")
    return registry[zone]


def parse_zones(spec: str, registry: Mapping[str, ZoneSpec] | None = None) -> tuple[str, ...]:
    """``"hippocampus,language"`` -> ``("hippocampus", "language")`` (validated, deduplicated).

    Raises:
      ValueError: an empty list or an unknown zone (naming the valid ones).
    """
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        valid = ", ".join(ZONES if registry is None else registry)
        raise ValueError(f"--zones={spec!r} names no zone; valid zones: {valid}")
    for name in names:
        get_zone(name, registry)
    return tuple(dict.fromkeys(names))


def build_core_kwargs_for_zone(
    zone: str,
    hidden_dim: int,
    freeze_experts: bool = False,
    registry: Mapping[str, ZoneSpec] | None = None,
) -> dict[str, Any]:
    """Everything needed to build and drive one zone's LiquidMoE core.

    Args:
      zone: a zone name (see ZONES).
      hidden_dim: the core's token width D (the expert hidden width is the zone's
        ``hidden_mult`` times it).
      freeze_experts: freeze every active expert of the zone (consolidated zone).

    Returns:
      ``{"moe": LiquidMoE kwargs, "controls": RoutingControls at epoch 0, "growth_schedule":
      str, "freeze_policy": str}``; use ``LiquidMoE(**kw["moe"])`` and pass ``kw["controls"]``.

    Raises:
      ValueError: unknown zone or ``hidden_dim < 1``.
    """
    spec = get_zone(zone, registry)
    if hidden_dim < 1:
        raise ValueError(f"hidden_dim={hidden_dim} must be >= 1")
    moe = dict(
        num_experts=spec.capacity,
        in_dim=int(hidden_dim),
        hidden_dim=spec.hidden_dim(hidden_dim),
        top_k=spec.top_k,
        expert_kind=spec.expert_kind,
        capacity_factor=spec.capacity_factor,
    )
    return {
        "moe": moe,
        "controls": zone_controls(zone, freeze_experts=freeze_experts, registry=registry),
        "growth_schedule": spec.growth_schedule,
        "freeze_policy": spec.freeze_policy,
    }


def zone_controls(
    zone: str,
    epoch: int = 0,
    *,
    freeze_experts: bool = False,
    active: int | None = None,
    schedule: str | None = None,
    registry: Mapping[str, ZoneSpec] | None = None,
) -> RoutingControls:
    """RoutingControls of ``zone`` at ``epoch``: growth schedule + freeze policy.

    Args:
      zone: a zone name.
      epoch: epoch of the growth schedule (ignored when ``active`` is given).
      freeze_experts: freeze every active expert.
      active: override the number of active experts.
      schedule: a growth schedule to follow instead of the zone's own (e.g. the zone's schedule
        compressed to a shorter run by :func:`fit_schedule`).

    Raises:
      ValueError: unknown zone, or ``active`` outside [1, capacity].
    """
    spec = get_zone(zone, registry)
    schedule = growth.parse_growth_schedule(schedule or spec.growth_schedule, spec.capacity)
    n = growth.active_at(schedule, epoch) if active is None else int(active)
    frozen = np.zeros((spec.capacity,), bool)
    if freeze_experts or spec.freeze_policy == "all":
        frozen[:n] = True
    elif spec.freeze_policy == "grown" and active is None:
        # Experts that existed before the latest growth are consolidated (frozen).
        last = max(e for e, _ in schedule if e <= max(epoch, 0))
        if last > 0:
            frozen[: growth.active_at(schedule, last - 1)] = True
    return RoutingControls.create(spec.capacity, n, frozen=frozen, top_k=None)


def fit_schedule(spec: str, epochs: int, capacity: int) -> str:
    """Compresses a growth schedule to ``epochs`` epochs and caps its counts at ``capacity``.

    ``"0:1,2:3,4:6"`` over 3 epochs becomes ``"0:1,1:3,2:6"``; over 1 epoch, ``"0:6"``; with
    capacity 4 over 5 epochs, ``"0:1,2:3,4:4"``. A schedule that fits is only normalised.

    Raises:
      ValueError: ``epochs < 1`` or a bad schedule.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    big = growth.parse_growth_schedule(spec, 1 << 30)
    schedule = tuple((e, min(n, capacity)) for e, n in big)  # a smaller model grows to its capacity
    span = schedule[-1][0] + 1
    if span <= epochs:
        return ",".join(f"{e}:{n}" for e, n in schedule)
    squeezed: dict[int, int] = {}
    for e, n in schedule:
        at = min(int(round(e * (epochs - 1) / max(span - 1, 1))), epochs - 1)
        squeezed[at] = max(squeezed.get(at, 0), n)
    return ",".join(f"{e}:{n}" for e, n in sorted(squeezed.items()))
