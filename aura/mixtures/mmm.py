"""The "mmm" model type: a `MultiMixtureTransformer` trained by gradient descent, managed like
the EM-fitted "gmm" and "hmm" types (registered on import).

Config (JSON): the model fields of `MultiMixtureTransformer` (``input_dim`` is taken from the
data when absent) plus training settings: ``learning_rate`` (1e-3), ``weight_decay`` (1e-5),
``steps`` (200), ``batch_size`` (32), ``kl_anneal_steps`` (50), ``anneal`` ("linear"),
``clip_norm`` (5.0), ``seed`` (0).

`score_samples` is the per-sequence ELBO at the posterior mean (`MultiMixtureTransformer.elbo`),
a lower bound of log p(x) in nats. Compiled functions are cached per model configuration, so
scoring many batches (or several models of one shape) compiles once.

Shapes: B sequences, T steps, D features.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aura.mixtures import registry
from aura.mixtures.validate import as_sequences, bucket, pad_rows
from aura.models.multi_mixture import MultiMixtureTransformer, init_params, kl_anneal

__all__ = ["MODEL_FIELDS", "TRAIN_DEFAULTS", "build_model"]

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(MultiMixtureTransformer))
MODEL_FIELDS = tuple(f for f in MODEL_FIELDS if f not in ("parent", "name"))
TRAIN_DEFAULTS = {
    "learning_rate": 1e-3, "weight_decay": 1e-5, "steps": 200, "batch_size": 32,
    "kl_anneal_steps": 50, "anneal": "linear", "clip_norm": 5.0, "seed": 0,
}  # fmt: skip


def build_model(config: dict, input_dim: int | None = None) -> MultiMixtureTransformer:
    """The model of a config (unknown keys raise ValueError naming them)."""
    unknown = set(config) - set(MODEL_FIELDS) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown mmm config keys {sorted(unknown)}; model fields: {MODEL_FIELDS}")
    fields = {k: config[k] for k in MODEL_FIELDS if k in config}
    if input_dim is not None:
        fields.setdefault("input_dim", input_dim)
        fields.setdefault("output_dim", input_dim)
    missing = [
        f.name
        for f in dataclasses.fields(MultiMixtureTransformer)
        if f.name not in fields and f.default is dataclasses.MISSING and f.name != "parent"
    ]
    if missing:
        raise ValueError(f"mmm config is missing {missing}")
    return MultiMixtureTransformer(**fields)


def _key(config: dict, input_dim: int) -> tuple:
    return tuple(sorted((k, v) for k, v in config.items() if k in MODEL_FIELDS)) + (input_dim,)


@functools.lru_cache(maxsize=16)
def _compiled(key: tuple, train: tuple):
    config = {k: v for k, v in key[:-1]}
    model = build_model(config, key[-1])
    t = dict(train)
    opt = optax.chain(
        optax.clip_by_global_norm(t["clip_norm"]),
        optax.adamw(t["learning_rate"], weight_decay=t["weight_decay"]),
    )

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, mask, rng, i):
        klw = kl_anneal(i, t["kl_anneal_steps"], t["anneal"])

        def loss_fn(p):
            total, parts = model.apply({"params": p}, x, rng, mask, klw, method=model.loss)
            return total, parts

        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    elbo = jax.jit(lambda p, x, mask: model.apply({"params": p}, x, mask, method=model.elbo))
    return model, opt, step, elbo


def _train_settings(config: dict) -> tuple:
    merged = {**TRAIN_DEFAULTS, **{k: config[k] for k in TRAIN_DEFAULTS if k in config}}
    return tuple(sorted(merged.items()))


def _fit(data: Any, config: dict) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    x, lengths = registry.split_sequences(data)
    x, lens = as_sequences(x, lengths, "data")
    train = _train_settings(config)
    t = dict(train)
    model, opt, step, _ = _compiled(_key(config, x.shape[2]), train)
    mask = np.arange(x.shape[1])[None] < lens[:, None]
    rng = np.random.default_rng(t["seed"])
    bs = min(int(t["batch_size"]), x.shape[0])
    key = jax.random.key(t["seed"])
    params = init_params(model, key, jnp.asarray(x[:bs]))
    opt_state = opt.init(params)
    loss = jnp.nan
    for i in range(int(t["steps"])):
        idx = rng.choice(x.shape[0], bs, replace=False)
        params, opt_state, loss = step(
            params, opt_state, x[idx], mask[idx], jax.random.fold_in(key, i), i
        )
    info = {"iterations": int(t["steps"]), "converged": None, "final_loss": float(loss)}
    info["fit_s"] = time.perf_counter() - t0
    return jax.device_get(params), info


def _score_samples(arrays: dict, config: dict, data: Any) -> np.ndarray:
    x, lengths = registry.split_sequences(data)
    x, lens = as_sequences(x, lengths, "data")
    _, _, _, elbo = _compiled(_key(config, x.shape[2]), _train_settings(config))
    b = x.shape[0]
    xp = pad_rows(x, bucket(b, minimum=8))
    mask = np.arange(x.shape[1])[None] < pad_rows(lens, xp.shape[0])[:, None]
    return np.asarray(elbo(arrays, jnp.asarray(xp), jnp.asarray(mask)))[:b]


registry.register_model_type(
    "mmm", fit=_fit, score_samples=_score_samples, sequence_data=True, overwrite=True
)
