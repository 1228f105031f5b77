"""The adapter's training step, old code against new, for the LM benchmark (``tools/bench_lm.py``).

Each variant is a worker process that imports ``aura`` from its own source tree: "old" from a
``git archive`` of a baseline revision (the code before issue 15, by default), "new" from this
working tree, optionally with adapter-config overrides (e.g. ``wkv_impl=chunked``). Every
worker builds the same preset (``configs/pretrain.py`` of its tree), the same initial
parameters (same seed, same parameter names) and the same jitted train step: next-token
cross-entropy over every position + 1e-2 load-balance + 1e-3 router z-loss, AdamW (clip 1.0,
warm-up + cosine), like ``aura.train.lm_step`` with a full mask. The parent feeds all workers the
same batches of real text (byte tokens of Python standard-library sources) and asks them for
one step at a time in turn, so the machine's load hits every variant alike; it records each
step's wall time and loss.

    python tools/lm_bench_adapter.py --worker --tree DIR --data FILE.npy [--overrides JSON]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASELINE_REV = "ef0e6ab7d63e98dd2d2bae49de2eca99d16e2605"  # main before issue 15's changes
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- worker (one source tree)


def _preset(tree: str, preset: str, vocab: int, overrides: dict):
    spec = importlib.util.spec_from_file_location("_bench_preset", f"{tree}/configs/pretrain.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(preset)
    c.model.vocab_size = vocab
    for key, val in overrides.items():
        c.model[key] = val
    return c


def _worker(args) -> None:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    from flops import compiled_flops

    import aura
    from aura.models.adapter import SelfTeachingAdapter

    tree = os.path.realpath(args.tree)
    if not os.path.realpath(aura.__file__).startswith(tree + os.sep):
        raise SystemExit(f"worker imported aura from {aura.__file__}, not from {tree}")
    data = np.load(args.data, allow_pickle=False)  # [steps, B, T + 1] int32
    c = _preset(tree, args.preset, args.vocab, json.loads(args.overrides))
    model = SelfTeachingAdapter(c.model)
    total = max(c.steps, 2)  # the schedule of aura.train.lm_step.make_lm_optimizer
    warm = max(1, min(c.warmup, total // 2))
    sched = optax.warmup_cosine_decay_schedule(0.0, c.lr, warm, total, c.lr * 0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01))

    def loss_fn(params, tokens):
        logits, _, aux = model.apply({"params": params}, tokens[:, :-1])  # [B, T, V]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        return ce + 1e-2 * aux.load_balance_loss + 1e-3 * aux.router_z_loss, ce

    def step(params, opt_state, tokens):
        (_, ce), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, ce

    first = jnp.asarray(data[0])
    params = nn.meta.unbox(model.init(jax.random.key(args.seed), first[:1, :8])["params"])
    opt_state = tx.init(params)
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, first).compile()
    ready = {
        "compile_s": time.perf_counter() - t0,
        "flops": compiled_flops(compiled),
        "params": int(sum(np.prod(p.shape) for p in jax.tree.leaves(params))),
        "aura": os.path.dirname(aura.__file__),
        "config": {k: c.model[k] for k in sorted(c.model.keys())},
    }
    print("READY " + json.dumps(ready), flush=True)
    for i, line in enumerate(sys.stdin):
        if line.strip() != "step":
            break
        tokens = jnp.asarray(data[i % len(data)])
        t0 = time.perf_counter()
        params, opt_state, ce = compiled(params, opt_state, tokens)
        ce = float(ce)  # blocks until the step is done
        print(json.dumps({"seconds": time.perf_counter() - t0, "loss": ce}), flush=True)


# ---------------------------------------------------------------- parent


def text_batches(steps: int, batch: int, seq: int, seed: int) -> np.ndarray:
    """[steps, batch, seq + 1] int32 byte tokens: random windows of stdlib module sources."""
    import argparse as m1
    import json as m2
    import textwrap as m3

    text = b"".join(Path(m.__file__).read_bytes() for m in (m1, m2.decoder, m2.encoder, m3))
    ids = np.frombuffer(text, np.uint8).astype(np.int32)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seq - 1, size=(steps, batch))
    return ids[starts[..., None] + np.arange(seq + 1)]  # [steps, B, T + 1]


def _old_tree(rev: str, tmp: str) -> str:
    out = os.path.join(tmp, "baseline")
    os.makedirs(out)
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", rev, "aura", "configs"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    return out


class LineWorker:
    """A worker process that answers each command line with one JSON line; it starts with
    ``READY {info}`` (workers start, and compile, side by side before ``ready`` is called)."""

    def __init__(self, name: str, cmd: list[str], env: dict):
        self.name, self.info = name, {}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
        )

    def ready(self) -> dict:
        """Waits for the READY line and returns its info."""
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"worker {self.name} failed to start (its stderr is above)")
        self.info = json.loads(line[len("READY ") :])
        return self.info

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (its stderr is above)")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None and not self.info:  # failed or never waited for
            self.proc.kill()
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


class _Worker(LineWorker):
    def __init__(self, name: str, tree: str, data: str, overrides: dict, args):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.path.join(ROOT, "tools")]))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--tree", tree,
               "--data", data, "--overrides", json.dumps(overrides), "--preset", args.preset,
               "--vocab", str(args.demo_vocab), "--seed", str(args.seed)]  # fmt: skip
        super().__init__(name, cmd, env)
        self.ready()
        self.seconds, self.losses = [], []

    def step(self) -> None:
        row = self.ask("step")
        self.seconds.append(row["seconds"])
        self.losses.append(row["loss"])


def bench_adapter(args, peak: float) -> dict:
    """Old vs new adapter train step on the demo preset; see the module docstring."""
    tokens = args.demo_batch * args.demo_seq
    res: dict = {"baseline_rev": args.demo_baseline_rev, "batch": args.demo_batch,
                 "seq": args.demo_seq, "preset": args.preset, "peak_flops": peak}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_adapter_") as tmp:
        data = os.path.join(tmp, "batches.npy")
        steps = args.demo_steps + args.demo_warmup
        np.save(data, text_batches(steps, args.demo_batch, args.demo_seq, args.seed))
        variants = [("old", _old_tree(args.demo_baseline_rev, tmp), {}), ("new", ROOT, {})]
        variants += [(f"new_{k}={v}", ROOT, {k: v}) for k, v in _parse_extra(args.demo_extra)]
        workers = []
        try:
            for name, tree, over in variants:
                workers.append(_Worker(name, tree, data, over, args))
                print(f"  adapter {name:<24} compiled in {workers[-1].info['compile_s']:.1f} s",
                      flush=True)  # fmt: skip
            for _ in range(steps):  # one step of each variant in turn
                for w in workers:
                    w.step()
        finally:
            for w in workers:
                w.close()
    base = None
    for w in workers:
        timed = w.seconds[args.demo_warmup :]
        med = statistics.median(timed)
        row = {"median_s": med, "tokens_per_s": tokens / med, "samples_s": timed,
               "losses": w.losses, "flops": w.info["flops"], "compile_s": w.info["compile_s"],
               "params": w.info["params"], "config": w.info["config"]}  # fmt: skip
        row["mfu"] = None if row["flops"] is None else row["flops"] / med / peak
        base = base or row
        row["speedup_vs_old"] = row["tokens_per_s"] / base["tokens_per_s"]
        diff = np.abs(np.asarray(w.losses) - np.asarray(base["losses"]))
        row["max_abs_loss_diff_vs_old"] = float(diff.max())
        res[w.name] = row
        mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
        print(f"  adapter {w.name:<24} {med:.3f} s/step {row['tokens_per_s']:>8.0f} tok/s "
              f"x{row['speedup_vs_old']:.2f}  MFU {mfu}  max |loss - old| "
              f"{row['max_abs_loss_diff_vs_old']:.2e}", flush=True)  # fmt: skip
    return res


def _parse_extra(spec: str) -> list[tuple[str, object]]:
    out = []
    for item in [s for s in spec.split(",") if s.strip()]:
        key, _, val = item.partition("=")
        out.append((key.strip(), int(val) if val.strip().isdigit() else val.strip()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--tree", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    _worker(ap.parse_args())


if __name__ == "__main__":
    main()
