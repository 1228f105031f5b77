"""Smoke tests of the language commands end to end: corpus -> tokenizer -> pretrain -> chat."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.commands.conftest import REPO, assert_user_error, aura


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    w = tmp_path_factory.mktemp("lang")
    corpus = aura("corpus", f"--out_dir={w}/corpus", "--max_docs=120")
    assert corpus.returncode == 0, corpus.stderr[-2000:]
    tok = aura("tokenizer", f"--input_dir={w}/corpus/text", f"--out_dir={w}/tok",
               "--vocab_size=400")  # fmt: skip
    assert tok.returncode == 0, tok.stderr[-2000:]
    pre = aura(
        "pretrain", f"--jsonl={w}/corpus/instruct.jsonl", f"--spm_model={w}/tok/spiece.model",
        f"--config={REPO}/configs/pretrain.py:tiny", "--steps=3", f"--ckpt_out={w}/lm",
        "--notensorboard",
    )  # fmt: skip
    assert pre.returncode == 0, pre.stderr[-2000:]
    return w, corpus, tok, pre


def test_corpus_tokenizer_and_pretrain_report_one_json_line(trained):
    w, corpus, tok, pre = trained
    assert json.loads(corpus.stdout.strip().splitlines()[-1])["records"] > 0
    assert json.loads(tok.stdout.strip().splitlines()[-1])["piece_size"] == 400
    result = json.loads(pre.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3 and result["final_loss"] > 0
    assert (w / "lm" / "ckpt" / "3").is_dir() and (w / "lm" / "metrics.jsonl").is_file()


def test_chat_answers_one_prompt_from_another_directory(trained, tmp_path):
    w = trained[0]
    proc = aura("chat", f"--ckpt={w}/lm", "--prompt=Explain json", "--gen_len=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()  # the spm model path was stored resolved in the checkpoint


def test_chat_without_a_checkpoint_is_a_user_error(tmp_path):
    assert_user_error(aura("chat", f"--ckpt={tmp_path}/none", "--prompt=x"), "no checkpoint")


def test_chat_has_a_quiet_stderr_and_survives_bad_bytes_and_closed_stdin(trained):
    w = trained[0]
    ok = aura("chat", f"--ckpt={w}/lm", "--prompt=Explain json", "--gen_len=2")
    assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr  # no orbax warnings
    bad = aura("chat", f"--ckpt={w}/lm", "--gen_len=2", input=b"Explain \xff json\n", text=False)
    assert bad.returncode == 0, bad.stderr
    assert b"1 bytes that are not UTF-8 replaced" in bad.stderr and b"Traceback" not in bad.stderr
    argv = aura("chat", f"--ckpt={w}/lm", "--gen_len=2", "--prompt=Explain \udcff x")
    assert argv.returncode == 0 and "replaced" in argv.stderr, argv.stderr
    closed = aura("chat", f"--ckpt={w}/lm", "--gen_len=2", stdin=subprocess.DEVNULL)
    assert closed.returncode == 0 and "bye" in closed.stderr
    gone = subprocess.run(  # stdin closed outright (`<&-`)
        f"{sys.executable} -m aura.build chat --ckpt={w}/lm --gen_len=2 <&-", shell=True,
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert gone.returncode == 0 and "Traceback" not in gone.stderr, gone.stderr


def test_an_edited_checkpoint_meta_is_named_not_a_traceback(trained, tmp_path):
    w = trained[0]
    copy = tmp_path / "lm"
    shutil.copytree(w / "lm", copy)
    meta_file = next((copy / "ckpt").glob("*/meta/metadata"))
    meta = json.loads(meta_file.read_text())
    meta["experiment"]["model"]["dim"] = "abc"
    meta_file.write_text(json.dumps(meta))
    for sums in (copy / "ckpt").glob("*/checksums.json"):
        sums.unlink()  # an edit by hand, not bit rot: the field check must catch it
    assert_user_error(aura("chat", f"--ckpt={copy}", "--prompt=x"), "'dim' = 'abc'")
    del meta["experiment"]["model"]
    meta_file.write_text(json.dumps(meta))
    assert_user_error(aura("chat", f"--ckpt={copy}", "--prompt=x"), "no 'model' config")


def test_inspect_reads_every_array_of_the_adapter(trained, tmp_path):
    w = trained[0]
    copy = tmp_path / "lm"
    shutil.copytree(w / "lm", copy)
    root = tmp_path / "zones"
    (root / "language").mkdir(parents=True)
    (root / "language" / "zone.json").write_text(json.dumps({"ckpt_out": str(copy)}))
    good = aura("inspect", f"--ckpt_root={root}", "--zone=language")
    assert good.returncode == 0 and "adapter" in good.stdout, good.stderr
    steps = [p for p in (copy / "ckpt").iterdir() if p.name.isdigit()]
    latest = max(steps, key=lambda p: int(p.name))  # inspect verifies the latest step
    data = max((latest / "state").rglob("*"), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0xFF  # same size, 16 bytes flipped (zeroing can leave zeros as they were)
    data.write_bytes(bytes(raw))
    bad = aura("inspect", f"--ckpt_root={root}", "--zone=language")
    assert bad.returncode == 2 and "changed since it was saved" in bad.stdout + bad.stderr


def test_two_runs_on_one_ckpt_out_the_second_is_refused(trained, tmp_path):
    w = trained[0]
    args = [
        "pretrain", f"--jsonl={w}/corpus/instruct.jsonl", f"--spm_model={w}/tok/spiece.model",
        f"--config={REPO}/configs/pretrain.py:tiny", "--steps=100000", "--save_every=5",
        "--log_every=5", f"--ckpt_out={tmp_path}/conc", "--notensorboard",
    ]  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "aura.build", *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while not (tmp_path / "conc" / "metrics.jsonl").exists():
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.2)
        second = aura(*args[:-2], "--seed=1", f"--ckpt_out={tmp_path}/conc", "--notensorboard")
        assert_user_error(second, "is in use by another run", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "interrupted: saved step" in out
    rows = [json.loads(r) for r in (tmp_path / "conc" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == sorted(set(steps))  # one writer: no interleaved rows
