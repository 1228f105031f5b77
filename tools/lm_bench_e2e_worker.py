"""The worker of ``lm_bench_e2e.py`` (``tools/bench_lm.py`` section 0b): pretraining in one tree.

A worker imports ``aura`` from its own source tree (a ``git archive`` of the baseline revision,
or this tree), builds that tree's ``configs/pretrain.py`` preset, its input pipeline and its
train step, and answers the parent's ``step`` / ``eval`` lines with one JSON line each.

* ``--pipeline old``: the baseline's input: ``read_instruct`` -> ``InstructFormatter
  .encode_batch`` (every record alone in a row padded to ``max_len``, what the old
  ``lm_loop.load_examples`` did), rows drawn by the old ``lm_loop.batch_indices``; the old
  ``aura.train.lm_step`` train step.
* ``--pipeline new``: this tree's ``aura.data.stream.lm_batches`` with the preset's settings
  (packed rows, the recurrent state reset at each record, a grain prefetch thread), as
  ``PretrainExperiment`` builds it; the ``aura.experiments.lm.step`` train step.

Launched as ``python -c BOOT lm_bench_e2e_worker.py ...`` it first applies
``aura.host_alloc.keep_freed_host_memory()``, before numpy or jax are imported, as
``python -m aura.build`` does. Both pipelines start from ``model.init(key(seed))`` of their
preset and use the schedule of a ``--steps`` run. A step's time runs from fetching its batch to
the loss on the host. ``eval`` scores the parent's held-out rows (one record per row) with the
same code in every tree: the summed next-token cross-entropy of the response tokens.

    python tools/lm_bench_e2e_worker.py --tree DIR --pipeline old|new --jsonl F --spm_model F
        --heldout F.npz --steps N [--rows R] [--shuffle_window N] [--preset demo]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from lm_bench_adapter import _preset

# Run as ``python -c BOOT script args``: the allocator setting before numpy/jax exist.
BOOT = (
    "import os, runpy, sys\n"
    "from aura.host_alloc import keep_freed_host_memory\n"
    "os.environ['BENCH_HOST_ALLOC'] = str(int(keep_freed_host_memory()))\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


# ---------------------------------------------------------------- worker (one source tree)


def _old_pipeline(c, args):
    """The baseline's input (``lm_loop.load_examples`` + ``batch_indices``) and train step."""
    from aura.data.instruct import InstructFormatter, read_instruct
    from aura.data.tokenizer import load_tokenizer
    from aura.train.lm_loop import batch_indices
    from aura.train.lm_step import LMState, build_lm_train_step, make_lm_optimizer

    sp = load_tokenizer(args.spm_model)
    fmt = InstructFormatter(sp, max_len=c.max_len, pad_to=c.get("pad_to"))
    enc = fmt.encode_batch(read_instruct(args.jsonl))  # what load_examples did, plus lengths
    ids, mask, lengths = enc["ids"], enc["loss_mask"], enc["lengths"]
    tx, _ = make_lm_optimizer(c.lr, args.steps, c.warmup)

    def fetch(step: int):
        idx = batch_indices(c.get("seed", 0), step, len(ids), 1, args.rows or c.batch_size)
        counts = (int(lengths[idx].sum()), float(mask[idx][..., 1:].sum()), idx.size * ids.shape[1])
        return (ids[idx], mask[idx]), counts

    return sp, tx, lambda p: LMState(p, tx.init(p), np.int32(0)), build_lm_train_step, fetch


def _new_pipeline(c, args):
    """This tree's streaming packed input (as ``PretrainExperiment``) and train step."""
    from aura.data.instruct import InstructFormatter
    from aura.data.stream import lm_batches
    from aura.data.tokenizer import load_tokenizer
    from aura.experiments.lm.step import build_lm_train_step
    from aura.train.optim import TrainState, make_lm_optimizer

    sp = load_tokenizer(args.spm_model)
    fmt = InstructFormatter(sp, max_len=c.max_len)
    width, rows = c.pad_to or c.max_len, args.rows or c.batch_size
    tx, _ = make_lm_optimizer(c.lr, args.steps, c.warmup)
    data = iter(lm_batches(args.jsonl, fmt, width=width, rows=rows, pack=c.pack, seed=c.seed,
                           shuffle_window=args.shuffle_window or c.shuffle_window,
                           prefetch=c.prefetch))  # fmt: skip

    def fetch(step: int):
        del step  # the iterator's own position
        b = next(data)
        seg = b["segments"]
        counts = (int((seg > 0).sum()), float(b["mask"][:, 1:].sum()), seg.size)
        return ({k: v.reshape(1, rows, width) for k, v in b.items()},), counts

    return sp, tx, lambda p: TrainState(p, tx.init(p), np.int32(0)), build_lm_train_step, fetch


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
    c = _preset(tree, args.preset, 0, {})
    t0 = time.perf_counter()
    pipe = _old_pipeline if args.pipeline == "old" else _new_pipeline
    sp, tx, make_state, build_step, fetch = pipe(c, args)
    c.model.vocab_size = sp.get_piece_size()
    model = SelfTeachingAdapter(c.model)
    params = nn.meta.unbox(
        model.init(jax.random.key(c.get("seed", 0)), jnp.zeros((1, 8), jnp.int32))
    )
    params = params["params"]
    leaves = jax.tree.leaves(params)
    checksum = float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in leaves))
    state = make_state(params)
    first = fetch(0)  # step 0's batch: compiles the step, then trains as step 0
    held = dict(np.load(args.heldout, allow_pickle=False))  # ids, mask: [batches, R, W]

    def heldout_sums(p, ids, mask):  # the same scoring in every tree: one record per row
        logits, _, _ = model.apply({"params": p}, ids)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:])
        return jnp.sum(ce * mask[:, 1:]), jnp.sum(mask[:, 1:])

    step_fn = jax.jit(build_step(model, tx), donate_argnums=(0,))
    compiled = step_fn.lower(state, *first[0]).compile()
    score = jax.jit(heldout_sums).lower(params, held["ids"][0], held["mask"][0]).compile()
    ready = {"setup_s": time.perf_counter() - t0, "flops": compiled_flops(compiled),
             "params": int(sum(x.size for x in leaves)), "param_checksum": checksum,
             "host_alloc": os.environ.get("BENCH_HOST_ALLOC") == "1",
             "aura": os.path.dirname(aura.__file__), "vocab": int(c.model.vocab_size),
             "config": {k: c.model[k] for k in sorted(c.model.keys())}}  # fmt: skip
    print("READY " + json.dumps(ready), flush=True)
    _serve(compiled, score, state, first, fetch, held)


def _serve(compiled, score, state, first, fetch, held) -> None:
    """Answers the parent's ``step`` / ``eval`` lines, one JSON line each, until ``quit``."""
    step = 0
    for line in sys.stdin:
        t0 = time.perf_counter()
        if line.strip() == "eval":
            nats, count = 0.0, 0.0
            for ids, mask in zip(held["ids"], held["mask"], strict=True):  # [R, W] each
                s, n = score(state.params, ids, mask)
                nats, count = nats + float(s), count + float(n)
            out = {"nats": nats, "count": count, "seconds": time.perf_counter() - t0}
        elif line.strip() == "step":
            batch, (real, scored, padded) = first if step == 0 else fetch(step)
            state, metrics = compiled(state, *batch)
            loss = float(metrics["loss"])  # blocks until the step is done
            out = {"seconds": time.perf_counter() - t0, "loss": loss, "real": real,
                   "scored": scored, "padded": padded}  # fmt: skip
            step += 1
        else:
            break
        print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tree", required=True)
    ap.add_argument("--pipeline", required=True, choices=("old", "new"))
    for key in ("jsonl", "spm_model", "heldout"):
        ap.add_argument(f"--{key}", required=True)
    ap.add_argument("--steps", type=int, required=True, help="the run's length (lr schedule)")
    ap.add_argument("--rows", type=int, default=0, help="rows per batch (0: the preset's)")
    ap.add_argument("--shuffle_window", type=int, default=0, help="new pipeline (0: preset's)")
    ap.add_argument("--preset", default="demo")
    _worker(ap.parse_args())


if __name__ == "__main__":
    main()
