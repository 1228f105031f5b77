"""Tunes the hybrid retrieval's fusion on the memory development set (and only there).

    python tools/tune_memory.py --dialogues aura/memory/assets/memory_dev.jsonl \
        --json checkpoints/tune_memory.json [--stage fine|masked|change|wm]

Builds each dialogue's store and index once, embeds every text once, then scores a grid of
weighted-sum and reciprocal-rank-fusion configs on all questions. Prints the best configs of each
method (objective: mean of recall@1 and recall@10), the best config per question kind (what a
query-type policy would use) and writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.memory.dialogues import normalize_answer, read_dialogues  # noqa: E402
from aura.memory.evaluate import HYBRID, KS, EvalConfig, _fill, _score, _times, evaluate  # noqa: E402
from aura.memory.index import FusionConfig, HippocampalIndex  # noqa: E402
from aura.memory.store import EpisodicStore  # noqa: E402
from aura.memory.supersede import LinkConfig  # noqa: E402
from aura.models.sentence_encoder import load_sentence_encoder  # noqa: E402


def fine_grid() -> list[FusionConfig]:
    """Second stage, around the coarse winner (dense + supersession): the entity cue's weight
    and the supersession threshold (links recorded with the default `LinkConfig`)."""
    out = []
    for ent, th, rec in itertools.product((0.0, 0.1, 0.2, 0.3), (0.45, 0.5, 0.55, 0.6), (0.0, 0.1)):
        out.append(
            FusionConfig("weighted", 1.0, 0.0, rec, 0.0, 604800.0, entity=ent,
                         masked=0.0, supersede=True, supersede_threshold=th,
                         change_bonus=0.0)
        )  # fmt: skip
    return out


def masked_grid() -> list[FusionConfig]:
    """Fourth stage: the entity-masked cue's weight (`aura.memory.masked`) with the entity cue
    and the supersession threshold."""
    out = []
    for m, ent, th in itertools.product(
        (0.0, 0.25, 0.5, 0.75), (0.2,), (0.35, 0.4, 0.45, 0.5, 0.55)
    ):
        out.append(FusionConfig(entity=ent, masked=m, supersede_threshold=th, change_bonus=0.0))
    return out


def change_grid() -> list[FusionConfig]:
    """Fifth stage: the change-wording bonus of supersession (`aura.memory.interference`) with the
    supersession threshold (the earlier stages ran without it, ``change_bonus=0``)."""
    pairs = itertools.chain(
        itertools.product((0.0, 0.1, 0.2, 0.3, 0.5), (0.4, 0.45, 0.5, 0.55)),
        itertools.product((0.15, 0.2, 0.25, 0.3), (0.6, 0.65)),  # past the first grid's edge
    )
    return [FusionConfig(change_bonus=b, supersede_threshold=th) for b, th in pairs]


def grid() -> list[FusionConfig]:
    """The configs tried: weighted sums and RRF over dense, lexical and recency."""
    out = []
    for lex, rec, sup in itertools.product((0.0, 0.1, 0.2, 0.4), (0.0, 0.1, 0.2), (False, True)):
        for tau in (86400.0, 604800.0) if rec else (86400.0,):
            out.append(
                FusionConfig("weighted", 1.0, lex, rec, 0.0, tau, supersede=sup,
                             supersede_threshold=0.5, masked=0.0, change_bonus=0.0)
            )  # fmt: skip
    for lex, rec in itertools.product((0.0, 0.25, 0.5, 1.0), (0.0, 0.1, 0.25)):
        out.append(
            FusionConfig(
                "rrf", 1.0, lex, rec, 0.0, 86400.0, rrf_k=60.0, masked=0.0, change_bonus=0.0
            )
        )
    return out


def score_grid(dialogues, encoder, configs) -> list[dict]:
    """Per config: overall and per-kind recall/answer means."""
    texts = sorted(
        {t.text for d in dialogues for t in d.turns}
        | {q.question for d in dialogues for q in d.questions}
    )
    start = time.perf_counter()
    emb = dict(zip(texts, encoder.encode(texts), strict=True))
    print(f"embedded {len(texts)} texts in {time.perf_counter() - start:.1f} s", flush=True)
    per_cfg = [dict() for _ in configs]
    kinds = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in dialogues:
            e = np.stack([emb[t.text] for t in d.turns])
            times = _times(d)
            store = EpisodicStore(
                os.path.join(tmp, f"{d.id}.db"), encoder_name=encoder.name, dim=encoder.dim
            )
            turn_of = {i: n for n, i in enumerate(_fill(store, d, e, times, LinkConfig()))}
            index = HippocampalIndex(store, encoder=encoder)
            texts_n = [normalize_answer(t.text) for t in d.turns]
            kinds += [q.kind for q in d.questions]
            for c, cfg in enumerate(configs):
                ranked = []
                for q in d.questions:
                    hits = index.search(
                        q.question,
                        emb[q.question],
                        k=max(KS),
                        fusion=cfg,
                        now=float(times[-1]) + 60,
                        touch=False,
                    )
                    ranked.append([turn_of[h.episode.id] for h in hits])
                m = _score(
                    ranked,
                    [q.evidence for q in d.questions],
                    [normalize_answer(q.answer) for q in d.questions],
                    texts_n,
                    KS,
                    False,
                )
                for key, v in m.items():
                    per_cfg[c].setdefault(key, []).extend(v)
            store.close()
            print(
                f"{d.id}: {len(configs)} configs, {time.perf_counter() - start:.0f} s", flush=True
            )
    kinds = np.array(kinds)
    out = []
    for cfg, m in zip(configs, per_cfg, strict=True):
        overall = {k: float(np.mean(v)) for k, v in m.items()}
        by_kind = {
            kind: {k: float(np.mean(np.asarray(v)[kinds == kind])) for k, v in m.items()}
            for kind in sorted(set(kinds))
        }
        out.append({"config": dataclasses.asdict(cfg), "overall": overall, "by_kind": by_kind})
    return out


def objective(metrics: dict) -> float:
    """What the tuning maximises: mean of recall@1 and recall@10."""
    return 0.5 * (metrics["recall@1"] + metrics["recall@10"])


def tune_wm(args) -> None:
    """Third stage: the working memory of hybrid_wm (weight of its priority, importance cue)."""
    dialogues, _ = read_dialogues(args.dialogues)
    dialogues = dialogues[: args.wm_dialogues]
    encoder = load_sentence_encoder(args.encoder)
    rows = []
    for wm_weight, imp, cap in itertools.product((0.0, 0.05, 0.1, 0.2), (0.0, 0.1), (16,)):
        cfg = EvalConfig(
            hybrid=dataclasses.replace(HYBRID, importance=imp),
            wm_weight=wm_weight,
            wm_capacity=cap,
            bootstrap=10,
        )
        m = evaluate(dialogues, encoder, policies=["hybrid_wm"], config=cfg)["policies"][
            "hybrid_wm"
        ]
        rows.append({"wm_weight": wm_weight, "importance": imp, "capacity": cap} | m["overall"])
        print(json.dumps(rows[-1]), flush=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dialogues", required=True)
    p.add_argument("--json", required=True)
    p.add_argument(
        "--encoder", default=None, help="sentence-transformers directory (default MiniLM)"
    )
    p.add_argument(
        "--stage", choices=("coarse", "fine", "masked", "change", "wm"), default="coarse"
    )
    p.add_argument("--wm_dialogues", type=int, default=3, help="dialogues for --stage wm")
    args = p.parse_args()
    if args.stage == "wm":
        return tune_wm(args)
    dialogues, problems = read_dialogues(args.dialogues)
    encoder = load_sentence_encoder(args.encoder)
    grids = {"coarse": grid, "fine": fine_grid, "masked": masked_grid, "change": change_grid}
    results = score_grid(dialogues, encoder, grids[args.stage]())
    best = {}
    for method in sorted({r["config"]["method"] for r in results}):
        rows = sorted(
            (r for r in results if r["config"]["method"] == method),
            key=lambda r: -objective(r["overall"]),
        )
        best[method] = rows[0]
        print(f"\nbest {method}:")
        for r in rows[:5]:
            o = r["overall"]
            latest = r["by_kind"].get("latest", {}).get("recall@1", float("nan"))
            print(
                f"  obj {objective(o):.4f}  r@1 {o['recall@1']:.3f}  r@10 {o['recall@10']:.3f}  "
                f"latest r@1 {latest:.3f}  {r['config']}"
            )
    per_kind = {}
    for kind in results[0]["by_kind"]:
        r = max(results, key=lambda r: objective(r["by_kind"][kind]))
        per_kind[kind] = r["config"]
        print(f"best for {kind}: obj {objective(r['by_kind'][kind]):.4f}  {r['config']}")
    with open(args.json, "w") as f:
        json.dump(
            {"best": best, "per_kind": per_kind, "results": results, "skipped": problems},
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
