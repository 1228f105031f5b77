"""A whole Cortex run in-process: the result record, SIGTERM + the same call resumes to the same
numbers, phase 2 alone reuses phase 1's checkpoint, a workdir of other data is refused."""

from __future__ import annotations

import json

import pytest

from aura.data.errors import DataError
from aura.experiments.cortex import data as data_mod
from aura.experiments.cortex.run import run_cortex
from aura.train import loop
from aura.train.checkpoint import CheckpointError
from tests.experiments.cortex.fixtures import tiny_config, write_qa
from tests.experiments.cortex.test_data import FakeEncoder

CFG = tiny_config(phase1={"steps": 6}, phase2={"steps": 6, "permutations": 20},
                  eval_every=3, log_every=3)  # fmt: skip
VOLATILE = ("train_wall_s", "wall_s", "embed_s", "embeddings_cached", "gate_pca_png")


def _numbers(result: dict) -> dict:
    """The result without timings and paths (what must not change on resume)."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
        return x

    return strip(result)


@pytest.fixture
def qa(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(data_mod, "load_sentence_encoder",
                        lambda path=None: FakeEncoder(path or "fake-a", calls))  # fmt: skip
    return str(write_qa(tmp_path / "qa.jsonl", contexts=15, per=3))


def _run(qa, workdir, **kw):
    return run_cortex(CFG, qa, str(workdir), tensorboard=False, log=lambda s: None, **kw)


@pytest.mark.slow  # ~1-2 min on 2 shared cores (three runs, each compiling three steps)
def test_sigterm_resume_and_phase2_alone_give_the_same_numbers(qa, tmp_path, monkeypatch,
                                                               stop_after):  # fmt: skip
    full = _run(qa, tmp_path / "full")
    assert not full["interrupted"] and full["contexts"] == 15 and full["questions"] == 45
    p1, p2 = full["phase1"], full["phase2"]
    assert set(p1["recall@1"]) == {"0", "0.05", "0.1", "0.2"} and p1["split"] == "test"
    assert set(p2) >= {"moe", "dense", "baselines", "specialisation_mi", "specialisation_p"}
    assert set(p2["baselines"]) >= {"question", "ridge", "top1_context"}
    assert 0 < p2["specialisation_p"] <= 1 and (tmp_path / "full" / "gate_pca.png").is_file()
    for sub in ("phase1", "phase2_moe", "phase2_dense"):
        rows = (tmp_path / "full" / sub / "metrics.jsonl").read_text().splitlines()
        assert rows and all(json.loads(r) for r in rows)
    json.dumps(full)  # the command's line: plain JSON

    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(9))  # inside phase 2 (moe)
    part = _run(qa, tmp_path / "b")
    assert part["interrupted"] and "phase2" not in part
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(10**6))
    resumed = _run(qa, tmp_path / "b")
    assert not resumed["interrupted"] and resumed["embeddings_cached"]
    assert _numbers(resumed) == _numbers(full)

    only1 = _run(qa, tmp_path / "c", phase="1")
    assert "phase2" not in only1 and _numbers(only1)["phase1"] == _numbers(full)["phase1"]
    only2 = _run(qa, tmp_path / "c", phase="2", reasoning="moe")
    assert "phase1" not in only2 and "dense" not in only2["phase2"]
    assert _numbers(only2)["phase2"]["moe"] == _numbers(full)["phase2"]["moe"]
    other = write_qa(tmp_path / "other.jsonl", contexts=16, per=2)
    with pytest.raises(DataError, match="holds a run on other QA data"):
        _run(str(other), tmp_path / "c", phase="1")


def test_phase2_without_phase1_and_bad_arguments_are_refused(qa, tmp_path):
    with pytest.raises(CheckpointError, match="--phase 2 needs phase 1's checkpoint"):
        _run(qa, tmp_path / "empty", phase="2")
    with pytest.raises(ValueError, match="phase='3' must be in"):
        _run(qa, tmp_path / "x", phase="3")
    with pytest.raises(ValueError, match="reasoning='sparse'"):
        _run(qa, tmp_path / "x", reasoning="sparse")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "x").exists()
