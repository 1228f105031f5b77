"""PNG plots of a run's routing over epochs, drawn off-screen with matplotlib's Agg canvas.

`plot_routing(history, path)` takes one dict per epoch (as logged by the training loop, or the
records of `metrics.jsonl`; a `prefix/` on keys is ignored) and draws two panels: per-expert
utilisation as a stacked area, and gate entropy with accuracy on a second axis when present.
No pyplot and no global backend switch: the figure is rendered by `FigureCanvasAgg`, so it
works without a display and leaves the caller's matplotlib state alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_routing"]

UTIL_KEYS = ("util", "utilisation", "utilization", "expert_util")
ENTROPY_KEYS = ("entropy", "gate_entropy", "H")
ACC_KEYS = (
    "train_acc",
    "train_accuracy",
    "acc",
    "accuracy",
    "eval_acc",
    "eval_accuracy",
    "test_acc",
    "test_accuracy",
)


def _strip(record: Mapping[str, Any]) -> dict[str, Any]:
    # "epoch/util" -> "util": records from metrics.jsonl carry their prefix.
    return {str(k).rsplit("/", 1)[-1]: v for k, v in record.items()}


def _first(record: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if record.get(k) is not None:
            return record[k]
    return None


def plot_routing(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Writes a two-panel PNG of utilisation and gate entropy (and accuracy) over epochs.

    Args:
      history: one mapping per epoch with a per-expert utilisation vector (`util`,
        `utilisation`, ...), the gate entropy (`entropy`, `gate_entropy` or `H`), optionally
        accuracies (`acc`, `train_acc`, `eval_acc`, `test_acc`, ...) and `epoch` (x axis;
        otherwise the position). Records with none of these are skipped.
      path: output file; written to a temporary name, then renamed.

    Returns:
      `path`.

    Raises:
      ValueError: no record has utilisation or entropy.
    """
    recs = [_strip(r) for r in history]
    recs = [
        r for r in recs if _first(r, UTIL_KEYS) is not None or _first(r, ENTROPY_KEYS) is not None
    ]
    if not recs:
        raise ValueError(
            f"plot_routing: no record has utilisation ({', '.join(UTIL_KEYS)}) or entropy "
            f"({', '.join(ENTROPY_KEYS)})"
        )
    x = np.array([float(r.get("epoch", i)) for i, r in enumerate(recs)], np.float32)

    fig = Figure(figsize=(8, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_u, ax_h = fig.subplots(2, 1)  # Not sharex: one epoch draws bars per expert on top.

    utils = [_vector(_first(r, UTIL_KEYS)) for r in recs]
    num = max(u.size for u in utils)
    if num:
        # Experts grow over a run: pad earlier epochs' vectors with zeros to the widest one.
        grid = np.zeros((num, len(recs)), np.float32)  # [E, epochs]
        for j, u in enumerate(utils):
            grid[: u.size, j] = np.nan_to_num(u)
        labels = [f"expert {i}" for i in range(num)]
        if len(recs) == 1:  # One epoch: a bar per expert (an area needs two points).
            ax_u.bar(np.arange(num), grid[:, 0], tick_label=labels)
        else:
            ax_u.stackplot(x, grid, labels=labels, alpha=0.85)
            ax_u.set_xlabel("epoch")
            if num <= 12:
                ax_u.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    ax_u.set_ylabel("utilisation (share of routed tokens)")
    ax_u.set_title("per-expert utilisation")

    ent = np.array([np.nan if (v := _first(r, ENTROPY_KEYS)) is None else v for r in recs], float)
    ax_h.plot(x, ent, "o-", color="tab:purple", label="gate entropy H")
    ax_h.set_ylabel("gate entropy H (nats)")
    ax_h.set_xlabel("epoch")
    ax_h.set_title("gate entropy" + (" and accuracy" if any(_has_acc(r) for r in recs) else ""))
    lines, names = ax_h.get_legend_handles_labels()
    if any(_has_acc(r) for r in recs):
        ax_a = ax_h.twinx()
        for key in ACC_KEYS:
            vals = np.array([np.nan if r.get(key) is None else r[key] for r in recs], float)
            if np.isfinite(vals).any():
                ax_a.plot(x, vals, "s--", label=key)
        ax_a.set_ylabel("accuracy")
        more_lines, more_names = ax_a.get_legend_handles_labels()
        lines, names = lines + more_lines, names + more_names
    ax_h.legend(lines, names, loc="best", fontsize="small")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _vector(value: Any) -> np.ndarray:
    return np.zeros((0,), np.float32) if value is None else np.ravel(np.asarray(value, np.float32))


def _has_acc(record: Mapping[str, Any]) -> bool:
    return any(record.get(k) is not None for k in ACC_KEYS)
