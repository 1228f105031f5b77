"""Instruction pretraining of the SelfTeachingAdapter on the shared loop (``aura.train.loop``).

Used by ``python -m aura.build pretrain``. The same code runs on one CPU, all local devices
(``--pmap``: the mesh ``data=-1``), a data × fsdp × expert mesh (``--mesh data=2,expert=4``) and a
multi-host pod: every process runs this function; each process streams its own share of the
JSONL (`aura.data.stream`: byte-range sharding, a bounded shuffle window, tokenisation in a
worker thread, prefetch) and feeds its rows of the global batch; the loop creates or restores
the state straight into its shardings, jits the step with in/out shardings and donation, and
runs inside ``jax.set_mesh(mesh)`` so the MoE can use expert parallelism; only process 0 prints.

Rows are packed by default (``pack``): several records per row, the recurrent state reset at
each record, so a batch holds about 3x the real tokens of one record per row on the demo
corpus. With ``heldout`` the run evaluates held-out bits per character every ``eval_every``
steps (`aura.experiments.lm.heldout`).

Resumption is exact: the input iterator's state (byte offset, shuffle window position, packer
state) is saved with every checkpoint (``Experiment.input_state``), so rerunning the same command
continues from the latest checkpoint in ``<ckpt_out>/ckpt`` at the exact record and ends with
bit-identical parameters. SIGTERM/SIGINT save and return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from aura.data.errors import DataError
from aura.data.instruct import InstructFormatter, ReadStats, read_instruct
from aura.data.stream import StreamStats, lm_batches
from aura.data.tokenizer import check_piece_count, load_tokenizer
from aura.experiments.lm.heldout import HeldOut
from aura.experiments.lm.step import build_lm_train_step
from aura.models.adapter import SelfTeachingAdapter, adapter_config
from aura.train import loop, sharding
from aura.train.checkpoint import CheckpointError, TrainCheckpointer, checkpoint_dir
from aura.train.optim import TrainState, make_lm_optimizer

PROBE_RECORDS = 1000  # records read up front to check the data before any compute


@dataclasses.dataclass
class PretrainConfig:
    jsonl: str | list[str] | None
    spm_model: str | None
    ckpt_out: str
    model: ml_collections.ConfigDict
    steps: int = 200
    batch_size: int = 16  # global rows per micro-step
    accumulate_steps: int = 1
    max_len: int = 128
    pad_to: int | None = None  # row width (>= max_len); None: max_len
    pack: bool = True  # several records per row (the recurrent state resets at each record)
    lr: float = 3e-3
    warmup: int = 20
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    eval_every: int | None = None  # steps between held-out evaluations (None: at the end)
    heldout: str | None = None  # held-out instruction JSONL for bits per character
    shuffle_window: int = 4096  # lines shuffled together (bounded memory)
    prefetch: int = 4  # batches prepared ahead by the input worker thread
    on_bad_record: str = "skip"
    mesh: dict = dataclasses.field(default_factory=lambda: {"data": 1})
    rules: tuple | None = None  # logical -> mesh axis rules; None: sharding.DEFAULT_RULES
    tensorboard: bool = True
    peak_flops: float | None = None  # per-device peak FLOP/s for MFU (None: by device kind)

    def validate(self) -> None:
        """Raises ValueError naming a bad value (an explicit value is never replaced)."""
        for name in ("steps", "batch_size", "accumulate_steps", "log_every", "save_every",
                     "shuffle_window"):  # fmt: skip
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
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"--eval_every={self.eval_every} must be >= 1")
        if self.prefetch < 0:
            raise ValueError(f"--prefetch={self.prefetch} must be >= 0")
        if self.peak_flops is not None and not self.peak_flops > 0:
            raise ValueError(f"--peak_flops={self.peak_flops} must be > 0")

    def validated(self) -> PretrainConfig:
        """``validate()``, then self."""
        self.validate()
        return self


def probe_data(cfg: PretrainConfig, fmt: InstructFormatter, log=print) -> int:
    """Reads the first records up front (a wrong or empty file fails before any compute);
    returns how many were read.

    Raises:
      DataError: no usable record, or none with a response token within ``max_len``.
    """
    stats = ReadStats()
    records = read_instruct(cfg.jsonl, on_bad_record=cfg.on_bad_record, stats=stats,
                            limit=PROBE_RECORDS)  # fmt: skip
    if stats.bad_records:
        log(f"skipped {stats.bad_records} bad records, e.g. {'; '.join(stats.bad_examples)}")
    if not any(fmt.encode(r).loss_mask.any() for r in records):
        raise DataError(f"{cfg.jsonl}: no response tokens survive max_len={cfg.max_len}")
    return len(records)


def model_config_for(cfg: PretrainConfig, sp) -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict(cfg.model.to_dict())
    if not model.get("vocab_size"):
        model.vocab_size = sp.get_piece_size()
    check_piece_count(sp, model.vocab_size, what="the config's vocab_size")
    return model


def check_mesh(mesh, batch_size: int, num_experts: int) -> None:
    """Raises ValueError when the batch or the experts do not split evenly over ``mesh``."""
    dp = sharding.data_parallel_size(mesh)
    if batch_size % dp or batch_size % jax.process_count():
        raise ValueError(
            f"--batch_size={batch_size} must be a multiple of the {dp} batch shards of the mesh "
            f"{dict(mesh.shape)} and of the {jax.process_count()} processes"
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


class PretrainExperiment(loop.Experiment):
    """Instruction pretraining on the shared loop: ``[A, B, W]`` batches, A accumulation steps,
    streamed per process (``process_local_batches``) with a checkpointed input state."""

    batch_axis = 1  # data leaves are [A, B, W]
    process_local_batches = True

    def __init__(self, cfg: PretrainConfig, log=print, on_save=None):
        cfg.validate()
        self.cfg, self._on_save = cfg, on_save
        say = log if jax.process_index() == 0 else (lambda s: None)
        self.sp = load_tokenizer(cfg.spm_model)
        self.fmt = InstructFormatter(self.sp, max_len=cfg.max_len)
        self.width = cfg.pad_to or cfg.max_len
        probe_data(cfg, self.fmt, say)
        self.model_cfg = model_config_for(cfg, self.sp)
        self.model = SelfTeachingAdapter(self.model_cfg)
        self.optimizer, self.schedule = make_lm_optimizer(cfg.lr, cfg.steps, cfg.warmup)
        self.step_fn = build_lm_train_step(self.model, self.optimizer)
        self.heldout = None
        if cfg.heldout:
            self.heldout = HeldOut(cfg.heldout, self.fmt, self.width, self.model)
        self.stats = StreamStats()
        self.local_rows = cfg.batch_size // jax.process_count()
        self.data = iter(
            lm_batches(
                cfg.jsonl, self.fmt, width=self.width, rows=cfg.accumulate_steps * self.local_rows,
                pack=cfg.pack, seed=cfg.seed, shuffle_window=cfg.shuffle_window,
                prefetch=cfg.prefetch, process_index=jax.process_index(),
                process_count=jax.process_count(), on_bad_record=cfg.on_bad_record,
                stats=self.stats,
            )
        )  # fmt: skip

    def init_state(self) -> TrainState:
        return state_init(self.model, self.optimizer, self.width, self.cfg.seed)()

    def batch(self, step: int):
        rows = next(self.data)  # [A * B_local, W] each
        shape = (self.cfg.accumulate_steps, self.local_rows, self.width)
        return {k: v.reshape(shape) for k, v in rows.items()}, None  # [A, B_local, W]

    def input_state(self) -> dict:
        return self.data.get_state()

    def restore_input(self, state: dict, step: int) -> None:
        self.data.set_state(state)

    def train_step(self, state, data, extras):
        del extras
        state, metrics = self.step_fn(state, data)
        return state, {**metrics, "lr": self.schedule(state.step - 1)}

    def evaluate(self, state, step: int, train: dict) -> dict:
        record = dict(train)
        if self.heldout is not None:
            record["heldout_bpc"] = self.heldout.bpc(state.params)
        return record

    def on_save(self, state, step: int) -> None:
        if self._on_save is not None:  # e.g. pretrain_zones saving each expert on its own
            self._on_save(step, state.params)

    def meta(self) -> dict:
        c = self.cfg
        return {
            "model": self.model_cfg.to_dict(),
            "max_len": c.max_len,
            "pad_to": self.width,
            "pack": c.pack,
            "spm_model": str(epath.Path(c.spm_model).absolute()),
            "seed": c.seed,
            "batch_size": c.batch_size,
            "accumulate_steps": c.accumulate_steps,
            "steps": c.steps,
            "lr": c.lr,
        }

    def summary(self, state, history) -> dict:
        last = history[-1] if history else {}
        return {
            "final_loss": last.get("loss"),
            "heldout_bpc": last.get("heldout_bpc"),
            "records_read": self.stats.records,
            "bad_records": self.stats.bad_records,
            "vocab_size": int(self.model_cfg.vocab_size),
            "ckpt_out": self.cfg.ckpt_out,
        }

    def close(self) -> None:
        self.data.close()


def pretrain(cfg: PretrainConfig, log=print, on_save=None) -> dict:
    """Runs or resumes pretraining; returns a summary dict (identical on every process).

    ``on_save(step, params)``, if given, runs after every checkpoint written (pretrain_zones uses
    it to save each expert on its own as training goes).
    """
    mesh = sharding.make_mesh(cfg.mesh)
    exp = PretrainExperiment(cfg, log, on_save)
    try:
        check_mesh(mesh, cfg.batch_size, exp.model_cfg.num_experts)
        loop_cfg = loop.LoopConfig(
            workdir=cfg.ckpt_out, total_steps=cfg.steps, eval_every=cfg.eval_every,
            log_every=cfg.log_every, save_every=cfg.save_every, mesh=dict(cfg.mesh),
            rules=cfg.rules, tensorboard=cfg.tensorboard, peak_flops=cfg.peak_flops,
            desc="pretrain",
        )  # fmt: skip
        result = loop.run(exp, loop_cfg, log=log)
    finally:
        exp.close()
    result.pop("history")
    train = result.pop("train")
    result.update(tokens_per_sec=train.get("tokens_per_sec"),
                  scored_tokens_per_sec=train.get("scored_tokens_per_sec"), mfu=train.get("mfu"),
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
    ckpt = TrainCheckpointer(path, read_only=True) if epath.Path(path).is_dir() else None
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
