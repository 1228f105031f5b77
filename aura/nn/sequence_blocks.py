"""Sequence blocks of the mixture hybrid: an LSTM state network, an encoder-decoder
Transformer for time series, and a draft scorer (cross-attention of tokens to a plan latent).

* `RecurrentNetwork`: an LSTM over z [B, T, Z] giving per-step state log-probabilities
  ``emissions [B, T, S]`` (log p(state_t | z_<=t), a filtering "recognition" network) and
  learned transition log-probabilities ``transitions [S, S]`` (row-normalised).
* `TimeSeriesTransformer`: pre-LN encoder over ``src [B, L, Din]`` and causal decoder over
  ``tgt [B, T, Din]`` with cross-attention to the encoder output, projected to ``output_dim``.
* `DraftScorer`: token embedding + causal decoder layers cross-attending to a plan latent
  ``[B, P, Z]`` (or [B, Z]); `__call__` gives next-token logits and
  `draft_log_likelihood` the autoregressive log-likelihood of a draft under them.

Shapes: B batch, T time/tokens, L source length, P plan slots, Z latent width, D model width,
H heads, S states, V vocabulary.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "DecoderLayer",
    "DraftScorer",
    "EncoderLayer",
    "RecurrentNetwork",
    "TimeSeriesTransformer",
    "causal_mask",
    "draft_log_likelihood",
]


def causal_mask(t: int) -> jax.Array:
    """Bool [1, 1, T, T] attention mask (query i sees keys <= i)."""
    return jnp.tril(jnp.ones((t, t), jnp.bool_))[None, None]


class RecurrentNetwork(nn.Module):
    """LSTM state network: z [B, T, Z] -> (emissions [B, T, S], transitions [S, S]), log-probs."""

    hidden_dim: int
    num_states: int

    @nn.compact
    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim), name="lstm")(z)  # [B, T, F]
        emissions = jax.nn.log_softmax(nn.Dense(self.num_states, name="state_emissions")(h))
        trans = self.param("transition_logits", nn.initializers.normal(1.0), (self.num_states,) * 2)
        return emissions, jax.nn.log_softmax(trans, axis=-1)


class _MLP(nn.Module):
    dim: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.dim, name="fc_out")(nn.gelu(nn.Dense(self.hidden, name="fc_in")(x)))


class EncoderLayer(nn.Module):
    """Pre-LN self-attention + MLP block: x [B, T, D] -> [B, T, D]."""

    dim: int
    num_heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        h = nn.LayerNorm(name="ln1")(x)
        x = x + nn.MultiHeadDotProductAttention(self.num_heads, name="attn")(h, h, mask=mask)
        return x + _MLP(self.dim, self.mlp_ratio * self.dim, name="mlp")(nn.LayerNorm()(x))


class DecoderLayer(nn.Module):
    """Pre-LN causal self-attention, cross-attention to `memory` [B, L, D], MLP."""

    dim: int
    num_heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, memory: jax.Array) -> jax.Array:
        h = nn.LayerNorm(name="ln1")(x)
        mask = causal_mask(x.shape[1])
        x = x + nn.MultiHeadDotProductAttention(self.num_heads, name="self_attn")(h, h, mask=mask)
        h = nn.LayerNorm(name="ln2")(x)
        x = x + nn.MultiHeadDotProductAttention(self.num_heads, name="cross_attn")(h, memory)
        return x + _MLP(self.dim, self.mlp_ratio * self.dim, name="mlp")(nn.LayerNorm()(x))


class TimeSeriesTransformer(nn.Module):
    """Encoder-decoder Transformer: (src [B, L, Din], tgt [B, T, Din]) -> [B, T, output_dim].

    The decoder is causal: output t depends on tgt[:, :t+1] and the whole source.
    """

    d_model: int
    nhead: int
    num_layers: int
    output_dim: int
    max_len: int = 4096

    @nn.compact
    def __call__(self, src: jax.Array, tgt: jax.Array) -> jax.Array:
        if self.d_model % self.nhead:
            raise ValueError(f"d_model={self.d_model} must be divisible by nhead={self.nhead}")
        proj = nn.Dense(self.d_model, name="input_proj")
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.d_model))
        mem = proj(src) + pos[: src.shape[1]]
        for i in range(self.num_layers):
            mem = EncoderLayer(self.d_model, self.nhead, name=f"enc{i}")(mem)
        mem = nn.LayerNorm(name="enc_ln")(mem)
        y = proj(tgt) + pos[: tgt.shape[1]]
        for i in range(self.num_layers):
            y = DecoderLayer(self.d_model, self.nhead, name=f"dec{i}")(y, mem)
        return nn.Dense(self.output_dim, name="output_proj")(nn.LayerNorm(name="dec_ln")(y))


class DraftScorer(nn.Module):
    """Next-token logits of a token draft, cross-attending to a plan latent.

    ``__call__(tokens [B, T], plan [B, P, Z] or [B, Z]) -> logits [B, T, V]``: logits[:, t]
    predict token t from the start token and tokens[:, :t] (inputs are shifted right by one).
    """

    vocab_size: int
    dim: int
    num_heads: int
    num_layers: int = 1
    max_len: int = 512
    start_token: int = 0

    @nn.compact
    def __call__(self, tokens: jax.Array, plan: jax.Array) -> jax.Array:
        if plan.ndim == 2:
            plan = plan[:, None, :]  # [B, Z] -> [B, 1, Z]
        b, t = tokens.shape
        start = jnp.full((b, 1), self.start_token, tokens.dtype)
        inputs = jnp.concatenate([start, tokens[:, :-1]], axis=1)  # [B, T] shifted right
        emb = nn.Embed(self.vocab_size, self.dim, name="token_embedding")(inputs)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.dim))
        memory = nn.Dense(self.dim, name="plan_proj")(plan)  # [B, P, D]
        x = emb + pos[:t]
        for i in range(self.num_layers):
            x = DecoderLayer(self.dim, self.num_heads, name=f"dec{i}")(x, memory)
        return nn.Dense(self.vocab_size, name="to_vocab")(nn.LayerNorm(name="ln")(x))


def draft_log_likelihood(
    logits: jax.Array, tokens: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Autoregressive log-likelihood per draft [B]: sum_t log p(tokens_t | ...) over valid t."""
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
    if mask is not None:
        logp = logp * mask
    return jnp.sum(logp, axis=-1)
