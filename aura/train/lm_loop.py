"""Instruction pretraining of the SelfTeachingAdapter: data -> sharded jitted steps -> orbax.

Used by ``python -m aura.build pretrain``. The same code runs on one CPU, all local devices
(``--pmap``: the mesh ``data=-1``) and a multi-host pod (each process feeds its rows of the
global batch; ``jax.make_array_from_process_local_data`` assembles it).

Resumption is exact: the data order is a pure function of (seed, epoch) and the position is the
step count, saved with the state; rerunning the same command continues from the latest
checkpoint in ``ckpt_out``. SIGTERM/SIGINT save a checkpoint at the current step and return.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import aura
from aura.data import batching
from aura.data.errors import DataError
from aura.data.instruct import InstructFormatter, ReadStats, read_instruct
from aura.data.tokenizer import check_piece_count, load_tokenizer
from aura.models.adapter import SelfTeachingAdapter
from aura.train import sharding
from aura.train.checkpoint import TrainCheckpointer
from aura.train.lm_step import LMState, build_lm_train_step, make_lm_optimizer
from aura.train.metrics import MetricsLogger, format_line, progress
from aura.train.preemption import PreemptionGuard


@dataclasses.dataclass
class PretrainConfig:
    jsonl: str
    spm_model: str
    ckpt_out: str
    model: ml_collections.ConfigDict
    steps: int = 200
    batch_size: int = 16  # global batch per micro-step
    accumulate_steps: int = 1
    max_len: int = 128
    pad_to: int | None = None
    lr: float = 3e-3
    warmup: int = 20
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    on_bad_record: str = "skip"
    mesh: dict = dataclasses.field(default_factory=lambda: {"data": 1})
    tensorboard: bool = True

    def validate(self):
        for name in ("steps", "batch_size", "accumulate_steps", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be >= 1")
        if self.pad_to is not None and self.pad_to < self.max_len:
            raise ValueError(f"--pad_to={self.pad_to} must be >= --max_len={self.max_len}")


def load_examples(cfg: PretrainConfig, log=print):
    """Tokenizer + encoded instruction records: (sp, ids [N, P] int32, mask [N, P] f32)."""
    sp = load_tokenizer(cfg.spm_model)
    stats = ReadStats()
    records = read_instruct(cfg.jsonl, on_bad_record=cfg.on_bad_record, stats=stats)
    if stats.bad_records:
        log(f"skipped {stats.bad_records} bad records, e.g. {'; '.join(stats.bad_examples)}")
    enc = InstructFormatter(sp, max_len=cfg.max_len, pad_to=cfg.pad_to).encode_batch(records)
    if int(enc["loss_mask"].sum()) == 0:
        raise DataError(f"{cfg.jsonl}: no response tokens survive max_len={cfg.max_len}")
    return sp, enc["ids"], enc["loss_mask"]


def model_config_for(cfg: PretrainConfig, sp) -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict(cfg.model.to_dict())
    if not model.get("vocab_size"):
        model.vocab_size = sp.get_piece_size()
    check_piece_count(sp, model.vocab_size, what="the config's vocab_size")
    return model


def pretrain(cfg: PretrainConfig, log=print) -> dict:
    """Runs or resumes pretraining; returns a summary dict."""
    cfg.validate()
    t0 = time.time()
    sp, ids, mask = load_examples(cfg, log)
    model_cfg = model_config_for(cfg, sp)
    model = SelfTeachingAdapter(model_cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    dp = sharding.data_parallel_size(mesh)
    if cfg.batch_size % dp:
        raise ValueError(
            f"--batch_size={cfg.batch_size} must be a multiple of the {dp} data shards"
        )
    n = len(ids)
    if cfg.batch_size > n:
        raise ValueError(f"--batch_size={cfg.batch_size} is larger than the {n} examples")
    optimizer, schedule = make_lm_optimizer(cfg.lr, cfg.steps, cfg.warmup)
    A, B, P = cfg.accumulate_steps, cfg.batch_size, ids.shape[1]

    def init():
        params = model.init(jax.random.key(cfg.seed), jnp.zeros((1, P), jnp.int32))["params"]
        return LMState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))

    state, state_shardings = sharding.create_sharded(init, mesh)
    batch_shard = sharding.batch_sharding(mesh, ndim=3, batch_axis=1)  # [A, B, P]
    step_fn = jax.jit(
        build_lm_train_step(model, optimizer),
        in_shardings=(state_shardings, batch_shard, batch_shard),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    ckpt = TrainCheckpointer(cfg.ckpt_out, max_to_keep=2)
    if ckpt.latest_step() is not None:
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings
        )
        state, meta = ckpt.restore(abstract_state=abstract)
        log(f"resumed from step {int(state.step)} in {cfg.ckpt_out}")
    per_epoch = batching.steps_per_epoch(n, B * A)
    logger = MetricsLogger(cfg.ckpt_out, tensorboard=cfg.tensorboard)
    proc, nproc = jax.process_index(), jax.process_count()
    rows = B // nproc  # this process's rows of each micro-batch

    def local_batch(step: int):
        epoch, pos = divmod(step, per_epoch)
        perm = batching.epoch_permutation(cfg.seed, epoch, n)
        idx = perm[pos * A * B : (pos + 1) * A * B].reshape(A, B)[
            :, proc * rows : (proc + 1) * rows
        ]
        return ids[idx], mask[idx]  # [A, rows, P]

    def save(force=False):
        meta = {
            "step": int(state.step),
            "model": model_cfg.to_dict(),
            "max_len": cfg.max_len,
            "pad_to": P,
            "spm_model": cfg.spm_model,
            "version": aura.__version__,
        }
        ckpt.save(int(state.step), state, meta, force=force)

    start = int(state.step)
    interrupted, window, last = False, [], {}
    t_log, tokens_since = time.time(), 0.0
    with PreemptionGuard() as guard:
        bar = progress(range(start, cfg.steps), total=cfg.steps - start, desc="pretrain")
        for step in bar:
            x, m = local_batch(step)
            gx = sharding.global_batch(x, mesh, batch_axis=1)
            gm = sharding.global_batch(m, mesh, batch_axis=1)
            state, metrics = step_fn(state, gx, gm)
            window.append(metrics)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                host = jax.device_get(window)
                tokens_since = sum(float(h["tokens"]) for h in host)
                dt = time.time() - t_log
                last = {
                    "step": step + 1,
                    "loss": float(np.mean([h["loss"] for h in host])),
                    "tokens_per_sec": tokens_since / max(dt, 1e-9),
                    "lr": float(schedule(step)),
                    "gate_entropy": float(np.mean([h["gate_entropy"] for h in host])),
                    "grad_norm": float(np.mean([h["grad_norm"] for h in host])),
                }
                if not all(math.isfinite(v) for v in last.values()):
                    raise FloatingPointError(f"non-finite metrics at step {step + 1}: {last}")
                logger.log(step + 1, last, prefix="train")
                if proc == 0:
                    log(format_line(last))
                window, t_log = [], time.time()
            if (step + 1) % cfg.save_every == 0:
                save()
            if guard.requested:
                save(force=True)
                ckpt.wait()
                log(f"interrupted: saved step {int(state.step)}; rerun the same command to resume")
                interrupted = True
                break
        if not interrupted:
            save(force=True)
    ckpt.wait()
    ckpt.close()
    logger.close()
    return {
        "steps": int(state.step),
        "final_loss": last.get("loss"),
        "tokens_per_sec": last.get("tokens_per_sec"),
        "examples": int(n),
        "vocab_size": int(model_cfg.vocab_size),
        "devices": int(mesh.size),
        "wall_s": round(time.time() - t0, 2),
        "interrupted": interrupted,
        "ckpt_out": cfg.ckpt_out,
    }


def load_adapter(ckpt_dir: str, step: int | None = None):
    """Restores a pretrained adapter: (model, params, meta) from ``ckpt_dir`` (latest step).

    Raises:
      CheckpointError: no checkpoint there, or one that does not match its own config.
    """
    from aura.train.checkpoint import CheckpointError

    ckpt = TrainCheckpointer(ckpt_dir, read_only=True) if os.path.isdir(ckpt_dir) else None
    if ckpt is None or ckpt.latest_step() is None:
        raise CheckpointError(
            f"no checkpoint in {ckpt_dir!r}; train one with python -m aura.build pretrain "
            f"--ckpt_out {ckpt_dir} ..."
        )
    meta = ckpt.restore_meta(step)
    model = SelfTeachingAdapter(ml_collections.ConfigDict(meta["model"]))
    optimizer, _ = make_lm_optimizer(1e-3, 10)

    def init():
        tokens = jnp.zeros((1, 8), jnp.int32)
        params = nn_unbox(model.init(jax.random.key(0), tokens)["params"])
        return LMState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))

    state, _ = ckpt.restore(step, abstract_state=jax.eval_shape(init))
    ckpt.close()
    return model, state.params, meta


def nn_unbox(tree):
    import flax.linen as nn

    return nn.meta.unbox(tree)
