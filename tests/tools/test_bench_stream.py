"""tools/bench_stream.py on a small file: it streams every record once and reports memory."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_streams_the_whole_file_once_and_reports_rss(tmp_path):
    out = tmp_path / "s.json"
    proc = subprocess.run(
        [
            sys.executable, "tools/bench_stream.py", "--size_mb", "0.3", "--small_mb", "0.1",
            "--steps", "0", "--sample_every", "5", "--shuffle_window", "64", "--dir",
            str(tmp_path / "w"), "--json", str(out),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    big = tmp_path / "w" / "big.jsonl"
    assert res["lines"] == sum(1 for _ in big.open()) > 0
    stream = res["stream"]
    assert stream["tokens"] > 0 and stream["batches"] >= 1
    assert stream["samples"][-1]["records"] >= res["lines"]  # the whole file was read
    assert 0 < stream["rss_first_batch_mb"] <= stream["peak_rss_mb"]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["lines"] == res["lines"]
