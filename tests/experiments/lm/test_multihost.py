"""Two processes on localhost train together through jax.distributed (CPU gloo collectives)."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aura.configs import pretrain as pretrain_presets
from aura.data import stream
from aura.data.corpus import build_corpus
from aura.data.tokenizer import TokenizerConfig, train_tokenizer
from aura.experiments.lm import pretrain as lm_loop

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs" / "pretrain.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mh")
    res = build_corpus(root / "corpus", max_docs=120)
    tok = train_tokenizer(root / "corpus" / "text", root / "tok", TokenizerConfig(vocab_size=400))
    return str(res.instruct), str(tok.model_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def tiny_model():

    return pretrain_presets.get_config("tiny").model


# Each process supplies only the rows its own devices hold; the jitted weighted sum sees the
# whole global batch, so a wrong row (or a wrong order) changes the total.
FEED = """
import sys
import jax, jax.numpy as jnp, numpy as np
from aura.commands.distributed import distributed_kwargs
jax.distributed.initialize(**distributed_kwargs(True, sys.argv[1], 2, int(sys.argv[2])))
from aura.train import sharding
mesh = sharding.make_mesh({"data": 2, "expert": 2})
shard = sharding.batch_sharding(mesh, ndim=2, batch_axis=0)
rows = sharding.process_batch_rows(shard, (8, 3), axis=0)
full = np.arange(24, dtype=np.float32).reshape(8, 3)
x = sharding.global_batch(full[rows], mesh, batch_axis=0, global_rows=8)
w = jnp.arange(1, 9)[:, None]
f = jax.jit(lambda a: jnp.sum(a * w), out_shardings=sharding.replicated(mesh))
print("RESULT", jax.process_index(), jax.device_count(), rows.tolist(), float(f(x)), flush=True)
"""


def run_together(args: list[list[str]], env: dict, timeout: float) -> list[str]:
    """Starts one process per argument list, waits for all; returns their stdouts (rc 0)."""
    procs = [
        subprocess.Popen(
            a, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for a in args
    ]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(stdout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def test_each_process_feeds_its_own_rows_of_the_global_batch():
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    coordinator = f"localhost:{free_port()}"
    outs = run_together(
        [[sys.executable, "-c", FEED, coordinator, str(i)] for i in range(2)], env, 120
    )
    results = [
        ln.split(" ", 1)[1] for o in outs for ln in o.splitlines() if ln.startswith("RESULT")
    ]
    assert len(results) == 2
    expected = float(np.sum(np.arange(24).reshape(8, 3) * np.arange(1, 9)[:, None]))
    seen = []
    for index, line in enumerate(results):
        proc, devices, rest = line.split(" ", 2)
        rows, total = rest.rsplit(" ", 1)
        assert int(proc) == index and int(devices) == 4  # 2 processes x 2 CPU devices
        assert float(total) == expected
        seen += json.loads(rows)
    assert sorted(seen) == list(range(8))  # every row supplied by exactly one process


def own_lines(stdout: str) -> list[str]:
    """Lines AURA printed (gloo's C++ connection messages go to stdout too)."""
    return [ln for ln in stdout.splitlines() if ln.strip() and not ln.startswith("[Gloo]")]


def losses(workdir: Path) -> list[float]:
    with open(workdir / "metrics.jsonl") as f:
        return [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]


class _HostStreams:
    """Host 0's and host 1's streams of :func:`aura.data.stream.lm_batches`, read in step: each
    ``next`` is the rows the two hosts' devices hold, host 0's first."""

    def __init__(self, exp, hosts: int = 2):
        c = exp.cfg
        self.shape = (c.accumulate_steps, c.batch_size // hosts, exp.width)
        self.streams = [
            iter(
                stream.lm_batches(
                    c.jsonl, exp.fmt, width=exp.width, rows=c.accumulate_steps * self.shape[1],
                    pack=c.pack, seed=c.seed, shuffle_window=c.shuffle_window, prefetch=0,
                    process_index=i, process_count=hosts,
                )
            )
            for i in range(hosts)
        ]  # fmt: skip

    def __next__(self):
        parts = [next(s) for s in self.streams]
        return {
            k: np.concatenate([p[k].reshape(self.shape) for p in parts], axis=1).reshape(
                -1, self.shape[2]
            )
            for k in parts[0]
        }

    def get_state(self):
        return {str(i): s.get_state() for i, s in enumerate(self.streams)}

    def close(self):
        pass


class TwoHostsOnOne(lm_loop.PretrainExperiment):
    """The pretrain experiment on one process, fed what two hosts would feed together."""

    def __init__(self, cfg, log=print, on_save=None):
        super().__init__(cfg, log, on_save)
        self.data.close()
        self.data = _HostStreams(self)


@pytest.mark.slow  # 20-60 s here: two processes compile the step at once on 2 cores
def test_two_processes_complete_pretrain_steps_through_the_local_launcher(corpus, tmp_path):
    jsonl, spm = corpus
    out, logs = tmp_path / "ckpt", tmp_path / "logs"
    flags = [
        "--jsonl", jsonl, "--spm_model", spm, "--config", f"{CONFIGS}:tiny", "--mesh", "data=-1",
        "--batch_size", "4", "--steps", "3", "--log_every", "1", "--save_every", "2",
        "--ckpt_out", str(out), "--notensorboard",
    ]  # fmt: skip
    launcher = [
        str(ROOT / "launch" / "local_multiprocess.sh"),
        "-n",
        "2",
        "-d",
        "2",
        "-l",
        str(logs),
    ]
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.Popen(
        [*launcher, "--", *flags], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    # The reference: one process with 4 devices, fed the global batch the two hosts assemble
    # (host 0's streamed shard on devices 0-1, host 1's on devices 2-3).
    ref_cfg = lm_loop.PretrainConfig(
        jsonl=jsonl, spm_model=spm, ckpt_out=str(tmp_path / "ref"), model=tiny_model(), steps=3,
        batch_size=4, max_len=32, log_every=1, save_every=100, mesh={"data": 4},
        tensorboard=False,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lm_loop, "PretrainExperiment", TwoHostsOnOne)
        lm_loop.pretrain(ref_cfg, log=lambda s: None)
    try:
        console, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, [(logs / f"process_{i}.log").read_text()[-2000:] for i in (0, 1)]
    result = json.loads(own_lines(console)[-1])
    assert result["processes"] == 2 and result["devices"] == 4 and result["steps"] == 3
    assert "step 1 |" in console
    assert own_lines((logs / "process_1.log").read_text()) == []  # only process 0 prints
    # Same global batches, same initial parameters: the same losses up to the order of the
    # cross-host (gloo) reduction.
    got, ref = losses(out), losses(tmp_path / "ref")
    assert len(got) == len(ref) == 3
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # Both hosts took part in the orbax save; the checkpoint restores on this one process.
    _, state, meta = lm_loop.restore_state(str(out), None)
    assert int(state.step) == 3 and meta["mesh"] == {"data": 4, "fsdp": 1, "expert": 1}


@pytest.mark.slow  # two processes compile at once on 2 cores
def test_sigterm_stops_two_processes_at_the_same_step_and_both_save_it(corpus, tmp_path):
    """JAX's preemption sync point (no all-gather per step): the launcher forwards SIGTERM to
    both processes, they agree on a step, save it together and exit 0."""
    jsonl, spm = corpus
    out, logs = tmp_path / "ckpt", tmp_path / "logs"
    flags = [
        "--jsonl", jsonl, "--spm_model", spm, "--config", f"{CONFIGS}:tiny", "--mesh", "data=-1",
        "--batch_size", "4", "--steps", "100000", "--log_every", "1", "--save_every", "100000",
        "--ckpt_out", str(out), "--notensorboard",
    ]  # fmt: skip
    launcher = [str(ROOT / "launch" / "local_multiprocess.sh"), "-n", "2", "-d", "2", "-l"]
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.Popen(
        [*launcher, str(logs), "--", *flags], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        seen = []
        for line in proc.stdout:  # training is under way on both processes: stop it
            seen.append(line)
            if line.startswith("step 2 |"):
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, [(logs / f"process_{i}.log").read_text()[-2000:] for i in (0, 1)]
    result = json.loads(own_lines(rest)[-1])
    assert result["interrupted"] and result["processes"] == 2 and 2 <= result["steps"] < 100000
    _, state, _ = lm_loop.restore_state(str(out), None)  # both hosts wrote the step they agreed
    assert int(state.step) == result["steps"]


def test_tpu_pod_launcher_runs_the_same_command_on_every_worker():
    env = dict(
        os.environ, DRY_RUN="1", JSONL="data/i.jsonl", SPM="tok/spiece.model", CKPT_OUT="/mnt/ck"
    )
    out = subprocess.run(
        [str(ROOT / "launch" / "tpu_v4_32.sh"), "--steps", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # The commands as the script prints them (shell-quoted: "\ " is a space).
    cmds = [ln[2:].replace("\\ ", " ") for ln in out.stderr.splitlines() if ln.startswith("+ ")]
    assert cmds[0].startswith(
        "gcloud compute tpus tpu-vm create aura-v4-32 --accelerator-type v4-32"
    )
    run = [c for c in cmds if "aura.build pretrain" in c]
    assert len(run) == 1 and "--worker=all" in run[0] and "--init_distributed" in run[0]
    assert "--steps 10" in run[0]
    assert sum("--worker=all" in c for c in cmds) >= 3  # copy, install, run on all workers
    assert [c for c in cmds if "scp aura-v4-32:" in c and "--worker=" in c]  # logs collected
