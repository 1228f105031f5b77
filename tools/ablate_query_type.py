"""With and without the query-type classifier: ``hybrid`` vs ``hybrid_qc`` on two dialogue sets.

    python tools/ablate_query_type.py --train aura/memory/assets/memory_dev.jsonl \
        --tuning checkpoints/tune_coarse.json --tuning checkpoints/tune_fine.json \
        --eval aura/memory/assets/memory_dev.jsonl \
        --eval /tmp/memory_heldout.jsonl --json checkpoints/ablate_query_type.json

The classifier (`aura.memory.query_type`) is trained on the questions of ``--train`` (their
kinds); each kind gets the fusion config that scored best on that kind in ``--tuning`` (the JSON
of tools/tune_memory.py, run on the same development set). Prints the classifier's accuracy on
each evaluation set and both policies' numbers.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.memory.dialogues import read_dialogues  # noqa: E402
from aura.memory.evaluate import HYBRID, EvalConfig, evaluate  # noqa: E402
from aura.memory.index import FusionConfig  # noqa: E402
from aura.memory.query_type import QueryTypePolicy  # noqa: E402
from aura.models.sentence_encoder import load_sentence_encoder  # noqa: E402
from tools.tune_memory import objective  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--train", required=True)
    p.add_argument("--tuning", action="append", required=True, help="tune_memory.py JSON(s)")
    p.add_argument("--eval", action="append", required=True)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    train, _ = read_dialogues(a.train)
    results = []
    for path in a.tuning:
        with open(path) as f:
            results += json.load(f)["results"]
    per_kind = {  # each kind's best config over every tuning stage (tune_memory's objective)
        kind: FusionConfig(
            **max(results, key=lambda r, k=kind: objective(r["by_kind"][k]))["config"]
        )
        for kind in results[0]["by_kind"]
    }
    for kind, cfg in per_kind.items():
        print(f"{kind}: {cfg}")
    policy = QueryTypePolicy(per_kind, HYBRID).fit(
        [q.question for d in train for q in d.questions],
        [q.kind for d in train for q in d.questions],
    )
    encoder = load_sentence_encoder()
    out = {}
    for path in a.eval:
        dialogues, _ = read_dialogues(path)
        qs = [q for d in dialogues for q in d.questions]
        pred = policy.predict([q.question for q in qs])
        acc = sum(x == q.kind for x, q in zip(pred, qs, strict=True)) / len(qs)
        m = evaluate(
            dialogues,
            encoder,
            policies=["hybrid", "hybrid_qc"],
            config=EvalConfig(query_policy=policy),
        )
        out[path] = {
            "classifier_accuracy": acc,
            "predicted": dict(collections.Counter(pred)),
            "metrics": m,
        }
        print(f"{path}: classifier accuracy {acc:.3f}, predicted {dict(collections.Counter(pred))}")
        for name, r in m["policies"].items():
            o = r["overall"]
            kinds = " ".join(f"{k} {v['recall@1']:.3f}" for k, v in r["by_kind"].items())
            print(
                f"  {name:<10} R@1 {o['recall@1']:.3f} R@10 {o['recall@10']:.3f} | "
                f"R@1 by kind: {kinds}"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
