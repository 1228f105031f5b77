"""Smoke tests of ``python -m aura.build continual`` (subprocess, tiny npz fixture)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from aura.data.mnist import load_digits

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "aura.build", "continual", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    images, labels = load_digits()
    path = tmp_path_factory.mktemp("digits") / "tiny.npz"
    np.savez(path, images=images[:500], labels=labels[:500])
    return str(path)


def test_continual_command_runs_end_to_end_and_writes_json(tiny_npz, tmp_path):
    out = tmp_path / "result.json"
    workdir = tmp_path / "work"
    proc = _run(
        "--scenario=class",
        f"--data={tiny_npz}",
        "--epochs_per_task=1",
        "--hidden_dim=32",
        "--ppca_dim=5",
        "--noaugment",
        "--notensorboard",
        f"--workdir={workdir}",
        f"--metrics_out={out}",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert sum(line.startswith("method ") for line in lines) == 5
    assert sum(line.startswith("baseline ") for line in lines) == 5
    printed = json.loads(lines[-1])
    written = json.loads(out.read_text())
    assert printed == written
    for key in ("average_accuracy", "forgetting", "baseline_average_accuracy", "wall_s"):
        assert key in written
    assert written["scenario"] == "class"
    assert len(written["accuracy_matrix"]) == 5 and len(written["forgetting"]) == 4
    assert len(written["baseline_forgetting"]) == 4
    assert 0.0 <= written["average_accuracy"] <= 1.0
    for run in ("method", "baseline"):  # each run in its own resumable directory
        lines = (workdir / run / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(r) for r in lines]
        assert sum("eval/acc" in r for r in records) == 5
        assert (workdir / run / "ckpt").is_dir()
    last = [json.loads(r) for r in (workdir / "method" / "metrics.jsonl").read_text().splitlines()]
    assert last[-1]["eval/acc"] == written["accuracy_matrix"][-1]


def test_unknown_scenario_exits_2_listing_valid_ones(tmp_path):
    proc = _run("--scenario=online", f"--workdir={tmp_path}", timeout=60)
    assert proc.returncode == 2
    assert "should be one of <class|task|domain>" in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert not list(tmp_path.iterdir())  # nothing written before the error


def test_bad_data_exits_2(tmp_path):
    missing = tmp_path / "missing.npz"
    proc = _run(f"--data={missing}", f"--workdir={tmp_path / 'w'}", timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((10, 28, 28), np.float32), labels=np.zeros(10, np.int64))
    proc = _run(f"--data={bad}", f"--workdir={tmp_path / 'w'}", timeout=60)
    assert proc.returncode == 2
    assert "expected uint8" in proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # three processes, ~1-2 min; tests/experiments/continual covers it in-process
def test_sigterm_mid_task_then_the_same_command_ends_with_the_same_matrix(tiny_npz, tmp_path):
    args = [
        *(sys.executable, "-m", "aura.build", "continual", f"--data={tiny_npz}"),
        *("--epochs_per_task=3", "--hidden_dim=32", "--ppca_dim=5", "--notensorboard"),
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    whole = subprocess.Popen([*args, f"--workdir={tmp_path / 'a'}"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    cut = subprocess.Popen([*args, f"--workdir={tmp_path / 'b'}"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in cut.stdout:  # the first task is learned: the second one is under way
        if line.startswith("method   task 0"):
            cut.send_signal(signal.SIGTERM)
            break
    out, err = cut.communicate(timeout=300)
    assert cut.returncode == 0, err[-2000:]
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["interrupted"] and "accuracy_matrix" not in stopped
    resumed = _run(*args[4:], f"--workdir={tmp_path / 'b'}", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full, _ = whole.communicate(timeout=600)
    a, b = json.loads(full.strip().splitlines()[-1]), json.loads(resumed.stdout.splitlines()[-1])
    for key in ("accuracy_matrix", "baseline_accuracy_matrix", "forgetting", "gate_accuracy"):
        assert a[key] == b[key], key
