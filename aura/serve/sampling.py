"""Generation with the recurrent state: the prompt is consumed once, then one step per token.

Shapes: B batch, T prompt tokens, V vocabulary.

``Generator`` jits two functions of the :class:`SelfTeachingAdapter`: ``ingest`` (the sequence
form over the prompt, returning the last logits and the state) and ``step`` (one token, constant
cost). Nothing is recomputed per token: the cost of a token does not grow with the context.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp

from aura.models.adapter import SelfTeachingAdapter
from aura.nn.moe import RoutingControls


def sample_logits(
    key: jax.Array, logits: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
    """Samples ids [B] from logits [B, V]: temperature, then top-k, then nucleus (top-p).

    ``temperature == 0`` is greedy decoding.
    """
    if temperature <= 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)  # [B, V] best first
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        drop_sorted = cum - jax.nn.softmax(sorted_logits, axis=-1) >= top_p  # keep the first
        drop = (
            jnp.zeros_like(drop_sorted)
            .at[jnp.arange(logits.shape[0])[:, None], order]
            .set(drop_sorted)
        )
        logits = jnp.where(drop, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class Generator:
    """Streams tokens from an adapter with its recurrent state."""

    def __init__(self, model: SelfTeachingAdapter, params, controls: RoutingControls | None = None):
        self.model, self.params, self.controls = model, params, controls

        def ingest(params, tokens, controls):
            logits, state, _ = model.apply({"params": params}, tokens, None, controls)
            return logits[:, -1], state

        def step(params, token, state, controls):
            return model.apply(
                {"params": params}, token, state, controls, method=SelfTeachingAdapter.step
            )

        self._ingest = jax.jit(ingest)
        self._step = jax.jit(step)

    def ingest(self, prompt: jax.Array):
        """prompt [B, T] -> (last logits [B, V], state)."""
        return self._ingest(self.params, prompt, self.controls)

    def step(self, token: jax.Array, state):
        """token [B] -> (logits [B, V], state)."""
        return self._step(self.params, token, state, self.controls)

    def stream(
        self,
        prompt: list[int],
        max_new: int,
        *,
        key: jax.Array,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_ids: tuple[int, ...] = (),
    ) -> Iterator[int]:
        """Yields up to ``max_new`` sampled ids after ``prompt``, stopping at a stop id."""
        logits, state = self.ingest(jnp.asarray([prompt], jnp.int32))
        for i in range(max_new):
            token = sample_logits(jax.random.fold_in(key, i), logits, temperature, top_k, top_p)
            tid = int(token[0])
            if tid in stop_ids:
                return
            yield tid
            logits, state = self.step(token, state)
