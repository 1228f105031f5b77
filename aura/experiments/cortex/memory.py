"""The Cortex memory in a training state, and reading it through the router.

Shapes: B batch, D embedding width, M memory slots (contexts, padded to a multiple of the
devices), K top-k.

The memory (every distinct context's embedding; storing is not learning, so held-out contexts
are stored too, their questions and noisy copies are never trained on) lives in the state as
``{"patterns": [M, D], "count": []}``; ``patterns`` carries the logical axis name ``"memory"``,
which :data:`MEMORY_RULES` maps to every mesh axis, so with ``--mesh data=N`` each device holds
M / N slots and reads them with ``aura.nn.hopfield_sharded.sharded_retrieve`` (per-device top-k,
merged). The init only gives the shapes: :func:`fill_memory` writes the embeddings into the
state's shardings at the first step (a jitted init would bake them into the program). Slots hold
the contexts in :class:`MemoryLayout` order (training contexts first).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aura.experiments.cortex.data import SPLITS, CortexData
from aura.models.cortex import CortexRouter
from aura.nn.hopfield import HopfieldMemory
from aura.nn.hopfield_sharded import sharded_retrieve
from aura.train import sharding

__all__ = [
    "MEMORY_RULES",
    "MemoryLayout",
    "RouterReader",
    "batched_eval",
    "empty_memory",
    "fill_memory",
    "memory_capacity",
]

MEMORY_RULES = (*sharding.DEFAULT_RULES, ("memory", sharding.BATCH_AXES))


class MemoryLayout:
    """Which context each memory slot holds: the training contexts first (slots
    ``[0, n_train)``), then dev, then test.

    Training reads only the first ``n_train`` slots (``count = n_train``), so the router never
    learns to steer away from the held-out contexts that it is evaluated on; evaluation and
    phase 2 read every slot.

    Attributes:
      order: [C] context of each slot.
      slot: [C] slot of each context.
      patterns: [C, D] the embeddings in slot order.
      n_train: training contexts.
    """

    def __init__(self, data: CortexData):
        self.order = np.concatenate([data.split_contexts[s] for s in SPLITS]).astype(np.int32)
        self.slot = np.empty_like(self.order)
        self.slot[self.order] = np.arange(len(self.order), dtype=np.int32)
        self.patterns = data.ctx_emb[self.order]
        self.n_train = len(data.split_contexts["train"])


def memory_capacity(contexts: int, devices: int) -> int:
    """Slots M: the contexts rounded up to a multiple of the devices that split the memory."""
    return math.ceil(contexts / devices) * devices


def empty_memory(capacity: int, dim: int) -> dict[str, Any]:
    """The memory part of an init state: zeros, ``patterns`` boxed with ``("memory", None)``."""
    patterns = nn.Partitioned(jnp.zeros((capacity, dim), jnp.float32), names=("memory", None))
    return {"patterns": patterns, "count": jnp.zeros((), jnp.int32)}


def fill_memory(memory: dict[str, Any], embeddings: np.ndarray) -> dict[str, Any]:
    """``memory`` with ``embeddings`` [C, D] in its first C slots, in the same shardings."""
    capacity = memory["patterns"].shape[0]
    host = np.zeros((capacity, embeddings.shape[1]), np.float32)
    host[: len(embeddings)] = embeddings
    return {
        "patterns": jax.device_put(host, memory["patterns"].sharding),
        "count": jax.device_put(np.int32(len(embeddings)), memory["count"].sharding),
    }


def as_hopfield(memory: dict[str, Any]) -> HopfieldMemory:
    """The state's memory as an ``aura.nn.hopfield.HopfieldMemory``."""
    return HopfieldMemory(memory["patterns"], memory["count"], jnp.zeros((), jnp.int32))


class RouterReader:
    """The router and how it reads the memory (beta on the cosine scale, top-k read-out)."""

    def __init__(self, dim: int, router_cfg, memory_cfg):
        self.module = CortexRouter(
            dim=dim, width=router_cfg.width, gray_hidden=router_cfg.gray_hidden,
            gray_layers=router_cfg.gray_layers, gru_layers=router_cfg.gru_layers,
            settle_steps=router_cfg.settle_steps, residual=router_cfg.residual,
        )  # fmt: skip
        self.mem = memory_cfg
        self.dim = dim

    def init(self, key: jax.Array) -> Any:
        """Fresh router parameters."""
        return self.module.init(key, jnp.zeros((1, self.dim), jnp.float32))["params"]

    def route(self, params: Any, queries: jax.Array) -> jax.Array:
        """Queries [B, D] -> unit vectors in the memory space [B, D]."""
        return self.module.apply({"params": params}, queries)

    def read(self, params, memory, queries, *, beta=None, top_k=None, mode="topk", route=True):
        """``(routed [B, D], retrieved [B, D], weights [B, K], indices [B, K], logits [B, K])``.

        ``route=False`` reads with the normalised query itself (exact cosine nearest neighbour).
        """
        if route:
            routed = self.route(params, queries)
        else:
            routed = queries / jnp.maximum(jnp.linalg.norm(queries, axis=-1, keepdims=True), 1e-12)
        out = sharded_retrieve(
            as_hopfield(memory), routed, beta=float(beta or self.mem.beta),
            top_k=int(top_k or self.mem.top_k), chunk_size=self.mem.chunk_size, mode=mode,
        )  # fmt: skip
        return (routed, *out)


def batched_eval(fn: Callable, arrays: tuple[np.ndarray, ...], batch: int, multiple: int = 1):
    """Runs ``fn(*rows)`` over the leading axis in fixed-size batches (the last one padded, so
    one compiled shape serves all) and concatenates the (pytree of) outputs on the host."""
    n = len(arrays[0])
    batch = max(multiple, batch - batch % multiple)
    outs = []
    for start in range(0, n, batch):
        rows = [a[start : start + batch] for a in arrays]
        pad = batch - len(rows[0])
        if pad:
            rows = [np.concatenate([r, np.repeat(r[-1:], pad, axis=0)]) for r in rows]
        out = jax.device_get(fn(*rows))
        outs.append(jax.tree.map(lambda x, k=batch - pad: np.asarray(x)[:k], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)
