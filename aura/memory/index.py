"""The hippocampal index: dense keys of the live episodes on device, fused multi-cue retrieval.

Each stored episode is bound to a key, its sentence embedding; the index keeps the keys of every
episode of an `EpisodicStore` as one device array (an `aura.nn.hopfield.HopfieldMemory` whose
capacity doubles when full, so appends rarely recompile) and host-side columns (id, event time,
importance, expiry, merged flag) aligned with its slots. A query is scored by six cues:

* ``dense``: cosine of the query embedding and the key (keys are L2-normalised embeddings);
* ``lexical``: FTS5 ``bm25`` of the query text, divided by the query's best bm25 (so in [0, 1]);
* ``recency``: ``exp(-age / tau_s)`` with ``age = now - event_time``;
* ``importance``: the stored importance in [0, 1];
* ``entity``: the share of the query's entities (`aura.memory.entities`: names) the episode names;
* ``masked``: cosine of the query and the episode with the query's entities replaced by
  "someone" in both (`aura.memory.masked`), re-embedded by the index's encoder: what the question
  asks about, without the name that every memory of that person shares. Without an encoder (or
  entities in the query) it equals ``dense``.

Retrieval runs in two stages. Candidates: the dense top-C over all keys (`hopfield.retrieve`,
jitted and chunked, so 1M x 384 keys never make a [B, N, D] or even [B, N] array), the lexical
top-C from SQLite and the C most recent episodes. Then every candidate gets all four cue scores
and they are fused, by a weighted sum (``method="weighted"``) or by reciprocal-rank fusion
(``method="rrf"``: ``sum_c w_c / (rrf_k + rank_c)``). With ``supersede`` on, the successors that
write-time supersession linked to a candidate (`aura.memory.supersede`) join the candidates, and
a candidate whose successor the query confirms is placed just below it. Expired and merged
episodes are dead: they stay in their slots (masked on the host, with the dense top-C widened by
their count) until enough of them pile up and the index compacts.

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

from aura.memory.entities import entities
from aura.memory.interference import demote_superseded, states_change
from aura.memory.masked import MaskedKeys, TextEncoder
from aura.memory.store import Episode, EpisodicStore
from aura.nn import hopfield

__all__ = ["CUES", "FusionConfig", "HippocampalIndex", "Hit"]

CUES = ("dense", "lexical", "recency", "importance", "entity", "masked")
_METHODS = ("weighted", "rrf")


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """How the cues are weighed. The defaults are the best config on the memory development set
    (tools/tune_memory.py): the dense, entity and entity-masked cues and supersession with the
    change-wording bonus; bm25, recency and importance added nothing there (they stay available
    for other data).

    Attributes:
      method: ``"weighted"`` (sum of weight x score) or ``"rrf"`` (reciprocal-rank fusion).
      dense, lexical, recency, importance, entity, masked: the cue weights (0 switches a cue
        off).
      tau_s: recency time constant in seconds.
      rrf_k: the RRF rank offset (60 in Cormack et al., 2009).
      candidates: C, candidates drawn per cue before fusion.
      supersede: follow the write-time supersession links: an episode i linked to a *later*
        successor j that the query confirms -- about the same thing (key cosine) and liked
        about as much (fused score), ``cos(key_i, key_j) + fused_j - fused_i + change_bonus *
        (change_j - change_i) >= supersede_threshold`` -- is placed just below j. Of two
        memories of a changed fact the newer wins, the way a newer trace interferes with an
        older one (retroactive interference).
      supersede_threshold: the threshold above.
      change_bonus: the weight of ``change_j - change_i`` there, 1 for an episode that uses
        change-of-state wording ("moved", "now", "instead": `aura.memory.interference`), else 0: a
        memory that announces a new value replaces an older one more readily.
    """

    method: str = "weighted"
    dense: float = 1.0
    lexical: float = 0.0
    recency: float = 0.0
    importance: float = 0.0
    tau_s: float = 604800.0
    rrf_k: float = 60.0
    candidates: int = 64
    supersede: bool = True
    supersede_threshold: float = 0.6
    entity: float = 0.2
    masked: float = 0.5
    change_bonus: float = 0.25

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
        if self.change_bonus < 0:
            raise ValueError(f"change_bonus={self.change_bonus} must be >= 0")
        if not isinstance(self.supersede, bool):
            raise ValueError(f"supersede={self.supersede!r} must be True or False")

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
      encoder: the sentence encoder of the store's keys, for the ``masked`` cue (None: that cue
        equals ``dense``).
      chunk_size: keys scored per scan step of the dense retrieval.
      min_capacity: initial device slots (grows by doubling).
    """

    def __init__(
        self,
        store: EpisodicStore,
        *,
        encoder: TextEncoder | None = None,
        chunk_size: int = 4096,
        min_capacity: int = 256,
    ):
        self.store = store
        self.masker = MaskedKeys(encoder) if encoder is not None else None
        self.chunk_size = chunk_size
        self.min_capacity = min_capacity
        self._version = (-1, -1)
        # episode id -> (entities, change wording), read once from its text (texts never change)
        self._facts: dict[int, tuple[frozenset[str], bool]] = {}
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
        k = int(k)
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
            found = self._slots_of(np.fromiter(lex, np.int64, len(lex)))
            cand.update(int(p) for p in found[found >= 0])
        live = np.flatnonzero(self._live(now))
        if w["recency"] > 0 or w["importance"] > 0:
            for col, on in ((0, w["recency"]), (1, w["importance"])):
                if on > 0 and len(live):
                    top = live[np.argsort(-self.attrs[live, col], kind="stable")[:c]]
                    cand.update(int(s) for s in top)
        if not cand:
            return []
        slots = np.array(sorted(cand))
        links = self.store.links(self.ids[slots].tolist()) if fusion.supersede else {}
        if links:  # linked successors are scored too, retrieved or not
            succ = np.array(sorted({j for js in links.values() for j, _ in js}), np.int64)
            found = self._slots_of(succ)
            live = self._live(now)
            slots = np.union1d(slots, found[(found >= 0) & live[np.maximum(found, 0)]])
        return self._fuse(slots, query, qv[0], lex, fusion, k, now, touch, links)

    def _slots_of(self, ids: np.ndarray) -> np.ndarray:
        """Slots of episode ids (-1 where not indexed); ids are sorted (appended in id order)."""
        if not len(self.ids):
            return np.full(len(ids), -1)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1)

    def _text_facts(self, ids: np.ndarray) -> list[tuple[frozenset[str], bool]]:
        """Each episode's entities and change-wording flag, fetching the uncached texts once."""
        missing = [int(i) for i in ids if int(i) not in self._facts]
        for e in self.store.get(missing):
            self._facts[e.id] = (entities(e.text), states_change(e.text))
        return [self._facts.get(int(i), (frozenset(), False)) for i in ids]

    def _entities(self, ids: np.ndarray) -> list[frozenset[str]]:
        return [ents for ents, _ in self._text_facts(ids)]

    def _changes(self, ids: np.ndarray) -> np.ndarray:
        return np.array([change for _, change in self._text_facts(ids)], np.float64)

    def _texts(self, ids: list[int]) -> dict[int, str]:
        return {e.id: e.text for e in self.store.get(ids)}

    def _scores(self, slots, keys, query, qv, lex, fusion, now):
        """Each cue's scores of the candidates, and their masked keys (the stored keys where the
        masking changes nothing; all of them without an encoder or query entities)."""
        ids = self.ids[slots]
        best = max(lex.values(), default=0.0)
        q_ents = entities(query)
        ents = self._entities(ids) if q_ents else []
        mkeys, mq = keys, qv
        if q_ents and self.masker is not None and fusion.masked > 0:
            mq = self.masker.query(query, q_ents, qv)
            mkeys = self.masker.keys(
                ids, keys, q_ents, [bool(q_ents & e) for e in ents], self._texts
            )
        return mkeys, {
            "dense": keys @ qv,
            "masked": mkeys @ mq,
            "lexical": np.array([lex.get(int(i), 0.0) / best if best > 0 else 0.0 for i in ids]),
            "recency": np.exp(-np.maximum(now - self.attrs[slots, 0], 0.0) / fusion.tau_s),
            "importance": self.attrs[slots, 1],
            "entity": np.array([len(q_ents & e) / len(q_ents) for e in ents])
            if q_ents
            else np.zeros(len(slots)),
        }

    def _supersede(self, slots, keys, fused, links, fusion: FusionConfig) -> dict[int, int]:
        if not links:
            return {}
        change = np.zeros(len(slots))
        if fusion.change_bonus > 0:
            change = fusion.change_bonus * self._changes(self.ids[slots])
        times = self.attrs[slots, 0]
        return demote_superseded(
            self.ids[slots], times, keys, fused, links, change, fusion.supersede_threshold
        )

    def _fuse(self, slots, query, qv, lex, fusion: FusionConfig, k, now, touch, links):
        padded = np.zeros(_pow2(max(len(slots), 64)), np.int32)  # few gather shapes
        padded[: len(slots)] = slots
        keys = np.asarray(_gather(self.memory.patterns, jnp.asarray(padded)))[: len(slots)]
        ids = self.ids[slots]
        mkeys, scores = self._scores(slots, keys, query, qv, lex, fusion, now)
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
        fused = np.asarray(fused, np.float64).copy()
        moved = self._supersede(slots, keys, fused, links, fusion)
        top = np.argsort(-fused, kind="stable")[:k]
        episodes = {e.id: e for e in self.store.get([int(ids[t]) for t in top])}
        hits = []
        for t in top:
            comp = {cue: float(scores[cue][t]) for cue in CUES}
            comp.update({f"{c}_rank": float(r[t]) for c, r in ranks.items() if np.isfinite(r[t])})
            if int(t) in moved:
                comp["superseded_by"] = float(ids[moved[int(t)]])
            if int(ids[t]) in episodes:
                hits.append(Hit(episodes[int(ids[t])], float(fused[t]), comp))
        if touch and hits:
            self.store.touch([h.episode.id for h in hits])
        return hits
