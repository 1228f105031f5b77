"""Write-time supersession: when a new episode states a newer value of something said before.

"Mara lives in Lisbon." then, days later, "Actually, Mara moved to Porto last month.": a question
("Where does Mara live?") must get the update, although the stale statement is worded more like
it. Two stages, so that neither has to be right alone:

1. **Write time** (`link_new`, called by whoever stores turns): each new episode is compared with
   its ``candidates`` nearest older live episodes (the index's dense scan). An older episode of
   the same speaker (a note may update anyone's statement) that names one of the same entities
   and whose key cosine is at least ``min_cos`` gets a ``supersedes`` link in the store
   (``old_id -> new_id``, with the cosine as its score). This is recall-oriented: it also links
   "Mara lives in Lisbon." to "Mara works as a nurse." (same subject, a different attribute),
   which no text-only rule tested here could tell apart reliably with MiniLM (see the README).
2. **Retrieval** (`aura.memory.index.HippocampalIndex.search`): a linked successor j of a
   candidate i is scored as well (so it is retrieved even when the query's wording missed it),
   and i is placed just below j when the query confirms the link (`aura.memory.interference`:
   j is about the same thing as i, the query likes it almost as much, and change wording such as
   "moved" or "now" in j counts for it). A link to another attribute usually fails
   that test for a question about the first one. The superseded episode stays retrievable, one
   rank below its successor (for "what did Mara say before?"), and its hit names the successor
   (``components["superseded_by"]``).

Entities (`aura.memory.entities`) are what names the subject; the index also uses them as a
retrieval cue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from aura.memory.entities import entities
from aura.memory.index import HippocampalIndex
from aura.memory.store import Episode, EpisodicStore

__all__ = ["LinkConfig", "find_links", "link_new"]


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    """Write-time link settings (chosen on the memory development set; see the README).

    Attributes:
      min_cos: least key cosine of a linked pair.
      candidates: nearest older episodes compared with each new one.
    """

    min_cos: float = 0.45
    candidates: int = 16

    def __post_init__(self):
        if not -1.0 <= self.min_cos <= 1.0 or self.candidates < 1:
            raise ValueError(f"min_cos={self.min_cos} must be in [-1, 1], candidates >= 1")


def find_links(
    index: HippocampalIndex, new: Sequence[Episode], config: LinkConfig = LinkConfig()
) -> list[tuple[int, int, float]]:
    """The ``(old_id, new_id, cosine)`` links of episodes just stored (the index must hold them).

    Summaries never link; an episode without entities links to nothing.
    """
    new = [e for e in new if e.kind != "summary" and entities(e.text)]
    if not new:
        return []
    vecs = np.stack([e.embedding for e in new])  # [B, D]
    # the batch's own later episodes are among the neighbours too: ask for that many more
    wanted = config.candidates + len(new) - 1
    slots, cos = index.dense_candidates(vecs, wanted, index.store.clock())
    older = {}
    for e, row, cs in zip(new, slots, cos, strict=True):
        keep = (row >= 0) & (cs >= config.min_cos) & (index.ids[np.maximum(row, 0)] < e.id)
        older[e.id] = [
            (int(index.ids[s]), float(x)) for s, x in zip(row[keep], cs[keep], strict=True)
        ][: config.candidates]
    want = sorted({i for pairs in older.values() for i, _ in pairs})
    known = {e.id: e for e in index.store.get(want)}
    links = []
    for e in new:
        ents = entities(e.text)
        for old_id, score in older[e.id]:
            o = known.get(old_id)
            if o is None or o.id >= e.id or o.kind == "summary" or o.text == e.text:
                continue
            if (o.speaker == e.speaker or e.kind == "note") and ents & entities(o.text):
                links.append((o.id, e.id, score))
    return links


def link_new(
    store: EpisodicStore,
    index: HippocampalIndex,
    ids: Sequence[int],
    config: LinkConfig = LinkConfig(),
) -> list[tuple[int, int, float]]:
    """Finds and records the supersession links of the just-stored episodes ``ids``."""
    index.sync()
    links = find_links(index, store.get(list(ids)), config)
    store.add_links(links)
    return links
