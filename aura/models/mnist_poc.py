"""The MNIST expert POC: conv stem -> phasor map -> spiking attention -> LiquidMoE -> classifier.

Shapes: B batch, D feature width, P oscillators, E expert capacity, C classes.

The stem turns a 28x28 digit into D features. A :class:`PhasorBank` reads them as drive for P
damped oscillators (temporal-resonance features) and :class:`SpikingAttention` keeps the k most
active features (LIF spike rates, k-WTA). The gate of the :class:`LiquidMoE` reads these bio-signal
features; the experts refine the gated features (residual) and a linear head classifies.

Two top-down heads bias the gate logits (both are additive biases on :class:`RoutingControls`):

* thalamic feedback: ``thalamic_scale · tanh(W · mean_B(features))``, one global bias per batch;
* predictive gating: predicts each expert's utility for a sample ([B, E], trained towards the
  routing weights of correctly classified samples) and adds ``predictive_weight ·`` its centred
  value.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aura.nn.moe import LiquidMoE, MoEAux, RoutingControls
from aura.nn.phasor import PhasorBank
from aura.nn.spiking import SpikingAttention


def default_config() -> ml_collections.ConfigDict:
    """Model hyper-parameters of the POC (the command's flags override the controller ones)."""
    c = ml_collections.ConfigDict()
    c.stem_channels = (32, 64)
    c.feature_dim = 128
    c.phasor_oscillators = 16
    c.phasor_steps = 8
    c.attention_k = 96
    c.attention_steps = 4
    c.num_experts = 6
    c.expert_hidden = 256
    c.top_k = 2
    c.group_count = 1
    c.expert_kind = "mlp"
    c.dispatch = "auto"
    c.capacity_factor = 3.0  # = num_experts / top_k: C = B, dropless even with one active expert
    c.num_classes = 10
    c.thalamic_scale = 1.0
    c.predictive_weight = 0.0
    c.dtype = "float32"
    return c


class POCOutput(NamedTuple):
    """logits [B, C]; aux: MoEAux; gate: RouterOutput of the batch; utility: [B, E] predictions;
    thalamic: [E] thalamic bias; expert_features: [B, D] input of the MoE (for EMC)."""

    logits: jax.Array
    aux: MoEAux
    gate: object
    utility: jax.Array
    thalamic: jax.Array
    expert_features: jax.Array
    gate_features: jax.Array


class ConvStem(nn.Module):
    """Two conv+pool blocks and a projection: [B, 28, 28, 1] -> [B, D]."""

    channels: tuple[int, ...]
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        for i, ch in enumerate(self.channels):
            kernel = (5, 5) if i == 0 else (3, 3)
            x = nn.relu(nn.Conv(ch, kernel, dtype=self.dtype, name=f"conv{i}")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))  # halves H and W
        x = x.reshape(x.shape[0], -1)  # [B, H, W, C] -> [B, H·W·C]
        return nn.relu(nn.Dense(self.features, dtype=self.dtype, name="proj")(x))


class MnistPOC(nn.Module):
    """The POC model; ``config`` is :func:`default_config` (or an override of it)."""

    config: ml_collections.ConfigDict

    def setup(self):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        if not 1 <= c.attention_k <= c.feature_dim:
            raise ValueError(f"attention_k = {c.attention_k} must be in [1, {c.feature_dim}]")
        self.stem = ConvStem(tuple(c.stem_channels), c.feature_dim, dtype)
        self.phasor = PhasorBank(c.phasor_oscillators, steps=c.phasor_steps, summary=True)
        self.attention = SpikingAttention(k=c.attention_k, steps=c.attention_steps)
        self.thalamus = nn.Dense(c.num_experts, kernel_init=nn.initializers.zeros, name="thalamus")
        self.predictor = nn.Dense(c.num_experts, name="predictor")
        self.core = LiquidMoE(
            num_experts=c.num_experts,
            in_dim=c.feature_dim,
            hidden_dim=c.expert_hidden,
            top_k=c.top_k,
            group_count=c.group_count,
            expert_kind=c.expert_kind,
            dispatch=c.dispatch,
            capacity_factor=c.capacity_factor,
            dtype=dtype,
        )
        self.norm = nn.LayerNorm()
        self.head = nn.Dense(c.num_classes, name="head")

    def features(self, images: jax.Array):
        """[B, 28, 28, 1] -> (gated features [B, D], gate features [B, 2P + D])."""
        h = self.stem(images)  # [B, D]
        phasor = self.phasor(h.astype(jnp.float32))  # [B, 2P]
        gated, gains = self.attention(h.astype(jnp.float32))  # [B, D], [B, D]
        return gated, jnp.concatenate([phasor, gains], axis=-1)

    def __call__(self, images: jax.Array, controls: RoutingControls) -> POCOutput:
        c = self.config
        gated, gate_features = self.features(images)
        context = jnp.mean(jax.lax.stop_gradient(gated), axis=0)  # [D] global context
        thalamic = c.thalamic_scale * jnp.tanh(self.thalamus(context))  # [E]
        utility = jax.nn.sigmoid(self.predictor(jax.lax.stop_gradient(gated)))  # [B, E]
        predictive = c.predictive_weight * (utility - jnp.mean(utility, -1, keepdims=True))
        bias = controls.bias + thalamic + jax.lax.stop_gradient(predictive)  # [B, E]
        ctl = controls.replace(bias=jnp.broadcast_to(bias, (gated.shape[0], c.num_experts)))
        y, aux = self.core(gated, ctl, gate_features)
        gate = self.core.compute_gate_weights(gated, ctl, gate_features)
        z = self.norm(gated + y.astype(jnp.float32))
        return POCOutput(self.head(z), aux, gate, utility, thalamic, gated, gate_features)

    def expert_outputs(self, feats: jax.Array, controls: RoutingControls) -> jax.Array:
        """All experts on MoE inputs ``feats`` [B, D] -> [E, B, D] (for EMC and distillation)."""
        return self.core.expert_outputs(feats, controls)

    def distill(self, feats, teacher, student, controls) -> jax.Array:
        return self.core.distill_loss(feats, teacher, student, controls)

    def committee_distill(self, feats, student, controls, gate_features) -> jax.Array:
        return self.core.committee_distill_loss(feats, student, controls, gate_features)
