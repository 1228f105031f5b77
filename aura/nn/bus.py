"""The neural-signal bus: what zones tell each other, as plain arrays in the step's state.

Shapes: Z zones, P phasor summary width, A attention summary width, S zone statistics, E expert
capacity (the widest zone's).

Each zone *publishes* after its step: a phasor summary (e.g. the mean of its phasor-bank
features), an attention summary (its spiking-attention gains), a few scalar statistics and its
experts' load; any zone (the thalamus first) *reads* the others before its next step. The bus is
a NamedTuple of fixed-shape arrays, so it rides in a jitted step's carry (or a ``lax.scan``
state) and checkpoints with orbax like any other state; zones are addressed by index (the order
of the caller's zone tuple; :func:`zone_index` maps names), which may be a traced value.

Statistics (``STATS``, in this order along the last axis of ``stats``) are exponential moving
averages, set directly the first time a zone publishes each one (``seen`` records which):
``gate_entropy`` (nats), ``routed_accuracy`` (accuracy of the samples the zone's experts
handled), ``loss`` and ``routing_weight`` (the thalamus' share for the zone). ``utilisation`` is
each expert's *lifetime* utilisation: the running mean of its load over every publish of the
zone that carried one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["STATS", "NeuralBus", "init_bus", "publish", "read", "zone_analytics", "zone_index"]

STATS = ("gate_entropy", "routed_accuracy", "loss", "routing_weight")


class NeuralBus(NamedTuple):
    """Bus state (all arrays)."""

    phasor: jax.Array  # f32 [Z, P] latest phasor summary per zone
    attention: jax.Array  # f32 [Z, A] latest attention-gain summary per zone
    stats: jax.Array  # f32 [Z, S] EMA of STATS per zone
    utilisation: jax.Array  # f32 [Z, E] lifetime (running-mean) expert load per zone
    seen: jax.Array  # bool [Z, S] which statistics each zone has published
    load_count: jax.Array  # int32 [Z] publishes that carried a load
    count: jax.Array  # int32 [Z] publishes per zone


def init_bus(num_zones: int, phasor_dim: int, attention_dim: int, num_experts: int) -> NeuralBus:
    """An empty bus for ``num_zones`` zones.

    Raises:
      ValueError: a size below 1.
    """
    sizes = dict(
        num_zones=num_zones,
        phasor_dim=phasor_dim,
        attention_dim=attention_dim,
        num_experts=num_experts,
    )
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    z = num_zones
    return NeuralBus(
        phasor=jnp.zeros((z, phasor_dim), jnp.float32),
        attention=jnp.zeros((z, attention_dim), jnp.float32),
        stats=jnp.zeros((z, len(STATS)), jnp.float32),
        utilisation=jnp.zeros((z, num_experts), jnp.float32),
        seen=jnp.zeros((z, len(STATS)), bool),
        load_count=jnp.zeros((z,), jnp.int32),
        count=jnp.zeros((z,), jnp.int32),
    )


def zone_index(zones: Sequence[str], name: str) -> int:
    """Index of zone ``name`` in the bus' zone order.

    Raises:
      ValueError: ``name`` is not one of ``zones``.
    """
    if name not in zones:
        raise ValueError(f"zone {name!r} is not on this bus; its zones: {', '.join(zones)}")
    return list(zones).index(name)


def _row(value, width: int, what: str) -> jax.Array:
    value = jnp.asarray(value, jnp.float32).reshape(-1)
    if value.shape[0] != width:
        raise ValueError(f"{what} has width {value.shape[0]} but the bus carries {width}")
    return value


def publish(
    bus: NeuralBus,
    zone: int | jax.Array,
    *,
    phasor: jax.Array | None = None,
    attention: jax.Array | None = None,
    stats: Mapping[str, float | jax.Array] | None = None,
    load: jax.Array | None = None,
    decay: float | Mapping[str, float] = 0.9,
) -> NeuralBus:
    """Zone ``zone`` publishes its signals; returns the new bus (jit-safe, ``zone`` may be traced).

    Args:
      bus: the current bus.
      zone: the publishing zone's index.
      phasor: [P] phasor summary (replaces the zone's previous one).
      attention: [A] attention-gain summary (replaces the previous one).
      stats: some of ``STATS`` -> scalar; each is folded into the zone's EMA with ``decay``
        (set directly the first time); the others, and any given as NaN (e.g. the routed
        accuracy of a zone that received no sample this step), are left alone.
      load: [E'] expert load (E' <= E; padded with zeros), folded into the lifetime mean.
      decay: EMA decay of the statistics, in [0, 1): one for all, or per statistic name
        (statistics not named decay at 0.9).

    Raises:
      ValueError: a width that does not match the bus, an unknown statistic, a bad decay.
    """
    if not isinstance(decay, Mapping):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay} must be in [0, 1)")
        decay = dict.fromkeys(STATS, decay)
    per_stat = dict(decay)
    for name, d in per_stat.items():
        if name not in STATS:
            raise ValueError(f"decay for unknown statistic {name!r}; valid: {', '.join(STATS)}")
        if not 0.0 <= d < 1.0:
            raise ValueError(f"decay={d} ({name}) must be in [0, 1)")
    decay = jnp.asarray([per_stat.get(k, 0.9) for k in STATS], jnp.float32)  # [S]
    new = bus
    if phasor is not None:
        new = new._replace(
            phasor=new.phasor.at[zone].set(_row(phasor, bus.phasor.shape[1], "phasor"))
        )
    if attention is not None:
        row = _row(attention, bus.attention.shape[1], "attention")
        new = new._replace(attention=new.attention.at[zone].set(row))
    if stats:
        unknown = sorted(set(stats) - set(STATS))
        if unknown:
            raise ValueError(f"unknown bus statistics {unknown}; valid: {', '.join(STATS)}")
        old, seen = bus.stats[zone], bus.seen[zone]  # [S], [S]
        value = jnp.stack([jnp.asarray(stats.get(k, 0.0), jnp.float32).reshape(()) for k in STATS])
        given = jnp.asarray([k in stats for k in STATS]) & ~jnp.isnan(value)  # [S]
        ema = jnp.where(seen, decay * old + (1.0 - decay) * value, value)  # first value: as is
        new = new._replace(
            stats=new.stats.at[zone].set(jnp.where(given, ema, old)),
            seen=new.seen.at[zone].set(seen | given),
        )
    if load is not None:
        load = jnp.asarray(load, jnp.float32).reshape(-1)
        E = bus.utilisation.shape[1]
        if load.shape[0] > E:
            raise ValueError(f"load has {load.shape[0]} experts but the bus carries {E}")
        load = jnp.pad(load, (0, E - load.shape[0]))  # [E]
        n = bus.load_count[zone].astype(jnp.float32)
        util = bus.utilisation[zone] + (load - bus.utilisation[zone]) / (n + 1.0)
        new = new._replace(
            utilisation=new.utilisation.at[zone].set(util),
            load_count=new.load_count.at[zone].add(1),
        )
    return new._replace(count=new.count.at[zone].add(1))


def read(bus: NeuralBus, zone: int | jax.Array) -> dict[str, jax.Array]:
    """One zone's row of every field: phasor [P], attention [A], stats [S], utilisation [E]."""
    return {
        "phasor": bus.phasor[zone],
        "attention": bus.attention[zone],
        "stats": bus.stats[zone],
        "seen": bus.seen[zone],
        "utilisation": bus.utilisation[zone],
        "count": bus.count[zone],
    }


def zone_analytics(bus: NeuralBus, zones: Sequence[str]) -> dict[str, dict]:
    """JSON-friendly per-zone analytics: statistics by name, lifetime utilisation, publishes.

    Raises:
      ValueError: ``zones`` does not name every bus row.
    """
    if len(zones) != bus.count.shape[0]:
        raise ValueError(f"{len(zones)} zone names for a bus of {bus.count.shape[0]} zones")
    host = jax.device_get(bus)
    out = {}
    for i, name in enumerate(zones):
        stats = {
            k: float(np.asarray(host.stats[i, j])) if host.seen[i, j] else None
            for j, k in enumerate(STATS)
        }
        out[name] = {
            **stats,
            "lifetime_utilisation": (
                np.asarray(host.utilisation[i]).round(6).tolist() if host.load_count[i] else None
            ),
            "publishes": int(host.count[i]),
        }
    return out
