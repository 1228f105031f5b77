"""PNG of a MOCA run: accuracy curves, compute used vs the budget, expert and slot usage.

``plot_run(history, path, budget)`` takes the evaluation records (``token_acc``/``seq_acc``
dicts by length for copy, ``accuracy``/``macro_f1`` for text; ``compute_used``; the latest
``expert_load`` [E] and ``slot_load`` [M]) and draws three panels off-screen (matplotlib's Agg
canvas: no display, no global backend switch), written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _curves(ax, history: Sequence[dict[str, Any]]) -> None:
    steps = [r["step"] for r in history]
    for key in ("token_acc", "seq_acc"):
        if isinstance(history[-1].get(key), dict):
            for n in history[-1][key]:
                ax.plot(steps, [r[key].get(n) for r in history], marker=".",
                        label=f"{key} @{n}")  # fmt: skip
    for key in ("accuracy", "macro_f1"):
        if key in history[-1]:
            ax.plot(steps, [r.get(key) for r in history], marker=".", label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("eval accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)


def plot_run(history: Sequence[dict[str, Any]], path: str, budget: float) -> None:
    """Writes the run's PNG to ``path`` (nothing for an empty history)."""
    if not history:
        return
    fig = Figure(figsize=(13, 3.6))
    FigureCanvasAgg(fig)
    a, b, c = fig.subplots(1, 3)
    _curves(a, history)
    steps = [r["step"] for r in history]
    b.plot(steps, [r.get("compute_used") for r in history], marker=".", label="compute used")
    b.axhline(budget, color="k", linestyle="--", label="budget")
    b.set_xlabel("step")
    b.set_ylabel("fraction of experts + slots active")
    b.set_ylim(0, 1)
    b.legend(fontsize=7)
    last = history[-1]
    experts, slots = last.get("expert_load") or [], last.get("slot_load") or []
    c.bar(range(len(slots)), slots, color="tab:orange", label="slot load")
    c.bar(range(len(experts)), experts, color="tab:blue", alpha=0.8, label="expert load")
    c.set_xlabel("expert / slot index")
    c.set_ylabel("share of activations")
    c.legend(fontsize=7)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
