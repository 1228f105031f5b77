"""Pretraining end to end, old code against new (``tools/bench_lm.py``, section 0b).

Section 0 (``lm_bench_adapter.py``) feeds the old and the new train step the same padded
batches. This section runs what a user runs, ``python -m aura.build pretrain`` on the embedded
corpus of ``make demo``, once as the code before issue 15 ran it and once as this tree runs it,
each in its own worker process (``lm_bench_e2e_worker.py``):

* input, shared: the corpus and tokenizer built by this tree's commands as ``make demo`` builds
  them (``corpus``; ``tokenizer --vocab_size=4000 --model_type=unigram``); training reads
  ``instruct.jsonl``, the held-out score ``heldout_instruct.jsonl``;
* "old": a ``git archive`` of the baseline revision with its own input pipeline (every record
  alone in a padded row), its own train step and glibc's default allocator (the old
  ``aura.build`` set none);
* "new": this tree's pipeline (packed rows, the recurrent state reset at each record, grain
  prefetch; lines shuffled in windows of the preset's ``shuffle_window``, or of
  --e2e_shuffle_window) and train step, with ``keep_freed_host_memory()`` first thing in the
  process;
* "new_glibc_malloc": the same without the allocator setting, so the two gains separate;
* "new_token_matched" (with --e2e_matched_steps K): "new" with the schedule of a K-step run,
  stopped after K steps; K chosen so that it consumes about old's real tokens, it compares the
  loss per real token of two complete runs (warm-up and cosine decay each);
* "new_rowsR" (with --e2e_matched_rows R): "new" with R packed rows per step instead of the
  preset's batch; R chosen so that a step holds about old's real tokens, it keeps old's records
  per update (and so its loss per real token) at packing's cost per step.

All start from the same parameters (checked by a checksum) with the preset's optimizer and the
schedule of a run of --e2e_warmup + --e2e_steps steps; the parent asks each for one step in
turn, so the machine's load hits all alike. Rates are over the timed steps (after the warm-up):
tokens of the timed steps / their summed wall time, a step's time running from fetching its
batch to its loss on the host. Tokens: real = the tokens of records (prompt and response, not
padding); scored = response tokens with a loss; padded = rows x width, what the step computes.

Loss curves: at step 0, whenever a worker's real tokens pass the next multiple of
--e2e_eval_tokens, and after the last step, it scores the same held-out rows (one record per
row): the mean next-token cross-entropy over their response tokens (CE, nats) and bits per
character (``aura.experiments.lm.heldout``'s count); new_glibc_malloc, whose numerics are the
new ones, only at step 0 and at the end. Compared with old's: at equal real tokens (the two
evaluations just past the same multiple), after the same number of steps, and by the step and
the wall time at which new first reaches old's final CE.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from lm_bench_adapter import ROOT, LineWorker, _old_tree, _preset
from lm_bench_e2e_worker import BOOT

from aura.data.instruct import InstructFormatter
from aura.data.tokenizer import load_tokenizer
from aura.experiments.lm.heldout import heldout_batches

VARIANTS = (("old", "old", False), ("new", "new", True), ("new_glibc_malloc", "new", False))
FLAGS = {"e2e_steps": (150, 4), "e2e_warmup": (3, 1), "e2e_eval_tokens": (8000, 200),
         "e2e_matched_steps": (0, 0), "e2e_matched_rows": (0, 0),
         "e2e_shuffle_window": (0, 0)}  # fmt: skip
WORKER = os.path.join(ROOT, "tools", "lm_bench_e2e_worker.py")


def add_flags(ap) -> None:
    for key, (full, quick) in FLAGS.items():
        ap.add_argument(
            f"--{key}", type=int, default=None, help=f"default {full} (--quick {quick})"
        )


def fill_defaults(args) -> None:
    for key, (full, quick) in FLAGS.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)


def build_inputs(tmp: str) -> dict:
    """The demo's corpus and tokenizer, made by ``python -m aura.build`` as ``make demo`` does."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    for cmd in (["corpus", f"--out_dir={tmp}/corpus"],
                ["tokenizer", f"--input_dir={tmp}/corpus/text", f"--out_dir={tmp}/tokenizer",
                 "--vocab_size=4000", "--model_type=unigram"]):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "aura.build", *cmd], cwd=ROOT, env=env,
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode:
            raise RuntimeError(f"aura.build {cmd[0]} failed:\n{proc.stderr[-3000:]}")
    return {"jsonl": f"{tmp}/corpus/instruct.jsonl", "spm_model": f"{tmp}/tokenizer/spiece.model",
            "heldout_jsonl": f"{tmp}/corpus/heldout_instruct.jsonl"}  # fmt: skip


def heldout_rows(path: str, spm_model: str, max_len: int, out: str) -> dict:
    """Saves the held-out records one per row, ``ids``/``mask`` ``[N / R, R, max_len]``, to
    ``out`` (.npz); returns their counts (`aura.experiments.lm.heldout.heldout_batches`, which
    ``pretrain --heldout`` scores, without packing: the old model has no record boundaries)."""
    fmt = InstructFormatter(load_tokenizer(spm_model), max_len=max_len)
    batches, chars, records = heldout_batches(path, fmt, max_len, pack=False)
    np.savez(out, ids=batches["ids"], mask=batches["mask"])
    scored = float(batches["mask"][..., 1:].sum())
    return {"records": records, "chars": chars, "scored_tokens": scored}


class _Worker(LineWorker):
    """One variant's worker, with its step rows and held-out evaluations."""

    def __init__(self, name: str, cmd: list[str], env: dict, total: int):
        super().__init__(name, cmd, env)
        self.total, self.steps, self.evals = total, [], []
        self.real, self.next_eval = 0, 0


def variants(args) -> list[tuple[str, str, bool, int, int]]:
    """(name, pipeline, host allocator set, steps, rows per batch; 0: the preset's)."""
    total = args.e2e_warmup + args.e2e_steps
    out = [(name, pipe, alloc, total, 0) for name, pipe, alloc in VARIANTS]
    if args.e2e_matched_steps:
        out.append(("new_token_matched", "new", True, args.e2e_matched_steps, 0))
    if args.e2e_matched_rows:
        out.append((f"new_rows{args.e2e_matched_rows}", "new", True, total, args.e2e_matched_rows))
    return out


def _launch(variant: tuple, tree: str, files: dict, args) -> _Worker:
    name, pipeline, alloc, steps, rows = variant
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.path.join(ROOT, "tools")]))
    env.pop("BENCH_HOST_ALLOC", None)
    argv = [WORKER, "--tree", tree, "--pipeline", pipeline, "--jsonl", files["jsonl"],
            "--spm_model", files["spm_model"], "--heldout", files["heldout"],
            "--steps", str(steps), "--rows", str(rows), "--preset", args.preset,
            "--shuffle_window", str(args.e2e_shuffle_window)]  # fmt: skip
    cmd = [sys.executable, "-c", BOOT, *argv] if alloc else [sys.executable, *argv]
    return _Worker(name, cmd, env, steps)


def _evaluate(w: _Worker, step: int, chars: int, mark: int | None) -> None:
    out = w.ask("eval")
    ce = out["nats"] / max(out["count"], 1.0)
    bpc = out["nats"] / math.log(2.0) / max(chars, 1)
    w.evals.append({"step": step, "real_tokens": w.real, "mark": mark, "ce": ce, "bpc": bpc,
                    "seconds": out["seconds"]})  # fmt: skip


def _train(workers: list[_Worker], args, chars: int) -> list[float]:
    """One step of each worker in turn; evaluations at step 0, every --e2e_eval_tokens real
    tokens of each worker and at the end. Returns the 1-minute load averages seen."""
    load = [os.getloadavg()[0]]
    total = args.e2e_warmup + args.e2e_steps
    for step in range(total):
        for w in (w for w in workers if step < w.total):
            if w.real >= w.next_eval:  # new_glibc_malloc: at the ends only (same numerics)
                mark = w.real // args.e2e_eval_tokens
                if step == 0 or w.name != "new_glibc_malloc":
                    _evaluate(w, step, chars, mark)
                w.next_eval = (mark + 1) * args.e2e_eval_tokens
            w.steps.append(w.ask("step"))
            w.real += w.steps[-1]["real"]
        if step % 10 == 9:
            load.append(os.getloadavg()[0])
    for w in workers:
        _evaluate(w, len(w.steps), chars, None)
    load.append(os.getloadavg()[0])
    return load


def _summary(w: _Worker, warmup: int, peak: float) -> dict:
    timed = w.steps[warmup:]
    secs = sum(s["seconds"] for s in timed)
    row = {"s_per_step_median": statistics.median(s["seconds"] for s in timed),
           "s_per_step_mean": secs / len(timed), "steps_per_s": len(timed) / secs}  # fmt: skip
    for key in ("real", "scored", "padded"):
        row[f"{key}_tokens_per_s"] = sum(s[key] for s in timed) / secs
    row["real_fraction"] = sum(s["real"] for s in timed) / sum(s["padded"] for s in timed)
    flops = w.info["flops"]
    row["gflop_per_step"] = None if flops is None else flops / 1e9
    row["mfu"] = None if flops is None else flops * len(timed) / secs / peak
    row |= {
        "heldout": w.evals,
        "losses": [s["loss"] for s in w.steps],
        "seconds": [s["seconds"] for s in w.steps],
        "real": [s["real"] for s in w.steps],
    }
    return row | {k: w.info[k] for k in ("setup_s", "params", "param_checksum", "host_alloc",
                                         "vocab", "config")}  # fmt: skip


def compare_curves(old: list[dict], new: list[dict]) -> dict:
    """Held-out CE of ``new`` minus ``old`` at equal real tokens (each one's evaluation just
    past the same multiple of --e2e_eval_tokens, step 0 left out) and after the last step."""
    by_mark = {e["mark"]: e for e in new if e["mark"] is not None}
    pairs = [(e, by_mark[e["mark"]]) for e in old if e["mark"] and e["mark"] in by_mark]
    out = {"equal_tokens_points": len(pairs), "final_step": new[-1]["ce"] - old[-1]["ce"]}
    if pairs:
        diff = np.array([n["ce"] - o["ce"] for o, n in pairs])
        worst = int(np.argmax(np.abs(diff)))
        out |= {"equal_tokens_max_abs": float(np.abs(diff).max()),
                "equal_tokens_worst": float(diff[worst]),
                "equal_tokens_worst_at": [pairs[worst][0]["real_tokens"],
                                          pairs[worst][1]["real_tokens"]],
                "equal_tokens_last": float(diff[-1]), "equal_tokens_mean": float(diff.mean()),
                "equal_tokens_last_at": [pairs[-1][0]["real_tokens"],
                                         pairs[-1][1]["real_tokens"]]}  # fmt: skip
    return out


def _time_to_old_loss(old: dict, new: dict) -> dict:
    """When ``new``'s held-out CE first reaches ``old``'s final one: step and seconds."""
    target = old["heldout"][-1]["ce"]
    for e in new["heldout"]:
        if e["ce"] <= target:
            secs = sum(new["seconds"][: e["step"]])
            return {"step": e["step"], "seconds": secs,
                    "speedup": sum(old["seconds"]) / secs if secs else None}  # fmt: skip
    return {"step": None, "seconds": None, "speedup": None}


def bench_e2e(args, peak: float) -> dict:
    """Old vs new pretraining end to end; see the module docstring."""
    res: dict = {"baseline_rev": args.demo_baseline_rev, "preset": args.preset,
                 "steps": args.e2e_steps, "warmup": args.e2e_warmup,
                 "eval_tokens": args.e2e_eval_tokens, "peak_flops": peak,
                 "shuffle_window": args.e2e_shuffle_window or "preset"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        t0 = time.perf_counter()
        files = build_inputs(tmp)
        old_tree = _old_tree(args.demo_baseline_rev, tmp)
        c = _preset(ROOT, args.preset, 0, {})
        files["heldout"] = os.path.join(tmp, "heldout.npz")
        res["heldout"] = heldout_rows(files["heldout_jsonl"], files["spm_model"], c.max_len,
                                      files["heldout"])  # fmt: skip
        res["inputs_s"] = time.perf_counter() - t0
        workers, todo = [], variants(args)
        try:
            res["variants"] = [v[0] for v in todo]
            for v in todo:
                workers.append(_launch(v, old_tree if v[1] == "old" else ROOT, files, args))
            for w in workers:
                alloc = "set" if w.ready()["host_alloc"] else "glibc default"
                print(f"  e2e {w.name:<17} ready in {w.info['setup_s']:.1f} s (allocator {alloc})")
            res["load_avg_1min"] = _train(workers, args, res["heldout"]["chars"])
        finally:
            for w in workers:
                w.close()
    sums = {w.name: _summary(w, args.e2e_warmup, peak) for w in workers}
    old = sums["old"]
    if len({row["param_checksum"] for row in sums.values()}) != 1:
        raise RuntimeError(f"the workers' initial parameters differ: {sums}")
    for name, row in sums.items():
        for key in ("real_tokens_per_s", "padded_tokens_per_s", "steps_per_s"):
            row[f"{key}_vs_old"] = row[key] / old[key]
        if name != "old":
            row["heldout_vs_old"] = compare_curves(old["heldout"], row["heldout"])
            row["reaches_old_final_heldout"] = _time_to_old_loss(old, row)
        res[name] = row
    new, plain = sums["new"], sums["new_glibc_malloc"]
    res["new_vs_new_glibc_malloc"] = {
        "same_losses": new["losses"] == plain["losses"],
        "final_heldout_ce_diff": new["heldout"][-1]["ce"] - plain["heldout"][-1]["ce"],
    }
    _print(res)
    return res


def _print(res: dict) -> None:
    for name in res["variants"]:
        r, last = res[name], res[name]["heldout"][-1]
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        print(
            f"  e2e {name:<17} {r['s_per_step_median']:.3f} s/step  real "
            f"{r['real_tokens_per_s']:>7.0f} tok/s x{r['real_tokens_per_s_vs_old']:.2f}  padded "
            f"{r['padded_tokens_per_s']:>7.0f} x{r['padded_tokens_per_s_vs_old']:.2f}  real/padded "
            f"{r['real_fraction']:.2f}  MFU {mfu}  held-out CE {last['ce']:.3f} (bpc "
            f"{last['bpc']:.3f}) after {last['real_tokens']:,} real tokens",
            flush=True,
        )
        if name != "old" and r["heldout_vs_old"]["equal_tokens_points"]:
            h, t = r["heldout_vs_old"], r["reaches_old_final_heldout"]
            print(
                f"      held-out CE - old's: at equal real tokens ({h['equal_tokens_points']} "
                f"points) max |d| {h['equal_tokens_max_abs']:.3f}, mean "
                f"{h['equal_tokens_mean']:+.3f}, last {h['equal_tokens_last']:+.3f} (real tokens "
                f"{h['equal_tokens_last_at']}); after the last step {h['final_step']:+.3f}; "
                f"old's final CE reached at step {t['step']} (x{t['speedup'] or 0:.2f} sooner)",
                flush=True,
            )
    load = res["load_avg_1min"]
    print(f"  e2e load average (1 min) during the run: {min(load):.1f}-{max(load):.1f}", flush=True)


def e2e_ratios(res: dict) -> tuple[dict, dict]:
    """The section's ratios and its target (new real tokens/s >= 3x old) for bench_lm."""
    out = {}
    for name in res["variants"][1:]:
        out[f"e2e_real_tokens_per_s_{name}_over_old"] = res[name]["real_tokens_per_s_vs_old"]
        out[f"e2e_steps_per_s_{name}_over_old"] = res[name]["steps_per_s_vs_old"]
        h = res[name]["heldout_vs_old"]
        out[f"e2e_heldout_ce_{name}_minus_old_after_last_step"] = h["final_step"]
        if h["equal_tokens_points"]:
            out[f"e2e_heldout_ce_{name}_minus_old_max_abs_equal_tokens"] = h["equal_tokens_max_abs"]
    return out, {"e2e_new_real_tokens_per_s_ge_3": out["e2e_real_tokens_per_s_new_over_old"] >= 3.0}
