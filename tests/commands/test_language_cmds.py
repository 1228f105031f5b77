"""Smoke tests of the language commands end to end: corpus -> tokenizer -> pretrain -> chat."""

from __future__ import annotations

import json

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
