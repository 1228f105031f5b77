"""`python -m aura.build mnist`: bad input exits 2, leaving the workdir alone; a tiny run works."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "aura.build", "mnist", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    good = dict(images=rng.integers(0, 255, (64, 28, 28), np.uint8), labels=np.arange(64) % 10)
    np.savez(d / "good.npz", **good)
    np.savez(d / "badshape.npz", images=good["images"][:, :20], labels=good["labels"])
    np.savez(d / "badlabel.npz", images=good["images"], labels=good["labels"] + 5)
    np.savez(d / "empty.npz", images=good["images"][:0], labels=good["labels"][:0])
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return d


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data={d}/missing.npz"], "missing.npz"),
        (["--data={d}/corrupt.npz"], "corrupt.npz"),
        (["--data={d}/badshape.npz"], "images"),
        (["--data={d}/badlabel.npz"], "label"),
        (["--data={d}/empty.npz"], "empty"),
        (["--growth_schedule=0:1,1:9"], "capacity"),
        (["--bandit_policy=greedy"], "bandit_policy"),
    ],
)
def test_bad_input_exits_2_and_leaves_the_workdir_alone(files, tmp_path, args, message):
    workdir = tmp_path / "work"
    workdir.mkdir()
    sentinel = workdir / "metrics.jsonl"
    sentinel.write_text('{"kept": true}\n')
    res = run(*[a.format(d=files) for a in args], f"--workdir={workdir}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error:" in res.stderr and message in res.stderr.lower() + res.stderr
    assert "Traceback" not in res.stderr
    assert sentinel.read_text() == '{"kept": true}\n'
    assert sorted(p.name for p in workdir.iterdir()) == ["metrics.jsonl"]


def test_tiny_run_writes_the_json_result(files, tmp_path):
    out = tmp_path / "result.json"
    res = run(
        f"--data={files}/good.npz",
        f"--eval_data={files}/good.npz",
        "--epochs=2",
        "--batch_size=16",
        "--growth_schedule=0:1,1:3",
        f"--workdir={tmp_path / 'w'}",
        f"--metrics_out={out}",
        "--notensorboard",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    saved = json.loads(out.read_text())
    assert last == saved
    assert last["experts_active"] == 3 and last["steps"] == 8
    assert 0.0 <= last["test_accuracy"] <= 1.0 and len(last["utilisation"]) == 6
