"""``chat --memory_db`` end to end: facts persist across processes, --json, stdin commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aura.memory.store import EpisodicStore
from tests.commands.conftest import REPO, assert_user_error, aura
from tests.memory.tiny_encoder import make_tiny_encoder

FACT = "The spare key is under the blue pot."


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny pretrained adapter and a tiny sentence encoder (fast, no MiniLM needed)."""
    w = tmp_path_factory.mktemp("memchat")
    steps = [
        ("corpus", f"--out_dir={w}/corpus", "--max_docs=60"),
        ("tokenizer", f"--input_dir={w}/corpus/text", f"--out_dir={w}/tok", "--vocab_size=400"),
        ("pretrain", f"--jsonl={w}/corpus/instruct.jsonl", f"--spm_model={w}/tok/spiece.model",
         f"--config={REPO}/configs/pretrain.py:tiny", "--steps=2", f"--ckpt_out={w}/lm",
         "--notensorboard"),
    ]  # fmt: skip
    for args in steps:
        proc = aura(*args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return w, make_tiny_encoder(w / "enc")


def chat(lm, db, *args, **kw):
    w, enc = lm
    return aura("chat", f"--ckpt={w}/lm", f"--memory_db={db}", f"--encoder={enc}",
                "--gen_len=3", *args, **kw)  # fmt: skip


@pytest.mark.slow  # three chat processes: ~30 s on the shared 2 cores
def test_a_fact_told_in_one_process_is_recalled_by_the_next(lm, tmp_path):
    db = tmp_path / "mem.db"
    told = chat(lm, db, f"--prompt={FACT}", "--session=alice")
    assert told.returncode == 0, told.stderr[-2000:]
    asked = chat(lm, db, "--prompt=Where is the spare key?", "--json", "--session=alice")
    assert asked.returncode == 0, asked.stderr[-2000:]
    (line,) = asked.stdout.strip().splitlines()  # exactly one JSON object on stdout
    out = json.loads(line)
    assert set(out) == {"reply", "memories"} and isinstance(out["reply"], str)
    assert all(set(m) == {"id", "text", "score", "components"} for m in out["memories"])
    assert out["memories"][0]["text"] == FACT  # the fact told earlier, recalled first
    assert {"dense", "lexical", "recency", "importance", "entity"} <= set(
        out["memories"][0]["components"]
    )
    # the question and its reply were stored too: a third process recalls them
    again = chat(lm, db, "--prompt=spare key", "--json")
    texts = [m["text"] for m in json.loads(again.stdout)["memories"]]
    assert FACT in texts and "Where is the spare key?" in texts


@pytest.mark.slow  # two chat processes
def test_interactive_commands_remember_memories_forget(lm, tmp_path):
    db = tmp_path / "mem.db"
    script = "/remember my cat is called Tofu\nwhat is my cat called?\n/memories\n/forget 1\n"
    script += "/forget x\n/nonsense\n"
    proc = chat(lm, db, input=script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "remembered #1" in out and "forgot #1" in out
    assert "recalled for 'what is my cat called?'" in out
    assert "#1 score" in out and "my cat is called Tofu" in out and "dense " in out
    assert "usage: /forget ID" in out and "commands: /memories" in out
    after = chat(lm, db, "--prompt=what is my cat called?", "--json")
    assert all(m["id"] != 1 for m in json.loads(after.stdout)["memories"])  # forgotten


@pytest.mark.slow  # two chat processes at once
def test_two_processes_on_one_file_both_write(lm, tmp_path):
    db = tmp_path / "mem.db"
    w, enc = lm
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aura.build",
                "chat",
                f"--ckpt={w}/lm",
                f"--memory_db={db}",
                f"--encoder={enc}",
                "--gen_len=2",
                f"--prompt=fact number {i}",
                "--json",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        json.loads(out)
    check = chat(lm, db, "--prompt=fact number", "--json", "--memory_k=10")
    texts = {m["text"] for m in json.loads(check.stdout)["memories"]}
    assert {"fact number 0", "fact number 1"} <= texts


@pytest.mark.slow  # needs the module's tiny pretrained LM (about a minute to make)
def test_a_file_of_another_encoder_is_refused_naming_both(lm, tmp_path):
    db = tmp_path / "mem.db"
    other = make_tiny_encoder(tmp_path / "other-enc", dim=16)
    EpisodicStore(db, encoder_name="tinyenc-a", dim=32).close()
    proc = chat(lm, db, "--prompt=hi", f"--encoder={other}")
    assert_user_error(proc, "tinyenc-a", "other-enc", "--encoder")


def test_json_needs_a_prompt(tmp_path):
    proc = aura("chat", f"--ckpt={tmp_path}/none", f"--memory_db={tmp_path}/m.db", "--json")
    assert_user_error(proc, "--json")
    assert not (tmp_path / "m.db").exists()


@pytest.mark.slow  # needs the module's tiny pretrained LM
def test_a_bad_db_is_a_user_error(lm, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all " * 100)
    assert_user_error(chat(lm, junk, "--prompt=hi"), "not a usable AURA memory database")
