"""Consolidation: the offline pass that tidies the episodic store ("sleep").

`consolidate` does four things, each in its own transaction:

1. deletes expired episodes (TTL passed; retrieval already hid them);
2. merges near-duplicates: a live episode whose cosine with a *later* live episode is at least
   ``dup_threshold`` is marked ``merged`` into it (the later one keeps the higher importance), so
   a repeated or restated fact keeps one, the latest, copy;
3. raises the importance of episodes retrieved at least ``access_threshold`` times and used since
   the last consolidation (by ``importance_step``, at most 1);
4. writes one extractive summary episode per session that got new turns: the ``summary_turns``
   turns closest to the session's mean embedding (its most central content), in turn order;
   it replaces that session's previous summary.

Processed episodes are marked ``consolidated``. Near-duplicate search compares new episodes with
all live ones in blocks (``[block, N]`` cosines at a time, never ``[N, N]``).

Shapes: N live episodes, D width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from aura.memory.store import EpisodicStore

__all__ = ["ConsolidationReport", "consolidate"]

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ConsolidationReport:
    """What one consolidation pass did (counts of episodes)."""

    expired_deleted: int
    merged: int
    importance_raised: int
    summaries_written: int

    def as_dict(self) -> dict:
        """A JSON-friendly dict."""
        return dataclasses.asdict(self)


def _merge_duplicates(store: EpisodicStore, threshold: float, block: int = 1024) -> int:
    live = store.episodes("state != 'merged' AND kind != 'summary'")
    new = [i for i, e in enumerate(live) if e.state == "new"]
    if len(live) < 2 or not new:
        return 0
    keys = np.stack([e.embedding for e in live])  # [N, D]
    merged_into: dict[int, int] = {}
    for start in range(0, len(new), block):
        rows = np.array(new[start : start + block])
        sim = keys[rows] @ keys.T  # [block, N]
        for r, s in zip(rows, sim, strict=True):
            later = np.flatnonzero((s >= threshold) & (np.arange(len(live)) > r))
            if len(later):  # keep the latest restatement
                merged_into[live[r].id] = live[later[-1]].id
    if not merged_into:
        return 0
    by_id = {e.id: e for e in live}
    for old, keep in merged_into.items():
        store.update([old], state="merged", merged_into=keep)
        imp = max(by_id[old].importance, by_id[keep].importance)
        store.update([keep], importance=imp)
    return len(merged_into)


def _raise_importance(store: EpisodicStore, access_threshold: int, step: float, since: float):
    hot = store.episodes(
        "state != 'merged' AND access_count >= ? AND accessed_at > ?", (access_threshold, since)
    )
    for e in hot:
        store.update([e.id], importance=min(1.0, e.importance + step))
    return len(hot)


def _summaries(store: EpisodicStore, embed: Embed | None, turns: int, now: float) -> int:
    sessions = [
        e.session for e in store.episodes("state = 'new' AND kind = 'turn'") if e.session != ""
    ]
    written = 0
    for session in dict.fromkeys(sessions):
        eps = store.episodes(
            "session = ? AND kind = 'turn' AND state != 'merged' AND "
            "(expires_at IS NULL OR expires_at > ?)",
            (session, now),
        )
        if not eps:
            continue
        keys = np.stack([e.embedding for e in eps])  # [N, D]
        centre = keys.mean(axis=0)
        pick = sorted(np.argsort(-(keys @ centre), kind="stable")[:turns])
        text = f"Summary of session {session}: " + " ".join(eps[i].text for i in pick)
        if embed is not None:
            vec = np.asarray(embed([text]), np.float32)[0]
        else:  # no encoder at hand: the normalised mean of the chosen turns' keys
            vec = keys[pick].mean(axis=0)
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        old = [e.id for e in store.episodes("kind = 'summary' AND session = ?", (session,))]
        store.delete(old)
        store.add(
            text,
            vec,
            session=session,
            speaker="summary",
            kind="summary",
            importance=0.7,
            event_time=max(e.event_time for e in eps),
        )
        written += 1
    return written


def consolidate(
    store: EpisodicStore,
    *,
    embed: Embed | None = None,
    now: float | None = None,
    dup_threshold: float = 0.97,
    access_threshold: int = 3,
    importance_step: float = 0.1,
    summary_turns: int = 3,
) -> ConsolidationReport:
    """Runs one consolidation pass over the store (see the module docstring).

    Args:
      store: the episodic store.
      embed: ``texts -> [N, D]`` embeddings for the summaries (e.g. ``encoder.encode``); None
        uses the mean key of the summarised turns.
      now: current time (default the store's clock).
      dup_threshold: cosine at or above which two episodes are near-duplicates.
      access_threshold: retrievals after which an episode's importance is raised.
      importance_step: how much it is raised.
      summary_turns: turns quoted in each session summary.

    Returns:
      The counts of what changed.
    """
    if not 0.0 < dup_threshold <= 1.0 or summary_turns < 1 or access_threshold < 1:
        raise ValueError("need 0 < dup_threshold <= 1, summary_turns >= 1, access_threshold >= 1")
    now = store.clock() if now is None else now
    expired = [e.id for e in store.episodes("expires_at IS NOT NULL AND expires_at <= ?", (now,))]
    store.delete(expired)
    merged = _merge_duplicates(store, dup_threshold)
    since = float(store.get_meta("consolidated_at", "-inf"))
    raised = _raise_importance(store, access_threshold, importance_step, since)
    written = _summaries(store, embed, summary_turns, now)
    fresh = [e.id for e in store.episodes("state = 'new'")]
    if fresh:
        store.update(fresh, state="consolidated")
    store.set_meta("consolidated_at", repr(now))
    return ConsolidationReport(len(expired), merged, raised, written)
