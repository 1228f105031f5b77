"""The shared loop on a toy experiment: resume, SIGTERM, the writer lock, metric rows, meta."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aura.train import loop
from aura.train.checkpoint import TrainCheckpointer
from aura.train.optim import TrainState
from aura.train.rundir import RunLock, RunLockedError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Toy(loop.Experiment):
    """Linear regression; the batch is a pure function of the step; the state holds an alias."""

    def __init__(self, lr: float = 0.1):
        self.tx = optax.sgd(lr)
        self.w_true = np.arange(4, dtype=np.float32)

    def init_state(self):
        w = jnp.zeros(4)
        return {"train": TrainState(w, self.tx.init(w), jnp.asarray(0, jnp.int32)), "copy": w}

    def batch(self, step):
        x = np.random.default_rng(step).normal(size=(8, 4)).astype(np.float32)
        return (x, x @ self.w_true), None

    def train_step(self, state, data, extras):
        x, y = data
        t = state["train"]
        loss, g = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(t.params)
        upd, opt = self.tx.update(g, t.opt_state, t.params)
        new = TrainState(optax.apply_updates(t.params, upd), opt, t.step + 1)
        return {**state, "train": new}, {"loss": loss, "tokens": jnp.float32(8)}

    def evaluate(self, state, step, train):
        return {"loss": train["loss"], "w0": float(state["train"].params[0])}

    def meta(self):
        return {"lr": 0.1}


class ToyWithTable(Toy):
    """Toy whose state also holds a constant table that the checkpoints leave out."""

    def init_state(self):
        return {**super().init_state(), "table": jnp.arange(6.0)}

    def stored_state(self, state):
        return {k: v for k, v in state.items() if k != "table"}

    def full_state(self, stored):
        return {**stored, "table": jnp.arange(6.0)}

    def evaluate(self, state, step, train):
        return {**super().evaluate(state, step, train), "table": float(state["table"].sum())}


def cfg(workdir, total=12, **kw):
    return loop.LoopConfig(str(workdir), total, eval_every=4, log_every=2, save_every=2,
                           tensorboard=False, **kw)  # fmt: skip


def rows(workdir):
    return [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, stop_after):
    full = loop.run(Toy(), cfg(tmp_path / "a"), log=lambda s: None)
    assert full["steps"] == 12 and len(full["history"]) == 3
    assert full["train"]["tokens_per_sec"] > 0 and "mfu" in full["train"]
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(6))
    part = loop.run(Toy(), cfg(tmp_path / "b"), log=lambda s: None)
    assert part["interrupted"] and part["steps"] == 7
    monkeypatch.undo()
    logs = []
    again = loop.run(Toy(), cfg(tmp_path / "b"), log=logs.append)
    assert any("resumed from step 7" in s for s in logs)
    assert again["history"] == full["history"]
    # metrics.jsonl: every step's train row and every evaluation exactly once
    assert [r["step"] for r in rows(tmp_path / "b")] == [r["step"] for r in rows(tmp_path / "a")]


def test_state_left_out_of_checkpoints_is_rebuilt_on_resume(tmp_path, monkeypatch, stop_after):
    full = loop.run(ToyWithTable(), cfg(tmp_path / "a"), log=lambda s: None)
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(6))
    loop.run(ToyWithTable(), cfg(tmp_path / "b"), log=lambda s: None)
    monkeypatch.undo()
    again = loop.run(ToyWithTable(), cfg(tmp_path / "b"), log=lambda s: None)
    assert again["history"] == full["history"] and full["history"][-1]["table"] == 15.0
    # The checkpoint holds exactly the tree without the table.
    with TrainCheckpointer(str(tmp_path / "b" / "ckpt"), read_only=True) as ckpt:
        stored, _ = ckpt.restore(abstract_state=jax.eval_shape(Toy().init_state))
    assert "table" not in stored


def test_rows_after_the_restored_step_are_dropped_on_resume(tmp_path):
    loop.run(Toy(), cfg(tmp_path, total=8), log=lambda s: None)
    before = rows(tmp_path)
    shutil.rmtree(tmp_path / "ckpt" / "8")  # as if killed -9 after step 8 was logged, unsaved
    loop.run(Toy(), cfg(tmp_path, total=8), log=lambda s: None)
    after = rows(tmp_path)
    steps = [(r["step"], "eval/loss" in r) for r in after]
    assert len(steps) == len(set(steps)) == len(before)  # no repeated rows


def test_resuming_with_changed_settings_says_what_changed(tmp_path):
    loop.run(Toy(), cfg(tmp_path, total=4), log=lambda s: None)
    logs = []
    loop.run(Toy(), cfg(tmp_path, total=8), log=logs.append)
    note = [s for s in logs if s.startswith("note: resuming with changed settings")]
    assert note and "total_steps 4 -> 8" in note[0]


def test_noresume_refuses_to_overwrite_checkpoints(tmp_path):
    loop.run(Toy(), cfg(tmp_path, total=2), log=lambda s: None)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        loop.run(Toy(), cfg(tmp_path, total=2, resume=False), log=lambda s: None)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        loop.run(Toy(), cfg(tmp_path), log=lambda s: None)
    assert not (tmp_path / "ckpt").exists()  # refused before anything was written


HOLD = "import sys, time; from aura.train.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
HOLD += "print('held', flush=True); time.sleep(60)"


def test_the_lock_is_a_real_os_lock_that_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup code runs
        holder.wait(timeout=30)
    deadline = time.time() + 10
    while True:  # the kernel released it with the process: no stale lock
        try:
            RunLock(tmp_path).acquire().release()
            break
        except RunLockedError:
            assert time.time() < deadline
            time.sleep(0.1)
