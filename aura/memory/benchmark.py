"""The memory benchmark as one call: read dialogues, load the encoder, evaluate, write metrics.

`run_memory_eval` is what a ``memory_eval`` command calls (``--dialogues FILE.jsonl --metrics_out
M.json [--policies ...] [--window 64] [--on_bad_record skip|fail] [--encoder DIR]``);
`format_table` is its human summary. The development set generated from the embedded corpus
ships with the package (`DEV_SET`). (``hybrid_qc`` needs a trained `QueryTypePolicy` in
``config``; see tools/ablate_query_type.py.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from importlib import resources

from aura.memory.dialogues import read_dialogues
from aura.memory.evaluate import POLICIES, EvalConfig, evaluate
from aura.models.sentence_encoder import load_sentence_encoder

__all__ = ["DEV_SET", "format_table", "run_memory_eval"]

DEV_SET = str(resources.files("aura.memory") / "assets" / "memory_dev.jsonl")


def run_memory_eval(
    dialogues_path: str,
    metrics_out: str | None = None,
    *,
    policies: Sequence[str] = POLICIES,
    window: int = 64,
    on_bad_record: str = "skip",
    encoder_dir: str | None = None,
    config: EvalConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluates the policies on a dialogue file; returns (and writes) the metrics dict.

    Args:
      dialogues_path: dialogue JSONL (see `aura.memory.dialogues`).
      metrics_out: where to write the metrics JSON (temporary name, then renamed); None: don't.
      policies: policy names.
      window: turns the ``window`` policy sees.
      on_bad_record: ``"skip"`` (report ``file:line`` and count) or ``"fail"``.
      encoder_dir: sentence-transformers directory (default: the packaged MiniLM).
      config: benchmark settings (``window`` overrides its window).
      log: where progress lines go.

    Raises:
      DataError: unreadable dialogues or encoder. ValueError: bad policies or window.
    """
    if window < 1:
        raise ValueError(f"window={window} must be >= 1")
    dialogues, problems = read_dialogues(dialogues_path, on_bad_record=on_bad_record)
    for p in problems[:20]:
        log(f"skipped {p}")
    if problems:
        log(f"skipped {len(problems)} bad record(s) of {dialogues_path}")
    encoder = load_sentence_encoder(encoder_dir)
    cfg = dataclasses.replace(config or EvalConfig(), window=window)
    metrics = evaluate(dialogues, encoder, policies=policies, config=cfg)
    metrics["skipped_records"] = len(problems)
    if metrics_out:
        if os.path.dirname(metrics_out):
            os.makedirs(os.path.dirname(metrics_out), exist_ok=True)
        tmp = f"{metrics_out}.tmp"
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=2)
        os.replace(tmp, metrics_out)
    return metrics


def format_table(metrics: dict) -> str:
    """A human table: one row per policy, overall numbers, latency and DB size."""
    kinds = sorted({k for p in metrics["policies"].values() for k in p["by_kind"]})
    head = f"{'policy':<10} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'A@1':>6} {'A@10':>6}"
    head += "".join(f" {k[:7] + ' R@1':>12}" for k in kinds) + f" {'ms/q':>6} {'DB KiB':>7}"
    lines = [
        f"{metrics['questions']} questions, {metrics['dialogues']} dialogues, "
        f"wall {metrics['wall_s']:.1f} s (embedding {metrics['embed_s']:.1f} s)",
        head,
    ]
    for name, p in metrics["policies"].items():
        o = p["overall"]
        row = f"{name:<10} " + " ".join(
            f"{o[k]:>6.3f}" for k in ("recall@1", "recall@5", "recall@10", "answer@1", "answer@10")
        )
        row += "".join(
            f" {p['by_kind'].get(k, {}).get('recall@1', float('nan')):>12.3f}" for k in kinds
        )
        row += f" {p['latency_ms']:>6.2f} {p['db_bytes'] / 1024:>7.0f}"
        lines.append(row)
    return "\n".join(lines)
