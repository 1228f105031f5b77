"""``python -m aura.build cortex`` as a user runs it: one JSON line, rerun restores, bad input
-> exit 2."""

from __future__ import annotations

import json

import pytest

from tests.commands.conftest import aura
from tests.experiments.cortex.fixtures import tiny_encoder_dir, write_qa

TINY = ("--config=configs/cortex.py:tiny", "--notensorboard")


@pytest.mark.slow  # ~1-2 min: two subprocesses, each compiling a tiny BERT and three steps
def test_cortex_command_end_to_end_and_rerun_restores(tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl", contexts=15, per=3)
    enc = tiny_encoder_dir(tmp_path)
    out = tmp_path / "m.json"
    args = (*TINY, f"--qa_jsonl={qa}", f"--encoder={enc}", f"--workdir={tmp_path / 'w'}",
            f"--metrics_out={out}", "--phase1_steps=4", "--phase2_steps=4")  # fmt: skip
    proc = aura("cortex", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line == json.loads(out.read_text())
    assert line["contexts"] == 15 and line["questions"] == 45 and not line["interrupted"]
    assert set(line["phase1"]) >= {"recall@1", "cos", "nn_recall@1", "beta_sweep"}
    assert set(line["phase2"]) >= {"moe", "dense", "baselines", "specialisation_mi",
                                   "specialisation_p"}  # fmt: skip
    assert (tmp_path / "w" / "gate_pca.png").is_file()
    again = aura("cortex", *args)  # finished phases are restored, embeddings come from the cache
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["embeddings_cached"]
    assert second["phase2"]["moe"] == {
        **line["phase2"]["moe"],
        "train_wall_s": second["phase2"]["moe"]["train_wall_s"],
    }


# Bad input: the cortex rows of tests/commands/test_bad_input.py (one subprocess for all).
