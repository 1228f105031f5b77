"""`MemorySession`: the long-term memory a chat talks to, one object per conversation.

It ties the pieces together: a sentence encoder, the SQLite `EpisodicStore`, the
`HippocampalIndex` over it and a `WorkingMemory` buffer. Per turn a chat calls

    mem = MemorySession.open("memory.db", session="alice")    # MiniLM unless encoder=...
    recalled = mem.recall(user_text, k=5)   # before replying: [Recall(id, text, score, components)]
    mem.observe("user", user_text)          # store the turn (and hold it in working memory)
    mem.observe("assistant", reply)
    mem.remember("my passport number is ...")  # /remember: a note with importance 1
    mem.forget(episode_id)                  # /forget
    mem.close()                             # flushes working memory, consolidates, closes

Everything is written through to the file as it happens, so another process opening the same
file later (or at the same time) sees it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from aura.memory.consolidate import ConsolidationReport, consolidate
from aura.memory.index import FusionConfig, HippocampalIndex
from aura.memory.store import EpisodicStore
from aura.memory.working import WMItem, WorkingMemory
from aura.models.sentence_encoder import SentenceEncoder, load_sentence_encoder

__all__ = ["MemorySession", "Recall"]


@dataclasses.dataclass(frozen=True)
class Recall:
    """One recalled memory: episode id (None for a working-memory item not stored yet), text,
    score, each cue's score (``working_memory``: the buffer priority) and where it came from."""

    id: int | None
    text: str
    score: float
    components: dict[str, float]
    source: str  # "index" | "working_memory"


class MemorySession:
    """A conversation's long-term memory (see the module docstring).

    Args:
      store: the episodic store.
      encoder: anything with ``name``, ``dim`` and ``encode(texts) -> [N, D]``.
      session: the session name stored with every turn.
      fusion: retrieval weights (default: tuned on the memory development set).
      wm_capacity: working-memory items.
      clock: wall clock (the store's by default).
    """

    def __init__(
        self,
        store: EpisodicStore,
        encoder: SentenceEncoder,
        *,
        session: str = "default",
        fusion: FusionConfig | None = None,
        wm_capacity: int = 8,
        clock: Callable[[], float] | None = None,
    ):
        self.store, self.encoder, self.session = store, encoder, session
        self.fusion = fusion or FusionConfig()
        self.clock = clock or store.clock
        self.index = HippocampalIndex(store, encoder=encoder)
        self.working = WorkingMemory(wm_capacity, on_evict=self._evicted)
        last = store.last_turn(session)
        self.turn = 0 if last is None else last + 1
        self.last: list[Recall] = []

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        session: str = "default",
        encoder: SentenceEncoder | None = None,
        **kw,
    ) -> MemorySession:
        """Opens (or creates) the memory file; loads the default encoder when none is given."""
        encoder = encoder if encoder is not None else load_sentence_encoder()
        store = EpisodicStore(path, encoder_name=encoder.name, dim=encoder.dim)
        return cls(store, encoder, session=session, **kw)

    def _embed(self, text: str) -> np.ndarray:
        return np.asarray(self.encoder.encode([text]), np.float32)[0]

    def _evicted(self, item: WMItem) -> None:
        if item.episode_id is None:
            item.episode_id = self.store.add(item.text, item.embedding, **item.fields)
        elif item.uses:  # rehearsed while held: worth more in the long run
            self.store.touch([item.episode_id])

    def observe(self, speaker: str, text: str, *, ttl_s: float | None = None) -> int:
        """Stores one conversation turn; returns its episode id."""
        vec, now = self._embed(text), self.clock()
        fields = {"session": self.session, "turn": self.turn, "speaker": speaker}
        eid = self.store.add(text, vec, event_time=now, ttl_s=ttl_s, **fields)
        self.turn += 1
        self.working.add(WMItem(text, vec, episode_id=eid, fields=fields), now)
        return eid

    def remember(self, text: str, *, importance: float = 1.0, ttl_s: float | None = None) -> int:
        """Stores an explicit note (``/remember``); returns its episode id."""
        vec = self._embed(text)
        return self.store.add(
            text,
            vec,
            session=self.session,
            speaker="note",
            kind="note",
            importance=importance,
            ttl_s=ttl_s,
        )

    def forget(self, episode_id: int) -> bool:
        """Deletes an episode (``/forget``); True when it existed."""
        self.working.items = [it for it in self.working.items if it.episode_id != episode_id]
        return self.store.delete([episode_id]) > 0

    def recall(self, query: str, k: int = 5, *, wm_k: int = 2) -> list[Recall]:
        """The ``k`` best stored memories for a query, plus up to ``wm_k`` working-memory items
        that are not among them; also kept in ``self.last`` (for ``/memories``)."""
        vec, now = self._embed(query), self.clock()
        hits = self.index.search(query, vec, k=k, fusion=self.fusion, now=now)
        out = [Recall(h.episode.id, h.episode.text, h.score, h.components, "index") for h in hits]
        seen = {r.id for r in out}
        for item, priority in self.working.recall(vec, wm_k, now):
            if item.episode_id not in seen:
                out.append(
                    Recall(
                        item.episode_id,
                        item.text,
                        priority,
                        {"working_memory": priority},
                        "working_memory",
                    )
                )
        self.last = out
        return out

    def close(self, *, consolidate_store: bool = True) -> ConsolidationReport | None:
        """Flushes working memory, optionally consolidates, and closes the file."""
        self.working.flush()
        report = consolidate(self.store, embed=self.encoder.encode) if consolidate_store else None
        self.store.close()
        return report
