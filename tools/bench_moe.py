"""Benchmark: LiquidMoE forward+backward against a dense MLP with the same active parameters.

    python tools/bench_moe.py [--json PATH] [--repeats 7] [--tokens 8192]

Default problem (issue #2): E=16 experts, k=2, D=256, F=1024, 8,192 tokens; the dense baseline is
one MLP with F = k·1024 = 2048 (the same parameters touched per token). Every variant is jitted,
warmed up, then timed ``--repeats`` times in this one process; the table shows medians and the
JSON holds every sample. Variants: capacity dispatch at the default capacity factor (1.25) and at
1.0, the ragged_dot path, and the compute-every-expert reference (what a naive MoE costs).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from aura.nn.moe import LiquidMoE, RoutingControls


class DenseMLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        h = jax.nn.gelu(nn.Dense(self.hidden)(x))
        return nn.Dense(x.shape[-1])(h)


def time_fn(fn, args, repeats: int) -> list[float]:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--top_k", type=int, default=2)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--skip_slow", action="store_true", help="skip ragged (slow on CPU) and dense")
    args = ap.parse_args()

    N, E, K, D, F = args.tokens, args.experts, args.top_k, args.dim, args.hidden
    key = jax.random.key(0)
    x = jax.random.normal(key, (N, D), jnp.float32)
    target = jax.random.normal(jax.random.key(1), (N, D), jnp.float32)
    controls = RoutingControls.create(E)

    def make_step(model, with_controls: bool):
        def loss(params):
            if with_controls:
                y, aux = model.apply({"params": params}, x, controls)
                return jnp.mean((y - target) ** 2) + 1e-2 * aux.load_balance_loss
            return jnp.mean((model.apply({"params": params}, x) - target) ** 2)

        return jax.jit(jax.value_and_grad(loss))

    results = {}
    dense = DenseMLP(K * F)
    dense_params = dense.init(key, x)["params"]
    results["dense_mlp"] = time_fn(make_step(dense, False), (dense_params,), args.repeats)

    variants = [("moe_capacity_1.25", "capacity", 1.25), ("moe_capacity_1.0", "capacity", 1.0)]
    if not args.skip_slow:
        variants += [("moe_ragged_dot", "ragged", 1.0), ("moe_every_expert", "dense", 1.0)]
    drops = {}
    for name, mode, cf in variants:
        moe = LiquidMoE(E, D, F, top_k=K, dispatch=mode, capacity_factor=cf)
        params = moe.init(key, x, controls)["params"]
        results[name] = time_fn(make_step(moe, True), (params,), args.repeats)
        _, aux = jax.jit(lambda p, m=moe: m.apply({"params": p}, x, controls))(params)
        drops[name] = float(aux.dropped_fraction)

    base = statistics.median(results["dense_mlp"])
    rows = []
    print(f"{'variant':<20} {'median ms':>10} {'ratio':>7} {'dropped':>8}")
    for name, samples in results.items():
        med = statistics.median(samples)
        rows.append(
            {
                "variant": name,
                "median_s": med,
                "ratio_vs_dense": med / base,
                "dropped_fraction": drops.get(name, 0.0),
                "samples_s": samples,
            }
        )
        print(f"{name:<20} {med * 1e3:>10.1f} {med / base:>7.2f} {drops.get(name, 0.0):>8.3f}")
    out = {
        "benchmark": "moe_fwd_bwd_vs_dense",
        "config": {"tokens": N, "experts": E, "top_k": K, "dim": D, "hidden": F},
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "machine": platform.machine(),
        "repeats": args.repeats,
        "ratio": statistics.median(results["moe_capacity_1.25"]) / base,
        "results": rows,
    }
    print(f"ratio (capacity dispatch, factor 1.25, vs dense F={K * F}): {out['ratio']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
