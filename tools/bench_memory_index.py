"""Dense-retrieval latency of the hippocampal index at 10k, 100k and 1M keys of width 384.

    python tools/bench_memory_index.py [--sizes 10000,100000,1000000] [--json PATH]

Random unit keys fill a `HopfieldMemory` of the size; the index's jitted, chunked dense top-k
(`aura.memory.index._dense_topk`, chunks of 4096 keys, k = 64 candidates) runs for one query and
for a batch of 16. Reports the median of ``--repeats`` calls after a warm-up (compile), the
compiled scratch memory (no [B, N, D] or [B, N] array is built) and checks the top-64 against
numpy on the first query.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aura.memory.index import _dense_topk  # noqa: E402
from aura.nn import hopfield  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = []
    print(f"{'keys':>9} {'B':>3} {'ms/call':>9} {'scratch MiB':>12} {'keys MiB':>9}")
    for n in (int(s) for s in a.sizes.split(",")):
        rng = np.random.default_rng(0)
        keys = rng.standard_normal((n, a.dim), dtype=np.float32)
        keys /= np.linalg.norm(keys, axis=1, keepdims=True)
        mem = hopfield.store(hopfield.init_memory(n, a.dim), jnp.asarray(keys))
        for b in (1, 16):
            q = rng.standard_normal((b, a.dim), dtype=np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            qj = jnp.asarray(q)
            fn = lambda mem=mem, qj=qj: jax.block_until_ready(
                _dense_topk(mem, qj, k=a.k, chunk_size=a.chunk)
            )
            idx, _ = fn()
            want = np.sort(np.argsort(-(keys @ q[0]))[: a.k])
            assert np.array_equal(np.sort(np.asarray(idx)[0]), want), "top-k differs from numpy"
            times = []
            for _ in range(a.repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            scratch = (
                _dense_topk.lower(mem, qj, k=a.k, chunk_size=a.chunk)
                .compile()
                .memory_analysis()
                .temp_size_in_bytes
            )
            row = {
                "keys": n,
                "batch": b,
                "ms_per_call": 1000 * statistics.median(times),
                "scratch_mib": scratch / 2**20,
                "keys_mib": keys.nbytes / 2**20,
            }
            rows.append(row)
            print(
                f"{n:>9} {b:>3} {row['ms_per_call']:>9.2f} {row['scratch_mib']:>12.1f} "
                f"{row['keys_mib']:>9.0f}",
                flush=True,
            )
        del mem, keys
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"dim": a.dim, "k": a.k, "chunk": a.chunk, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
