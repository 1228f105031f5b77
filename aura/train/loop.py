"""THE training loop: every experiment runs on :func:`run`.

An experiment (:class:`Experiment`) says what to train; the loop does everything around it:

* resume: latest checkpoint in ``<workdir>/ckpt`` -> ``LoopConfig.restore`` (another run's) -> a
  fresh :meth:`Experiment.init_state`; the restored tree is checked leaf by leaf against the
  experiment's :meth:`Experiment.stored_state` (another config's checkpoint names the leaf);
* the device mesh: the state is created (or restored) straight into its shardings (logical axis
  names + rules, see ``sharding``), the step is one ``jax.jit`` with in/out shardings that
  donates the old state, batches are split over the mesh's data axes (each process feeding its
  own rows), so every experiment runs data parallel with ``--mesh data=-1``;
* orbax checkpoints at every evaluation, every ``save_every`` steps and on SIGTERM/SIGINT (then
  ``interrupted: true``; the same command resumes); one writer: a lock on the workdir (``rundir``);
* metric accumulation, one console line per log interval (tokens/s and MFU when the step
  reports ``tokens``), ``metrics.jsonl`` + TensorBoard (rows after the restored step are dropped
  on resume), a progress bar;
* evaluation records: every ``eval_every`` steps (and at the end) :meth:`Experiment.evaluate`
  returns a record, kept in the checkpoint meta as ``history``.

Resumption is exact when :meth:`Experiment.batch` is a pure function of the step (the contract)
or a stream whose position :meth:`Experiment.input_state` reports (saved with every checkpoint,
one per process, and handed back through :meth:`Experiment.restore_input`), and the state holds
everything else: an interrupted and resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax

import aura
from aura.train import sharding
from aura.train.checkpoint import TrainCheckpointer, checkpoint_dir
from aura.train.logs import MetricsLogger
from aura.train.metrics import (
    MetricSums,
    compiled_flops,
    default_peak_flops,
    format_line,
    is_count,
    progress,
    throughput,
    to_jsonable,
)
from aura.train.rundir import PreemptionGuard, RunLock

__all__ = ["Experiment", "LoopConfig", "run"]


@dataclasses.dataclass
class LoopConfig:
    """How to run an experiment (not what it trains).

    Attributes:
      workdir: run directory: ``ckpt/``, ``metrics.jsonl``, ``tb/``, experiment outputs.
      total_steps: optimizer steps of the whole run.
      eval_every: steps between evaluations (an "epoch"); None: only at the end.
      log_every: steps between console/JSONL train lines; None: ``eval_every``.
      save_every: steps between extra checkpoints; None: at evaluations only.
      restore: a checkpoint directory to start from when ``workdir`` has none.
      resume: continue from the workdir's latest checkpoint (False: start fresh; refused when
        the workdir holds a checkpoint, so nothing saved is overwritten by accident).
      mesh: mesh axis sizes, e.g. {"data": -1} (None: one device).
      rules: logical -> mesh axis rules (None: ``sharding.DEFAULT_RULES``).
      max_to_keep: checkpoints kept.
      tensorboard: write TensorBoard events.
      peak_flops: peak FLOP/s for MFU (None: :func:`default_peak_flops`).
      desc: progress bar label.
    """

    workdir: str
    total_steps: int
    eval_every: int | None = None
    log_every: int | None = None
    save_every: int | None = None
    restore: str | None = None
    resume: bool = True
    mesh: dict | None = None
    rules: tuple | None = None
    max_to_keep: int = 2
    tensorboard: bool = True
    peak_flops: float | None = None
    desc: str = "train"

    def validate(self) -> LoopConfig:
        """Returns self; raises ValueError naming a bad value."""
        if self.total_steps < 1:
            raise ValueError(f"total_steps={self.total_steps} must be >= 1")
        for name in ("eval_every", "log_every", "save_every"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name}={v} must be >= 1")
        if self.max_to_keep < 1:
            raise ValueError(f"max_to_keep={self.max_to_keep} must be >= 1")
        return self


class Experiment:
    """What an experiment supplies to :func:`run`; override the methods you need.

    Required: :meth:`init_state`, :meth:`batch`, :meth:`train_step`. The rest default to no-ops.

    Attributes:
      batch_axis: the axis of every ``data`` leaf that holds the global batch.
      host_metrics: :meth:`after_step` receives the step's metrics as numpy (one device sync per
        step; for host-side controllers that react every step).
      process_local_batches: :meth:`batch` already returns only this process's rows.
      history: the evaluation records so far, restored ones included (set by the loop).

    Hooks run in this order each step: :meth:`before_step`, :meth:`batch` (its ``extras`` may
    use what :meth:`before_step` computed from the state), :meth:`train_step`,
    :meth:`after_step`; then, at a period end, :meth:`evaluate` and a checkpoint.
    """

    batch_axis: int = 0
    host_metrics: bool = False
    process_local_batches: bool = False
    history: list[dict[str, Any]]  # the evaluation records so far (the loop sets it)

    def init_state(self) -> Any:
        """A fresh state pytree (pure: the loop calls it under ``jax.jit``/``eval_shape``)."""
        raise NotImplementedError

    def batch(self, step: int) -> tuple[Any, Any]:
        """``(data, extras)`` of ``step``: a pure function of ``step``.

        data: host arrays with the global batch on ``batch_axis`` (sharded over the mesh);
        extras: a small pytree passed replicated (routing controls, keys, flags).
        """
        raise NotImplementedError

    def train_step(self, state: Any, data: Any, extras: Any) -> tuple[Any, dict[str, Any]]:
        """Pure step: ``(new state, metrics)``. A ``tokens`` metric enables tokens/s and MFU."""
        raise NotImplementedError

    def before_step(self, state: Any, step: int) -> Any:
        """Host-side work before ``step`` (e.g. growth at an epoch start); returns the state."""
        return state

    def after_step(self, state: Any, step: int, metrics: dict[str, Any]) -> Any:
        """Host-side work after ``step`` (controllers); returns the state."""
        return state

    def evaluate(self, state: Any, step: int, train: dict[str, Any]) -> dict[str, Any]:
        """The record of an evaluation after ``step`` steps; ``train``: the period's means."""
        return dict(train)

    def format_record(self, record: dict[str, Any]) -> str:
        """The console line of an evaluation record."""
        return format_line(record)

    def is_eval_step(self, done: int) -> bool | None:
        """Whether to evaluate after ``done`` steps; None: every ``LoopConfig.eval_every``
        steps and at the end (override for periods of different lengths, e.g. tasks)."""
        return None

    def on_save(self, state: Any, step: int) -> None:
        """Called after each checkpoint (e.g. to save experts on their own)."""

    def stored_state(self, state: Any) -> Any:
        """What a checkpoint holds (default: all; pure, also applied to the abstract state): leave
        out what never changes and can be rebuilt (a frozen table); :meth:`full_state` adds it."""
        return state

    def full_state(self, stored: Any) -> Any:
        """The whole state from a restored :meth:`stored_state`."""
        return stored

    def meta(self) -> dict[str, Any]:
        """JSON config stored with every checkpoint (compared on resume)."""
        return {}

    def input_state(self) -> Any:
        """JSON state of a streaming input after the batches taken so far (None: ``batch`` is a
        pure function of the step); saved with every checkpoint, one per process."""
        return None

    def restore_input(self, state: Any, step: int) -> None:
        """Continues the input from :meth:`input_state` as saved at ``step`` (this process's)."""

    def summary(self, state: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Fields added to the run's result (the command's JSON line)."""
        return {}


def _changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human list of differences between two JSON-like configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _changes(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    if old != new and not (isinstance(old, list | tuple) and list(old) == list(new or [])):
        return [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]
    return []


class _Runner:
    """One run of an experiment: state, compiled step, checkpoints, logs."""

    def __init__(self, exp: Experiment, cfg: LoopConfig, log: Callable[[str], None]):
        self.exp, self.cfg = exp, cfg
        self.proc = jax.process_index()
        self.say = log if self.proc == 0 else (lambda s: None)
        self.mesh = sharding.make_mesh(cfg.mesh or {"data": 1})
        self.rules = cfg.rules or sharding.DEFAULT_RULES
        self.ckpt = TrainCheckpointer(f"{cfg.workdir}/ckpt", max_to_keep=cfg.max_to_keep)
        self.history: list[dict[str, Any]] = []
        self.wall_before = 0.0
        self.t0 = time.time()
        self.compiled = None
        self.flops = float("nan")
        # The current evaluation period's metric sums are saved with every checkpoint, so a
        # resumed run's records equal an uninterrupted run's (the log line's are not: its
        # throughput would mix two processes).
        self.period_acc, self.log_acc = MetricSums(), MetricSums()

    # -- state ------------------------------------------------------------------------------
    def initial_state(self):
        exp, cfg = self.exp, self.cfg
        abstract, self.state_sh = sharding.abstract_sharded(exp.init_state, self.mesh, self.rules)
        src = self.ckpt if self.ckpt.latest_step() is not None else None
        if src is not None and not cfg.resume:
            raise ValueError(
                f"{cfg.workdir} already holds checkpoints (latest step {src.latest_step()}); "
                "rerun without --noresume to continue, or pass an empty directory"
            )
        if src is None and cfg.restore:
            src = TrainCheckpointer(checkpoint_dir(cfg.restore), read_only=True)
        if src is None:
            return sharding.create_sharded(exp.init_state, self.mesh, self.rules)[0], 0
        stored, meta = src.restore(abstract_state=exp.stored_state(abstract))
        state = jax.device_put(exp.full_state(stored), self.state_sh)
        step = int(meta.get("step", src.latest_step()))
        if src is self.ckpt:
            self.history = list(meta.get("history", []))
            self.wall_before = float(meta.get("wall_s", 0.0))
            self.period_acc = MetricSums.from_json(meta.get("period"))
            inputs = meta.get("input") or []
            if len(inputs) == jax.process_count():
                exp.restore_input(inputs[self.proc], step)
            elif inputs:
                self.say(f"note: the input state of {len(inputs)} processes is not resumable "
                         f"by {jax.process_count()}: the input restarts")  # fmt: skip
            changed = _changes(meta.get("experiment", {}), to_jsonable(exp.meta()))
            changed += _changes(meta.get("loop", {}), self._loop_meta())
            if changed:
                self.say("note: resuming with changed settings: " + "; ".join(changed))
            self.say(f"resumed from step {step} in {cfg.workdir}")
        else:
            self.say(f"restored step {step} from {cfg.restore}")
            src.close()
        return state, step

    def _loop_meta(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "total_steps": c.total_steps,
            "eval_every": c.eval_every,
            "mesh": dict(self.mesh.shape),
        }

    def save(self, state, step: int, force: bool = False) -> None:
        meta = {
            "step": step,
            "history": self.history,
            "experiment": self.exp.meta(),
            "loop": self._loop_meta(),
            "wall_s": self.wall_s(),
            "version": aura.__version__,
            "period": self.period_acc.to_json(),
            "input": sharding.gather_json(self.exp.input_state()),
        }
        if self.ckpt.save(step, self.exp.stored_state(state), meta, force=force):
            self.exp.on_save(state, step)

    def wall_s(self) -> float:
        return self.wall_before + time.time() - self.t0

    # -- the step ---------------------------------------------------------------------------
    def place(self, data, extras):
        return sharding.place_batch(
            data, extras, self.mesh, self.exp.batch_axis, self.exp.process_local_batches
        )

    def step(self, state, data, extras):
        if self.compiled is None:
            data_sh = jax.tree.map(
                lambda x: sharding.batch_sharding(self.mesh, x.ndim, self.exp.batch_axis), data
            )
            rep = sharding.replicated(self.mesh)
            fn = jax.jit(
                self.exp.train_step,
                in_shardings=(self.state_sh, data_sh, rep),
                out_shardings=(self.state_sh, rep),
                donate_argnums=(0,),
            )
            self.compiled = fn.lower(state, data, extras).compile()
            self.flops = compiled_flops(self.compiled)
        return self.compiled(state, data, extras)


def run(exp: Experiment, cfg: LoopConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) ``exp`` for ``cfg.total_steps`` steps; returns the run's summary.

    The summary has ``steps``, ``start_step``, ``wall_s``, ``interrupted``, ``workdir``, ``history``
    (evaluation records), ``train`` (the last log line) and what :meth:`Experiment.summary` adds.

    Raises:
      RunLockedError: another process writes ``cfg.workdir``.
      CheckpointError: a checkpoint that does not fit the experiment (naming the leaf).
      ValueError: a bad loop setting, or ``resume=False`` over existing checkpoints.
    """
    cfg.validate()
    with RunLock(cfg.workdir):
        r = _Runner(exp, cfg, log)
        try:
            return _run(r)
        finally:
            r.ckpt.close()


def _run(r: _Runner) -> dict[str, Any]:
    exp, cfg = r.exp, r.cfg
    state, start = r.initial_state()
    state = sharding.unalias(state)
    exp.history = r.history
    logger = MetricsLogger(cfg.workdir, tensorboard=cfg.tensorboard)
    logger.truncate_after(start)
    peak = cfg.peak_flops or default_peak_flops(r.mesh.devices.flat)
    total, eval_every = cfg.total_steps, cfg.eval_every or cfg.total_steps
    log_every = cfg.log_every or eval_every
    window: list[Any] = []
    last_line: dict[str, Any] = {}
    t_log, interrupted, done = time.time(), False, start

    def flush() -> None:
        nonlocal window
        for m in jax.device_get(window):
            r.log_acc.add(m)
            r.period_acc.add(m)
        window = []

    with logger, PreemptionGuard() as guard, jax.set_mesh(r.mesh):
        bar = progress(range(start, total), total=total - start, desc=cfg.desc)
        for step in bar:
            new = exp.before_step(state, step)
            state = state if new is state else sharding.unalias(new)
            data, extras = r.place(*exp.batch(step))
            state, metrics = r.step(state, data, extras)
            if exp.host_metrics:
                metrics = jax.device_get(metrics)
            window.append(metrics)
            new = exp.after_step(state, step, metrics)
            state = state if new is state else sharding.unalias(new)
            done = step + 1
            if done % log_every == 0 or done == total:
                flush()
                dt = time.time() - t_log
                last_line = {"step": done, **r.log_acc.means()}
                last_line.update(throughput(r.log_acc, dt, r.flops, peak))
                for key in [k for k in last_line if is_count(k)]:
                    last_line.pop(key)  # the counts; their rates are in the line
                if not all(math.isfinite(v) for v in last_line.values() if isinstance(v, float)):
                    raise FloatingPointError(f"non-finite metrics at step {done}: {last_line}")
                logger.log(done, last_line, prefix="train")
                if log_every != eval_every:
                    r.say(format_line(last_line))
                r.log_acc, t_log = MetricSums(), time.time()
            due = exp.is_eval_step(done)
            due = (done % eval_every == 0 or done == total) if due is None else due
            if due:
                flush()
                record = {"step": done, **exp.evaluate(state, done, r.period_acc.means())}
                r.history.append(to_jsonable(record))
                logger.log(done, record, prefix="eval")
                r.say(exp.format_record(record))
                r.period_acc = MetricSums()
                r.save(state, done, force=True)
            elif cfg.save_every and done % cfg.save_every == 0:
                flush()
                r.save(state, done)
            if guard.should_stop(done) and done < total:  # all processes at the same step
                flush()
                r.save(state, done, force=True)
                r.ckpt.wait()
                r.say(f"interrupted: saved step {done}; rerun the same command to resume")
                interrupted = True
                break
    r.ckpt.wait()
    result = {"steps": done, "start_step": start, "wall_s": round(r.wall_s(), 2),
              "interrupted": interrupted, "workdir": cfg.workdir, "devices": int(r.mesh.size),
              "train": last_line, "history": r.history}  # fmt: skip
    result.update(exp.summary(state, r.history))
    return result
