"""Thalamus-mediated inter-zone routing and the thalamic gradient broadcaster.

Shapes: B batch, D query width, Z zones, O zone output width.

The thalamus decides how much each zone contributes to a step. It scores zones from a query
(for example the mean token embedding, or a row of the neural-signal bus) against per-zone
centroids, ``score_z = -scale * ||q - c_z||^2`` (:func:`centroid_scores`), keeps the top-k zones
and normalises their softmax (:func:`route_zones`): the other zones get a weight of exactly 0.

The broadcaster scales each zone's gradient by its routing weight and gives exactly zero
gradient to zones that were not routed, so zones specialise on what the thalamus sends them
instead of all learning everything. Zone-local losses (auxiliary or self-supervised terms each
zone computes on its own) would otherwise update every zone on every sample; the broadcaster is
applied to those gradients, on top of whatever the combined output's gradient already carries.
It comes in two forms:

* :func:`gradient_gate`, per sample, inside the loss: the identity on a zone's output whose
  backward pass multiplies sample b's cotangent by ``weights[b, z]`` (exactly 0 where the zone
  was not routed, even for a non-finite cotangent). The joint multi-zone step
  (``aura.experiments.zones.joint_step``) uses it on every zone-local loss.
* :func:`broadcast_gradients`, per batch, on gradient pytrees already computed: each zone's
  gradient times its share of the batch, ``w_z = mean_B weights[b, z]``.

:func:`balance_bias` is the thalamus' reading of the neural-signal bus: a zone whose running
share of the routing is above ``1/Z`` gets a negative score bias (and one below, a positive
one), so routing stays spread over the zones without an auxiliary loss.

Everything is a pure, jit-safe function over arrays and pytrees keyed by zone name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from aura.nn.moe.router import masked_softmax

__all__ = [
    "balance_bias",
    "broadcast_gradients",
    "centroid_scores",
    "combine_zones",
    "gradient_gate",
    "route_zones",
    "zone_shares",
]


def centroid_scores(query: jax.Array, centroids: jax.Array, scale: float | jax.Array = 1.0):
    """``-scale * ||query - c_z||^2``: query [..., D], centroids [Z, D] -> scores [..., Z]."""
    if query.shape[-1] != centroids.shape[-1]:
        raise ValueError(f"query width {query.shape[-1]} != centroid width {centroids.shape[-1]}")
    q = query.astype(jnp.float32)
    c = centroids.astype(jnp.float32)
    # ||q - c||^2 = |q|^2 - 2 q.c + |c|^2, one einsum for the cross term.
    cross = jnp.einsum("...d,zd->...z", q, c)  # [..., Z]
    d2 = jnp.sum(q * q, -1, keepdims=True) - 2.0 * cross + jnp.sum(c * c, -1)  # [..., Z]
    return -jnp.asarray(scale, jnp.float32) * jnp.maximum(d2, 0.0)


def route_zones(
    scores: jax.Array,
    top_k: int = 1,
    temperature: float = 1.0,
    mask: jax.Array | None = None,
    renormalize: bool = True,
) -> jax.Array:
    """Zone weights [..., Z] from scores [..., Z]: softmax over the top-k (others exactly 0).

    Args:
      scores: zone scores (higher is better), e.g. from :func:`centroid_scores`.
      top_k: zones kept per query.
      temperature: softmax temperature (> 0).
      mask: optional bool [Z]: zones that may be routed at all.
      renormalize: True: the kept weights sum to 1 (softmax over the top-k only). False: the
        kept zones keep their probability under the softmax over every allowed zone (Switch
        style), so with ``top_k=1`` the weight still carries a gradient to the scores.

    Raises:
      ValueError: ``top_k`` outside [1, Z] or a non-positive temperature.
    """
    Z = scores.shape[-1]
    if not 1 <= top_k <= Z:
        raise ValueError(f"top_k={top_k} must be in [1, {Z} zones]")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    s = scores.astype(jnp.float32) / temperature
    allowed = jnp.ones((Z,), bool) if mask is None else jnp.asarray(mask, bool)
    s = jnp.where(allowed, s, -jnp.inf)
    kth = jax.lax.top_k(s, top_k)[0][..., -1:]  # [..., 1] the k-th best score
    keep = (s >= kth) & allowed  # ties at the k-th score are all kept
    if renormalize:
        return masked_softmax(s, keep)
    return jnp.where(keep, masked_softmax(s, allowed), 0.0)


def zone_shares(weights: jax.Array) -> jax.Array:
    """Each zone's share of a batch: weights [Z] -> [Z]; [B, Z] -> mean over B."""
    w = jnp.asarray(weights, jnp.float32)
    return w if w.ndim == 1 else jnp.mean(w.reshape(-1, w.shape[-1]), axis=0)  # [..., Z] -> [Z]


def combine_zones(outputs: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted sum of zone outputs: outputs [Z, B, O], weights [B, Z] or [Z] -> [B, O]."""
    w = jnp.asarray(weights, outputs.dtype)
    if w.ndim == 1:
        return jnp.einsum("zbo,z->bo", outputs, w)  # [B, O]
    return jnp.einsum("zbo,bz->bo", outputs, w)  # [B, O]


def _weights_by_zone(
    weights: Mapping[str, Any] | jax.Array, zones: Sequence[str] | None
) -> dict[str, jax.Array]:
    if isinstance(weights, Mapping):
        return {k: jnp.asarray(v, jnp.float32).reshape(()) for k, v in weights.items()}
    if zones is None:
        raise ValueError("weights given as an array need `zones` (the zone order of its last axis)")
    shares = zone_shares(weights)
    if shares.shape[0] != len(zones):
        raise ValueError(f"weights cover {shares.shape[0]} zones but {len(zones)} zones are named")
    return {z: shares[i] for i, z in enumerate(zones)}


def broadcast_gradients(
    grads: Mapping[str, Any],
    weights: Mapping[str, Any] | jax.Array,
    zones: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Scales each zone's gradient pytree by its routing weight; non-routed zones get exactly 0.

    Args:
      grads: zone name -> gradient pytree.
      weights: zone name -> scalar weight, or an array [Z] / [B, Z] of routing weights in the
        order of ``zones`` (per-sample weights are averaged over the batch).
      zones: the zone order of an array ``weights``.

    Returns:
      zone name -> the scaled gradient pytree (same structure and dtypes). A zone whose weight
      is 0 gets zeros, even where its gradient was not finite.

    Raises:
      ValueError: a zone in ``grads`` without a weight.
    """
    w = _weights_by_zone(weights, zones)
    missing = sorted(set(grads) - set(w))
    if missing:
        raise ValueError(f"no routing weight for zones {missing}; weights cover {sorted(w)}")

    def scale(g, wz):
        return jnp.where(wz > 0, g * wz.astype(g.dtype), jnp.zeros_like(g))

    return {z: jax.tree.map(lambda g, wz=w[z]: scale(g, wz), tree) for z, tree in grads.items()}


@jax.custom_vjp
def gradient_gate(x: jax.Array, weight: jax.Array) -> jax.Array:
    """Identity on a zone's output ``x`` [B, ...]; the backward pass scales sample b by weight[b].

    Args:
      x: the zone's per-sample output (any trailing shape).
      weight: [B] the zone's routing weight per sample (treated as a constant: it receives a zero
        gradient, so the gate's training comes from the combined output, not from this path).

    Returns:
      ``x`` unchanged. Its cotangent becomes ``weight[b] * g[b]`` where ``weight[b] > 0`` and
      exactly 0 elsewhere (also for a NaN/inf cotangent of an unrouted sample).
    """
    return x


def _gate_fwd(x, weight):
    return x, weight


def _gate_bwd(weight, g):
    w = weight.reshape(weight.shape + (1,) * (g.ndim - weight.ndim)).astype(g.dtype)  # [B, 1..]
    return jnp.where(w > 0, g * w, jnp.zeros_like(g)), jnp.zeros_like(weight)


gradient_gate.defvjp(_gate_fwd, _gate_bwd)


def balance_bias(
    shares: jax.Array, seen: jax.Array | None = None, gain: float | jax.Array = 1.0
) -> jax.Array:
    """Score bias [Z] that pushes zone routing towards a uniform share.

    ``bias_z = -gain * Z * (share_z - 1/Z)``: 0 at a perfect balance, ``-gain * (Z - 1)`` for a
    zone that takes everything. Zones not yet ``seen`` (no share published) get 0.

    Args:
      shares: [Z] each zone's running routing share (e.g. the bus' ``routing_weight`` EMA).
      seen: optional bool [Z]: which shares are real.
      gain: bias strength (0 disables it).
    """
    s = jnp.asarray(shares, jnp.float32)
    Z = s.shape[-1]
    bias = -jnp.asarray(gain, jnp.float32) * Z * (s - 1.0 / Z)  # [Z]
    return bias if seen is None else jnp.where(jnp.asarray(seen, bool), bias, 0.0)
