"""Instruction pretraining of the SelfTeachingAdapter: data -> sharded jitted steps -> orbax.

Used by ``python -m aura.build pretrain``. The same code runs on one CPU, all local devices
(``--pmap``: the mesh ``data=-1``), a data × fsdp × expert mesh (``--mesh data=2,expert=4``) and a
multi-host pod: every process runs this function; each feeds the rows of the global batch that
its own devices hold and ``jax.make_array_from_process_local_data`` assembles the batch; only
process 0 prints and logs; every process takes part in orbax saves and restores.

The state is created already sharded (``sharding.create_sharded``) or restored straight into its
shardings; the train step is jitted with in/out shardings and donates the old state; the loop
runs inside ``jax.set_mesh(mesh)`` so the MoE can use expert parallelism.

Resumption is exact: the data order is a pure function of (seed, epoch) and the step
(:func:`batch_indices`), and the step is saved with the state (plus the data position in the
checkpoint's meta, checked on resume); rerunning the same command continues from the latest
checkpoint in ``ckpt_out`` and ends with bit-identical parameters. SIGTERM/SIGINT save a
checkpoint at the current step and return.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

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
from aura.train.checkpoint import CheckpointError, TrainCheckpointer
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
    rules: tuple | None = None  # logical -> mesh axis rules; None: sharding.DEFAULT_RULES
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


def check_mesh(mesh, batch_size: int, num_experts: int) -> None:
    """Raises ValueError when the batch or the experts do not split evenly over ``mesh``."""
    dp = sharding.data_parallel_size(mesh)
    if batch_size % dp:
        raise ValueError(
            f"--batch_size={batch_size} must be a multiple of the {dp} batch shards of the mesh "
            f"{dict(mesh.shape)}"
        )
    if num_experts % mesh.shape["expert"]:
        raise ValueError(
            f"num_experts={num_experts} must be a multiple of the mesh's expert axis "
            f"{mesh.shape['expert']}"
        )


def state_init(model: SelfTeachingAdapter, optimizer, seq_len: int, seed: int) -> Callable:
    """``init() -> LMState`` with boxed (logically named) parameters, for ``sharding``."""

    def init():
        params = model.init(jax.random.key(seed), jnp.zeros((1, seq_len), jnp.int32))["params"]
        return LMState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))

    return init


def jit_train_step(model: SelfTeachingAdapter, optimizer, state_shardings, mesh):
    """The train step jitted over ``mesh``: state in/out with its shardings (donated), batches
    ``[A, B, T]`` split over the batch axes, metrics replicated."""
    batch = sharding.batch_sharding(mesh, ndim=3, batch_axis=1)  # [A, B, T]
    return jax.jit(
        build_lm_train_step(model, optimizer),
        in_shardings=(state_shardings, batch, batch),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )


def batch_indices(seed: int, step: int, num_examples: int, A: int, B: int) -> np.ndarray:
    """Example indices ``[A, B]`` of global step ``step``: a pure function of its arguments."""
    epoch, pos = divmod(step, batching.steps_per_epoch(num_examples, A * B))
    perm = batching.epoch_permutation(seed, epoch, num_examples)
    return perm[pos * A * B : (pos + 1) * A * B].reshape(A, B)


def data_position(seed: int, step: int, num_examples: int, A: int, B: int) -> dict[str, int]:
    """Where the data iterator stands before ``step`` (saved in each checkpoint's meta)."""
    epoch, pos = divmod(step, batching.steps_per_epoch(num_examples, A * B))
    return {
        "seed": seed,
        "epoch": epoch,
        "batch_in_epoch": pos,
        "examples_per_step": A * B,
        "num_examples": num_examples,
    }


def pretrain(cfg: PretrainConfig, log=print, on_save=None) -> dict:
    """Runs or resumes pretraining; returns a summary dict (identical on every process).

    ``on_save(step, params)``, if given, runs after every checkpoint written (pretrain_zones uses
    it to save each expert on its own as training goes).
    """
    cfg.validate()
    t0 = time.time()
    proc, nproc = jax.process_index(), jax.process_count()
    say = log if proc == 0 else (lambda s: None)
    sp, ids, mask = load_examples(cfg, say)
    model_cfg = model_config_for(cfg, sp)
    mesh = sharding.make_mesh(cfg.mesh)
    check_mesh(mesh, cfg.batch_size, model_cfg.num_experts)
    n = len(ids)
    if cfg.batch_size > n:
        raise ValueError(f"--batch_size={cfg.batch_size} is larger than the {n} examples")
    model = SelfTeachingAdapter(model_cfg)
    optimizer, schedule = make_lm_optimizer(cfg.lr, cfg.steps, cfg.warmup)
    A, B, P = cfg.accumulate_steps, cfg.batch_size, ids.shape[1]
    init = state_init(model, optimizer, P, cfg.seed)
    rules = cfg.rules or sharding.DEFAULT_RULES
    ckpt = TrainCheckpointer(cfg.ckpt_out, max_to_keep=2)
    if ckpt.latest_step() is None:
        state, state_shardings = sharding.create_sharded(init, mesh, rules)
    else:  # restore straight into the shardings of this mesh (any mesh the checkpoint fits)
        abstract, state_shardings = sharding.abstract_sharded(init, mesh, rules)
        state, meta = ckpt.restore(abstract_state=abstract)
        step = int(state.step)
        here = data_position(cfg.seed, step, n, A, B)
        saved = meta.get("data", here)
        if saved != here:
            say(f"note: the data order differs from the checkpoint's ({saved} -> {here})")
        say(
            f"resumed from step {step} (epoch {here['epoch']}, batch {here['batch_in_epoch']}) "
            f"in {cfg.ckpt_out}"
        )
    step_fn = jit_train_step(model, optimizer, state_shardings, mesh)
    logger = MetricsLogger(cfg.ckpt_out, tensorboard=cfg.tensorboard)
    batch_shard = sharding.batch_sharding(mesh, ndim=3, batch_axis=1)
    rows = sharding.process_batch_rows(batch_shard, (A, B, P), axis=1)  # this process's rows

    def batch(step: int):
        idx = batch_indices(cfg.seed, step, n, A, B)[:, rows]  # [A, rows]
        return (
            sharding.global_batch(ids[idx], mesh, batch_axis=1, global_rows=B),
            sharding.global_batch(mask[idx], mesh, batch_axis=1, global_rows=B),
        )

    def save(force=False):
        step = int(state.step)
        meta = {
            "step": step,
            "model": model_cfg.to_dict(),
            "max_len": cfg.max_len,
            "pad_to": P,
            "spm_model": cfg.spm_model,
            "data": data_position(cfg.seed, step, n, A, B),
            "mesh": dict(mesh.shape),
            "version": aura.__version__,
        }
        saved = ckpt.save(step, state, meta, force=force)  # False: this step exists already
        if saved and on_save is not None:  # e.g. pretrain_zones saving each expert on its own
            on_save(step, state.params)

    start = int(state.step)
    interrupted, window, last = False, [], {}
    t_log = time.time()
    with PreemptionGuard() as guard, jax.set_mesh(mesh):
        bar = progress(range(start, cfg.steps), total=cfg.steps - start, desc="pretrain")
        for step in bar:
            state, metrics = step_fn(state, *batch(step))
            window.append(metrics)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                host = jax.device_get(window)
                tokens = sum(float(h["tokens"]) for h in host)
                last = {
                    "step": step + 1,
                    "loss": float(np.mean([h["loss"] for h in host])),
                    "tokens_per_sec": tokens / max(time.time() - t_log, 1e-9),
                    "lr": float(schedule(step)),
                    "gate_entropy": float(np.mean([h["gate_entropy"] for h in host])),
                    "grad_norm": float(np.mean([h["grad_norm"] for h in host])),
                }
                if not all(math.isfinite(v) for v in last.values()):
                    raise FloatingPointError(f"non-finite metrics at step {step + 1}: {last}")
                logger.log(step + 1, last, prefix="train")
                say(format_line(last))
                window, t_log = [], time.time()
            if (step + 1) % cfg.save_every == 0:
                save()
            # One read of the flag per step; with several processes a collective, so that every
            # host stops (and saves) at the same step.
            stop = guard.should_stop() if nproc > 1 else guard.requested
            if stop:
                save(force=True)
                ckpt.wait()
                say(f"interrupted: saved step {int(state.step)}; rerun the same command to resume")
                interrupted = True
                break
        if not interrupted:
            save(force=True)
    ckpt.wait()
    ckpt.close()
    logger.close()
    return {
        "steps": int(state.step),
        "start_step": start,
        "final_loss": last.get("loss"),
        "tokens_per_sec": last.get("tokens_per_sec"),
        "examples": int(n),
        "vocab_size": int(model_cfg.vocab_size),
        "devices": int(mesh.size),
        "mesh": dict(mesh.shape),
        "processes": nproc,
        "wall_s": round(time.time() - t0, 2),
        "interrupted": interrupted,
        "ckpt_out": cfg.ckpt_out,
    }


def restore_state(
    ckpt_dir: str, mesh=None, step: int | None = None, rules=None
) -> tuple[SelfTeachingAdapter, LMState, dict[str, Any]]:
    """Restores a pretraining checkpoint onto ``mesh`` (None: this process's first device).

    Any mesh works whatever mesh (or however many hosts) saved it: orbax reads each array
    straight into the target shardings (8 devices -> 1 device, data=8 -> data=2 × expert=4).

    Returns:
      (model, state, meta) of ``step`` (default: the latest).

    Raises:
      CheckpointError: no checkpoint there, or one that does not match its own config.
    """
    ckpt = TrainCheckpointer(ckpt_dir, read_only=True) if os.path.isdir(ckpt_dir) else None
    if ckpt is None or ckpt.latest_step() is None:
        raise CheckpointError(
            f"no checkpoint in {ckpt_dir!r}; train one with python -m aura.build pretrain "
            f"--ckpt_out {ckpt_dir} ..."
        )
    meta = ckpt.restore_meta(step)
    model = SelfTeachingAdapter(ml_collections.ConfigDict(meta["model"]))
    optimizer, _ = make_lm_optimizer(1e-3, 10)  # the state's structure only
    if mesh is None:
        mesh = sharding.make_mesh({"data": 1}, devices=jax.local_devices()[:1])
    init = state_init(model, optimizer, 8, 0)
    abstract, _ = sharding.abstract_sharded(init, mesh, rules or sharding.DEFAULT_RULES)
    state, _ = ckpt.restore(step, abstract_state=abstract)
    ckpt.close()
    return model, state, meta


def load_adapter(ckpt_dir: str, step: int | None = None):
    """Restores a pretrained adapter: (model, params, meta) from ``ckpt_dir`` (latest step).

    Raises:
      CheckpointError: no checkpoint there, or one that does not match its own config.
    """
    model, state, meta = restore_state(ckpt_dir, None, step)
    return model, state.params, meta
