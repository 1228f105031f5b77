"""The hippocampal index: dense keys of the live episodes on device, fused multi-cue retrieval.

Each stored episode is bound to a key, its sentence embedding; the index keeps the keys of every
episode of an `EpisodicStore` as one device array (an `aura.nn.hopfield.HopfieldMemory` whose
capacity doubles when full, so appends rarely recompile) and host-side columns (id, event time,
importance, expiry, merged flag) aligned with its slots. A query is scored by four cues:

* ``dense``: cosine of the query embedding and the key (keys are L2-normalised embeddings);
* ``lexical``: FTS5 ``bm25`` of the query text, divided by the query's best bm25 (so in [0, 1]);
* ``recency``: ``exp(-age / tau_s)`` with ``age = now - event_time``;
* ``importance``: the stored importance in [0, 1].

Retrieval runs in two stages. Candidates: the dense top-C over all keys (`hopfield.retrieve`,
jitted and chunked, so 1M x 384 keys never make a [B, N, D] or even [B, N] array), the lexical
top-C from SQLite and the C most recent episodes. Then every candidate gets all four cue scores
and they are fused, by a weighted sum (``method="weighted"``) or by reciprocal-rank fusion
(``method="rrf"``: ``sum_c w_c / (rrf_k + rank_c)``). Expired and merged episodes are dead: they
stay in their slots (masked on the host, with the dense top-C widened by their count) until
enough of them pile up and the index compacts.

The index follows the file: `sync` (called by every search) appends rows that any process
added and re-reads the cheap columns when the store's generation moved (an update or delete).

Shapes: B queries, N slots, D width, K top-k, C candidates per cue.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from aura.memory.store import Episode, EpisodicStore
from aura.nn import hopfield

__all__ = ["CUES", "FusionConfig", "HippocampalIndex", "Hit"]

CUES = ("dense", "lexical", "recency", "importance")
_METHODS = ("weighted", "rrf")


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """How the cues are weighed. The defaults are the best config on the memory development set
    (tools/tune_memory.py): the dense cue plus supersession; bm25, recency and importance added
    nothing there (they stay available for other data).

    Attributes:
      method: ``"weighted"`` (sum of weight x score) or ``"rrf"`` (reciprocal-rank fusion).
      dense, lexical, recency, importance: the cue weights (0 switches a cue off).
      tau_s: recency time constant in seconds.
      rrf_k: the RRF rank offset (60 in Cormack et al., 2009).
      candidates: C, candidates drawn per cue before fusion.
      supersede: penalty subtracted from an episode that a *later* candidate supersedes: one
        about the same thing (key cosine) that the query likes about as much (fused score),
        ``cos(key_i, key_j) + fused_j - fused_i >= supersede_threshold``. Of two memories of a
        changed fact the newer wins, the way a newer trace interferes with an older one
        (retroactive interference). 0 turns it off.
      supersede_threshold: the threshold above.
    """

    method: str = "weighted"
    dense: float = 1.0
    lexical: float = 0.0
    recency: float = 0.0
    importance: float = 0.0
    tau_s: float = 604800.0
    rrf_k: float = 60.0
    candidates: int = 64
    supersede: float = 0.1
    supersede_threshold: float = 0.55

    def __post_init__(self):
        if self.method not in _METHODS:
            raise ValueError(f"fusion method {self.method!r} must be one of {_METHODS}")
        weights = [getattr(self, c) for c in CUES]
        if min(weights) < 0 or max(weights) <= 0:
            raise ValueError(
                f"cue weights {dict(zip(CUES, weights, strict=True))} must be >= 0, one > 0"
            )
        if self.tau_s <= 0 or self.rrf_k < 0 or self.candidates < 1:
            raise ValueError("tau_s must be > 0, rrf_k >= 0 and candidates >= 1")
        if self.supersede < 0:
            raise ValueError(f"supersede={self.supersede} must be >= 0")

    def weights(self) -> dict[str, float]:
        """The cue weights by name."""
        return {c: float(getattr(self, c)) for c in CUES}


@dataclasses.dataclass(frozen=True)
class Hit:
    """One retrieved episode with its fused score and each cue's score (and rank for RRF)."""

    episode: Episode
    score: float
    components: dict[str, float]


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _dense_topk(memory: hopfield.HopfieldMemory, queries: jax.Array, *, k: int, chunk_size: int):
    _, _, idx, logits = hopfield.retrieve(memory, queries, beta=1.0, top_k=k, chunk_size=chunk_size)
    return idx, logits  # [B, K] slots (-1 when empty) and cosines


@functools.partial(jax.jit, donate_argnums=0)
def _write_rows(patterns: jax.Array, rows: jax.Array, start: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(patterns, rows, start, axis=0)


@jax.jit
def _gather(patterns: jax.Array, slots: jax.Array) -> jax.Array:
    return patterns[slots]  # [C', D]


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class HippocampalIndex:
    """Dense keys of a store's episodes plus fused retrieval (see the module docstring).

    Args:
      store: the episodic store it indexes.
      chunk_size: keys scored per scan step of the dense retrieval.
      min_capacity: initial device slots (grows by doubling).
    """

    def __init__(self, store: EpisodicStore, *, chunk_size: int = 4096, min_capacity: int = 256):
        self.store = store
        self.chunk_size = chunk_size
        self.min_capacity = min_capacity
        self._version = (-1, -1)
        self._rebuild()

    # -- keeping up with the store --------------------------------------------------------------
    def _rebuild(self) -> None:
        ids, keys, attrs = self.store.snapshot(0)
        live = attrs[:, 3] == 0  # merged rows never come back: leave them out
        ids, keys, attrs = ids[live], keys[live], attrs[live]
        cap = max(self.min_capacity, _pow2(len(ids)))
        self.memory = hopfield.init_memory(cap, self.store.dim)
        self.ids = np.zeros(0, np.int64)
        self.attrs = np.zeros((0, 4))
        self._append(ids, keys, attrs)
        self._version = self.store.version()

    def _append(self, ids: np.ndarray, keys: np.ndarray, attrs: np.ndarray) -> None:
        n, start = len(ids), len(self.ids)
        if n == 0:
            return
        rows = _pow2(max(n, 16))  # pad the block: few distinct write shapes
        cap = self.memory.patterns.shape[0]
        if start + rows > cap:
            new_cap = _pow2(start + rows)
            grown = jnp.zeros((new_cap, self.store.dim), jnp.float32)
            patterns = grown.at[:cap].set(self.memory.patterns)
        else:
            patterns = self.memory.patterns
        block = np.zeros((rows, self.store.dim), np.float32)
        block[:n] = keys
        patterns = _write_rows(patterns, jnp.asarray(block), jnp.int32(start))
        self.memory = hopfield.HopfieldMemory(
            patterns, jnp.int32(start + n), jnp.zeros((), jnp.int32)
        )
        self.ids = np.concatenate([self.ids, ids])
        self.attrs = np.concatenate([self.attrs, attrs])

    def sync(self) -> None:
        """Brings the index up to date with the store (rows added or changed by any process)."""
        version = self.store.version()
        if version == self._version:
            return
        max_id, gen = version
        if gen != self._version[1]:  # updates/deletes: refresh the columns, mark gone rows dead
            ids, _, attrs = self.store.snapshot(0, with_keys=False)
            if len(ids) == 0:  # everything was deleted
                return self._rebuild()
            pos = np.searchsorted(ids, self.ids)
            found = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == self.ids)
            self.attrs = np.where(found[:, None], attrs[np.minimum(pos, len(ids) - 1)], 0.0)
            self.attrs[~found, 3] = 1.0  # deleted rows are dead
            if np.sum(self.attrs[:, 3]) > max(256, len(self.ids) // 4):
                return self._rebuild()
        last = int(self.ids[-1]) if len(self.ids) else 0
        if max_id > last:
            self._append(*self.store.snapshot(last))
        self._version = version

    def __len__(self) -> int:
        """Number of live episodes (not merged, not expired) right now."""
        return int(np.sum(self._live(self.store.clock())))

    def _live(self, now: float) -> np.ndarray:
        return (self.attrs[:, 3] == 0) & (self.attrs[:, 2] > now)

    # -- retrieval ------------------------------------------------------------------------------
    def dense_candidates(self, query_vecs: np.ndarray, c: int, now: float):
        """Dense top-``c`` live slots per query: ``(slots [B, c'], cosines [B, c'])`` (-1 pads)."""
        live = self._live(now)
        n = len(self.ids)
        k = min(_pow2(c + (n - int(live.sum()))), self.memory.patterns.shape[0])
        q = jnp.asarray(np.asarray(query_vecs, np.float32))
        idx, cos = _dense_topk(self.memory, q, k=k, chunk_size=self.chunk_size)
        idx, cos = np.asarray(idx), np.asarray(cos)
        ok = (idx >= 0) & live[np.maximum(idx, 0)]
        return np.where(ok, idx, -1), np.where(ok, cos, -np.inf)

    def search(
        self,
        query: str,
        query_vec: np.ndarray,
        k: int = 10,
        fusion: FusionConfig = FusionConfig(),
        *,
        now: float | None = None,
        touch: bool = True,
    ) -> list[Hit]:
        """The top-``k`` live episodes for one query, best first.

        Args:
          query: the query text (for the lexical cue).
          query_vec: its ``[D]`` embedding (L2-normalised).
          k: episodes returned.
          fusion: cue weights and fusion method.
          now: the time recency is measured from (default the store's clock).
          touch: record the retrieval in the store (access count, last access).

        Returns:
          Hits with ``components`` holding each cue's score (``<cue>``) and, for RRF, its rank
          among the candidates (``<cue>_rank``; absent when the cue did not rank the episode).
        """
        self.sync()
        now = self.store.clock() if now is None else now
        if not len(self.ids):
            return []
        c = max(fusion.candidates, k)
        cand = set()
        w = fusion.weights()
        qv = np.asarray(query_vec, np.float32).reshape(1, -1)
        if w["dense"] > 0:
            slots, _ = self.dense_candidates(qv, c, now)
            cand.update(int(s) for s in slots[0] if s >= 0)
        lex = dict(self.store.lexical(query, c, now=now)) if w["lexical"] > 0 else {}
        if lex:  # ids are sorted (appended in id order): find their slots by bisection
            lex_ids = np.fromiter(lex, np.int64, len(lex))
            pos = np.minimum(np.searchsorted(self.ids, lex_ids), len(self.ids) - 1)
            cand.update(int(p) for p in pos[self.ids[pos] == lex_ids])
        live = np.flatnonzero(self._live(now))
        if w["recency"] > 0 or w["importance"] > 0:
            for col, on in ((0, w["recency"]), (1, w["importance"])):
                if on > 0 and len(live):
                    top = live[np.argsort(-self.attrs[live, col], kind="stable")[:c]]
                    cand.update(int(s) for s in top)
        if not cand:
            return []
        slots = np.array(sorted(cand))
        return self._fuse(slots, qv[0], lex, fusion, k, now, touch)

    def _fuse(self, slots, qv, lex, fusion: FusionConfig, k, now, touch) -> list[Hit]:
        padded = np.zeros(_pow2(max(len(slots), 64)), np.int32)  # few gather shapes
        padded[: len(slots)] = slots
        keys = np.asarray(_gather(self.memory.patterns, jnp.asarray(padded)))[: len(slots)]
        ids = self.ids[slots]
        best = max(lex.values(), default=0.0)
        scores = {
            "dense": keys @ qv,
            "lexical": np.array([lex.get(int(i), 0.0) / best if best > 0 else 0.0 for i in ids]),
            "recency": np.exp(-np.maximum(now - self.attrs[slots, 0], 0.0) / fusion.tau_s),
            "importance": self.attrs[slots, 1],
        }
        w = fusion.weights()
        ranks = {}
        if fusion.method == "weighted":
            fused = sum(w[cue] * scores[cue] for cue in CUES)
        else:
            fused = np.zeros(len(slots))
            for cue in CUES:
                if w[cue] <= 0:
                    continue
                has = np.array([int(i) in lex for i in ids]) if cue == "lexical" else None
                order = np.argsort(-scores[cue], kind="stable")
                rank = np.empty(len(slots))
                rank[order] = np.arange(1, len(slots) + 1)
                contrib = w[cue] / (fusion.rrf_k + rank)
                fused += np.where(has, contrib, 0.0) if has is not None else contrib
                ranks[cue] = np.where(has, rank, np.nan) if has is not None else rank
        if fusion.supersede > 0:  # among the 2k best only: they decide the top k
            near = np.argsort(-fused, kind="stable")[: 2 * k]
            t = self.attrs[slots[near], 0]
            # [2K, D] x [2K, D] -> [2K, 2K] key cosines; einsum's own loop: a BLAS call this
            # small wakes a thread pool, which costs ~40 ms on a busy 2-core machine
            sim = np.einsum("id,jd->ij", keys[near], keys[near])
            f = fused[near]
            # [2K, 2K] (i, j): is j later than i, about the same thing and about as relevant?
            sup = (t[None, :] > t[:, None]) & (
                sim + f[None, :] - f[:, None] >= fusion.supersede_threshold
            )
            fused = fused.copy()
            fused[near] -= fusion.supersede * sup.any(axis=1)
        top = np.argsort(-fused, kind="stable")[:k]
        episodes = {e.id: e for e in self.store.get([int(ids[t]) for t in top])}
        hits = []
        for t in top:
            comp = {cue: float(scores[cue][t]) for cue in CUES}
            comp.update({f"{c}_rank": float(r[t]) for c, r in ranks.items() if np.isfinite(r[t])})
            if int(ids[t]) in episodes:
                hits.append(Hit(episodes[int(ids[t])], float(fused[t]), comp))
        if touch and hits:
            self.store.touch([h.episode.id for h in hits])
        return hits
