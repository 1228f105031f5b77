"""tools/bench_lm.py section 0b (``lm_bench_e2e.py``): old vs new pretraining end to end.

Runs the section alone on the tiny preset for a few steps: the baseline revision with its
padded rows and glibc's allocator, this tree with packed rows and the host allocator setting.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from lm_bench_e2e import compare_curves  # noqa: E402


@pytest.mark.slow
def test_e2e_section_runs_both_pipelines(tmp_path):
    out = tmp_path / "bench_lm.json"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench_lm.py"), "--quick",
           "--skip", "adapter,train,gen,bpc", "--e2e_steps", "3", "--e2e_matched_steps", "2",
           "--e2e_matched_rows", "2", "--json", str(out)]  # fmt: skip
    env = {
        k: v for k, v in os.environ.items() if k != "AURA_MALLOC" and not k.startswith("MALLOC_")
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    e2e = res["e2e"]
    assert set(res["targets_met"]) == {"e2e_new_real_tokens_per_s_ge_3"}
    old, new, plain = e2e["old"], e2e["new"], e2e["new_glibc_malloc"]
    steps = e2e["steps"] + e2e["warmup"]
    for row in (old, new, plain):
        assert len(row["losses"]) == steps and all(r > 0 for r in row["real"])
        assert 0 < row["real_tokens_per_s"] <= row["padded_tokens_per_s"]
        assert row["heldout"][0]["step"] == 0 and row["heldout"][-1]["step"] == steps
        assert 0 < row["mfu"] < 1
    # one record per padded row: the old rows hold padding; packing fills the rows more
    assert old["real_tokens_per_s"] < old["padded_tokens_per_s"]
    assert new["real_fraction"] > old["real_fraction"] - 0.05
    # each worker ran its own tree and allocator, from the same parameters
    assert old["param_checksum"] == new["param_checksum"] == plain["param_checksum"]
    assert (old["host_alloc"], new["host_alloc"], plain["host_alloc"]) == (False, True, False)
    assert old["heldout"][0]["ce"] == pytest.approx(new["heldout"][0]["ce"], rel=1e-5)
    # the allocator setting changes no number
    assert new["losses"] == pytest.approx(plain["losses"], rel=1e-5)
    # the token-matched run: the new pipeline, stopped after its own (shorter) schedule
    short = e2e["new_token_matched"]
    assert len(short["losses"]) == 2 and short["heldout"][-1]["step"] == 2
    assert short["losses"][0] == pytest.approx(new["losses"][0], rel=1e-6)  # same first batch
    assert short["host_alloc"] and short["heldout"][-1]["real_tokens"] == sum(short["real"])
    # the rows-matched run: the new pipeline with 2 rows of the preset's 32 tokens per step
    rows2 = e2e["new_rows2"]
    assert len(rows2["losses"]) == steps and max(rows2["real"]) <= 2 * 32
    assert rows2["padded_tokens_per_s"] == pytest.approx(64 * rows2["steps_per_s"])
    assert "pretraining end to end" in proc.stdout


def _curve(points):
    return [{"mark": m, "ce": ce, "real_tokens": t} for m, ce, t in points]


def test_compare_curves_pairs_equal_token_marks():
    old = _curve([(0, 9.0, 0), (1, 6.0, 110), (2, 5.0, 205), (None, 4.9, 230)])
    new = _curve([(0, 9.0, 0), (1, 6.5, 150), (3, 4.0, 300), (None, 3.5, 700)])
    out = compare_curves(old, new)
    assert out["equal_tokens_points"] == 1  # mark 1 only: 0 is the start, new skipped mark 2
    assert out["equal_tokens_max_abs"] == pytest.approx(0.5)
    assert out["equal_tokens_last_at"] == [110, 150]
    assert out["final_step"] == pytest.approx(3.5 - 4.9)
