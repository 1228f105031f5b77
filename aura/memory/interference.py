"""Retroactive interference: which of two linked memories a query gets first.

Write-time supersession (`aura.memory.supersede`) links an older episode i to a later one j
that may state a newer value of the same thing. At retrieval (`demote_superseded`, called by
`aura.memory.index.HippocampalIndex.search`) the query decides: i is placed just below j when

    cos(key_i, key_j) + fused_j - fused_i + change_bonus * (change_j - change_i) >= threshold

-- j is about the same thing as i, the query likes it almost as much, and a j that announces a
change needs less of both. Of two memories of a changed fact the newer wins, the way a newer
trace interferes with an older one.

Change-of-state wording (`states_change`): does a sentence say that something is different now?
"Actually, Mara moved to Porto last month." and "Tomas quit and now works as a baker." announce
a new value; "Mara lives in Lisbon." states one: a successor that announces a change is
confirmed more easily, and a memory that itself announced a change is displaced less easily by
a later one that does not.

The cue is English wording only: temporal shifters ("now", "these days", "no longer",
"anymore", "recently"), change-of-state verbs ("moved", "switched", "became", "quit",
"renamed") and correction markers ("actually", "instead", "update"). It is a prior, not a
parser: on the memory development set every update and none of the facts told once use such
wording; on the held-out-style set (other templates) 93% of the updates and 16% of the facts
told once do ("These days Ines calls Oslo home." states a fact in change wording), and about 10%
of all turns do.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["CHANGE_WORDS", "demote_superseded", "states_change"]

CHANGE_WORDS = frozenset(
    re.findall(
        r"\w+",
        """
    now nowadays anymore currently lately recently newly latest
    actually instead update updated correction
    moved moving relocated switched switching swapped changed changing became become becoming
    converted transferred replaced renamed retired quit started starting took gave turned went
    left new since
    """,
    )
)
_PHRASES = ("no longer", "these days", "any more", "from now on")
_WORD = re.compile(r"[a-z]+")


def states_change(text: str) -> bool:
    """Whether ``text`` uses change-of-state wording (see the module docstring).

    >>> states_change("Actually, Mara moved to Porto."), states_change("Mara lives in Lisbon.")
    (True, False)
    """
    low = text.lower()
    return any(p in low for p in _PHRASES) or not CHANGE_WORDS.isdisjoint(_WORD.findall(low))


def demote_superseded(
    ids: np.ndarray,
    times: np.ndarray,
    keys: np.ndarray,
    fused: np.ndarray,
    links: dict[int, list[tuple[int, float]]],
    change: np.ndarray,
    threshold: float,
) -> dict[int, int]:
    """Places each linked candidate that the query confirms (the test above) just below its
    successor's score before any move, in place (one step: a chain does not drag an old fact
    further down).

    Args:
      ids, times: the candidates' episode ids and event times ([C]).
      keys: their keys ([C, D], L2-normalised).
      fused: their fused scores ([C], float64), changed in place.
      links: ``{old id: [(new id, score), ...]}`` (`EpisodicStore.links`).
      change: ``change_bonus * change`` of each candidate ([C]).
      threshold: the supersession threshold.

    Returns:
      ``{position: successor position}`` of the moved candidates.
    """
    pos = {int(i): p for p, i in enumerate(ids)}
    before = fused.copy()
    moved = {}
    for p in range(len(ids)):
        best = None
        for j_id, _ in links.get(int(ids[p]), ()):
            j = pos.get(j_id)
            if j is None or times[j] < times[p]:
                continue
            gap = before[j] - before[p] + change[j] - change[p]
            if float(keys[p] @ keys[j]) + gap >= threshold and (
                best is None or before[j] > before[best]
            ):
                best = j
        if best is not None and before[p] >= before[best]:
            fused[p] = np.nextafter(before[best], -np.inf)
            moved[p] = best
    return moved
