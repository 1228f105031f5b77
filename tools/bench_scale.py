"""Scaling benchmark of the pretrain step: the same global batch on 1, 2, 4, 8 (simulated) devices.

    python tools/bench_scale.py [--preset demo] [--devices 1,2,4,8] [--mesh data=-1]
        [--global_batch 16] [--seq 128] [--vocab 4000] [--steps 5] [--json PATH]
    python tools/bench_scale.py --project --preset default --global_batch 256 --seq 512 \
        [--devices 16] [--json PATH]
    python tools/bench_scale.py --native [--preset default ...]   # on a real accelerator host

For each device count a subprocess is started with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the same way the tests simulate devices);
it builds the preset's SelfTeachingAdapter on the mesh (``--mesh``, default all devices on the
data axis), creates the state already sharded, jits the train step exactly as ``pretrain`` does
(with the same shardings and donation as ``aura.train.loop``), and reports

* the compiled memory analysis per device (arguments, outputs, temporaries, generated code),
* the compiled cost analysis (FLOPs and bytes of one step of the partitioned, per-device
  program, as XLA counts them),
* the median step time over ``--steps`` timed steps after one warm-up, tokens/s and tokens/s per
  device.

Simulated CPU devices share the host's cores, so per-device throughput falls as N grows here;
the point is that the program compiles and runs on every mesh, how per-device memory shrinks
(fsdp) and what the step costs in FLOPs. ``--project`` only compiles the step (no run) on one
device (or ``--devices N`` simulated ones) for the projection in ``docs/scaling.md``.
``--native`` skips the simulation and measures one row on the devices this host really has (a
TPU VM or a GPU box), which is how to check that projection. Prints a table; ``--json`` writes
the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def preset_model(preset: str, vocab: int, dtype: str | None):
    from aura.configs import pretrain as pretrain_presets

    model = pretrain_presets.get_config(preset).model
    model.vocab_size = vocab
    if dtype:
        model.dtype = dtype
    return model


def worker(args) -> dict:
    """Runs inside the subprocess: one device count, one JSON line on stdout."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aura.experiments.lm import pretrain as lm_loop
    from aura.models.adapter import SelfTeachingAdapter
    from aura.train import sharding
    from aura.train.optim import make_lm_optimizer

    model = SelfTeachingAdapter(preset_model(args.preset, args.vocab, args.dtype))
    optimizer, _ = make_lm_optimizer(1e-3, 1000)
    mesh = sharding.make_mesh(sharding.parse_mesh(args.mesh))
    A, B, T = 1, args.global_batch, args.seq
    lm_loop.check_mesh(mesh, B, model.config.num_experts)
    t0 = time.perf_counter()
    state, shardings = sharding.create_sharded(lm_loop.state_init(model, optimizer, T, 0), mesh)
    batch_sh = sharding.batch_sharding(mesh, ndim=3, batch_axis=1)  # [A, B, T], as the loop does
    step = jax.jit(
        lm_loop.build_lm_train_step(model, optimizer),
        in_shardings=(shardings, batch_sh, batch_sh),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, args.vocab, (A, B, T), dtype=np.int32)
    mask = np.ones((A, B, T), np.float32)
    gx = sharding.global_batch(tokens, mesh, batch_axis=1, global_rows=B)
    gm = sharding.global_batch(mask, mesh, batch_axis=1, global_rows=B)
    with jax.set_mesh(mesh):
        compiled = step.lower(state, gx, gm).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        row = {
            "devices": int(mesh.size),
            "mesh": dict(mesh.shape),
            "preset": args.preset,
            "global_batch": B,
            "seq": T,
            "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
            "compile_s": round(compile_s, 2),
            # XLA's counts for the partitioned (per-device) program of one step.
            "flops_per_device": float(cost.get("flops", float("nan"))) if cost else None,
            "bytes_accessed_per_device": float(cost.get("bytes accessed", float("nan")))
            if cost
            else None,
            "memory_per_device": {
                k: int(getattr(mem, f"{k}_size_in_bytes", 0))
                for k in ("argument", "output", "temp", "generated_code")
            }
            if mem is not None
            else None,
        }
        if not args.project:
            state, metrics = compiled(state, gx, gm)  # warm-up
            jax.block_until_ready(metrics)
            times = []
            for _ in range(args.steps):
                t = time.perf_counter()
                state, metrics = compiled(state, gx, gm)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t)
            dt = statistics.median(times)
            row.update(
                step_s=round(dt, 4),
                tokens_per_s=round(B * T / dt, 1),
                tokens_per_s_per_device=round(B * T / dt / mesh.size, 1),
                achieved_gflops_per_device=round(row["flops_per_device"] / dt / 1e9, 2)
                if row["flops_per_device"]
                else None,
                loss=float(jnp.asarray(metrics["loss"])),
            )
    return row


def run_device_count(n: int, args) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    cmd = [sys.executable, __file__, "--worker", "--preset", args.preset, "--mesh", args.mesh]
    cmd += ["--global_batch", str(args.global_batch), "--seq", str(args.seq)]
    cmd += ["--vocab", str(args.vocab), "--steps", str(args.steps)]
    cmd += ["--dtype", args.dtype] if args.dtype else []
    cmd += ["--project"] if args.project else []
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{n} devices failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(x: int) -> str:
    return f"{x / 2**20:8.1f}"


def print_table(rows: list[dict]) -> None:
    head = "devices  mesh                 step_s   tok/s  tok/s/dev  GFLOP/dev  GFLOP/s/dev"
    head += "  args MiB  temp MiB  compile_s"
    print(head)
    for r in rows:
        mesh = ",".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1"
        mem = r["memory_per_device"] or {}
        print(
            f"{r['devices']:>7}  {mesh:<18} {r.get('step_s', float('nan')):>7.3f} "
            f"{r.get('tokens_per_s', float('nan')):>7.0f}  "
            f"{r.get('tokens_per_s_per_device', float('nan')):>9.0f}  "
            f"{(r['flops_per_device'] or 0) / 1e9:>9.2f}  "
            f"{r.get('achieved_gflops_per_device') or float('nan'):>11.2f}  "
            f"{mib(mem.get('argument', 0))}  {mib(mem.get('temp', 0))}  {r['compile_s']:>9.1f}"
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="demo", help="configs/pretrain.py preset")
    p.add_argument("--devices", default=None, help="device counts (default 1,2,4,8; --project: 1)")
    p.add_argument("--mesh", default="data=-1", help="mesh per run, e.g. data=-1 or fsdp=-1")
    p.add_argument("--global_batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4000, help="the tokenizer's piece count")
    p.add_argument("--dtype", default=None, help="override the preset's compute dtype")
    p.add_argument("--steps", type=int, default=5, help="timed steps per device count")
    p.add_argument("--project", action="store_true", help="compile only (FLOPs, memory)")
    p.add_argument("--native", action="store_true", help="one row on this host's real devices")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    rows = []
    if args.native:
        rows.append(worker(args))
    else:
        args.devices = args.devices or ("1" if args.project else "1,2,4,8")
        for n in [int(c) for c in args.devices.split(",")]:
            rows.append(run_device_count(n, args))
            print(f"  {n} devices done", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
