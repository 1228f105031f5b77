"""``python -m aura.build cerebrum``: the tiny stream end to end, an exact resume after a stop
mid-stream, and bad settings -> exit 2."""

from __future__ import annotations

import json

import pytest

from aura.experiments.mixtures import StreamConfig, run_cerebrum_stream
from aura.mixtures.cerebrum import Cerebrum
from aura.train import loop
from configs.cerebrum import get_config
from tests.commands.conftest import assert_user_error, aura

TINY = "--config=configs/cerebrum.py:tiny"


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


def test_existing_checkpoint_of_another_config_or_noresume_is_refused(tmp_path):
    run_cerebrum_stream(_tiny(tmp_path), log=lambda s: None)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    proc = aura("cerebrum", TINY, "--dim=5", f"--workdir={tmp_path}")
    assert_user_error(proc, "leaf 'cerebrum/adapters/log_vars' has shape (4, 2, 4)", "(4, 2, 5)")
    proc = aura("cerebrum", TINY, "--noresume", f"--workdir={tmp_path}")
    assert_user_error(proc, "already holds checkpoints")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# (extra arguments, text the error line must contain); a workdir that does not exist yet
BAD = {
    "no_regimes": (["--n_regimes=0"], ["n_regimes"]),
    "zero_capacity": (["--capacity=0"], ["capacity"]),
    "top_k_zero": (["--top_k=0"], ["top_k=0"]),
    "novel_fraction": (["--novel_fraction=1.5"], ["novel_fraction=1.5"]),
    "unknown_field": (["--config.controller.bogus=1"], ["bogus"]),
    "batch_size": (["--batch_size=1"], ["batch_size"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_settings_are_one_error_line_and_write_nothing(case, tmp_path):
    args, needles = BAD[case]
    work, out = tmp_path / "work", tmp_path / "c.json"
    proc = aura("cerebrum", TINY, *args, f"--workdir={work}", f"--metrics_out={out}")
    assert_user_error(proc, *needles)
    assert not work.exists() and not out.exists()


def test_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = aura("cerebrum", TINY, f"--workdir={tmp_path / 'file'}")
    assert_user_error(proc, "is not a directory")
