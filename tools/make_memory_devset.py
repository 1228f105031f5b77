"""Writes memory-benchmark dialogues generated from the embedded corpus (`aura.memory.devset`).

The committed development set was made with:

    python tools/make_memory_devset.py --out aura/memory/assets/memory_dev.jsonl

and the held-out-style sanity set (other templates, names and seed; not tuned on) with:

    python tools/make_memory_devset.py --variant heldout --seed 1 --out /tmp/memory_heldout.jsonl
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.memory.devset import VARIANTS, generate  # noqa: E402
from aura.memory.dialogues import write_dialogues  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True)
    p.add_argument("--variant", choices=VARIANTS, default="dev")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dialogues", type=int, default=10)
    p.add_argument("--turns", type=int, default=600)
    p.add_argument("--facts", type=int, default=110)
    p.add_argument("--updates", type=int, default=35)
    p.add_argument("--extra_questions", type=int, default=40)
    a = p.parse_args()
    dialogues = generate(
        a.dialogues,
        turns=a.turns,
        facts=a.facts,
        updates=a.updates,
        extra_questions=a.extra_questions,
        variant=a.variant,
        seed=a.seed,
    )
    if os.path.dirname(a.out):
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
    write_dialogues(a.out, dialogues)
    kinds = collections.Counter(q.kind for d in dialogues for q in d.questions)
    n_q = sum(kinds.values())
    print(
        f"wrote {a.out}: {len(dialogues)} dialogues, {n_q} questions {dict(kinds)}, "
        f"{os.path.getsize(a.out)} bytes"
    )


if __name__ == "__main__":
    main()
