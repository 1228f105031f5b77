"""A BERT-family bidirectional encoder and sentence pooling, as pure Flax linen modules.

The layout is the original post-LN BERT (Devlin et al., 2019) that sentence-transformers models
such as all-MiniLM-L6-v2 use:

    h = LN(word[ids] + position[t] + token_type[type_ids])
    per layer:  h = LN(h + Attention(h));   h = LN(h + Dense(GELU(Dense(h))))

Attention is multi-head, bidirectional, with biases on every projection; padded keys are masked
with a large negative score. GELU is the exact (erf) form that BERT's ``"gelu"`` means. Dropout
is omitted: the module is an inference encoder (training would add it behind a flag).

Parameter names follow the Hugging Face module tree (``embeddings/word_embeddings``,
``layer_0/attention/query``, ``layer_0/intermediate``, ...) so a checkpoint maps onto them by
renaming and transposing Dense kernels; that mapping (which reads files) lives in
`aura.models.sentence_encoder`, not here.

`pool` and `l2_normalize` turn token states into sentence embeddings the way a
sentence-transformers ``Pooling`` + ``Normalize`` pipeline does.

Shapes: B batch, T tokens, D width, H heads, Dh = D / H head width, F intermediate width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["POOLING_MODES", "BertConfig", "BertEncoder", "l2_normalize", "pool"]

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
_NEG = -1e30  # masked attention score; finite so a fully padded row stays NaN-free


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture hyper-parameters (the fields of a Hugging Face ``BertConfig``)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not supported; "
                f"use one of {sorted(_ACTIVATIONS)}"
            )
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


def _layer_norm(cfg: BertConfig, name: str) -> nn.LayerNorm:
    # Two-pass variance (E[(x - mean)^2]) like PyTorch's LayerNorm, not E[x^2] - E[x]^2.
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_fast_variance=False, name=name)


class BertEmbeddings(nn.Module):
    """Word + absolute position + token-type embeddings, then LayerNorm."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        cfg = self.config
        t = input_ids.shape[1]
        if t > cfg.max_position_embeddings:
            raise ValueError(f"sequence length {t} > max_position_embeddings")
        word = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(input_ids)
        pos = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(
            jnp.arange(t)[None, :]
        )  # [1, T, D]
        typ = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(
            token_type_ids
        )
        return _layer_norm(cfg, "LayerNorm")(word + pos + typ).astype(self.dtype)


class BertAttention(nn.Module):
    """Bidirectional multi-head self-attention with output projection and post-LN residual."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, key_bias: jax.Array) -> jax.Array:
        cfg = self.config
        b, t, d = h.shape
        heads = cfg.num_attention_heads
        dh = d // heads
        dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)
        q = dense("query")(h).reshape(b, t, heads, dh)  # [B, T, D] -> [B, T, H, Dh]
        k = dense("key")(h).reshape(b, t, heads, dh)  # [B, T, D] -> [B, T, H, Dh]
        v = dense("value")(h).reshape(b, t, heads, dh)  # [B, T, D] -> [B, T, H, Dh]
        # [B, T, H, Dh] x [B, S, H, Dh] -> [B, H, T, S]  (S: key positions, same length as T)
        scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32)
        scores = scores / math.sqrt(dh) + key_bias[:, None, None, :]
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        ctx = jnp.einsum("bhts,bshd->bthd", probs, v)  # -> [B, T, H, Dh]
        ctx = ctx.reshape(b, t, d)  # [B, T, H, Dh] -> [B, T, D]
        out = dense("output")(ctx)
        return _layer_norm(cfg, "output_LayerNorm")(h + out).astype(self.dtype)


class BertLayer(nn.Module):
    """One encoder layer: attention block, then the GELU MLP block, both post-LN."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, key_bias: jax.Array) -> jax.Array:
        cfg = self.config
        h = BertAttention(cfg, self.dtype, name="attention")(h, key_bias)
        f = nn.Dense(cfg.intermediate_size, dtype=self.dtype, name="intermediate")(h)  # [B, T, F]
        f = _ACTIVATIONS[cfg.hidden_act](f)
        f = nn.Dense(cfg.hidden_size, dtype=self.dtype, name="output")(f)  # [B, T, D]
        return _layer_norm(cfg, "output_LayerNorm")(h + f).astype(self.dtype)


class BertEncoder(nn.Module):
    """The encoder stack: ``(input_ids [B, T], attention_mask [B, T]) -> hidden [B, T, D]``.

    Attributes:
      config: the architecture.
      dtype: compute dtype (parameters stay float32).
    """

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Encodes token ids; padded positions (mask 0) are never attended to.

        Args:
          input_ids: ``[B, T]`` int token ids.
          attention_mask: ``[B, T]`` 1 for real tokens, 0 for padding.
          token_type_ids: ``[B, T]`` segment ids; default all zeros.

        Returns:
          ``[B, T, D]`` final hidden states (``self.dtype``).
        """
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        key_bias = jnp.where(attention_mask > 0, 0.0, _NEG).astype(jnp.float32)  # [B, T]
        h = BertEmbeddings(self.config, self.dtype, name="embeddings")(input_ids, token_type_ids)
        for i in range(self.config.num_hidden_layers):
            h = BertLayer(self.config, self.dtype, name=f"layer_{i}")(h, key_bias)
        return h


def pool(hidden: jax.Array, attention_mask: jax.Array, mode: str = "mean") -> jax.Array:
    """Pools token states ``[B, T, D]`` into sentence vectors ``[B, D]`` (float32).

    Matches sentence-transformers' ``Pooling``: ``mean`` divides the masked sum by the token count
    (clamped at 1e-9), ``mean_sqrt_len`` by its square root, ``max`` takes the masked maximum and
    ``cls`` the first token.

    Raises:
      ValueError: on an unknown mode.
    """
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode {mode!r} must be one of {POOLING_MODES}")
    h = hidden.astype(jnp.float32)
    if mode == "cls":
        return h[:, 0]
    m = attention_mask.astype(jnp.float32)[:, :, None]  # [B, T, 1]
    if mode == "max":
        return jnp.max(jnp.where(m > 0, h, -1e9), axis=1)
    total = jnp.sum(h * m, axis=1)  # [B, D]
    count = jnp.maximum(jnp.sum(m, axis=1), 1e-9)  # [B, 1]
    return total / (jnp.sqrt(count) if mode == "mean_sqrt_len" else count)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||_2, eps)`` along the last axis (PyTorch's ``F.normalize``)."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, eps)
