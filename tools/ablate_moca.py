"""Ablations of MOCA-Net on the copy task: which part does the work, and what compute costs.

    python tools/ablate_moca.py [--steps 600] [--variants full,no_memory,one_expert,dense,half]
        [--budget_weights 0,0.5,2] [--budget 0.3] [--config configs/moca.py:default]
        [--json ablate_moca.json] [--jobs 4]
    python tools/ablate_moca.py --task textcls --config configs/moca.py:textcls --steps 300 \
        --variants full,wide_only,moca_only --budget_weights "" [--data corpus:stdlib:8]

Trains the same preset once per variant (``aura.experiments.moca.experiment.train`` in a
temporary workdir, the copy task) and prints one table: per-token and per-sequence accuracy at
the training lengths and at the longer evaluation lengths, the compute actually used (the
fraction of expert and slot activations) and the wall time. Variants:

    full        the preset
    no_memory   no slot memory (only the counters cross tokens): must fail copy
    one_expert  a single expert (no expert routing)
    dense       every expert runs for every token (top_k = num_experts)
    half        half the width, experts' hidden size, slots and key/value widths
    budget=<w>  the preset with budget weight w and min_ratio 0.5 on experts and slots (a
                candidate runs only above half the best one's probability), so the budget
                can lower the compute used (the sweep: compute used vs accuracy); the target
                is the preset's budget or ``--budget`` (compute counts from 0.133, one expert
                of 4 and one slot of 64 per token, to 1.0)
    wide_only   text (``--task textcls``, a wide-and-deep preset): the hashed TF-IDF linear path
                alone (``model.deep_scale = 0``)
    moca_only   text: MOCA alone (``model.wide_buckets = 0``)

For ``--task textcls`` the table has accuracy and macro-F1 on the eval split of ``--data``
(default: the preset's) beside the TF-IDF + logistic-regression baseline on the same split.

``--json`` writes every row (with the full summary) as one JSON document; the table also ends
with one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura.experiments.moca.experiment import RunConfig, train  # noqa: E402

VARIANTS = ("full", "no_memory", "one_expert", "dense", "half")
TEXT_VARIANTS = ("full", "wide_only", "moca_only")


def _load(spec: str):
    path, _, preset = spec.partition(":")
    spec_ = importlib.util.spec_from_file_location("moca_preset", path)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module.get_config(preset or "default")


def variant_config(base, name: str):
    """The preset changed for one variant (a copy)."""
    c = base.copy_and_resolve_references()
    m = c.model
    if name == "no_memory":
        m.use_memory = False
    elif name == "one_expert":
        m.num_experts, m.top_k = 1, 1
    elif name == "dense":
        m.top_k = m.num_experts
    elif name == "half":
        m.dim, m.expert_hidden, m.num_slots = m.dim // 2, m.expert_hidden // 2, m.num_slots // 2
        m.slot_top_k, m.key_dim = max(1, m.slot_top_k // 2), m.key_dim // 2
        m.value_dim = m.value_dim // 2
        m.position_key_dim, m.router_hidden = m.position_key_dim // 2, m.router_hidden // 2
    elif name == "wide_only":
        m.deep_scale = 0.0
    elif name == "moca_only":
        m.wide_buckets = 0
    elif name.startswith("budget="):
        c.loss.budget_weight = float(name.split("=", 1)[1])
        m.expert_min_ratio = m.slot_min_ratio = 0.5
    elif name != "full":
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}, budget=<w>")
    return c


def run_variant(base, name: str, steps: int, budget=None, task="copy", data=None) -> dict:
    c = variant_config(base, name)
    if budget is not None:
        c.loss.budget = budget
    c.steps, c.eval_every = steps, steps
    with tempfile.TemporaryDirectory() as work:
        r = train(RunConfig(task, work, c, data=data, tensorboard=False), log=lambda s: None)
    if task == "textcls":
        keys = ("accuracy", "macro_f1", "baseline_accuracy", "compute_used", "wall_s")
        return {"variant": name, **{k: r[k] for k in keys}, "summary": r}
    return {"variant": name, "token_acc": r["token_acc"], "seq_acc": r["seq_acc"],
            "compute_used": r["compute_used"], "budget": r["budget"], "wall_s": r["wall_s"],
            "summary": r}  # fmt: skip


def run_parallel(args, names: list[str]) -> list[dict]:
    """Each variant in its own process (``--jobs`` at a time); rows in ``names`` order."""
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pending, running = list(enumerate(names)), []
        while pending or running:
            while pending and len(running) < args.jobs:
                i, name = pending.pop(0)
                out = f"{tmp}/{i}.json"
                cmd = [sys.executable, __file__, "--config", args.config, "--steps",
                       str(args.steps), "--budget_weights", "", "--variants", name, "--jobs", "1",
                       "--json", out, "--task", args.task]  # fmt: skip
                cmd += ["--data", args.data] if args.data else []
                cmd += [] if args.budget is None else ["--budget", str(args.budget)]
                running.append((name, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL)))
            name, out, proc = running.pop(0)
            if proc.wait() != 0:
                raise SystemExit(f"variant {name} failed (exit {proc.returncode})")
            rows[name] = json.loads(Path(out).read_text())["rows"][0]
    return [rows[n] for n in names]


def text_table(rows: list[dict]) -> str:
    head = ["variant", "accuracy", "macro_f1", "tfidf_lr", "compute", "wall_s"]
    out = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        base = r["baseline_accuracy"]
        cells = [r["variant"], f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                 "-" if base is None else f"{base:.3f}", f"{r['compute_used']:.3f}",
                 f"{r['wall_s']:.0f}"]  # fmt: skip
        out.append(" | ".join(cells))
    return "\n".join(out)


def table(rows: list[dict]) -> str:
    if "accuracy" in rows[0]:
        return text_table(rows)
    lengths = list(rows[0]["token_acc"])
    head = ["variant"] + [f"tok@{n}" for n in lengths] + [f"seq@{n}" for n in lengths]
    head += ["compute", "wall_s"]
    out = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [r["variant"]] + [f"{r['token_acc'][n]:.3f}" for n in lengths]
        cells += [f"{r['seq_acc'][n]:.3f}" for n in lengths]
        cells += [f"{r['compute_used']:.3f}", f"{r['wall_s']:.0f}"]
        out.append(" | ".join(cells))
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/moca.py"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--budget_weights", default="0,0.5,2", help="budget sweep ('' for none)")
    p.add_argument("--json", default=None)
    p.add_argument("--budget", type=float, default=None, help="compute target (default: preset)")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (processes)")
    p.add_argument("--task", choices=("copy", "textcls"), default="copy")
    p.add_argument("--data", default=None, help="textcls: source (default: the preset's)")
    args = p.parse_args()
    if args.budget is not None and not 0.0 < args.budget <= 1.0:
        p.error(f"--budget {args.budget} must be in (0, 1]")
    base = _load(args.config)
    names = [v for v in args.variants.split(",") if v]
    names += [f"budget={w}" for w in args.budget_weights.split(",") if w]
    rows = []
    if args.jobs > 1:
        rows = run_parallel(args, names)
    for name in names if args.jobs <= 1 else ():
        rows.append(run_variant(base, name, args.steps, args.budget, args.task, args.data))
        print(f"{name}: {json.dumps({k: v for k, v in rows[-1].items() if k != 'summary'})}",
              file=sys.stderr, flush=True)  # fmt: skip
    print(table(rows))
    doc = {"steps": args.steps, "config": args.config, "budget": args.budget, "task": args.task,
           "data": args.data, "rows": rows}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(json.dumps([{k: v for k, v in r.items() if k != "summary"} for r in rows]))


if __name__ == "__main__":
    main()
