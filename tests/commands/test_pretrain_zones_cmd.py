"""Smoke test of ``python -m aura.build pretrain_zones`` (the language zone and a head), and of
``inspect`` over what it wrote."""

from __future__ import annotations

import json

from aura.data.corpus import build_corpus
from aura.data.tokenizer import TokenizerConfig, train_tokenizer
from tests.commands.conftest import REPO, aura


def test_language_and_amygdala_zones_then_inspect(tmp_path):
    build_corpus(tmp_path / "corpus", max_docs=120)
    train_tokenizer(tmp_path / "corpus" / "text", tmp_path / "tok", TokenizerConfig(vocab_size=400))
    root = tmp_path / "zones"
    proc = aura(
        "pretrain_zones", "--zones=language,amygdala", f"--config={REPO}/configs/zones.py:tiny",
        f"--txt_dir={tmp_path}/corpus/text", f"--json_dir={tmp_path}/corpus",
        f"--spm_model={tmp_path}/tok/spiece.model", f"--ckpt_root={root}",
        f"--ckpt_out={tmp_path}/lm", "--steps=2", "--max_docs=16", "--notensorboard",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["zones"] == ["language", "amygdala"] and not result["interrupted"]
    assert (root / "amygdala" / "bias_head" / "manifest.json").is_file()
    assert (root / "language" / "expert_0" / "manifest.json").is_file()
    table = aura("inspect", f"--ckpt_root={root}", "--json")
    assert table.returncode == 0, table.stderr
    entries = json.loads(table.stdout)["entries"]
    assert {e["status"] for e in entries} == {"ok"} and any(e["name"] == "adapter" for e in entries)
