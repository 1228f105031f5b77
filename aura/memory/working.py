"""Working memory: a small buffer of fixed capacity whose items compete by priority.

An item is what the conversation is holding "in mind": an episode's text, embedding and
importance, and when it was last used. Its priority for a given context (the current query or
turn) is

    priority = relevance x exp(-(now - last_access) / tau_s) + importance

with ``relevance = max(0, cos(item, context))``: relevant and recently used items stay, important
items stay even when idle. `add` puts an item in and, when the buffer is over capacity, evicts the
lowest-priority other item; `recall` returns the best items for a query and refreshes them (their
``last_access`` becomes now). Evicted items go to the ``on_evict`` callback, which writes them to
the episodic store (or, for items that are already stored, records their use there).

Host-side numpy only: at most a few dozen items, read once per turn.

Shapes: M items, D width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

__all__ = ["WorkingMemory", "WMItem"]


@dataclasses.dataclass
class WMItem:
    """One working-memory item.

    Attributes:
      text: the content.
      embedding: ``[D]`` L2-normalised embedding.
      importance: prior importance in [0, 1].
      last_access: time of the last add/recall (s).
      episode_id: the episode's id in the store, when it is stored already.
      fields: episode fields (session, turn, speaker, event_time, ...) for storing on eviction.
      uses: times it was recalled while in the buffer.
    """

    text: str
    embedding: np.ndarray
    importance: float = 0.5
    last_access: float = 0.0
    episode_id: int | None = None
    fields: dict = dataclasses.field(default_factory=dict)
    uses: int = 0


class WorkingMemory:
    """A fixed-capacity, priority-ordered buffer (see the module docstring).

    Args:
      capacity: most items held.
      tau_s: decay time constant of the relevance term (s).
      on_evict: called with each evicted item (e.g. store it in the episodic store).
    """

    def __init__(
        self,
        capacity: int,
        *,
        tau_s: float = 600.0,
        on_evict: Callable[[WMItem], None] | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"working-memory capacity={capacity} must be >= 1")
        if tau_s <= 0:
            raise ValueError(f"tau_s={tau_s} must be > 0")
        self.capacity = capacity
        self.tau_s = tau_s
        self.on_evict = on_evict
        self.items: list[WMItem] = []

    def __len__(self) -> int:
        return len(self.items)

    def priorities(self, context: np.ndarray | None, now: float) -> np.ndarray:
        """``[M]`` priorities of the held items for a ``[D]`` context (None: relevance 0)."""
        if not self.items:
            return np.zeros(0)
        emb = np.stack([it.embedding for it in self.items])  # [M, D]
        rel = np.zeros(len(self.items)) if context is None else np.maximum(emb @ context, 0.0)
        age = now - np.array([it.last_access for it in self.items])
        imp = np.array([it.importance for it in self.items])
        return rel * np.exp(-np.maximum(age, 0.0) / self.tau_s) + imp

    def add(self, item: WMItem, now: float, context: np.ndarray | None = None) -> list[WMItem]:
        """Adds an item (refreshed to ``now``); returns what was evicted to make room.

        The new item is never the one evicted; the others compete by priority for ``context``
        (default: the new item's own embedding, i.e. relevance to what just happened).
        """
        item.last_access = now
        self.items.append(item)
        evicted = []
        while len(self.items) > self.capacity:
            ctx = item.embedding if context is None else context
            pr = self.priorities(ctx, now)[:-1]  # the new item (last) stays
            evicted.append(self.items.pop(int(np.argmin(pr))))
        for it in evicted:
            if self.on_evict is not None:
                self.on_evict(it)
        return evicted

    def recall(
        self, query: np.ndarray, k: int, now: float, *, refresh: bool = True
    ) -> list[tuple[WMItem, float]]:
        """The ``k`` highest-priority items for a ``[D]`` query: ``[(item, priority)]``.

        Recalled items are refreshed (``last_access = now``, ``uses += 1``) unless ``refresh`` is
        False.
        """
        pr = self.priorities(np.asarray(query, np.float32), now)
        order = np.argsort(-pr, kind="stable")[:k]
        out = [(self.items[i], float(pr[i])) for i in order]
        if refresh:
            for it, _ in out:
                it.last_access = now
                it.uses += 1
        return out

    def flush(self) -> list[WMItem]:
        """Evicts every item (e.g. at the end of a session); returns them."""
        items, self.items = self.items, []
        for it in items:
            if self.on_evict is not None:
                self.on_evict(it)
        return items
