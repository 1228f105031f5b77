"""Bits per character after equal training time, for the LM benchmark (``tools/bench_lm.py``).

See ``tools/bench_lm.py``'s docstring, part 3, for the protocol.
"""

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from lm_bench_models import apply_fns, build_models, count_params, make_train_step

from aura.data.corpus import build_corpus
from aura.data.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from aura.nn.spiking import LIF
from aura.nn.transformer import TransformerLM


def prepare_text(args, tmp: str) -> dict:
    corpus_dir = args.corpus_dir or os.path.join(tmp, "corpus")
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(corpus_dir, "heldout.txt")):
        build_corpus(corpus_dir, max_docs=args.max_docs)
    t1 = time.perf_counter()
    tok = train_tokenizer(
        os.path.join(corpus_dir, "text"),
        os.path.join(tmp, "tokenizer"),
        TokenizerConfig(vocab_size=args.vocab),
    )
    t2 = time.perf_counter()
    sp = load_tokenizer(tok.model_path)
    text_dir = os.path.join(corpus_dir, "text")
    train_ids = []
    for name in sorted(os.listdir(text_dir)):
        if name.endswith(".txt"):
            with open(os.path.join(text_dir, name), encoding="utf-8") as f:
                train_ids += [sp.bos_id(), *sp.encode(f.read())]
    with open(os.path.join(corpus_dir, "heldout.txt"), encoding="utf-8") as f:
        held_text = f.read()
    if args.eval_chars:
        held_text = held_text[: args.eval_chars]
    held_ids = sp.encode(held_text)
    return {
        "corpus_dir": args.corpus_dir or "(a temporary directory, removed)",
        "vocab": sp.get_piece_size(),
        "train_ids": np.asarray(train_ids, np.int32),
        "held_ids": np.asarray([sp.bos_id(), *held_ids], np.int32),
        "held_chars_original": len(held_text),
        "held_chars_decoded": len(sp.decode(held_ids)),
        "corpus_seconds": t1 - t0,
        "tokenizer_seconds": t2 - t1,
    }


def _lr_at(frac: float, peak: float, warmup: float = 0.05) -> float:
    """Warm-up over the first 5% of the time budget, then cosine decay to peak / 10."""
    if frac < warmup:
        return peak * frac / warmup
    x = min(1.0, (frac - warmup) / (1 - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * x)))


class _Trainer:
    """One model trained for a time budget, one step at a time (so trainers can alternate)."""

    def __init__(self, model, data: dict, args, lr: float, seed: int):
        self.ids, self.t, self.b = data["train_ids"], args.bpc_len, args.bpc_batch
        self.budget, self.lr = args.bpc_seconds, lr
        logits_fn, init = apply_fns(model)
        self.params = init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"]
        tx, step = make_train_step(logits_fn)
        self.opt_state = tx.init(self.params)
        self.rng = np.random.default_rng(seed)  # the same windows in the same order for all
        self.step = step.lower(self.params, self.opt_state, self._batch(), jnp.float32(0)).compile()
        self.elapsed, self.losses = 0.0, []

    def _batch(self) -> np.ndarray:
        starts = self.rng.integers(0, len(self.ids) - self.t - 1, self.b)
        return np.stack([self.ids[s : s + self.t + 1] for s in starts])  # [B, T + 1]

    @property
    def done(self) -> bool:
        return self.elapsed >= self.budget

    def train_step(self) -> None:
        """One step (batch sampling included), charged to this trainer's clock."""
        t0 = time.perf_counter()
        lr = jnp.float32(_lr_at(self.elapsed / self.budget, self.lr))
        self.params, self.opt_state, loss = self.step(
            self.params, self.opt_state, self._batch(), lr
        )
        self.losses.append(float(loss))  # waits for the step
        self.elapsed += time.perf_counter() - t0

    def info(self) -> dict:
        steps = len(self.losses)
        return {
            "steps": steps,
            "train_seconds": self.elapsed,
            "tokens_seen": steps * self.b * self.t,
            "final_train_loss": float(np.mean(self.losses[-10:])),
            "peak_lr": self.lr,
        }


def heldout_nll_bits(model, params, data: dict, t: int) -> float:
    """Total NLL (bits) of every held-out token after the leading BOS, in windows of T."""
    ids = data["held_ids"]
    n_win = math.ceil((len(ids) - 1) / t)
    x = np.zeros((n_win, t + 1), np.int32)  # window w: ids[w*T .. w*T + T], padded
    mask = np.zeros((n_win, t), np.float32)
    for w in range(n_win):
        chunk = ids[w * t : w * t + t + 1]
        x[w, : len(chunk)] = chunk
        mask[w, : len(chunk) - 1] = 1.0
    logits_fn, _ = apply_fns(model)

    @jax.jit
    def nll(p, xb, mb):
        ce = optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, xb[:, :-1]), xb[:, 1:])
        return jnp.sum(ce * mb)

    total = sum(float(nll(params, x[i : i + 16], mask[i : i + 16])) for i in range(0, n_win, 16))
    assert int(mask.sum()) == len(ids) - 1
    return total / math.log(2.0)


def spike_rate(model, params, x: np.ndarray) -> float | None:
    """Mean firing rate of all LIF neurons of an SRWKV model on x [B, T] (None if none spike)."""
    if isinstance(model, TransformerLM) or not model.spiking:
        return None
    _, state = model.apply(
        {"params": params},
        x,
        capture_intermediates=lambda mdl, method: isinstance(mdl, LIF) and method == "__call__",
        mutable=["intermediates"],
    )
    # Each LIF returns (spikes [B, T, D], membrane [B, D]): keep the 3-D leaves.
    spikes = [a for a in jax.tree.leaves(state["intermediates"]) if a.ndim == 3]
    return float(np.mean([np.mean(np.asarray(s)) for s in spikes]))


def bench_bpc(args, data: dict) -> dict:
    """Trains every row for the same time, alternating one step each, then scores heldout.txt.

    Alternating the steps (each model charged only for its own steps) keeps the comparison fair
    when other processes load the machine unevenly over the run.
    """
    names = ["transformer", "srwkv", *args.srwkv_variants]
    models, trainers = {}, {}
    for name in names:
        srwkv, tf = build_models(args, data["vocab"], "srwkv" if name == "transformer" else name)
        models[name] = tf if name == "transformer" else srwkv
        lr = args.lr_transformer if name == "transformer" else args.lr_srwkv
        trainers[name] = _Trainer(models[name], data, args, lr, seed=args.seed)
    while not all(tr.done for tr in trainers.values()):
        for tr in trainers.values():
            if not tr.done:
                tr.train_step()
    rows = {}
    n = args.bpc_len + 1
    k = max(1, min(4, len(data["held_ids"]) // n))
    probe = np.resize(data["held_ids"], k * n).reshape(k, n)  # [<= 4, T + 1] for spike rates
    for name, tr in trainers.items():
        info = tr.info()
        bits = heldout_nll_bits(models[name], tr.params, data, args.bpc_len)
        info |= {"params": count_params(tr.params), "nll_bits": bits}
        info["bpc"] = bits / data["held_chars_decoded"]
        info["spike_rate"] = spike_rate(models[name], tr.params, probe)
        rows[name] = info
        rate = "" if info["spike_rate"] is None else f", spike rate {info['spike_rate']:.3f}"
        print(
            f"  bpc   {name:<14} {info['bpc']:.4f} after {info['steps']} steps "
            f"({info['tokens_seen']} tokens, {info['train_seconds']:.0f} s){rate}",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------- driver
