"""``SelfTeachingAdapter``: token embeddings -> LiquidMoE retrieval -> language core -> LM head.

Shapes: B batch, T tokens, D model width, V vocabulary, E experts.

The retrieval core routes every token through its top-k experts (the gate reads RoPE-rotated
embeddings when ``use_rope``, so routing can depend on position); the spiking language core
(SRWKV or LIF backend) mixes information over time; a linear head predicts the next token.

Two ways to run it, which agree:

* ``__call__(tokens [B, T], state)`` — the whole sequence at once (training, prompt ingestion);
* ``step(token [B], state)`` — one token with the recurrent state (generation): the cost per
  token does not grow with the context (the language core's state carries the position).

Parameters carry logical axis names for sharding (``aura.train.sharding`` maps them to mesh
axes): the embedding ``("vocab", "embed")``, the head ``("embed", "vocab")``, the experts
``("expert", "embed", "mlp")``. ``init`` therefore returns boxed leaves (``nn.Partitioned``);
``apply`` accepts boxed or plain params, and ``flax.linen.meta.unbox`` gives plain arrays.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aura.nn.language import SpikingLanguageCore
from aura.nn.moe import LiquidMoE, MoEAux, RoutingControls
from aura.nn.rope import apply_rope


def adapter_config() -> ml_collections.ConfigDict:
    """Defaults of the adapter; ``configs/pretrain.py`` presets override these."""
    c = ml_collections.ConfigDict()
    c.vocab_size = 4000
    c.dim = 256
    c.num_experts = 4
    c.expert_hidden = 512
    c.top_k = 2
    c.capacity_factor = 2.0
    c.moe_dispatch = "auto"  # auto | capacity | ragged | dense (aura.nn.moe.LiquidMoE.dispatch)
    c.lang_backend = "srwkv"
    c.num_layers = 4
    c.use_rope = True
    c.rope_max_len = 4096
    c.rope_base = 10000.0
    c.wkv_impl = "auto"  # auto (scan on CPU, chunked on GPU/TPU) | scan | assoc | chunked
    c.wkv_chunk = 16  # tokens per chunk of the chunked WKV
    c.dtype = "float32"
    return c


class SelfTeachingAdapter(nn.Module):
    """The language model of AURA; ``config`` is :func:`adapter_config` or an override."""

    config: ml_collections.ConfigDict

    def setup(self):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        self.embed = nn.Embed(
            c.vocab_size,
            c.dim,
            embedding_init=nn.with_logical_partitioning(
                nn.linear.default_embed_init, ("vocab", "embed")
            ),
            name="embed",
        )
        self.core = LiquidMoE(
            num_experts=c.num_experts,
            in_dim=c.dim,
            hidden_dim=c.expert_hidden,
            top_k=c.top_k,
            capacity_factor=c.capacity_factor,
            dispatch=c.get("moe_dispatch", "auto"),  # configs saved before the key: "auto"
            dtype=dtype,
            partition_params=True,
            name="core",
        )
        self.language = SpikingLanguageCore(
            lang_backend=c.lang_backend,
            num_layers=c.num_layers,
            dim=c.dim,
            use_rope=c.use_rope,
            rope_max_len=c.rope_max_len,
            rope_base=c.rope_base,
            wkv_impl=c.get("wkv_impl", "auto"),
            wkv_chunk=c.get("wkv_chunk", 16),
            dtype=dtype,
            name="language",
        )
        self.norm = nn.LayerNorm(name="norm")
        self.head = nn.Dense(
            c.vocab_size,
            dtype=dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.linear.default_kernel_init, ("embed", "vocab")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
            name="head",
        )

    def _positions(self, tokens: jax.Array, state) -> jax.Array:
        """[B, T] absolute positions: the state's position (0 without a state) onwards."""
        B, T = tokens.shape
        start = jnp.zeros((B,), jnp.int32) if state is None else state.position
        return start[:, None] + jnp.arange(T, dtype=jnp.int32)  # [B, T]

    def _gate_features(self, h: jax.Array, positions: jax.Array) -> jax.Array:
        c = self.config
        if not c.use_rope:
            return h
        return apply_rope(h, positions, max_len=c.rope_max_len, base=c.rope_base)

    def __call__(
        self, tokens: jax.Array, state=None, controls: RoutingControls | None = None
    ) -> tuple[jax.Array, object, MoEAux]:
        """tokens [B, T] (continuing ``state`` if given) -> (logits [B, T, V] f32, state, aux)."""
        h = self.embed(tokens).astype(jnp.dtype(self.config.dtype))  # [B, T, D]
        y, aux = self.core(h, controls, self._gate_features(h, self._positions(tokens, state)))
        out, state = self.language(h + y.astype(h.dtype), state)
        return self.head(self.norm(out)).astype(jnp.float32), state, aux

    def step(self, token: jax.Array, state, controls: RoutingControls | None = None):
        """token [B] -> (logits [B, V] f32, state): one recurrent step at constant cost."""
        logits, state, _ = self(token[:, None], state, controls)  # [B] -> [B, 1]
        return logits[:, 0], state

    def init_state(self, batch: int):
        return self.language.init_state(batch)

    def gate_weights(self, tokens: jax.Array, state=None, controls: RoutingControls | None = None):
        """Routing-only pass over tokens [B, T]: the RouterOutput (for analysis and zone heads)."""
        h = self.embed(tokens).astype(jnp.dtype(self.config.dtype))
        gate = self._gate_features(h, self._positions(tokens, state))
        return self.core.compute_gate_weights(h, controls, gate)
