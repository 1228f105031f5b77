"""``python -m aura.build cerebrum``: the tiny stream end to end, an exact resume after a stop
mid-stream, and bad settings -> exit 2."""

from __future__ import annotations

import json

import pytest

from aura.experiments.mixtures import StreamConfig, run_cerebrum_stream
from aura.mixtures.cerebrum import Cerebrum
from aura.train import loop
from configs.cerebrum import get_config
from tests.commands.conftest import aura, run_cases

TINY = "--config=configs/cerebrum.py:tiny"


@pytest.mark.slow  # 9-11 CPU-s: a subprocess or a compiled stream
def test_tiny_stream_end_to_end(tmp_path):
    out, work = tmp_path / "c.json", tmp_path / "work"
    proc = aura("cerebrum", TINY, f"--workdir={work}", f"--metrics_out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r == json.loads(out.read_text())
    assert sum(line.startswith("regime ") for line in proc.stdout.splitlines()) == 3
    assert r["interrupted"] is False and r["steps"] == 9
    # 3 regimes: the warm-start GMM owns regime 0, one adapter spawned per later regime
    assert r["experts_final"] == 3 and r["distinct_owners"] == 3
    assert [(e["regime"], e["step"]) for e in r["spawn_events"]] == [(1, 3), (2, 6)]
    assert r["experts_by_regime"] == [1, 2, 3]
    assert r["routing_accuracy"] > 0.95
    assert len(r["forgetting"]) == 3 and max(r["forgetting"]) < 0.5
    lls = zip(r["ll_after_regime"], r["ll_final"], r["ll_oracle"], r["forgetting"], strict=True)
    for after, final, oracle, forgot in lls:
        assert final <= oracle + 0.5 and forgot == after - final
    assert r["dp_gmm_components"] is None  # the tiny preset skips it
    assert (work / "cerebrum_timeline.png").stat().st_size > 1000
    assert len(Cerebrum.load(work / "cerebrum").active_ids()) == 3
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "eval/ll" in x] == [3, 6, 9]
    assert any("train/novel_fraction" in x for x in rows) and (work / "tb").is_dir()
    record = json.loads((work / "record.json").read_text())
    assert len(record["timeline"]["active"]) == 9


def _tiny(workdir) -> StreamConfig:
    c = get_config("tiny")
    return StreamConfig(**c.stream.to_dict(), controller=c.controller.to_dict(),
                        workdir=str(workdir), tensorboard=False)  # fmt: skip


def test_stop_mid_stream_then_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch, stop_after):
    quiet = dict(log=lambda s: None)
    full = run_cerebrum_stream(_tiny(tmp_path / "a"), **quiet)
    # a stop after 5 steps: inside regime 1, after its adapter was spawned (at step 3)
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(4))
    part = run_cerebrum_stream(_tiny(tmp_path / "b"), **quiet)
    assert part["interrupted"] and part["steps"] == 5 and "ll_final" not in part
    monkeypatch.undo()
    resumed = run_cerebrum_stream(_tiny(tmp_path / "b"), **quiet)
    assert not resumed["interrupted"] and resumed["start_step"] == 5
    skip = {"wall_s", "start_step", "workdir", "png"}
    assert {k: v for k, v in resumed.items() if k not in skip} == {
        k: v for k, v in full.items() if k not in skip
    }
    a = json.loads((tmp_path / "a" / "record.json").read_text())
    b = json.loads((tmp_path / "b" / "record.json").read_text())
    assert a["timeline"] == b["timeline"]


@pytest.mark.slow  # 9-11 CPU-s: a subprocess or a compiled stream
def test_existing_checkpoint_of_another_config_or_noresume_is_refused(tmp_path):
    run_cerebrum_stream(_tiny(tmp_path), log=lambda s: None)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    cases = [[TINY, "--dim=5", f"--workdir={tmp_path}"],
             [TINY, "--noresume", f"--workdir={tmp_path}"]]  # fmt: skip
    needles = [["leaf 'cerebrum/adapters/log_vars' has shape (4, 2, 4)", "(4, 2, 5)"],
               ["already holds checkpoints"]]  # fmt: skip
    for res, want in zip(run_cases("cerebrum", cases), needles, strict=True):
        lines = [line for line in res["stderr"].splitlines() if line.strip()]
        assert res["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), res
        assert all(n in lines[0] for n in want), (want, lines[0])
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# (arguments after TINY, text the error line must contain); FILE is a file, not a directory
BAD = [
    (["--n_regimes=0"], "n_regimes=0 must be >= 1"),
    (["--batch_size=1"], "batch_size=1 must be >= 2"),
    (["--dim=-1"], "dim=-1 must be >= 1"),
    (["--capacity=0"], "capacity"),
    (["--top_k=0"], "top_k=0 must be >= 1"),
    (["--novel_fraction=1.5"], "novel_fraction=1.5 must be in (0, 1]"),
    (["--config.controller.bogus=1"], "bogus"),
    (["--config=configs/cerebrum.py:huge"], "unknown preset 'huge'"),
    (["--workdir=FILE"], "is not a directory"),
    (["stray"], "unexpected arguments ['stray']"),
]


def test_bad_settings_are_one_error_line_and_write_nothing(tmp_path):
    """Every case through the real entry point (one process re-parsing the flags per case)."""
    (tmp_path / "file").write_text("x")
    table = []
    for i, (args, _) in enumerate(BAD):
        args = [a.replace("FILE", str(tmp_path / "file")) for a in args]
        table.append([TINY, f"--workdir={tmp_path}/w{i}", *args, f"--metrics_out={tmp_path}/m{i}"])
    for (args, needle), res in zip(BAD, run_cases("cerebrum", table), strict=True):
        lines = [line for line in res["stderr"].splitlines() if line.strip()]
        assert res["code"] == 2, (args, res)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res["stderr"])
        assert needle in lines[0], (args, needle, lines[0])
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no workdir, no metrics file
