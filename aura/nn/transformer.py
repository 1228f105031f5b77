"""A causal Transformer language model: the baseline the SRWKV language core is measured against.

Pre-LN decoder blocks (GPT-2 / LLaMA layout without the extras):

    x = x + Attention(LN1(x));   x = x + MLP(LN2(x))

* Attention: multi-head, causal, rotary positions (`aura.nn.rope.apply_rope` on q and k, shared
  by the heads), softmax in float32, no biases on the projections.
* MLP: ``Dense(F) -> GELU -> Dense(D)`` with biases.
* LM: token embedding -> L blocks -> final LayerNorm -> bias-free head to V logits. The blocks
  are one `nn.scan` over layers, so their parameters are stacked on a leading [L] axis
  (``params["blocks"]["attn"]["qkv"]["kernel"]`` is [L, D, 3D]).

Two ways to run it, which agree:

* ``__call__(tokens [B, T]) -> logits [B, T, V]`` — the full causal forward (training).
* ``prefill(tokens [B, T], cache)`` then ``step(token [B], cache, position)`` — generation with
  a key/value cache. The cache (`KVCache`) is preallocated at a fixed ``max_len`` and shaped
  ``[L, B, max_len, H, Dh]``, so every step has the same shapes (one compile). A step attends
  over the slots ``0 .. position - 1`` (the rest are masked, whatever they hold) and the token
  itself, then writes the token's keys and values at ``position`` with one
  `lax.dynamic_update_slice` per cache after all layers have read it (in place when the caller
  donates the cache; per-layer writes between the reads made XLA copy the whole cache, about 3x
  slower at max_len 2115 on CPU). Because the shapes are static, the attention reads all
  ``max_len`` slots: a step's cost is set by ``max_len``, not by how much of the cache is
  filled. Size the cache to the context you need.

Shapes: B batch, T tokens, D width, H heads, Dh = D / H head width, F MLP width, L layers,
M cache slots (max_len), V vocabulary.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from aura.nn.rope import apply_rope, check_rope_config

_NEG = -1e30  # masked score: finite, so a fully masked row could never produce NaN


class KVCache(NamedTuple):
    """Preallocated keys and values, each [L, B, M, H, Dh] (slots past the position are unused)."""

    k: jax.Array
    v: jax.Array


def init_kv_cache(
    num_layers: int, batch: int, max_len: int, num_heads: int, head_dim: int, dtype: Any
) -> KVCache:
    """An all-zero cache [L, B, M, H, Dh] for keys and values."""
    if max_len < 1:
        raise ValueError(f"KV cache max_len must be >= 1, got {max_len}")
    shape = (num_layers, batch, max_len, num_heads, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax attention in float32.

    Args:
      q: [B, T, H, Dh]; k, v: [B, M, H, Dh]; mask: [B or 1, T, M] True where allowed.

    Returns:
      [B, T, H, Dh] in q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("bthd,bmhd->bhtm", q, k).astype(jnp.float32) * scale  # [B, H, T, M]
    scores = jnp.where(mask[:, None], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhtm,bmhd->bthd", probs, v)  # [B, T, H, Dh]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE; a full form and a cached one-token form."""

    dim: int
    num_heads: int
    rope_max_len: int
    rope_base: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        dense = lambda n, name: nn.Dense(
            n, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        self.qkv = dense(3 * self.dim, "qkv")
        self.out = dense(self.dim, "out")

    def _project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, ...]:
        """x [B, T, D], positions [B, T] -> rotated q, rotated k, v, each [B, T, H, Dh]."""
        b, t, _ = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b, t, 3, h, self.dim // h)  # [B, T, 3D] -> [B, T, 3, H, Dh]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        rope = dict(max_len=self.rope_max_len, base=self.rope_base)
        return apply_rope(q, positions, **rope), apply_rope(k, positions, **rope), v

    def __call__(
        self, x: jax.Array, positions: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Full causal form: x [B, T, D] -> (y [B, T, D], k, v [B, T, H, Dh])."""
        b, t, d = x.shape
        q, k, v = self._project(x, positions)
        causal = jnp.tril(jnp.ones((t, t), jnp.bool_))[None]  # [1, T, T]
        y = _attend(q, k, v, causal).reshape(b, t, d)  # [B, T, H, Dh] -> [B, T, D]
        return self.out(y), k, v

    def step(
        self, x: jax.Array, k_cache: jax.Array, v_cache: jax.Array, position: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One token against this layer's cache.

        Args:
          x: [B, 1, D] at `position` (an int32 scalar).
          k_cache, v_cache: [B, M, H, Dh]; slots 0 .. position - 1 hold the earlier tokens
            (the rest are ignored, whatever they hold).

        Returns:
          (y [B, 1, D], k, v [B, 1, H, Dh] of this token, for the caller to write at
          `position`). Scores against the cache are a multiply-and-reduce over [B, M, H, Dh]
          rather than a dot, so the cache is read once in its own layout (no transposed copy).
        """
        b, _, d = x.shape
        m = k_cache.shape[1]
        q, k, v = self._project(x, jnp.broadcast_to(position, (b, 1)))  # [B, 1, H, Dh]
        scale = 1.0 / math.sqrt(q.shape[-1])
        s_old = jnp.sum((q * k_cache).astype(jnp.float32), axis=-1) * scale  # [B, M, H]
        s_old = jnp.where((jnp.arange(m) < position)[None, :, None], s_old, _NEG)
        s_new = jnp.sum((q * k).astype(jnp.float32), axis=-1) * scale  # [B, 1, H]
        probs = jax.nn.softmax(jnp.concatenate([s_old, s_new], axis=1), axis=1)  # [B, M + 1, H]
        probs = probs.astype(v.dtype)[..., None]  # [B, M + 1, H, 1]
        y = jnp.sum(probs[:, :m] * v_cache, axis=1) + probs[:, m] * v[:, 0]  # [B, H, Dh]
        return self.out(y.reshape(b, 1, d)), k, v  # [B, H, Dh] -> [B, 1, D]


class TransformerBlock(nn.Module):
    """Pre-LN block (attention and a GELU MLP, each on a residual), written as an `nn.scan` body.

    ``__call__(x, cache, position) -> (x, (k, v))``: x [B, T, D] is the carry; position is the
    int32 offset of the first token. With ``cache = None`` it is the full causal form and
    returns this layer's k, v [B, T, H, Dh]; with ``cache = (k_cache, v_cache)`` ([B, M, H, Dh],
    this layer's slice of the KV cache) x holds one token (T = 1) attended against the cache,
    and it returns that token's k, v [B, 1, H, Dh].
    """

    dim: int
    num_heads: int
    mlp_hidden: int
    rope_max_len: int
    rope_base: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, cache: tuple[jax.Array, jax.Array] | None, position: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        ln = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        dense = lambda n, name: nn.Dense(
            n, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        attn = CausalSelfAttention(
            self.dim,
            self.num_heads,
            self.rope_max_len,
            self.rope_base,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="attn",
        )
        h = ln("ln1")(x)
        if cache is None:
            b, t, _ = x.shape
            positions = position + jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            y, k, v = attn(h, positions)
        else:
            y, k, v = attn.step(h, cache[0], cache[1], position)
        x = x + y
        x = x + dense(self.dim, "fc_out")(
            jax.nn.gelu(dense(self.mlp_hidden, "fc_in")(ln("ln2")(x)))
        )
        return x, (k, v)


class TransformerLM(nn.Module):
    """Causal Transformer LM with RoPE and a static-shape KV cache for generation.

    Attributes:
      vocab_size: V (>= 1).
      num_layers: L (>= 1).
      dim: width D (>= 1, divisible by num_heads, D / H even for RoPE).
      num_heads: H (>= 1).
      mlp_hidden: F, the MLP width; None: 4 * D.
      rope_max_len: positions must be < this (concrete positions raise ValueError).
      rope_base: RoPE frequency base (> 1).
      dtype: computation dtype (softmax in float32); param_dtype: parameter dtype.
    """

    vocab_size: int
    num_layers: int = 4
    dim: int = 256
    num_heads: int = 4
    mlp_hidden: int | None = None
    rope_max_len: int = 4096
    rope_base: float = 10000.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_layers", "dim", "num_heads"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"TransformerLM {name} must be an int >= 1, got {val!r}")
        if self.dim % self.num_heads:
            raise ValueError(
                f"TransformerLM dim = {self.dim} must be divisible by num_heads = {self.num_heads}"
            )
        check_rope_config(self.rope_max_len, self.dim // self.num_heads, self.rope_base)
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise ValueError(f"TransformerLM mlp_hidden must be >= 1, got {self.mlp_hidden}")
        super().__post_init__()

    @property
    def head_dim(self) -> int:
        """Dh = D / H."""
        return self.dim // self.num_heads

    def setup(self) -> None:
        pd = self.param_dtype
        self.embed = nn.Embed(self.vocab_size, self.dim, param_dtype=pd, name="embed")
        # The L blocks are one scanned module with parameters stacked on a leading [L] axis:
        # one compiled body, and a generation step reads each layer's cache slice as a scan
        # input, so XLA updates a donated cache in place (no copy of [L, B, M, H, Dh]).
        blocks = nn.scan(
            TransformerBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast),
            length=self.num_layers,
        )
        self.blocks = blocks(
            self.dim,
            self.num_heads,
            self.mlp_hidden or 4 * self.dim,
            self.rope_max_len,
            self.rope_base,
            dtype=self.dtype,
            param_dtype=pd,
            name="blocks",
        )
        self.ln_out = nn.LayerNorm(dtype=self.dtype, param_dtype=pd, name="ln_out")
        self.head = nn.Dense(
            self.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=pd, name="head"
        )

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty cache for `batch` sequences of up to `max_len` tokens (no params needed)."""
        if max_len > self.rope_max_len:
            raise ValueError(
                f"KV cache max_len = {max_len} is beyond rope_max_len = {self.rope_max_len}"
            )
        return init_kv_cache(
            self.num_layers, batch, max_len, self.num_heads, self.head_dim, self.dtype
        )

    def _logits(self, x: jax.Array) -> jax.Array:
        return self.head(self.ln_out(x)).astype(jnp.float32)

    def _forward(self, tokens: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """tokens [B, T] -> (logits [B, T, V] f32, (k, v) [L, B, T, H, Dh])."""
        if tokens.ndim != 2:
            raise ValueError(f"TransformerLM tokens must be [B, T], got {tokens.shape}")
        t = tokens.shape[1]
        if t > self.rope_max_len:
            raise ValueError(
                f"sequence length T = {t} is beyond rope_max_len = {self.rope_max_len}"
            )
        x = self.embed(tokens).astype(self.dtype)  # [B, T, D]
        x, kv = self.blocks(x, None, jnp.int32(0))
        return self._logits(x), kv

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Full causal forward: tokens [B, T] (positions 0 .. T - 1) -> logits [B, T, V] f32."""
        return self._forward(tokens)[0]

    def prefill(self, tokens: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """Runs the prompt [B, T] at positions 0 .. T - 1 and writes its keys/values to the cache.

        Returns:
          (logits [B, T, V] f32, cache with slots 0 .. T - 1 filled); continue with
          ``step(next_token, cache, position=T)``.
        """
        t, m = tokens.shape[1], cache.k.shape[2]
        if t > m:
            raise ValueError(f"prompt length T = {t} is beyond the cache's max_len {m}")
        logits, (k, v) = self._forward(tokens)  # k, v: [L, B, T, H, Dh]
        k = lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), (0, 0, 0, 0, 0))
        v = lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), (0, 0, 0, 0, 0))
        return logits, KVCache(k, v)

    def step(
        self, token: jax.Array, cache: KVCache, position: int | jax.Array
    ) -> tuple[jax.Array, KVCache]:
        """One token per sequence with the KV cache.

        Args:
          token: [B] ids.
          cache: from `init_cache`, `prefill` or `step`, [L, B, M, H, Dh] leaves; slots
            0 .. position - 1 must hold the earlier tokens.
          position: this token's position, shared by the batch (an int, or a traced int32
            scalar); must be < M (a concrete position beyond raises ValueError).

        Returns:
          (logits [B, V] f32, cache with slot `position` written).
        """
        if token.ndim != 1:
            raise ValueError(f"TransformerLM step token must be [B], got {token.shape}")
        m = cache.k.shape[2]
        if not isinstance(position, jax.core.Tracer) and not 0 <= int(position) < m:
            raise ValueError(f"position {int(position)} is outside the KV cache [0, {m})")
        position = jnp.asarray(position, jnp.int32)
        x = self.embed(token[:, None]).astype(self.dtype)  # [B] -> [B, 1, D]
        # The scan reads cache[l] for layer l and returns the token's k, v per layer; the one
        # write per cache comes after every layer has read it.
        x, (k, v) = self.blocks(x, (cache.k, cache.v), position)  # k, v: [L, B, 1, H, Dh]
        start = (0, 0, position, 0, 0)
        k_all = lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start)
        v_all = lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start)
        return self._logits(x)[:, 0], KVCache(k_all, v_all)
