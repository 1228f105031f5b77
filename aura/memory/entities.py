"""Entity words of a text: what names the subject of a memory ("Mara", "Porto", "Kyoto").

Entities are capitalised words other than "I"; a capitalised sentence opener counts only when it
is not a common English word (`common_words`: the lower-case vocabulary of the standard
library's docstrings, packaged as ``assets/common_words.txt`` and made by
``tools/make_memory_devset.py --common_words``), so "Actually" and "These" are not names while
"Mara lives in Lisbon." gives ``{"mara", "lisbon"}``. Deliberately simple and language-agnostic
enough for names; first-person facts ("I moved to Porto") are only linked through their other
entities. Used by write-time supersession (`aura.memory.supersede`) and as the index's
``entity`` cue (the share of the query's entities an episode names).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

__all__ = ["MASK", "common_words", "entities", "mask_entities"]

# Function words that open sentences but may be rare in lower case in docstrings.
_FUNCTION = frozenset(
    re.findall(
        r"\w+",
        "he she it we they you i me him her us them my his its our their your this that these "
        "those there here what who when where why how which yes no oh ok hey hi",
    )
)

_WORD = re.compile(r"[^\W\d_][\w'-]*")
MASK = "someone"  # what `mask_entities` puts in place of a name


@functools.cache
def common_words() -> frozenset[str]:
    """The packaged common lower-case English words (see the module docstring)."""
    path = resources.files("aura.memory") / "assets" / "common_words.txt"
    return frozenset(path.read_text(encoding="utf-8").split())


def entities(text: str) -> frozenset[str]:
    """Lower-cased entity words of ``text`` (see the module docstring).

    >>> sorted(entities("Actually, Mara moved to Porto. She loves it."))
    ['mara', 'porto']
    """
    common = common_words()
    out = set()
    for m in _WORD.finditer(text):
        word = m.group(0).split("'")[0]
        if not word[:1].isupper() or word == "I":
            continue
        before = text[: m.start()].rstrip()
        opener = not before or before[-1] in '.!?:"(['
        if word.lower() in _FUNCTION or (opener and word.lower() in common):
            continue
        out.add(word.lower())
    return frozenset(out)


def mask_entities(text: str, ents: frozenset[str] | set[str], placeholder: str = MASK) -> str:
    """``text`` with each capitalised word whose lower case is in ``ents`` replaced by
    ``placeholder`` (a possessive ending stays); used by the masked cue (`aura.memory.masked`).

    >>> mask_entities("Mara's dog met Mara and Porto.", {"mara"})
    "someone's dog met someone and Porto."
    """
    if not ents:
        return text

    def sub(m: re.Match) -> str:
        word = m.group(0)
        head = word.split("'")[0]
        if word[:1].isupper() and head.lower() in ents:
            return placeholder + word[len(head) :]
        return word

    return _WORD.sub(sub, text)
