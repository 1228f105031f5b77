"""Retrieved memories as a top-down routing bias on the adapter's LiquidMoE gate.

Shapes: M memories, L tokens per memory (padded), D adapter width, E experts.

A memory-aware chat recalls a few episodes before it answers. Besides being put in front of the
prompt, they bias which experts the gate picks, the way the thalamic bias does for the prompt
itself (`aura.models.zone_heads.compose_controls`). The head is derived from the model, not
trained separately:

1. Each memory text, tokenized with the adapter's tokenizer (at most L tokens), is embedded by the
   adapter's own token embedding; the memories are pooled with their retrieval weights (``w_i``:
   the recall scores clipped at 0 and normalised to sum 1). That is the *pooled memory
   embedding*, in the adapter's token space.
2. With a fitted thalamus head (composed chat, ``--ckpt_root``): the pooled embedding m [D] goes
   through the same centroid map as a prompt does, ``ThalamusGateHead.prompt_bias(m[None])``
   (``-scale * ||m - c_e||^2``, centred, minus the corpus offset): memories pull routing towards
   the experts whose region of token space they fall in.
3. Without one: the adapter's gate routes the memory tokens, and the bias is ``gain * sum_i w_i
   * (mean_t log p(e | memory i, token t))`` centred over experts. Added to the prompt's gate
   logits this multiplies the prompt's gate probabilities by the memories' (a product of
   experts, ``p'(e | x) ~ p(e | x) * prod_i gbar_i(e)^(gain * w_i)``): the experts that would
   process the memories get a push in proportion to how much the gate itself prefers them.

`MemoryGateHead(model, params, thalamus=...)(token_ids, scores)` returns the bias [E] (zeros when
nothing was recalled) and what it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aura.models.adapter import SelfTeachingAdapter
from aura.models.zone_heads import ThalamusGateHead

__all__ = ["MEMORY_TOKENS", "MemoryGateHead", "memory_weights"]

MEMORY_TOKENS = 64  # L: tokens of each memory the head looks at
_MAX_MEMORIES = 16  # M is padded to a power of two up to this (few compiled shapes)


def memory_weights(scores: Sequence[float]) -> np.ndarray:
    """Pooling weights [M]: scores clipped at 0, normalised to sum 1 (uniform if all are 0)."""
    s = np.maximum(np.asarray(scores, np.float64), 0.0)
    if len(s) == 0:
        return s
    return s / s.sum() if s.sum() > 0 else np.full(len(s), 1.0 / len(s))


def _pad(token_ids: Sequence[Sequence[int]], weights: np.ndarray):
    m = min(_MAX_MEMORIES, 1 << max(0, len(token_ids) - 1).bit_length())
    tokens = np.zeros((m, MEMORY_TOKENS), np.int32)
    mask = np.zeros((m, MEMORY_TOKENS), np.float32)
    w = np.zeros((m,), np.float32)
    for i, ids in enumerate(list(token_ids)[:m]):
        ids = list(ids)[:MEMORY_TOKENS]
        tokens[i, : len(ids)] = ids
        mask[i, : len(ids)] = 1.0
        w[i] = weights[i] if ids else 0.0
    return tokens, mask, w / w.sum() if w.sum() > 0 else w


class MemoryGateHead:
    """Recalled memories -> gate-logit bias [E] for one adapter (see the module docstring).

    Args:
      model: the adapter.
      params: its params.
      thalamus: the thalamus head's params, when the zone heads were loaded (else the gate's own
        routing of the memories is used).
      gain: the strength of the gate-derived bias (the thalamus head has its own fitted scale).
    """

    def __init__(self, model: SelfTeachingAdapter, params: Any, *, thalamus=None, gain=1.0):
        self.model, self.params, self.thalamus, self.gain = model, params, thalamus, float(gain)
        E, D = model.config.num_experts, model.config.dim
        self.num_experts = E

        def pooled(params, thal, tokens, mask, w):
            emb = model.apply({"params": params}, tokens, method=lambda m, t: m.embed(t))
            n = jnp.maximum(mask.sum(1, keepdims=True), 1.0)
            per = jnp.sum(emb * mask[..., None], axis=1) / n  # [M, L, D] -> [M, D]
            m = jnp.einsum("m,md->d", w, per)  # [M] x [M, D] -> [D]: the pooled memory
            return ThalamusGateHead(E, D).apply(
                {"params": thal}, m[None], method=ThalamusGateHead.prompt_bias
            )

        def gate(params, tokens, mask, w):
            r = model.apply({"params": params}, tokens, method=SelfTeachingAdapter.gate_weights)
            M, L = tokens.shape
            logp = jnp.log(jnp.maximum(r.probs.reshape(M, L, -1), 1e-9))  # [M*L, E] -> [M, L, E]
            n = jnp.maximum(mask.sum(1, keepdims=True), 1.0)
            per = jnp.sum(logp * mask[..., None], axis=1) / n  # [M, E]
            per = per - jnp.mean(per, axis=-1, keepdims=True)  # centred over experts
            return jnp.einsum("m,me->e", w, per)  # [M] x [M, E] -> [E]

        self._pooled, self._gate = jax.jit(pooled), jax.jit(gate)

    def __call__(
        self, token_ids: Sequence[Sequence[int]], scores: Sequence[float]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The bias [E] float32 for memories given as adapter token ids (no special symbols)
        with their recall scores; info: ``head`` ("thalamus", "gate" or "none"), ``weights``."""
        w = memory_weights(scores)
        if not len(w) or not any(len(t) for t in token_ids):
            return np.zeros((self.num_experts,), np.float32), {"head": "none", "weights": []}
        tokens, mask, wp = (jnp.asarray(a) for a in _pad(token_ids, w))
        if self.thalamus is not None:
            bias, head = self._pooled(self.params, self.thalamus, tokens, mask, wp), "thalamus"
        else:
            bias, head = self.gain * self._gate(self.params, tokens, mask, wp), "gate"
        return np.asarray(bias, np.float32), {"head": head, "weights": w.tolist()}
