"""Writes a Cortex QA set (JSONL) made from the embedded corpus (`aura.data.qa_corpus`).

The embedded default (`aura/data/assets/cortex_qa.jsonl`, 300 contexts, 1,028 records) was made
with:

    python tools/make_cortex_qa.py --out aura/data/assets/cortex_qa.jsonl

and the 10,000-record timing/tuning set (2,000 contexts, two phrasings per question type) with:

    python tools/make_cortex_qa.py --contexts 2000 --records_per_context 5 --phrasings 2 \
        --out /tmp/cortex_qa_10k.jsonl
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.data.qa_corpus import build_qa_records, write_qa_jsonl  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True)
    p.add_argument("--contexts", type=int, default=300)
    p.add_argument("--records_per_context", type=int, default=4)
    p.add_argument("--phrasings", type=int, default=1, help="phrasings asked per question type")
    p.add_argument("--min_questions", type=int, default=3, help="question types a context needs")
    p.add_argument("--max_chars", type=int, default=480, help="docstring characters per context")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    records = build_qa_records(
        a.contexts, records_per_context=a.records_per_context, phrasings=a.phrasings,
        min_questions=a.min_questions, seed=a.seed, max_chars=a.max_chars,
    )  # fmt: skip
    write_qa_jsonl(a.out, records)
    types = collections.Counter(r["type"] for r in records)
    contexts = len({r["context"] for r in records})
    print(f"wrote {len(records)} records about {contexts} contexts to {a.out}: {dict(types)}")


if __name__ == "__main__":
    main()
