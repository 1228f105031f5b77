"""Benchmark: the SRWKV language core against a Transformer baseline of the same width and size.

    python tools/bench_lm.py [--json PATH] [--quick] [--corpus_dir DIR] [--bpc_seconds 90]
    python tools/bench_lm.py --skip train,gen,bpc      # only section 0, the adapter old vs new

Sections 1-3: both models are language models around their core: token embedding -> core ->
bias-free LM head (V logits). SRWKV: `aura.nn.language.SpikingLanguageCore` (lang_backend
"srwkv": its input and final LayerNorms, L spiking RWKV blocks). Transformer:
`aura.nn.transformer.TransformerLM` (L pre-LN blocks, RoPE attention, GELU MLP, final
LayerNorm). Same D and L; the Transformer's MLP width is solved so the parameter counts match
(both are reported). Sections 1-3 run in this one process:

0. The adapter's train step, old code vs new (`lm_bench_adapter.py`): the ``demo`` preset of
   ``configs/pretrain.py`` (SelfTeachingAdapter: embedding, LiquidMoE, SRWKV core, LM head),
   batch 16 x 128, built once from a ``git archive`` of the code before issue 15
   (--demo_baseline_rev) and once from this tree (plus --demo_extra config variants), each in
   its own process; the processes take one step each in turn on the same real-text batches
   from the same initial parameters. Reports s/step, tokens/s, MFU and the loss of every step
   (the loss curves must agree).
0b. Pretraining end to end, old code vs new (`lm_bench_e2e.py`): the demo's corpus, each tree
   with its own input pipeline, train step and host allocator, steps alternating; real / padded
   tokens/s, MFU and held-out loss curves compared at equal real tokens.
1. Training tokens/s: jitted forward + backward + AdamW update on random tokens, at T = 512 and
   T = 2048 with the same batch for both models; medians over --repeats after two warm-up steps.
2. Generation latency per token (batch 1, greedy, a jitted step called once per token with its
   state or cache donated, as `aura.serve.sampling` does): after ingesting a context of 64 and
   of 2048 tokens, --gen_tokens per stream, timed in --gen_rounds interleaved rounds so a change
   in the machine's load hits every stream alike. SRWKV carries its recurrent state. The
   Transformer's KV cache is static-shaped, so a step reads all its max_len slots whatever the
   context: with one max_len for both contexts its cost would not grow, so it is measured with
   caches sized to each context (max_len = context + generated tokens + 3; rows
   "transformer_kv") to show the growth, and once more with the cache sized to the longest
   context for both (row "transformer_kv_static", nearly flat by construction).
3. Bits per character on the held-out documents of the embedded corpus
   (`aura.data.corpus.build_corpus`) after EQUAL TRAINING TIME: a SentencePiece tokenizer
   (`aura.data.tokenizer.train_tokenizer`) is trained on the training text, each model trains on
   random windows of the tokenized training text (plain LM, T = 256) for --bpc_seconds of
   wall-clock steps (compilation excluded; the models alternate one step each and each is
   charged only its own steps, so uneven load from other processes hits all alike; the learning
   rate warms up and cosine-decays over that time), then `heldout.txt` is scored in windows of
   T tokens (BOS first, every token predicted once). bpc = total NLL in bits / characters of
   the text the token ids DECODE to (SentencePiece normalises, e.g. collapses runs of spaces;
   counting the original text's characters would lower the score for free). --srwkv_variants
   adds SRWKV rows (spiking off, a lower LIF threshold) trained the same way; the headline row
   "srwkv" is the core as shipped (SpikingLanguageCore defaults: spiking on, LIF threshold 1.0,
   RoPE on its input).

MFU everywhere = XLA's compiled FLOPs of the step / time / --peak_flops (``tools/flops.py``).

Targets (issue #4): SRWKV per-token latency at context 2048 / context 64 <= 1.1; SRWKV bpc /
Transformer bpc <= 1.05. The table prints medians; the JSON has every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flops import add_peak_flag, compiled_flops, parse_peak  # noqa: E402
from lm_bench_adapter import BASELINE_REV, bench_adapter  # noqa: E402
from lm_bench_bpc import bench_bpc, prepare_text  # noqa: E402
from lm_bench_e2e import add_flags, bench_e2e, e2e_ratios, fill_defaults  # noqa: E402
from lm_bench_models import (  # noqa: E402
    SRWKVLM,
    VARIANTS,
    apply_fns,
    build_models,
    count_params,
    make_train_step,
    summary,
)

from aura.nn.transformer import TransformerLM

GEN_TARGET, BPC_TARGET, ADAPTER_TARGET = 1.1, 1.05, 3.0
DEMO = {"demo_steps": (16, 4), "demo_warmup": (2, 1), "demo_batch": (16, 4),
        "demo_seq": (128, 32), "demo_vocab": (4000, 4000)}  # fmt: skip
NOTES = [
    "models: token embedding -> core -> bias-free head; equal D and L; the Transformer's MLP "
    "width is solved so the parameter counts match",
    "bpc = held-out NLL in bits / characters of the text the scored ids decode to",
    "bpc rows train for the same wall-clock time, alternating one step each",
    "transformer_kv: cache max_len = context + gen_tokens + 3 (a static cache's step cost is set "
    "by max_len); transformer_kv_static: max_len sized for the longest context at every context",
    "generation: batch 1, greedy, one jitted step per token with the state/cache donated",
]


def bench_throughput(args, models: dict, vocab: int) -> dict:
    """Per T: both models compiled and warmed up, then their timed steps alternate."""
    out = {}
    for t in args.train_lens:
        batch = max(1, args.train_tokens // t)
        toks = jax.random.randint(jax.random.key(1), (batch, t + 1), 0, vocab, jnp.int32)
        lr = jnp.float32(1e-4)
        runs = {}
        for name, model in models.items():
            logits_fn, init = apply_fns(model)
            params = init(jax.random.key(0), toks[:1, :8])["params"]
            tx, step = make_train_step(logits_fn)
            opt_state = tx.init(params)
            step = step.lower(params, opt_state, toks, lr).compile()
            runs[name] = [step, params, opt_state, [], compiled_flops(step)]
        for i in range(args.repeats + 2):  # the first call compiles, the second warms up
            for run in runs.values():
                step, params, opt_state, samples, _ = run
                t0 = time.perf_counter()
                params, opt_state, loss = step(params, opt_state, toks, lr)
                loss.block_until_ready()
                if i >= 2:
                    samples.append(time.perf_counter() - t0)
                run[1:3] = params, opt_state
        for name, run in runs.items():
            row = summary(run[3]) | {"batch": batch, "T": t, "flops": run[4]}
            row["tokens_per_s"] = batch * t / row["median_s"]
            row["mfu"] = None if run[4] is None else run[4] / row["median_s"] / args.peak
            out.setdefault(name, {})[str(t)] = row
            mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
            print(
                f"  train {name:<12} T={t:<5} B={batch:<3} {row['median_s']:.3f} s/step "
                f"{row['tokens_per_s']:>9.0f} tok/s  MFU {mfu}",
                flush=True,
            )
    return out


# ---------------------------------------------------------------- 2. generation latency


class _GenRun:
    """One (model, context) generation stream: its jitted step, params and carry."""

    def __init__(self, step, params, token, carry, position: int):
        self.step, self.params, self.token, self.carry = step, params, token, carry
        self.position, self.samples = position, []

    def timed(self, n: int, warmup: int = 0) -> None:
        """Generates warmup + n tokens, recording the last n per-token wall times."""
        for i in range(warmup + n):
            t0 = time.perf_counter()
            self.token, self.carry = self.step(
                self.params, self.token, self.carry, np.int32(self.position)
            )
            self.token.block_until_ready()
            self.position += 1
            if i >= warmup:
                self.samples.append(time.perf_counter() - t0)


def bench_generation(args, srwkv: SRWKVLM, tf: TransformerLM, vocab: int) -> dict:
    key = jax.random.key(2)
    longest, n, rounds = max(args.gen_contexts), args.gen_tokens, args.gen_rounds
    p_s = srwkv.init(key, jnp.zeros((1, 8), jnp.int32))["params"]
    p_t = tf.init(key, jnp.zeros((1, 8), jnp.int32))["params"]

    def s_step(p, tok, state, pos):
        del pos  # the state carries the position
        logits, state = srwkv.apply({"params": p}, tok, state, method="step")
        return jnp.argmax(logits, -1).astype(jnp.int32), state

    def t_step(p, tok, cache, pos):
        logits, cache = tf.apply({"params": p}, tok, cache, pos, method="step")
        return jnp.argmax(logits, -1).astype(jnp.int32), cache

    s_step = jax.jit(s_step, donate_argnums=(2,))
    t_step = jax.jit(t_step, donate_argnums=(2,))
    s_ingest = jax.jit(lambda p, x: srwkv.apply({"params": p}, x))
    t_prefill = jax.jit(lambda p, x, c: tf.apply({"params": p}, x, c, method="prefill"))
    runs: dict[tuple[str, int], _GenRun] = {}
    max_lens: dict[tuple[str, int], int] = {}
    for ctx in args.gen_contexts:  # ingest every context first
        prompt = jax.random.randint(jax.random.key(ctx), (1, ctx), 0, vocab, jnp.int32)
        logits, state = s_ingest(p_s, prompt)
        first = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
        runs["srwkv", ctx] = _GenRun(s_step, p_s, first, state, ctx)
        for name, max_len in (("transformer_kv", ctx), ("transformer_kv_static", longest)):
            max_len += n + 3  # room for the warm-up and the timed tokens
            _, cache = t_prefill(p_t, prompt, tf.init_cache(1, max_len))
            runs[name, ctx] = _GenRun(t_step, p_t, first, cache, ctx)
            max_lens[name, ctx] = max_len
    # Interleaved rounds, so a change in the machine's load hits every stream alike.
    for r in range(rounds):
        for run in runs.values():
            run.timed(n // rounds, warmup=3 if r == 0 else 0)
    out: dict = {}
    for (name, ctx), run in runs.items():
        row = summary(run.samples) | {"context": ctx}
        if (name, ctx) in max_lens:
            row["cache_max_len"] = max_lens[name, ctx]
        out.setdefault(name, {})[str(ctx)] = row
        print(f"  gen   {name:<22} ctx={ctx:<5} {row['median_s'] * 1e3:.3f} ms/token", flush=True)
    lo, hi = str(min(args.gen_contexts)), str(longest)
    for row in out.values():
        row["ratio_long_over_short"] = row[hi]["median_s"] / row[lo]["median_s"]
    return out


# ---------------------------------------------------------------- 3. bits per character


FULL = dict(
    dim=256, layers=4, heads=4, vocab=3000, train_lens="512,2048", train_tokens=4096, repeats=3,
    gen_contexts="64,2048", gen_tokens=256, gen_rounds=8, bpc_seconds=80.0, bpc_len=256,
    bpc_batch=8, max_docs=None, srwkv_variants="srwkv_nospike,srwkv_thr0.3",
)  # fmt: skip
QUICK = dict(
    dim=64, layers=2, heads=4, vocab=600, train_lens="64,256", train_tokens=1024, repeats=2,
    gen_contexts="16,256", gen_tokens=16, gen_rounds=2, bpc_seconds=4.0, bpc_len=64,
    bpc_batch=8, max_docs=400, srwkv_variants="",
)  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test sizes (< 2 minutes)")
    hint = "reuse a build_corpus output directory (built there when it has no heldout.txt)"
    ap.add_argument("--corpus_dir", default=None, help=hint)
    for key, val in FULL.items():
        kind = float if isinstance(val, float) else int if isinstance(val, int) else str
        hint = f"default {val} (--quick: {QUICK[key]})"
        ap.add_argument(f"--{key}", type=kind, default=None, help=hint)
    hint = "score only the first N held-out characters (0: all)"
    ap.add_argument("--eval_chars", type=int, default=0, help=hint)
    ap.add_argument("--lr_srwkv", type=float, default=4e-3, help="peak learning rate")
    ap.add_argument("--lr_transformer", type=float, default=4e-3, help="peak learning rate")
    hint = "RoPE on the SRWKV core's input, 0 or 1 (1: the SpikingLanguageCore default)"
    ap.add_argument("--srwkv_rope", type=int, default=1, choices=(0, 1), help=hint)
    ap.add_argument("--wkv_impl", default="auto", choices=("auto", "scan", "assoc", "chunked"))
    add_peak_flag(ap)
    ap.add_argument("--demo_baseline_rev", default=BASELINE_REV, help="git revision of 'old'")
    hint = "extra 'new' variants for section 0: comma list of adapter config key=value"
    ap.add_argument("--demo_extra", default="wkv_impl=chunked", help=hint)
    for key, (val, hint) in DEMO.items():
        ap.add_argument(f"--{key}", type=int, default=None, help=f"default {val} (--quick {hint})")
    add_flags(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of: adapter,e2e,train,gen,bpc")
    args = ap.parse_args(argv)
    try:
        args.peak = parse_peak(args.peak_flops)
    except ValueError as e:
        ap.error(str(e))
    for key, (full, quick) in DEMO.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    fill_defaults(args)
    args.preset = "tiny" if args.quick else "demo"
    preset = QUICK if args.quick else FULL
    for key, val in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, val)
    split = lambda s, f: [f(v) for v in str(s).split(",") if v.strip()]
    args.train_lens, args.gen_contexts = split(args.train_lens, int), split(args.gen_contexts, int)
    args.srwkv_variants = split(args.srwkv_variants, str)
    for v in args.srwkv_variants:
        if v not in VARIANTS or v == "srwkv":
            valid = ", ".join(k for k in VARIANTS if k != "srwkv")
            ap.error(f"unknown --srwkv_variants entry {v!r}; valid: {valid}")
    if len(args.gen_contexts) < 2 or min(args.gen_contexts) < 1:
        ap.error(f"--gen_contexts needs two or more contexts >= 1, got {args.gen_contexts}")
    if max(args.gen_contexts) + args.gen_tokens + 3 > 4096:
        ap.error(
            f"--gen_contexts {max(args.gen_contexts)} + --gen_tokens {args.gen_tokens} + 3 must "
            "be <= 4096, the models' rope_max_len"
        )
    if args.gen_rounds < 1 or args.gen_tokens < args.gen_rounds:
        ap.error(f"--gen_tokens {args.gen_tokens} must be >= --gen_rounds {args.gen_rounds} >= 1")
    for key in ("dim", "layers", "heads", "vocab", "train_tokens", "repeats", "bpc_len"):
        if getattr(args, key) < 1:
            ap.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.bpc_seconds <= 0:
        ap.error(f"--bpc_seconds must be > 0, got {args.bpc_seconds}")
    args.skip = set(split(args.skip, str))
    return args


def print_table(res: dict) -> None:
    thr = res.get("train", {})
    if thr:
        print("\n== training throughput (tokens/s, median) ==")
    for t in res["config"]["train_lens"] if thr else []:
        s, f = thr["srwkv"][str(t)], thr["transformer"][str(t)]
        ratio = s["tokens_per_s"] / f["tokens_per_s"]
        print(
            f"T={t:<5} B={s['batch']:<3} srwkv {s['tokens_per_s']:>9.0f}   transformer "
            f"{f['tokens_per_s']:>9.0f}   srwkv/transformer {ratio:.2f}"
        )
    if "gen" in res:
        print("\n== generation latency (ms/token, median, batch 1) ==")
        ctxs = res["config"]["gen_contexts"]
        print(f"{'model':<24}" + "".join(f"{'ctx ' + str(c):>12}" for c in ctxs) + f"{'ratio':>8}")
        for name, row in res["gen"].items():
            cells = "".join(f"{row[str(c)]['median_s'] * 1e3:>12.3f}" for c in ctxs)
            print(f"{name:<24}{cells}{row['ratio_long_over_short']:>8.2f}")
    if "bpc" in res:
        print("\n== bits per character on heldout.txt after equal training time ==")
        base = res["bpc"]["transformer"]["bpc"]
        for name, row in res["bpc"].items():
            print(
                f"{name:<16} bpc {row['bpc']:.4f}  x{row['bpc'] / base:.3f}  params "
                f"{row['params']:>9,}  steps {row['steps']:>5}  tokens {row['tokens_seen']:>8,}"
            )
    print("\n== ratios and targets ==")
    for key, val in res["ratios"].items():
        print(f"{key:<44} {val:.3f}")
    for key, val in res["targets_met"].items():
        print(f"{key:<44} {'met' if val else 'MISSED'}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    res: dict = {
        "benchmark": "lm_srwkv_vs_transformer",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "quick": args.quick,
    }
    res["config"] = {k: v for k, v in vars(args).items() if k not in ("json", "skip")}
    if "adapter" not in args.skip:
        print(f"adapter train step, old ({args.demo_baseline_rev[:10]}) vs new:", flush=True)
        res["adapter"] = bench_adapter(args, args.peak)
    if "e2e" not in args.skip:
        print(f"pretraining end to end, old ({args.demo_baseline_rev[:10]}) vs new:", flush=True)
        res["e2e"] = bench_e2e(args, args.peak)
    with tempfile.TemporaryDirectory(prefix="bench_lm_") as tmp:
        data = prepare_text(args, tmp) if "bpc" not in args.skip else None
        vocab = data["vocab"] if data else args.vocab
        srwkv, tf = build_models(args, vocab)
        x = jnp.zeros((1, 8), jnp.int32)
        pairs = (("srwkv", srwkv), ("transformer", tf))
        counts = {n: count_params(m.init(jax.random.key(0), x)["params"]) for n, m in pairs}
        res["config"] |= {"params": counts, "transformer_mlp_hidden": tf.mlp_hidden, "vocab": vocab}
        print(
            f"params: srwkv {counts['srwkv']:,}  transformer {counts['transformer']:,} "
            f"(D={args.dim}, L={args.layers}, V={vocab})",
            flush=True,
        )
        models = {"srwkv": srwkv, "transformer": tf}
        if "train" not in args.skip:
            res["train"] = bench_throughput(args, models, vocab)
        if "gen" not in args.skip:
            res["gen"] = bench_generation(args, srwkv, tf, vocab)
        if data is not None:
            res["text"] = {k: v for k, v in data.items() if not k.endswith("_ids")}
            res["text"]["train_tokens"] = len(data["train_ids"])
            res["text"]["heldout_tokens"] = len(data["held_ids"]) - 1
            res["bpc"] = bench_bpc(args, data)
    ratios, met = {}, {}
    if "adapter" in res:
        for name, row in res["adapter"].items():
            if isinstance(row, dict) and name != "old":
                ratios[f"adapter_tokens_per_s_{name}_over_old"] = row["speedup_vs_old"]
                ratios[f"adapter_max_abs_loss_diff_{name}_vs_old"] = row["max_abs_loss_diff_vs_old"]
        met["adapter_new_speedup_ge_3"] = res["adapter"]["new"]["speedup_vs_old"] >= ADAPTER_TARGET
    if "e2e" in res:
        ratios, met = (a | b for a, b in zip((ratios, met), e2e_ratios(res["e2e"]), strict=True))
    for t in args.train_lens if "train" in res else []:
        s, f = res["train"]["srwkv"][str(t)], res["train"]["transformer"][str(t)]
        ratios[f"train_tokens_per_s_srwkv_over_transformer_T{t}"] = (
            s["tokens_per_s"] / f["tokens_per_s"]
        )
    if "gen" in res:
        for name, row in res["gen"].items():
            ratios[f"gen_latency_{name}_long_over_short"] = row["ratio_long_over_short"]
        met["srwkv_gen_ratio_le_1.1"] = res["gen"]["srwkv"]["ratio_long_over_short"] <= GEN_TARGET
    if "bpc" in res:
        base = res["bpc"]["transformer"]["bpc"]
        for name, row in res["bpc"].items():
            if name != "transformer":
                ratios[f"bpc_{name}_over_transformer"] = row["bpc"] / base
        met["srwkv_bpc_ratio_le_1.05"] = ratios["bpc_srwkv_over_transformer"] <= BPC_TARGET
    res["ratios"], res["targets_met"] = ratios, met
    res["targets"] = {"gen_ratio_max": GEN_TARGET, "bpc_ratio_max": BPC_TARGET,
                      "adapter_speedup_min": ADAPTER_TARGET}  # fmt: skip
    res["notes"] = NOTES
    res["wall_seconds"] = time.perf_counter() - start
    print_table(res)
    print(f"\ntotal {res['wall_seconds']:.0f} s")
    if args.json:
        tmp_path = f"{args.json}.tmp"
        with open(tmp_path, "w") as f:
            json.dump(res, f, indent=2)
        os.replace(tmp_path, args.json)
    return res


if __name__ == "__main__":
    main()
