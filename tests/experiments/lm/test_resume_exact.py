"""Exact resume after ``kill -9`` and a clean stop on SIGTERM, through the real command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from aura.data.corpus import build_corpus
from aura.data.tokenizer import TokenizerConfig, train_tokenizer
from aura.experiments.lm import pretrain as lm_loop

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs" / "pretrain.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    res = build_corpus(root / "corpus", max_docs=120)
    tok = train_tokenizer(root / "corpus" / "text", root / "tok", TokenizerConfig(vocab_size=400))
    return str(res.instruct), str(tok.model_path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The subprocesses' environment: unbuffered output, one CPU device, a shared compile cache
    (the later runs load the executable the first compiled; the numbers are the same)."""
    cache = tmp_path_factory.mktemp("xla_cache")
    return dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )


def pretrain_cmd(corpus, out, steps, save_every, log_every):
    return [
        sys.executable, "-m", "aura.build", "pretrain", "--jsonl", corpus[0],
        "--spm_model", corpus[1], "--config", f"{CONFIGS}:tiny", "--steps", str(steps),
        "--save_every", str(save_every), "--log_every", str(log_every), "--ckpt_out", str(out),
        "--notensorboard",
    ]  # fmt: skip


def committed_steps(out: Path) -> list[int]:
    """Checkpoint steps orbax has finished (a step directory is renamed into place when done)."""
    ckpt = out / "ckpt"
    return sorted(int(p.name) for p in ckpt.glob("*") if p.name.isdigit()) if ckpt.exists() else []


def final_state(out: Path):
    _, state, meta = lm_loop.restore_state(str(out))
    return state, meta


def test_kill_9_then_the_same_command_resumes_bit_for_bit(corpus, env, tmp_path):
    steps = 120
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = pretrain_cmd(corpus, killed, steps, save_every=10, log_every=40)
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while not committed_steps(killed) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no handler, no final save: the process just vanishes
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = committed_steps(killed)
    assert saved and saved[-1] < steps
    # The same command again (it resumes at the last committed step and data position), and
    # beside it an uninterrupted run of the same length in a fresh directory.
    whole = pretrain_cmd(corpus, clean, steps, save_every=10, log_every=40)
    runs = [
        subprocess.Popen(
            c, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in (cmd, whole)
    ]
    (rerun, _), (_, _) = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    resumed = int(rerun.split("resumed from step ")[1].split()[0])
    assert resumed in saved and resumed >= 10
    a, meta_a = final_state(killed)
    b, meta_b = final_state(clean)
    assert int(a.step) == int(b.step) == steps and meta_a == meta_b
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit for bit


def test_sigterm_saves_the_current_step_and_exits_0_quickly(corpus, env, tmp_path):
    out = tmp_path / "run"
    cmd = pretrain_cmd(corpus, out, 100000, save_every=100000, log_every=1)
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in proc.stdout:  # wait until the loop runs (the guard is installed by then)
        if line.startswith("step 2 |"):
            break
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    elapsed = time.time() - t0
    assert proc.returncode == 0, stderr[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f} s to stop"
    stopped = int(stdout.split("interrupted: saved step ")[1].split(";")[0])
    assert stopped >= 2 and committed_steps(out)[-1] == stopped
    assert '"interrupted": true' in stdout
    state, meta = final_state(out)
    assert int(state.step) == stopped == meta["step"]
    assert meta["batch_size"] == 4  # the run's settings are saved with it
