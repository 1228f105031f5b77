"""`moca` and `classify` end to end (tiny preset): one JSON line, resume, a checkpoint of another
config names the leaf. Their bad-input rows are in ``test_bad_input.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.commands.conftest import REPO, assert_user_error, aura

TINY = ["--config", f"{REPO}/configs/moca.py:tiny", "--notensorboard"]
WORDS = {
    "math": "sum product root square number integer divide multiply angle cosine",
    "files": "path directory open read write file folder disk rename delete",
}


def _jsonl(path, n: int = 40) -> None:
    lines = []
    for i in range(n):
        label = "math" if i % 2 == 0 else "files"
        words = WORDS[label].split()
        text = " ".join(words[(i + j) % len(words)] for j in range(6))
        lines.append(json.dumps({"text": f"{text} item {i}", "label": label}))
    path.write_text("\n".join(lines) + "\n")


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_copy_runs_resumes_and_writes_metrics(tmp_path):
    work, out = tmp_path / "copy", tmp_path / "copy.json"
    first = aura("moca", "--task=copy", *TINY, f"--workdir={work}", "--steps=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _last_json(first.stdout)["steps"] == 3
    res = aura("moca", "--task=copy", *TINY, f"--workdir={work}", f"--metrics_out={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    line = _last_json(res.stdout)
    assert line == json.loads(out.read_text())
    assert (line["start_step"], line["steps"]) == (3, 6)
    assert set(line["token_acc"]) == {"6", "10"} and set(line["seq_acc"]) == {"6", "10"}
    assert 0 <= line["compute_used"] <= 1 and line["budget"] == 0.3
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/token_acc/6" in r or "eval/token_acc@6" in json.dumps(r) for r in rows)
    # A checkpoint of another configuration names the leaf that differs.
    other = aura("moca", "--task=copy", *TINY, f"--workdir={work}", "--num_slots=8")
    assert_user_error(other, "memory")


@pytest.mark.slow
def test_textcls_then_classify(tmp_path):
    data, work, out = tmp_path / "d.jsonl", tmp_path / "text", tmp_path / "text.json"
    _jsonl(data)
    res = aura("moca", "--task=textcls", *TINY, f"--data={data}", f"--workdir={work}",
               f"--metrics_out={out}")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    line = _last_json(res.stdout)
    for key in ("accuracy", "macro_f1", "baseline_accuracy", "compute_used", "steps", "wall_s"):
        assert key in line, key
    assert line["num_labels"] == 2 and line["eval_size"] == 8
    pred = aura("classify", f"--ckpt={work}", "--text=open the file in this directory")
    assert pred.returncode == 0, pred.stderr[-3000:]
    p = _last_json(pred.stdout)
    assert p["label"] in ("math", "files") and abs(sum(p["probs"].values()) - 1) < 1e-3
    assert p["confidence"] == max(p["probs"].values())
    chat = aura("classify", f"--ckpt={work}", input="help\nstats\nsquare root\nquit\n")
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert "stats" in chat.stdout and '"experts"' in chat.stdout and '"label"' in chat.stdout
    # classify checks the checkpoint against the stored config leaf by leaf.
    info = json.loads((work / "classifier.json").read_text())
    info["model"]["dim"] = 48
    (work / "classifier.json").write_text(json.dumps(info))
    assert_user_error(aura("classify", f"--ckpt={work}", "--text=x"), "embed")


@pytest.mark.slow
def test_textcls_with_a_frozen_minilm_table_then_classify(tmp_path):
    pytest.importorskip("all_minilm_l6_v2")
    data, work = tmp_path / "d.jsonl", tmp_path / "text"
    _jsonl(data)
    res = aura("moca", "--task=textcls", *TINY, f"--data={data}", f"--workdir={work}",
               "--config.text.embeddings=minilm", "--config.model.freeze_embed=True")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((work / "classifier.json").read_text())
    assert info["tokenizer"].endswith("tokenizer.json") and info["model"]["embed_dim"] == 384
    # The frozen 30,522 x 384 table (47 MB) is left out of every checkpoint.
    assert info["frozen_table"] == "minilm"
    assert max(f.stat().st_size for f in (work / "ckpt").rglob("*") if f.is_file()) < 5e6
    # The checkpoint's optimizer state (frozen table) restores; WordPiece encodes the text.
    pred = aura("classify", f"--ckpt={work}", "--text=open the file in this directory")
    assert pred.returncode == 0, pred.stderr[-3000:]
    assert _last_json(pred.stdout)["label"] in ("math", "files")


@pytest.mark.slow  # three processes
def test_sigterm_then_the_same_command_ends_like_an_uninterrupted_run(tmp_path):
    args = [sys.executable, "-m", "aura.build", "moca", "--task=copy", *TINY, "--steps=30",
            "--eval_every=10"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    pipes = dict(cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    whole = subprocess.Popen([*args, f"--workdir={tmp_path / 'a'}"], **pipes)
    cut = subprocess.Popen([*args, f"--workdir={tmp_path / 'b'}"], **pipes)
    for line in cut.stdout:  # the first evaluation is saved: stop mid-run
        if line.startswith("step 10 "):
            cut.send_signal(signal.SIGTERM)
            break
    out, err = cut.communicate(timeout=600)
    assert cut.returncode == 0, err[-2000:]
    stopped = _last_json(out)
    assert stopped["interrupted"] and 10 <= stopped["steps"] < 30
    resumed = aura("moca", "--task=copy", *TINY, "--steps=30", "--eval_every=10",
                   f"--workdir={tmp_path / 'b'}")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full, _ = whole.communicate(timeout=600)
    a, b = _last_json(full), _last_json(resumed.stdout)
    assert b["start_step"] == stopped["steps"] and b["steps"] == 30
    assert (a["token_acc"], a["seq_acc"]) == (b["token_acc"], b["seq_acc"])
