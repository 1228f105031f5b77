"""Tests for aura.train.rundir.PreemptionGuard: signals become a stop flag, handlers restored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from aura.train.rundir import PreemptionGuard


def _wait_for(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.001)  # Python runs signal handlers between bytecodes of the main thread.
    return cond()


def test_sigterm_sets_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with PreemptionGuard(verbose=False) as guard:
        assert not guard.requested and not guard.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait_for(lambda: guard.requested)
        assert guard.signal_name == "SIGTERM" and guard.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)  # A repeated SIGTERM changes nothing.
        time.sleep(0.01)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_second_sigint_forces_quit(capsys):
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert _wait_for(lambda: guard.requested)
        with pytest.raises(KeyboardInterrupt):  # Raised by the handler.
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=2.0)
    assert "received SIGINT" in capsys.readouterr().err


def test_request_without_signal():
    guard = PreemptionGuard()
    guard.request()
    assert guard.should_stop()


_LOOP = """
import pathlib, sys, time
from aura.train.rundir import PreemptionGuard
with PreemptionGuard() as guard:
    print("ready", flush=True)
    step = 0
    while not guard.should_stop():
        step += 1
        time.sleep(0.005)
    pathlib.Path(sys.argv[1]).write_text(f"saved at step {step}")
"""


def test_training_loop_saves_and_exits_zero_on_sigterm(tmp_path):
    marker = tmp_path / "saved.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOOP, str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert marker.read_text().startswith("saved at step")
    assert "received SIGTERM" in err
