"""ZoneBrain: several brain zones trained jointly, the thalamus deciding which zone handles what.

Shapes: B batch, D feature width, P oscillators, Z zones, E a zone's expert capacity, C classes.

A shared conv stem (the POC's) turns a digit into D features. The thalamus scores each zone
against a learned centroid, ``-scale · ||h - c_z||² + balance_bias_z``, and routes every sample
to its top-k zones (``aura.nn.thalamus``). Each zone is a column with its own phasor
bank, spiking attention, LiquidMoE (built from the zone's registry preset, so zones differ in
expert kind, capacity and top-k) and classifier head; the output is the routing-weighted sum of
the zone heads.

Zones talk through the neural-signal bus (``aura.nn.bus``), which the caller passes in (it
lives in the train step's state) and updates from :class:`ZoneBrainOutput` after the step:

* phasor: zone z's gate also reads the mean phasor summary the *other* zones published;
* attention: lateral inhibition — zone z's input is damped on the features the other zones'
  spiking attention selected (``h · (1 - lateral · mean_{z'≠z} gains_{z'})``), pushing zones
  towards different features;
* statistics: the thalamus reads each zone's running routing share and adds
  :func:`~aura.nn.thalamus.balance_bias`.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aura.models.mnist_poc import ConvStem
from aura.nn import bus as bus_lib
from aura.nn import thalamus as tr
from aura.nn.moe import LiquidMoE, MoEAux, RoutingControls
from aura.nn.phasor import PhasorBank
from aura.nn.spiking import SpikingAttention

_ROUTING_WEIGHT = bus_lib.STATS.index("routing_weight")


def default_config() -> ml_collections.ConfigDict:
    """Hyper-parameters of the joint multi-zone model."""
    c = ml_collections.ConfigDict()
    c.zones = ("hippocampus", "amygdala", "hypothalamus", "language")
    c.stem_channels = (16, 32)
    c.feature_dim = 64
    c.phasor_oscillators = 8
    c.phasor_steps = 8
    c.attention_k = 48
    c.attention_steps = 4
    c.num_classes = 10
    c.zone_top_k = 1  # zones per sample
    c.zone_temperature = 1.0
    c.centroid_scale = 1.0  # the thalamus' score scale (on unit-normalised features)
    c.balance_gain = 2.0  # bus -> thalamus balancing bias (0: off)
    c.lateral = 0.5  # bus -> lateral inhibition between zones (0: off)
    # zone -> its LiquidMoE keyword arguments (expert kind, capacity, top-k, widths): filled from
    # the zone registry by ``aura.experiments.zones.joint.model_config``.
    c.zone_cores = ml_collections.ConfigDict()
    return c


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """A few-second variant of :func:`default_config` (tests, smoke runs); ``overrides`` win."""
    c = default_config()
    c.update(stem_channels=(4, 8), feature_dim=16, phasor_oscillators=3, attention_k=8)
    c.update(overrides)
    return c


def bus_widths(c: ml_collections.ConfigDict) -> dict[str, int]:
    """The bus sizes this model publishes: init_bus(**bus_widths(c)) makes a fitting bus."""
    capacity = max(zone_core(c, z)["num_experts"] for z in c.zones)
    return dict(
        num_zones=len(c.zones),
        phasor_dim=2 * c.phasor_oscillators,
        attention_dim=c.feature_dim,
        num_experts=capacity,
    )


def zone_core(c: ml_collections.ConfigDict, zone: str) -> dict:
    """The LiquidMoE keyword arguments of ``zone`` from the config's ``zone_cores``.

    Raises:
      ValueError: the config has no entry for ``zone``.
    """
    cores = c.get("zone_cores") or {}
    if zone not in cores:
        raise ValueError(
            f"the ZoneBrain config has no zone_cores entry for zone {zone!r} (has "
            f"{sorted(cores)}); build it with aura.experiments.zones.joint.model_config"
        )
    return dict(cores[zone])


class ColumnOutput(NamedTuple):
    """One zone column: logits [B, C], aux (its MoE), phasor [2P] and attention [D] summaries,
    top_expert [B] (each sample's first expert in the zone's gate)."""

    logits: jax.Array
    aux: MoEAux
    phasor: jax.Array
    attention: jax.Array
    top_expert: jax.Array


class ZoneColumn(nn.Module):
    """One zone: phasor bank + spiking attention -> the zone's LiquidMoE -> classifier head."""

    zone: str
    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, h, controls: RoutingControls, inhibition, phasor_context) -> ColumnOutput:
        c = self.config
        x = h * (1.0 - inhibition)  # [B, D] lateral inhibition from the other zones
        phasor = PhasorBank(c.phasor_oscillators, steps=c.phasor_steps, summary=True)(x)  # [B, 2P]
        gated, gains = SpikingAttention(k=c.attention_k, steps=c.attention_steps)(x)  # [B, D] x2
        context = jnp.broadcast_to(phasor_context, (x.shape[0], phasor_context.shape[-1]))
        gate_features = jnp.concatenate([phasor, gains, context], axis=-1)  # [B, 4P + D]
        moe = LiquidMoE(**zone_core(c, self.zone), name="core")
        y, aux = moe(gated, controls, gate_features)
        top = moe.compute_gate_weights(gated, controls, gate_features).indices[:, 0]  # [B]
        z = nn.LayerNorm(name="norm")(gated + y)
        logits = nn.Dense(c.num_classes, name="head")(z)  # [B, C]
        return ColumnOutput(logits, aux, jnp.mean(phasor, 0), jnp.mean(gains, 0), top)


class ZoneBrainOutput(NamedTuple):
    """logits [B, C] (combined); zone_logits [Z, B, C]; weights [B, Z] (thalamic routing);
    probs [B, Z] (the thalamus' softmax over all zones); zone_bias [Z] (from the bus);
    columns: one ColumnOutput per zone, in the config's zone order."""

    logits: jax.Array
    zone_logits: jax.Array
    weights: jax.Array
    probs: jax.Array
    zone_bias: jax.Array
    columns: tuple


class ZoneBrain(nn.Module):
    """The joint multi-zone model; ``config`` is :func:`default_config` (or an override)."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(
        self, images: jax.Array, controls: tuple, bus: bus_lib.NeuralBus
    ) -> ZoneBrainOutput:
        """images [B, 28, 28, 1]; controls: one RoutingControls per zone; bus: the step's bus."""
        c = self.config
        Z = len(c.zones)
        if len(controls) != Z:
            raise ValueError(f"{len(controls)} RoutingControls for {Z} zones {tuple(c.zones)}")
        if bus.count.shape[0] != Z:
            raise ValueError(f"the bus carries {bus.count.shape[0]} zones, the model has {Z}")
        h = ConvStem(tuple(c.stem_channels), c.feature_dim, name="stem")(images)  # [B, D]
        # The thalamus: unit-normalised features against learned centroids (+ the bus' balance).
        q = h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + 1e-6)  # [B, D]
        centroids = self.param("centroids", nn.initializers.normal(1.0), (Z, c.feature_dim))
        cn = centroids / (jnp.linalg.norm(centroids, axis=-1, keepdims=True) + 1e-6)  # [Z, D]
        bias = tr.balance_bias(
            bus.stats[:, _ROUTING_WEIGHT], bus.seen[:, _ROUTING_WEIGHT], c.balance_gain
        )  # [Z]
        scores = tr.centroid_scores(q, cn, c.centroid_scale) + bias  # [B, Z]
        weights = tr.route_zones(scores, c.zone_top_k, c.zone_temperature, renormalize=False)
        probs = jax.nn.softmax(scores / c.zone_temperature, axis=-1)  # [B, Z]
        # What each zone reads from the others on the bus (the previous step's signals).
        others = (1.0 - jnp.eye(Z)) / max(Z - 1, 1)  # [Z, Z] mean over the other zones
        inhibition = c.lateral * (others @ bus.attention)  # [Z, D]
        phasor_context = others @ bus.phasor  # [Z, 2P]
        columns = tuple(
            ZoneColumn(zone, c, name=zone)(h, controls[i], inhibition[i], phasor_context[i])
            for i, zone in enumerate(c.zones)
        )
        zone_logits = jnp.stack([col.logits for col in columns])  # [Z, B, C]
        logits = tr.combine_zones(zone_logits, weights)  # [B, C]
        return ZoneBrainOutput(logits, zone_logits, weights, probs, bias, columns)
