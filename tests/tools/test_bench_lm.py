"""Smoke test of tools/bench_lm.py: the --quick run (but section 0b) writes the documented JSON."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_bench_lm_quick_writes_json(tmp_path):
    out = tmp_path / "bench_lm.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_lm.py"), "--quick", "--skip", "e2e"]
        + ["--json", str(out)],  # section 0b (e2e): tests/tools/test_bench_lm_e2e.py
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in (
        "config",
        "adapter",
        "train",
        "gen",
        "bpc",
        "ratios",
        "targets_met",
        "jax",
        "backend",
    ):
        assert key in res, key
    params = res["config"]["params"]
    assert abs(params["srwkv"] - params["transformer"]) / params["srwkv"] < 0.01
    for name in ("srwkv", "transformer"):
        for t in res["config"]["train_lens"]:
            row = res["train"][name][str(t)]
            assert row["tokens_per_s"] > 0 and len(row["samples_s"]) == res["config"]["repeats"]
        assert res["bpc"][name]["bpc"] > 0
    for name in ("srwkv", "transformer_kv", "transformer_kv_static"):
        assert res["gen"][name]["ratio_long_over_short"] > 0
    assert "bpc_srwkv_over_transformer" in res["ratios"]
    assert set(res["targets_met"]) == {
        "srwkv_gen_ratio_le_1.1",
        "srwkv_bpc_ratio_le_1.05",
        "adapter_new_speedup_ge_3",
    }
    # Section 0: the baseline revision and this tree trained the same preset from the same
    # parameters on the same batches; each step's time and loss recorded, MFU from XLA's FLOPs.
    adapter = res["adapter"]
    steps = res["config"]["demo_steps"] + res["config"]["demo_warmup"]
    for name in ("old", "new"):
        row = adapter[name]
        assert len(row["losses"]) == steps and len(row["samples_s"]) == res["config"]["demo_steps"]
        assert row["flops"] > 0 and 0 < row["mfu"] < 1
    assert adapter["new"]["max_abs_loss_diff_vs_old"] < 1e-3
    # the adapter config reaches the model: the default variant and the --demo_extra one
    assert adapter["new"]["config"]["wkv_impl"] == "auto"
    assert adapter["new_wkv_impl=chunked"]["config"]["wkv_impl"] == "chunked"
    for t in res["config"]["train_lens"]:
        assert 0 < res["train"]["srwkv"][str(t)]["mfu"] < 1
    # bpc is the NLL in bits over the characters the scored ids decode to.
    chars = res["text"]["held_chars_decoded"]
    assert chars > 0
    for row in res["bpc"].values():
        assert row["bpc"] == pytest.approx(row["nll_bits"] / chars)
    assert "== bits per character" in proc.stdout
