"""``MocaNet``: token embeddings -> MOCA layers (router, slot memory, experts) -> a task head.

Shapes: B batch, T tokens, D width, V vocabulary, L labels.

Built from a config (:func:`moca_config`; presets in ``configs/moca.py``). Two heads:

* ``num_classes == 0``: a per-token vocabulary head, logits [B, T, V] (copy/recall);
* ``num_classes > 0``: a sequence classifier over the final token states pooled over the
  mask: softmax weights from a learned per-token score (``pooling="attention"``, else equal)
  plus an optional given bias per token (``pool_bias``; the text task passes each token's log
  inverse document frequency, so rare informative tokens weigh more as in TF-IDF), logits
  [B, L] (text classification). With ``wide_buckets > 0`` the classifier is wide and deep:
  a linear layer over hashed sparse features (``wide``, e.g. TF-IDF word n-grams) adds its
  logits to the MOCA ("deep") ones, so the model keeps what a linear bag-of-n-grams model
  knows (whole identifiers such as ``socket``, which WordPiece splits) and the deep path only
  has to learn what that misses.

The carry is a tuple with one :class:`MocaCarry` per layer; ``initial_carry`` builds it (with
optional per-sequence counter offsets, used for randomised positions in training) and every
call returns the updated one, so sequences can be streamed in chunks. ``summarize`` turns the
per-layer routing outputs into the scalars the training step logs and the budget loss uses.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aura.nn.moca import MocaAux, MocaCarry, MocaLayer, compute_fraction
from aura.nn.moe import RoutingControls
from aura.nn.wide import SparseLinear

LAYER_FIELDS = (
    "num_experts",
    "expert_hidden",
    "top_k",
    "expert_min_ratio",
    "num_slots",
    "slot_top_k",
    "slot_min_ratio",
    "key_dim",
    "value_dim",
    "position_key_dim",
    "router_hidden",
    "num_counters",
    "position_period",
    "location_prior",
    "use_memory",
    "sharpness",
    "capacity_factor",
    "dispatch",
)


def moca_config() -> ml_collections.ConfigDict:
    """Defaults of the model (the original MOCA-Net sizes); presets override them."""
    c = ml_collections.ConfigDict()
    c.vocab_size = 0  # set by the task (copy symbols, or the tokenizer's piece count)
    c.num_classes = 0  # 0: per-token vocabulary head; > 0: sequence classifier
    c.dim = 128
    # Token table width (0: the model width). A wider given table (e.g. MiniLM's 384-wide word
    # embeddings, loaded by the text task) is projected to ``dim``; ``freeze_embed`` keeps it fixed.
    c.embed_dim, c.freeze_embed = 0, False
    c.num_layers = 1
    c.num_experts, c.expert_hidden, c.top_k, c.expert_min_ratio = 4, 256, 2, 0.0
    c.num_slots, c.slot_top_k, c.slot_min_ratio = 64, 16, 0.0
    c.key_dim, c.value_dim, c.position_key_dim, c.router_hidden = 64, 128, 32, 64
    c.num_counters, c.position_period, c.location_prior = 4, 64, 4.0
    c.separator_ids = ()  # token ids after which the counters restart (copy: the delimiter)
    c.use_memory = True
    c.temperature = 1.0
    c.sharpness = 10.0
    c.capacity_factor = 2.0
    c.dispatch = "auto"
    c.pooling = "attention"  # classifier pooling: "attention" (learned score) or "mean"
    # Wide-and-deep classifier: > 0 adds a linear layer over this many hashed sparse input
    # features (``aura.nn.wide``) to the logits; ``deep_scale`` weighs the MOCA logits (0 turns
    # the deep path off: the wide-only ablation).
    c.wide_buckets, c.deep_scale = 0, 1.0
    return c


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field for values the model cannot be built with."""
    if c.vocab_size < 2:
        raise ValueError(f"model.vocab_size = {c.vocab_size} must be >= 2")
    if c.num_classes < 0 or c.num_classes == 1:
        raise ValueError(f"model.num_classes = {c.num_classes} must be 0 (tokens) or >= 2")
    if c.embed_dim < 0:
        raise ValueError(f"model.embed_dim = {c.embed_dim} must be >= 0 (0: the model width)")
    for name in ("dim", "num_layers", "num_experts", "num_slots", "key_dim", "value_dim"):
        if c[name] < 1:
            raise ValueError(f"model.{name} = {c[name]} must be >= 1")
    if not 1 <= c.top_k <= c.num_experts:
        raise ValueError(f"model.top_k = {c.top_k} must be in [1, num_experts={c.num_experts}]")
    if not 1 <= c.slot_top_k <= c.num_slots:
        raise ValueError(
            f"model.slot_top_k = {c.slot_top_k} must be in [1, num_slots={c.num_slots}]"
        )
    if c.pooling not in ("attention", "mean"):
        raise ValueError(f"model.pooling = {c.pooling!r}; valid: attention, mean")
    if c.temperature <= 0:
        raise ValueError(f"model.temperature = {c.temperature} must be > 0")
    if c.get("wide_buckets", 0) < 0 or (c.get("wide_buckets", 0) and not c.num_classes):
        raise ValueError(
            f"model.wide_buckets = {c.wide_buckets} must be >= 0, and > 0 only for a classifier"
        )


class MocaNet(nn.Module):
    """The MOCA network; ``config`` is :func:`moca_config` or an override."""

    config: ml_collections.ConfigDict

    def setup(self):
        c = self.config
        validate_config(c)
        self.embed = nn.Embed(c.vocab_size, c.embed_dim or c.dim, name="embed")
        if c.embed_dim:
            self.embed_proj = nn.Dense(c.dim, name="embed_proj")
        kw = {k: c[k] for k in LAYER_FIELDS}
        self.layers = [MocaLayer(dim=c.dim, name=f"layer_{i}", **kw) for i in range(c.num_layers)]
        self.norm = nn.LayerNorm(name="norm")
        out = c.num_classes or c.vocab_size
        self.head = nn.Dense(out, name="head")
        if c.num_classes and c.pooling == "attention":
            self.pool_score = nn.Dense(1, name="pool_score")
        if c.get("wide_buckets", 0):
            self.wide = SparseLinear(c.wide_buckets, c.num_classes, name="wide")

    def controls(self) -> RoutingControls:
        """Default expert routing controls: all experts active, the configured temperature."""
        c = self.config
        return RoutingControls.create(c.num_experts, temperature=c.temperature, top_k=c.top_k)

    def initial_carry(
        self, batch_size: int, offsets: jax.Array | None = None
    ) -> tuple[MocaCarry, ...]:
        """Fresh per-layer state; ``offsets`` [B] start the counters (randomised positions)."""
        return tuple(layer.initial_carry(batch_size, offsets) for layer in self.layers)

    def __call__(
        self,
        tokens: jax.Array,
        carry: tuple[MocaCarry, ...] | None = None,
        controls: RoutingControls | None = None,
        mask: jax.Array | None = None,
        offsets: jax.Array | None = None,
        pool_bias: jax.Array | None = None,
        wide: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, tuple[MocaCarry, ...], tuple[MocaAux, ...]]:
        """Runs tokens [B, T] (int) through the network.

        Args:
          tokens: token ids [B, T].
          carry: per-layer state (default: ``initial_carry(B, offsets)``).
          controls: expert routing controls (default: :meth:`controls`).
          mask: bool [B, T] real tokens (statistics, and the classifier's pooling).
          offsets: counter offsets [B] for a fresh carry (ignored when ``carry`` is given).
          pool_bias: f32 [B, T] added to the classifier's pooling scores (e.g. the log inverse
            document frequency of each token, a TF-IDF-like prior; classifier only).
          wide: (bucket ids int [B, K], weights f32 [B, K]) for a ``wide_buckets`` model
            (default: none, the wide path then adds 0).

        Returns:
          (logits [B, T, V] or [B, L], the new carry, per-layer MocaAux).
        """
        B = tokens.shape[0]
        carry = self.initial_carry(B, offsets) if carry is None else carry
        controls = self.controls() if controls is None else controls
        x = self.embed_tokens(tokens)  # [B, T, D]
        separators = None
        if self.config.separator_ids:
            separators = jnp.isin(tokens, jnp.asarray(self.config.separator_ids))  # [B, T]
        new_carry, auxes = [], []
        for layer, layer_carry in zip(self.layers, carry, strict=True):
            x, layer_carry, aux = layer(x, layer_carry, controls, mask, separators)
            new_carry.append(layer_carry)
            auxes.append(aux)
        x = self.norm(x)
        if self.config.num_classes:
            logits = self.head(self._pool(x, mask, pool_bias))  # [B, L]
            return self._add_wide(logits, wide), tuple(new_carry), tuple(auxes)
        return self.head(x), tuple(new_carry), tuple(auxes)  # [B, T, V]

    def _add_wide(self, logits: jax.Array, wide) -> jax.Array:
        """Deep logits [B, L] (scaled by ``deep_scale``) plus the wide path's, if any."""
        c = self.config
        logits = logits * c.get("deep_scale", 1.0)
        if not c.get("wide_buckets", 0):
            return logits
        if wide is None:  # no features given: an empty row (still creates the parameters)
            empty = jnp.zeros((logits.shape[0], 1), jnp.int32)
            wide = (empty, empty.astype(jnp.float32))
        return logits + self.wide(*wide)  # [B, L]

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        """Token ids [B, T] -> features [B, T, D]: the table (fixed if frozen), projected."""
        c = self.config
        x = self.embed(tokens)  # [B, T, embed_dim or D]
        if c.freeze_embed:  # no table gradient is computed (a 30,522-row scatter-add saved);
            x = jax.lax.stop_gradient(x)  # the optimizer's set_to_zero also stops weight decay
        return self.embed_proj(x) if c.embed_dim else x

    def _pool(self, x: jax.Array, mask: jax.Array | None, bias: jax.Array | None) -> jax.Array:
        """[B, T, D] -> [B, D]: softmax over the mask of (learned score + bias), or the mean."""
        m = jnp.ones(x.shape[:2], bool) if mask is None else mask.astype(bool)  # [B, T]
        s = jnp.zeros(x.shape[:2], jnp.float32) if bias is None else bias.astype(jnp.float32)
        if self.config.pooling == "attention":
            s = s + self.pool_score(x)[..., 0]  # [B, T]
        s = jnp.where(m, s, -1e30)
        w = jnp.where(m, jnp.exp(s - jnp.max(s, axis=1, keepdims=True)), 0.0)
        w = w / jnp.maximum(w.sum(1, keepdims=True), 1e-30)
        return jnp.einsum("btd,bt->bd", x, w)  # [B, D]


def summarize(auxes: tuple[MocaAux, ...]) -> dict[str, jax.Array]:
    """Layer-averaged routing scalars: hard and expected compute, balances, z-loss, drops.

    Keys: expert_fraction, slot_fraction, compute (hard, what ran), expected_compute (the
    differentiable surrogate), expert_balance, slot_balance, router_z_loss, dropped_fraction;
    expert_load [E] and slot_load [M] (layer means) for usage plots.
    """

    def mean(values):
        return jnp.mean(jnp.stack(list(values)), axis=0)

    zero = jnp.zeros((), jnp.float32)
    has_slots = auxes[0].slots is not None
    slot = (lambda f: mean(f(a.slots) for a in auxes)) if has_slots else (lambda f: zero)
    e_frac = mean(a.experts.active_fraction for a in auxes)
    e_soft = mean(a.experts.expected_fraction for a in auxes)
    s_frac = slot(lambda s: s.active_fraction)
    s_soft = slot(lambda s: s.expected_fraction)
    out = {
        "expert_fraction": e_frac,
        "slot_fraction": s_frac,
        "compute": compute_fraction(e_frac, s_frac),
        "expected_compute": compute_fraction(e_soft, s_soft),
        "expert_balance": mean(a.experts.balance for a in auxes),
        "slot_balance": slot(lambda s: s.balance),
        "router_z_loss": mean(a.router_z_loss for a in auxes),
        "dropped_fraction": mean(a.dropped_fraction for a in auxes),
        "expert_load": mean(a.experts.load for a in auxes),
    }
    if has_slots:
        out["slot_load"] = slot(lambda s: s.load)
    return out
