"""Models and training steps shared by the LM benchmark (``tools/bench_lm.py``).

SRWKVLM wraps ``SpikingLanguageCore`` (srwkv backend) with an embedding and an LM head so it
can be compared, core against core, with ``aura.nn.transformer.TransformerLM``.
"""

import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from aura.nn.language import SpikingLanguageCore
from aura.nn.transformer import TransformerLM

VARIANTS = {  # name -> SRWKV overrides
    "srwkv": {},
    "srwkv_nospike": {"spiking": False},
    "srwkv_thr0.3": {"lif_threshold": 0.3},
}


class SRWKVLM(nn.Module):
    """Token embedding -> SpikingLanguageCore ("srwkv") -> bias-free head."""

    vocab_size: int
    num_layers: int
    dim: int
    spiking: bool = True
    lif_threshold: float = 1.0
    use_rope: bool = True
    rope_max_len: int = 4096
    wkv_impl: str = "auto"

    def setup(self) -> None:
        self.embed = nn.Embed(self.vocab_size, self.dim)
        self.core = SpikingLanguageCore(
            lang_backend="srwkv",
            num_layers=self.num_layers,
            dim=self.dim,
            use_rope=self.use_rope,
            rope_max_len=self.rope_max_len,
            spiking=self.spiking,
            lif_threshold=self.lif_threshold,
            wkv_impl=self.wkv_impl,
        )
        self.head = nn.Dense(self.vocab_size, use_bias=False)

    def __call__(self, tokens: jax.Array, state=None):
        """tokens [B, T] -> (logits [B, T, V] f32, state)."""
        y, state = self.core(self.embed(tokens), state)
        return self.head(y).astype(jnp.float32), state

    def step(self, token: jax.Array, state):
        """token [B] -> (logits [B, V] f32, state)."""
        y, state = self.core.step(self.embed(token), state)
        return self.head(y).astype(jnp.float32), state


def count_params(params) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def build_models(args, vocab: int, variant: str = "srwkv"):
    """(srwkv LM, transformer LM); the Transformer's MLP width matches the parameter count."""
    d, layers = args.dim, args.layers
    rope, impl = bool(args.srwkv_rope), args.wkv_impl
    srwkv = SRWKVLM(vocab, layers, d, use_rope=rope, wkv_impl=impl, **VARIANTS[variant])
    # SRWKV per layer: 13 D^2 + 11 D (+ 2 D for its ln0/ln_out); Transformer per layer:
    # 4 D^2 + 2 D F + F + 5 D (+ 2 D for ln_out). Solve for F.
    hidden = max(1, round((9 * d * d + 6 * d) / (2 * d + 1)))
    tf = TransformerLM(vocab, layers, d, args.heads, mlp_hidden=hidden, rope_max_len=4096)
    return srwkv, tf


def apply_fns(model):
    """(logits_fn(params, tokens) -> [B, T, V], init_params(key, tokens))."""
    if isinstance(model, TransformerLM):
        return (lambda p, x: model.apply({"params": p}, x)), model.init
    return (lambda p, x: model.apply({"params": p}, x)[0]), model.init


def make_train_step(logits_fn):
    """Jitted (params, opt_state, tokens [B, T + 1], lr) -> (params, opt_state, loss)."""
    tx = optax.inject_hyperparams(
        lambda learning_rate: optax.chain(
            optax.clip_by_global_norm(1.0), optax.adamw(learning_rate, weight_decay=0.01)
        )
    )(learning_rate=1e-3)

    def loss_fn(params, tokens):
        logits = logits_fn(params, tokens[:, :-1])  # [B, T, V]
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    def step(params, opt_state, tokens, lr):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, jax.jit(step, donate_argnums=(0, 1))


def summary(samples: list[float]) -> dict:
    return {"samples_s": samples, "median_s": statistics.median(samples)}


# ---------------------------------------------------------------- 1. training throughput
