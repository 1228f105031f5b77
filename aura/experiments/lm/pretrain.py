"""Instruction pretraining of the SelfTeachingAdapter on the shared loop (``aura.train.loop``).

Used by ``python -m aura.build pretrain``. The same code runs on one CPU, all local devices
(``--pmap``: the mesh ``data=-1``), a data × fsdp × expert mesh (``--mesh data=2,expert=4``) and a
multi-host pod: every process runs this function; the loop feeds each process's rows of the
global batch, creates or restores the state straight into its shardings, jits the step with
in/out shardings and donation, and runs inside ``jax.set_mesh(mesh)`` so the MoE can use expert
parallelism; only process 0 prints and logs.

Resumption is exact: the data order is a pure function of (seed, epoch) and the step
(:func:`batch_indices`); rerunning the same command continues from the latest checkpoint in
``<ckpt_out>/ckpt`` and ends with bit-identical parameters. SIGTERM/SIGINT save and return.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aura.data import batching
from aura.data.errors import DataError
from aura.data.instruct import InstructFormatter, ReadStats, read_instruct
from aura.data.tokenizer import check_piece_count, load_tokenizer
from aura.experiments.lm.step import build_lm_train_step
from aura.models.adapter import SelfTeachingAdapter, adapter_config
from aura.train import loop, sharding
from aura.train.checkpoint import CheckpointError, TrainCheckpointer, checkpoint_dir
from aura.train.optim import TrainState, make_lm_optimizer


@dataclasses.dataclass
class PretrainConfig:
    jsonl: str | list[str] | None
    spm_model: str | None
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

    def validate(self) -> None:
        """Raises ValueError naming a bad value (an explicit value is never replaced)."""
        for name in ("steps", "batch_size", "accumulate_steps", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be >= 1")
        if self.max_len < 8:
            raise ValueError(f"--max_len={self.max_len} must be >= 8")
        if self.pad_to is not None and self.pad_to < self.max_len:
            raise ValueError(f"--pad_to={self.pad_to} must be >= --max_len={self.max_len}")
        if not self.lr > 0 or self.warmup < 0:
            raise ValueError(f"--lr={self.lr} must be > 0 and --warmup={self.warmup} >= 0")
        if self.on_bad_record not in ("skip", "fail"):
            raise ValueError(f"--on_bad_record={self.on_bad_record!r}; valid: skip, fail")

    def validated(self) -> PretrainConfig:
        """``validate()``, then self."""
        self.validate()
        return self


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
    """``init() -> TrainState`` with boxed (logically named) parameters, for ``sharding``."""

    def init():
        params = model.init(jax.random.key(seed), jnp.zeros((1, seq_len), jnp.int32))["params"]
        return TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))

    return init


def batch_indices(seed: int, step: int, num_examples: int, A: int, B: int) -> np.ndarray:
    """Example indices ``[A, B]`` of global step ``step``: a pure function of its arguments."""
    epoch, pos = divmod(step, batching.steps_per_epoch(num_examples, A * B))
    perm = batching.epoch_permutation(seed, epoch, num_examples)
    return perm[pos * A * B : (pos + 1) * A * B].reshape(A, B)


class PretrainExperiment(loop.Experiment):
    """Instruction pretraining on the shared loop: ``[A, B, T]`` batches, A accumulation steps."""

    batch_axis = 1  # data leaves are [A, B, P]

    def __init__(self, cfg: PretrainConfig, log=print, on_save=None):
        cfg.validate()
        self.cfg, self._on_save = cfg, on_save
        say = log if jax.process_index() == 0 else (lambda s: None)
        self.sp, self.ids, self.mask = load_examples(cfg, say)
        self.model_cfg = model_config_for(cfg, self.sp)
        n = len(self.ids)
        if cfg.batch_size > n:
            raise ValueError(f"--batch_size={cfg.batch_size} is larger than the {n} examples")
        self.model = SelfTeachingAdapter(self.model_cfg)
        self.optimizer, self.schedule = make_lm_optimizer(cfg.lr, cfg.steps, cfg.warmup)
        self.step_fn = build_lm_train_step(self.model, self.optimizer)

    def init_state(self) -> TrainState:
        return state_init(self.model, self.optimizer, self.ids.shape[1], self.cfg.seed)()

    def batch(self, step: int):
        c = self.cfg
        idx = batch_indices(c.seed, step, len(self.ids), c.accumulate_steps, c.batch_size)
        return (self.ids[idx], self.mask[idx]), None  # [A, B, P] each

    def train_step(self, state, data, extras):
        del extras
        state, metrics = self.step_fn(state, *data)
        return state, {**metrics, "lr": self.schedule(state.step - 1)}

    def on_save(self, state, step: int) -> None:
        if self._on_save is not None:  # e.g. pretrain_zones saving each expert on its own
            self._on_save(step, state.params)

    def meta(self) -> dict:
        c = self.cfg
        return {
            "model": self.model_cfg.to_dict(),
            "max_len": c.max_len,
            "pad_to": self.ids.shape[1],
            "spm_model": os.path.abspath(c.spm_model),
            "seed": c.seed,
            "batch_size": c.batch_size,
            "accumulate_steps": c.accumulate_steps,
            "steps": c.steps,
            "lr": c.lr,
            "examples": len(self.ids),
        }

    def summary(self, state, history) -> dict:
        last = history[-1] if history else {}
        return {
            "final_loss": last.get("loss"),
            "examples": len(self.ids),
            "vocab_size": int(self.model_cfg.vocab_size),
            "ckpt_out": self.cfg.ckpt_out,
        }


def pretrain(cfg: PretrainConfig, log=print, on_save=None) -> dict:
    """Runs or resumes pretraining; returns a summary dict (identical on every process).

    ``on_save(step, params)``, if given, runs after every checkpoint written (pretrain_zones uses
    it to save each expert on its own as training goes).
    """
    exp = PretrainExperiment(cfg, log, on_save)
    mesh = sharding.make_mesh(cfg.mesh)
    check_mesh(mesh, cfg.batch_size, exp.model_cfg.num_experts)
    loop_cfg = loop.LoopConfig(
        workdir=cfg.ckpt_out,
        total_steps=cfg.steps,
        log_every=cfg.log_every,
        save_every=cfg.save_every,
        mesh=dict(cfg.mesh),
        rules=cfg.rules,
        tensorboard=cfg.tensorboard,
        desc="pretrain",
    )
    result = loop.run(exp, loop_cfg, log=log)
    result.pop("history")
    train = result.pop("train")
    result.update(tokens_per_sec=train.get("tokens_per_sec"), mfu=train.get("mfu"),
                  final_loss=train.get("loss"), processes=jax.process_count())  # fmt: skip
    return result


def model_config_from_meta(saved: Any, where: str) -> ml_collections.ConfigDict:
    """The adapter config stored in a checkpoint's meta, checked field by field.

    Raises:
      CheckpointError: the meta has no model config, an unknown field, or a value of the wrong
        type (naming the field, the value and the file), e.g. after a hand edit.
    """
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{where}: the checkpoint's meta has no 'model' config (found {type(saved).__name__});"
            " the checkpoint is damaged or not a pretrain checkpoint"
        )
    default = adapter_config()
    unknown = sorted(set(saved) - set(default))
    if unknown:
        raise CheckpointError(f"{where}: unknown model config fields {unknown}")
    out = ml_collections.ConfigDict(default.to_dict())
    for key, value in saved.items():
        want = type(default[key])
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if want is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if want is tuple:
            ok = isinstance(value, list | tuple)
        if not ok:
            raise CheckpointError(
                f"{where}: model config field {key!r} = {value!r} should be a {want.__name__}; "
                "the checkpoint's meta was edited or damaged"
            )
        out[key] = tuple(value) if want is tuple else want(value)
    return out


def restore_state(
    ckpt_dir: str, mesh=None, step: int | None = None, rules=None
) -> tuple[SelfTeachingAdapter, TrainState, dict[str, Any]]:
    """Restores a pretraining checkpoint onto ``mesh`` (None: this process's first device).

    Any mesh works whatever mesh (or however many hosts) saved it: orbax reads each array
    straight into the target shardings (8 devices -> 1 device, data=8 -> data=2 × expert=4).

    Args:
      ckpt_dir: the run directory (``--ckpt_out``) or its ``ckpt/`` subdirectory.

    Returns:
      (model, state, meta) of ``step`` (default: the latest); meta is the run's settings
      (model, max_len, spm_model, ...) plus its ``step`` and the ``mesh`` that saved it.

    Raises:
      CheckpointError: no checkpoint there, or one that does not match its own config.
    """
    path = checkpoint_dir(ckpt_dir)
    ckpt = TrainCheckpointer(path, read_only=True) if os.path.isdir(path) else None
    if ckpt is None or ckpt.latest_step() is None:
        raise CheckpointError(
            f"no checkpoint in {ckpt_dir!r}; train one with python -m aura.build pretrain "
            f"--ckpt_out {ckpt_dir} ..."
        )
    try:
        full = ckpt.restore_meta(step)
        meta = dict(full.get("experiment") or {})
        model = SelfTeachingAdapter(model_config_from_meta(meta.get("model"), path))
        optimizer, _ = make_lm_optimizer(1e-3, 10)  # the state's structure only
        if mesh is None:
            mesh = sharding.make_mesh({"data": 1}, devices=jax.local_devices()[:1])
        init = state_init(model, optimizer, 8, 0)
        abstract, _ = sharding.abstract_sharded(init, mesh, rules or sharding.DEFAULT_RULES)
        state, _ = ckpt.restore(step, abstract_state=abstract)
    finally:
        ckpt.close()
    saved_mesh = (full.get("loop") or {}).get("mesh")
    return model, state, {**meta, "step": int(full.get("step", 0)), "mesh": saved_mesh}


def load_adapter(ckpt_dir: str, step: int | None = None):
    """Restores a pretrained adapter: (model, params, meta) from ``ckpt_dir`` (latest step).

    Raises:
      CheckpointError: no checkpoint there, or one that does not match its own config.
    """
    model, state, meta = restore_state(ckpt_dir, None, step)
    return model, state.params, meta
