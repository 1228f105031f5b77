"""Sweeps Cortex's phase 2 reasoner: learning rate, experts, layers per expert, top-k, MoE/dense.

Phase 1 is trained once (``<workdir>/phase1``) and frozen; every grid point trains one reasoner
in ``<workdir>/runs/<name>`` (resumable; a finished run is restored, not retrained) and is
measured on the DEV split (tuning never looks at test; note that phase 2 also selects its
best step on dev, so these dev numbers are optimistic, which is fine for ranking). Each dense
run is the ablation matched in parameters to the MoE of the same experts / layers / hidden width
(top-k does not change its size). ``--set GROUP.FIELD=V1,V2`` adds a grid axis over any other
config field (repeatable; the MoE-only fields ``reasoner.top_k/capacity_factor/route_on/
gate_noise`` and ``phase2.load_balance_weight/z_loss_weight`` are not varied for the dense runs,
which do not read them). ``--seed`` picks phase 1's and phase 2's seed (``<workdir>`` holds one
phase 1, so use one workdir per seed). One JSON line per run goes to ``--json`` (appended) and a
summary table to stdout.

    python tools/sweep_cortex.py --qa_jsonl /tmp/cortex_qa_10k.jsonl --workdir /tmp/sweep \
        --lr 1e-3,2e-3 --experts 8,16 --layers 2,4 --top_k 2,4 --kinds moe,dense \
        --json /tmp/sweep.jsonl
    python tools/sweep_cortex.py --qa_jsonl /tmp/cortex_qa_10k.jsonl --workdir /tmp/sweep \
        --lr 3e-4 --set phase2.steps=300,600 --set reasoner.dropout=0,0.1 --json /tmp/sweep.jsonl
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


MOE_ONLY = ("reasoner.top_k", "reasoner.capacity_factor", "reasoner.route_on",
            "reasoner.gate_noise", "phase2.load_balance_weight",
            "phase2.z_loss_weight")  # fmt: skip


def _value(s: str):
    """A ``--set`` value: int, float, true/false, else the string."""
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def _axis(s: str) -> tuple[str, list]:
    """``GROUP.FIELD=V1,V2`` -> (field, values)."""
    field, sep, values = s.partition("=")
    if not sep or field.count(".") != 1 or not values:
        raise argparse.ArgumentTypeError(f"--set {s!r}: want GROUP.FIELD=V1[,V2...]")
    return field, [_value(v) for v in values.split(",")]


def _sets(axes: list[tuple[str, list]], kind: str) -> list[dict]:
    """Every combination of the ``--set`` axes that ``kind`` reads (dense skips MoE-only ones)."""
    used = [(f, vs) for f, vs in axes if kind == "moe" or f not in MOE_ONLY]
    return [dict(zip([f for f, _ in used], combo, strict=True))
            for combo in itertools.product(*[vs for _, vs in used])]  # fmt: skip


def grid(a) -> list[dict]:
    """The runs: every MoE point, and one dense point per (lr, experts, layers, dense-read sets)."""
    runs = []
    for lr, e, layers in itertools.product(a.lr, a.experts, a.layers):
        if "moe" in a.kinds:
            runs += [dict(kind="moe", lr=lr, experts=e, layers=layers, top_k=k, sets=sets)
                     for k in a.top_k if k <= e for sets in _sets(a.set, "moe")]  # fmt: skip
        if "dense" in a.kinds:
            runs += [dict(kind="dense", lr=lr, experts=e, layers=layers, top_k=None, sets=sets)
                     for sets in _sets(a.set, "dense")]  # fmt: skip
    return runs


def _config(base, run: dict, seed: int = 0) -> CortexConfig:
    c = base.copy_and_resolve_references()
    c.data.report_split = "dev"
    c.seed = seed
    for field, value in run.get("sets", {}).items():
        group, name = field.split(".")
        c[group][name] = value
    c.phase2.lr = c.phase2.dense_lr = run["lr"]  # the run's rate, whichever the kind
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
    sets = "".join(f"_{f.split('.')[1]}{v}" for f, v in sorted(run.get("sets", {}).items()))
    return f"{run['kind']}_lr{run['lr']:g}_e{run['experts']}_l{run['layers']}{k}{sets}"


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
    p.add_argument(
        "--set",
        type=_axis,
        action="append",
        default=[],
        help="GROUP.FIELD=V1,V2: a grid axis over another config field (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="phase 1 and phase 2 seed")
    p.add_argument("--json", default=None, help="append one JSON line per run here")
    a = p.parse_args()
    a.kinds = a.kinds.split(",")
    base = _preset(a.preset)
    if a.steps:
        base.phase2.steps = a.steps
    cfg0 = _config(base, dict(lr=base.phase2.lr, experts=base.reasoner.num_experts,
                              layers=base.reasoner.expert_layers, top_k=None), a.seed)  # fmt: skip
    quiet = lambda s: None  # noqa: E731
    data = prepare_data(a.qa_jsonl, a.workdir, split=cfg0.data.split, log=print)
    mesh = sharding.make_mesh({"data": 1})
    p1, _ = train_phase1(cfg0, data, f"{a.workdir}/phase1", mesh, False, quiet)
    rows = []
    for run in grid(a):
        t0 = time.time()
        cfg = _config(base, run, a.seed)
        out = train_reasoner(cfg, data, p1.final, f"{a.workdir}/runs/{_name(run)}", run["kind"],
                             mesh, False, quiet)  # fmt: skip
        out.pop("top1"), out.pop("gates", None)
        row = {**run, **out, "seed": a.seed, "split": "dev", "wall_s": round(time.time() - t0, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n{'run':<56} {'close_answer_mean':>17} {'exact_match':>11} {'block params':>12}")
    for r in sorted(rows, key=lambda r: -r["close_answer_mean"]):
        print(f"{_name(r):<56} {r['close_answer_mean']:>17.4f} {r['exact_match']:>11.4f} "
              f"{r['params_block']:>12,}")  # fmt: skip


if __name__ == "__main__":
    main()
