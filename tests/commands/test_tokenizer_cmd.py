"""Smoke tests of `python -m aura.build corpus` and `tokenizer` (subprocesses, exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aura.build", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    proc = build("corpus", "--out_dir", str(out), "--max_docs", "200")
    assert proc.returncode == 0, proc.stderr
    assert "instruct" in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["docs"] == 200 and result["records"] > 0
    return out


def test_tokenizer_command_writes_model(corpus, tmp_path):
    from aura.data.tokenizer import load_tokenizer, symbol_ids

    out = tmp_path / "tok"
    # the exact flag spelling: "--flag value" with 0/1 switches
    proc = build(
        "tokenizer",
        "--input_dir", str(corpus / "text"),
        "--out_dir", str(out),
        "--vocab_size", "800",
        "--model_type", "unigram",
        "--use_iterator", "1",
        "--ascii_only", "0",
        "--user_symbols", "<INST>,<INP>,<RESP>,<SEP>",
        "--byte_fallback", "1",
        "--clean_controls", "1",
        "--normalize_spaces", "1",
        "--max_sentence_length", "4192",
        "--hard_vocab_limit", "0",
        "--metrics_out", str(tmp_path / "tok.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tokenizer: 800 pieces" in proc.stdout
    assert "non-UTF-8 bytes replaced" in proc.stdout and "control characters removed" in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["piece_size"] == 800
    assert json.loads((tmp_path / "tok.json").read_text())["piece_size"] == 800
    sp = load_tokenizer(out / "spiece.model")
    assert sp.get_piece_size() == 800 and (out / "spiece.vocab").is_file()
    assert symbol_ids(sp)["<SEP>"] == 7


def test_tokenizer_file_path_and_jsonl(corpus, tmp_path):
    proc = build(
        "tokenizer",
        f"--input_dir={corpus / 'instruct.jsonl'}",
        f"--out_dir={tmp_path}",
        "--vocab_size=600",
        "--use_iterator=0",
        "--model_type=bpe",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "spiece.model").is_file()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--input_dir", "{tmp}/missing"], "does not exist"),
        (["--input_dir", "{tmp}/empty"], "no *.txt or *.jsonl files"),
        (["--input_dir", "{tmp}/empty", "--use_iterator", "2"], "--use_iterator=2 must be 0 or 1"),
        (["--input_dir", "{tmp}/empty", "--vocab_size", "100"], "vocab_size=100 must be > 265"),
        (["--input_dir", "{tmp}/empty", "--model_type", "word"], "model_type='word'"),
    ],
)
def test_tokenizer_bad_input_exits_2(tmp_path, flags, message):
    (tmp_path / "empty").mkdir()
    args = [f.format(tmp=tmp_path) for f in flags]
    proc = build("tokenizer", *args, "--out_dir", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "spiece.model").exists()
