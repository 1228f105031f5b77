"""Smoke test of tools/bench_mixtures.py: the --quick run finishes and writes its JSON."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_bench_mixtures_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_mixtures.py"), "--quick",
         "--repeats", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 4
    for row in res["rows"]:
        assert row["ratio_ref_over_aura"] > 0 and row["iterations"] == 5
        # Same initialisation, same number of EM iterations: same log-likelihood.
        assert abs(row["aura_ll"] - row["ref_ll"]) <= 1e-3 * abs(row["ref_ll"])
    assert "ratio" in proc.stdout
