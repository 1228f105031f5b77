"""Smoke test of ``python -m aura.build demo`` (every stage, shortened): slow, run by
``make test-all``; ``--help`` of demo is covered by tests/test_packaging.py."""

from __future__ import annotations

import pytest

from tests.commands.conftest import aura


@pytest.mark.slow
def test_demo_runs_every_stage_end_to_end(tmp_path):
    proc = aura("demo", f"--workdir={tmp_path}", "--mnist_epochs=1", "--pretrain_steps=3",
                timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AURA demo finished" in proc.stdout
    assert "held-out bits per character after step 3:" in proc.stdout
    assert (
        proc.stdout.count("$ python -m aura.build chat --ckpt") == 5
    )  # 2 samples, composed, 2 memory
    for stage in ("mnist/result.json", "tokenizer/spiece.model", "lm/ckpt", "zones/zones.json",
                  "zones/joint/joint.json"):  # fmt: skip
        assert (tmp_path / stage).exists(), stage
