"""Every command, a table of bad inputs: exit 2, one ``error:`` line, no traceback, nothing made.

One subprocess per command runs all of its cases through the real entry point
(``aura.build.run``), re-parsing the flags for each, and reports the exit code and stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from aura.data.corpus import build_corpus
from aura.data.tokenizer import TokenizerConfig, train_tokenizer
from tests.commands.conftest import DRIVER, REPO, assert_user_error, aura


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    build_corpus(d / "corpus", max_docs=120)
    train_tokenizer(d / "corpus" / "text", d / "tok", TokenizerConfig(vocab_size=400))
    (d / "a_file").write_text("not a directory\n")
    (d / "bad_qa.jsonl").write_text(
        '{"id": "1", "context": "A text.", "question": "Q?"}\n{not json\n'
    )
    (d / "bad.jsonl").write_text('{"text": "fine", "label": "a"}\n{"text": "cut", "label": \n')
    rng = np.random.default_rng(0)
    np.savez(d / "f32.npz", images=rng.random((10, 28, 28)).astype(np.float32),
             labels=np.zeros(10, np.int64))  # fmt: skip
    return d


def cases(d) -> dict[str, list[tuple[list[str], str]]]:
    jsonl, spm, f = f"--jsonl={d}/corpus/instruct.jsonl", f"--spm_model={d}/tok/spiece.model", d
    cx = [f"--workdir={f}/cx", "--config", f"{REPO}/configs/cortex.py:tiny"]
    lm = [jsonl, spm, f"--ckpt_out={d}/lm", "--config", f"{REPO}/configs/pretrain.py:tiny"]
    return {
        "mnist": [
            (["--epochs=0"], "epochs=0 must be >= 1"),
            (["--batch_size=-1"], "batch_size=-1 must be >= 1"),
            (["--expert_kind=foo"], "--expert_kind"),
            (["--top_k=9"], "top_k=9 must be in [1, num_experts=6]"),
            (["--data=/nope/d.npz"], "/nope/d.npz"),
            ([f"--data={f}/f32.npz"], "expected uint8"),
            (["--config=/nope/cfg.py"], "/nope/cfg.py"),
            ([f"--config={REPO}/configs/mnist.py:huge"], "unknown preset 'huge'"),
            (["--epochs=1", f"--workdir={f}/a_file"], "a_file"),
            (["stray"], "unexpected arguments ['stray']"),
            (["--nope=1"], "nope"),
        ],
        "continual": [
            (["--scenario=online"], "should be one of <class|task|domain>"),
            (["--epochs_per_task=0"], "epochs_per_task = 0 must be >= 1"),
            (["--data=/nope/d.npz"], "/nope/d.npz"),
        ],
        "pretrain": [
            ([*lm, "--steps=0"], "--steps=0 must be >= 1"),
            ([*lm, "--batch_size=0"], "--batch_size=0 must be >= 1"),
            ([*lm, "--accumulate_steps=0"], "--accumulate_steps=0 must be >= 1"),
            ([*lm, "--max_len=0"], "--max_len=0 must be >= 8"),
            ([*lm, "--lr=-1"], "--lr=-1.0 must be > 0"),
            ([*lm, "--dtype=f16"], "--dtype"),
            ([*lm[1:], "--jsonl=/nope/x.jsonl"], "/nope/x.jsonl"),
            ([*lm[:1], *lm[2:], "--spm_model=/nope/m.model"], "/nope/m.model"),
            ([*lm[:2], f"--ckpt_out={f}/a_file", *lm[3:]], "a_file"),
            ([*lm[:3], "--config", f"{REPO}/configs/pretrain.py:huge"], "unknown preset"),
        ],
        "chat": [
            (["--top_k=-5", "--prompt=x"], "--top_k=-5 must be >= 0"),
            (["--top_p=2", "--prompt=x"], "--top_p=2.0 must be in (0, 1]"),
            (["--top_p=0", "--prompt=x"], "--top_p=0.0 must be in (0, 1]"),
            (["--temperature=-1", "--prompt=x"], "--temperature=-1.0 must be >= 0"),
            (["--gen_len=0", "--prompt=x"], "--gen_len=0 must be >= 1"),
            ([f"--ckpt={f}/none", "--prompt=x"], "no checkpoint"),
            (["Explain json"], "unexpected arguments"),
            ([f"--memory_db={f}/m.db", "--json"], "--json prints one reply"),
        ],
        "memory_eval": [
            ([], "--dialogues FILE.jsonl is required"),
            (["--dialogues=/nope/d.jsonl"], "/nope/d.jsonl does not exist"),
            (["--dialogues=/nope/d.jsonl", "--policies=oracle"], "--policies 'oracle'"),
            (["--dialogues=/nope/d.jsonl", "--window=0"], "window=0 must be >= 1"),
            (["--dialogues=/nope/d.jsonl", "--on_bad_record=explode"], "--on_bad_record"),
        ],
        "tokenizer": [
            ([f"--input_dir={f}/corpus/text", f"--out_dir={f}/a_file"], "a_file"),
            (["--input_dir=/nope", f"--out_dir={f}/tok2"], "/nope"),
        ],
        "corpus": [([f"--out_dir={f}/a_file", "--max_docs=5"], "a_file")],
        "inspect": [
            ([f"--ckpt_root={f}/none"], "does not exist"),
            ([f"--ckpt_root={f}", "--zone=cortex"], "unknown zone 'cortex'"),
        ],
        "pretrain_zones": [
            ([f"--ckpt_root={f}/z", "--zones=cortex"], "unknown zone 'cortex'"),
            (
                [
                    f"--ckpt_root={f}/z",
                    "--zones=language",
                    spm,
                    f"--json_dir={f}/corpus",
                    "--steps=0",
                ],
                "--steps=0 must be >= 1",
            ),  # fmt: skip
            ([f"--ckpt_root={f}/z", "--joint_epochs=-1"], "--joint_epochs=-1 must be >= 0"),
        ],
        "demo": [(["stray"], "unexpected arguments")],
        "cortex": [  # --config.<field> values: tests/experiments/cortex/test_config.py
            ([*cx, "--top_k=99"], "config.reasoner.top_k=99"),
            ([*cx, "--beta=0"], "config.memory.beta=0"),
            ([*cx, "--qa_jsonl=/nope/qa.jsonl"], "/nope/qa.jsonl"),
            ([*cx, "--phase=2"], "--phase 2 needs phase 1's checkpoint"),
            ([*cx, "--reasoning=sparse"], "reasoning"),
            (
                [*cx, f"--qa_jsonl={f}/bad_qa.jsonl", "--on_bad_record=fail"],
                f"{f}/bad_qa.jsonl:1",
            ),
        ],
        "moca": [
            (["--steps=0"], "steps=0 must be >= 1"),
            (["--task=textcls", f"--data={f}/bad.jsonl", f"--workdir={f}/m"], f"{f}/bad.jsonl:2"),
            (["--task=textcls", f"--data={f}/gone.jsonl", f"--workdir={f}/m"], "gone.jsonl"),
            (["--task=sort"], "--task"),
            (["--top_k=9"], "top_k = 9"),
        ],
        "classify": [
            ([], "--ckpt is required"),
            ([f"--ckpt={f}/none", "--text=x"], "none"),
            ([f"--ckpt={f}", "--text=x"], "classifier.json"),
            ([f"--ckpt={f}", "--text= "], "--text is empty"),
        ],
    }


@pytest.mark.parametrize("cmd", ["mnist", "continual", "pretrain", "chat", "tokenizer", "corpus",
                                 "inspect", "pretrain_zones", "demo", "memory_eval",
                                 "cortex", "moca", "classify"])  # fmt: skip
def test_bad_input_is_one_error_line_and_exit_2(files, cmd):
    table = cases(files)[cmd]
    before = sorted(p.name for p in files.iterdir())
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, cmd, json.dumps([a for a, _ in table])],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (args, needle), res in zip(table, results, strict=True):
        lines = [line for line in res["stderr"].splitlines() if line.strip()]
        assert res["code"] == 2, (args, res)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res["stderr"])
        assert needle in lines[0], (args, needle, lines[0])
    assert sorted(p.name for p in files.iterdir()) == before  # nothing created


def test_pretrain_input_settings_are_config_fields(files):
    """``--config.shuffle_window``/``--config.prefetch`` reach the run (a bad value is refused
    by name). In a real process: ml_collections reads ``--config.*`` overrides from sys.argv."""
    d = files
    lm = [f"--jsonl={d}/corpus/instruct.jsonl", f"--spm_model={d}/tok/spiece.model",
          f"--ckpt_out={d}/lm", "--config", f"{REPO}/configs/pretrain.py:tiny"]  # fmt: skip
    assert_user_error(aura("pretrain", *lm, "--config.shuffle_window=0"), "--shuffle_window=0")
    assert_user_error(aura("pretrain", *lm, "--config.prefetch=-1"), "--prefetch=-1 must be")
    assert not (d / "lm").exists()
