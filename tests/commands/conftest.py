"""Shared helpers of the command smoke tests: run ``python -m aura.build`` as a user would."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def aura(*args: str, timeout: int = 600, cwd=None, **kw) -> subprocess.CompletedProcess:
    """``python -m aura.build *args`` on the CPU; captured text output."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **kw.pop("env", {})}
    kw.setdefault("text", True)
    return subprocess.run(
        [sys.executable, "-m", "aura.build", *args], capture_output=True, timeout=timeout,
        cwd=cwd or REPO, env=env, **kw,
    )  # fmt: skip


@pytest.fixture
def run_aura():
    return aura


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, exactly one ``error:`` line on stderr naming ``needles``, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
