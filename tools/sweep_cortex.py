"""Sweeps Cortex's phase 2 reasoner: learning rate, experts, layers per expert, top-k, MoE/dense.

Phase 1 is trained once (``<workdir>/phase1``) and frozen; every grid point trains one reasoner
in ``<workdir>/runs/<name>`` (resumable; a finished run is restored, not retrained) and is
measured on the DEV split (tuning never looks at test; note that phase 2 also selects its
best step on dev, so these dev numbers are optimistic, which is fine for ranking). Each dense
run is the ablation matched in parameters to the MoE of the same experts / layers / hidden width
(top-k does not change its size). One JSON line per run goes to ``--json`` (appended) and a
summary table to stdout.

    python tools/sweep_cortex.py --qa_jsonl /tmp/cortex_qa_10k.jsonl --workdir /tmp/sweep \
        --lr 1e-3,2e-3 --experts 8,16 --layers 2,4 --top_k 2,4 --kinds moe,dense \
        --json /tmp/sweep.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.experiments.cortex.config import CortexConfig  # noqa: E402
from aura.experiments.cortex.data import prepare_data  # noqa: E402
from aura.experiments.cortex.run import train_phase1, train_reasoner  # noqa: E402
from aura.train import sharding  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def _preset(name: str):
    spec = importlib.util.spec_from_file_location("cortex_presets", f"{ROOT}/configs/cortex.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(name)


def grid(a) -> list[dict]:
    """The runs: every MoE point, and one dense point per (lr, experts, layers)."""
    runs = []
    for lr, e, layers in itertools.product(a.lr, a.experts, a.layers):
        if "moe" in a.kinds:
            runs += [dict(kind="moe", lr=lr, experts=e, layers=layers, top_k=k)
                     for k in a.top_k if k <= e]  # fmt: skip
        if "dense" in a.kinds:
            runs.append(dict(kind="dense", lr=lr, experts=e, layers=layers, top_k=None))
    return runs


def _config(base, run: dict) -> CortexConfig:
    c = base.copy_and_resolve_references()
    c.data.report_split = "dev"
    c.phase2.lr = run["lr"]
    c.reasoner.num_experts, c.reasoner.expert_layers = run["experts"], run["layers"]
    if run["top_k"] is not None:
        c.reasoner.top_k = run["top_k"]
    else:
        c.reasoner.top_k = min(c.reasoner.top_k, run["experts"])
    # the shared expert keeps its share of the slots (at most E/4) and leaves top_k routed ones
    c.reasoner.shared_experts = min(c.reasoner.shared_experts, run["experts"] // 4,
                                    run["experts"] - c.reasoner.top_k)  # fmt: skip
    return CortexConfig.from_dict(c)


def _name(run: dict) -> str:
    k = "" if run["top_k"] is None else f"_k{run['top_k']}"
    return f"{run['kind']}_lr{run['lr']:g}_e{run['experts']}_l{run['layers']}{k}"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--qa_jsonl", default=None, help="QA JSONL (default: the embedded set)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--preset", default="default")
    p.add_argument("--lr", type=_floats, default=[2e-3])
    p.add_argument("--experts", type=_ints, default=[16])
    p.add_argument("--layers", type=_ints, default=[4])
    p.add_argument("--top_k", type=_ints, default=[4])
    p.add_argument("--kinds", default="moe,dense")
    p.add_argument("--steps", type=int, default=None, help="phase 2 steps (default: preset's)")
    p.add_argument("--json", default=None, help="append one JSON line per run here")
    a = p.parse_args()
    a.kinds = a.kinds.split(",")
    base = _preset(a.preset)
    if a.steps:
        base.phase2.steps = a.steps
    cfg0 = _config(base, dict(lr=base.phase2.lr, experts=base.reasoner.num_experts,
                              layers=base.reasoner.expert_layers, top_k=None))  # fmt: skip
    quiet = lambda s: None  # noqa: E731
    data = prepare_data(a.qa_jsonl, a.workdir, split=cfg0.data.split, log=print)
    mesh = sharding.make_mesh({"data": 1})
    p1, _ = train_phase1(cfg0, data, f"{a.workdir}/phase1", mesh, False, quiet)
    rows = []
    for run in grid(a):
        t0 = time.time()
        out = train_reasoner(_config(base, run), data, p1.final, f"{a.workdir}/runs/{_name(run)}",
                             run["kind"], mesh, False, quiet)  # fmt: skip
        out.pop("top1"), out.pop("gates", None)
        row = {**run, **out, "split": "dev", "wall_s": round(time.time() - t0, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n{'run':<32} {'close_answer_mean':>17} {'exact_match':>11} {'block params':>12}")
    for r in sorted(rows, key=lambda r: -r["close_answer_mean"]):
        print(f"{_name(r):<32} {r['close_answer_mean']:>17.4f} {r['exact_match']:>11.4f} "
              f"{r['params_block']:>12,}")  # fmt: skip


if __name__ == "__main__":
    main()
