"""Shared helpers of the command smoke tests: run ``python -m aura.build`` as a user would."""

from __future__ import annotations

import json
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


# Runs several argument lists of one command through the real entry point (``aura.build.run``)
# in ONE process, re-parsing the flags for each; prints [{args, code, stderr}] as JSON.
DRIVER = r"""
import contextlib, io, json, sys, traceback
from absl import flags
import aura.build
cmd, cases = sys.argv[1], json.loads(sys.argv[2])
out = []
for args in cases:
    flags.FLAGS.unparse_flags()
    err = io.StringIO()
    code = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            aura.build.run(["aura", cmd, *args])
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = "exception"
    out.append({"args": args, "code": code, "stderr": err.getvalue()})
print(json.dumps(out))
"""


def run_cases(cmd: str, cases: list[list[str]], timeout: int = 600) -> list[dict]:
    """Every argument list of ``cases`` through :data:`DRIVER` (one process for all): a list of
    ``{"args", "code" (exit code, or "exception"), "stderr"}``."""
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, cmd, json.dumps(cases)], cwd=REPO, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
