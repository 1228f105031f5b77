"""Benchmark: LiquidMoE forward+backward against a dense MLP with the same active parameters.

    python tools/bench_moe.py [--json PATH] [--repeats 7] [--tokens 8192]

Default problem (issue #2): E=16 experts, k=2, D=256, F=1024, 8,192 tokens; the dense baseline is
one MLP with F = k·1024 = 2048 (the same parameters touched per token). Every variant is jitted
and warmed up, then the variants are timed in interleaved rounds (one call of each per round,
``--repeats`` rounds) so that the load of a shared machine hits all alike; the table shows
medians, the ratio to the dense MLP, the fraction of (token, choice) pairs dropped, XLA's
compiled FLOPs and the MFU against ``--peak_flops`` (``tools/flops.py``); the JSON holds every
sample. Variants: capacity dispatch at the default capacity factor (1.25) and at 1.0, the
dropless ragged_dot path, and the compute-every-expert reference (what a naive MoE costs).
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
from flops import add_peak_flag, compiled_flops, parse_peak

from aura.nn.moe import LiquidMoE, RoutingControls


class DenseMLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        h = jax.nn.gelu(nn.Dense(self.hidden)(x))
        return nn.Dense(x.shape[-1])(h)


def time_interleaved(runs: dict, repeats: int) -> dict[str, list[float]]:
    """runs: name -> (compiled fn, args). Two warm-up calls each, then rounds of one call each."""
    for fn, args in runs.values():
        jax.block_until_ready(fn(*args))
        jax.block_until_ready(fn(*args))
    samples = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (fn, args) in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            samples[name].append(time.perf_counter() - t0)
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
    add_peak_flag(ap)
    args = ap.parse_args()
    try:
        peak = parse_peak(args.peak_flops)
    except ValueError as e:
        ap.error(str(e))

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

    dense = DenseMLP(K * F)
    dense_params = dense.init(key, x)["params"]
    runs = {"dense_mlp": (make_step(dense, False), (dense_params,))}
    variants = [("moe_capacity_1.25", "capacity", 1.25), ("moe_capacity_1.0", "capacity", 1.0)]
    if not args.skip_slow:
        variants += [("moe_ragged_dot", "ragged", 1.0), ("moe_every_expert", "dense", 1.0)]
    drops = {}
    for name, mode, cf in variants:
        moe = LiquidMoE(E, D, F, top_k=K, dispatch=mode, capacity_factor=cf)
        params = moe.init(key, x, controls)["params"]
        runs[name] = (make_step(moe, True), (params,))
        _, aux = jax.jit(lambda p, m=moe: m.apply({"params": p}, x, controls))(params)
        drops[name] = float(aux.dropped_fraction)
    runs = {n: (f.lower(*a).compile(), a) for n, (f, a) in runs.items()}
    flops = {n: compiled_flops(f) for n, (f, _) in runs.items()}
    results = time_interleaved(runs, args.repeats)

    base = statistics.median(results["dense_mlp"])
    rows = []
    print(f"{'variant':<20} {'median ms':>10} {'ratio':>7} {'dropped':>8} {'GFLOP':>8} {'MFU':>7}")
    for name, samples in results.items():
        med = statistics.median(samples)
        fl = flops[name]
        util = None if fl is None else fl / med / peak
        rows.append(
            {
                "variant": name,
                "median_s": med,
                "ratio_vs_dense": med / base,
                "dropped_fraction": drops.get(name, 0.0),
                "flops": fl,
                "mfu": util,
                "samples_s": samples,
            }
        )
        gf = "n/a" if fl is None else f"{fl / 1e9:.1f}"
        mfu = "n/a" if util is None else f"{util:.1%}"
        print(
            f"{name:<20} {med * 1e3:>10.1f} {med / base:>7.2f} {drops.get(name, 0.0):>8.3f} "
            f"{gf:>8} {mfu:>7}"
        )
    out = {
        "benchmark": "moe_fwd_bwd_vs_dense",
        "config": {"tokens": N, "experts": E, "top_k": K, "dim": D, "hidden": F},
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "machine": platform.machine(),
        "repeats": args.repeats,
        "peak_flops": peak,
        "dropped_fraction_capacity_1.25": drops["moe_capacity_1.25"],
        "ratio": statistics.median(results["moe_capacity_1.25"]) / base,
        "results": rows,
    }
    print(
        f"ratio (capacity dispatch, factor 1.25, vs dense F={K * F}): {out['ratio']:.2f} "
        f"(target <= 1.3; {drops['moe_capacity_1.25']:.1%} of pairs dropped)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
