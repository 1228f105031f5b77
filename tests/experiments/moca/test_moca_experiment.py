"""MOCA experiment wiring without training: presets, task sizes, validation, ablation variants,
and the interactive ``classify`` loop (with a stand-in classifier)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from aura.commands.classify import interactive
from aura.configs import moca as presets
from aura.experiments.moca import copy_task
from aura.experiments.moca.experiment import RunConfig, task_model
from aura.experiments.moca.plots import plot_run
from tests.commands.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import ablate_moca  # noqa: E402


def test_presets_keep_the_original_sizes_and_reject_unknown_names():
    c = presets.get_config()
    m = c.model
    assert (m.dim, m.num_experts, m.top_k, m.num_slots, m.temperature) == (128, 4, 2, 64, 1.0)
    assert (c.batch_size, c.lr, c.warmup, c.clip) == (64, 1e-3, 200, 1.0)
    assert m.slot_top_k == m.num_slots // 4
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get_config("huge")
    t = presets.get_config("textcls")  # the text preset: MOCA sizes, a fixed MiniLM table
    assert (t.model.dim, t.model.num_experts, t.model.num_slots) == (m.dim, 4, 64)
    assert t.text.embeddings == "minilm" and t.model.freeze_embed and t.loss.label_smoothing > 0
    assert c.text.embeddings == "" and not c.model.freeze_embed  # the default is unchanged


def test_task_model_fills_in_the_task_sizes():
    c = presets.get_config("tiny")
    copy = task_model(c, "copy")
    assert copy.vocab_size == copy_task.CopySpec(num_symbols=16).vocab_size
    assert copy.num_classes == 0 and copy.separator_ids == (copy_task.DELIM,)
    text = task_model(c, "textcls", vocab_size=300, num_labels=3)
    assert (text.vocab_size, text.num_classes, text.separator_ids) == (300, 3, ())
    c.model.top_k = 9
    with pytest.raises(ValueError, match="top_k"):
        task_model(c, "copy")


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [("steps", 0, "steps=0"), ("batch_size", -1, "batch_size=-1"), ("lr", 0.0, "lr=0.0"),
     ("eval_every", 0, "eval_every=0")],
)  # fmt: skip
def test_run_config_names_a_bad_value(tmp_path, field, value, needle):
    c = presets.get_config("tiny")
    c[field] = value
    with pytest.raises(ValueError, match=needle):
        RunConfig("copy", str(tmp_path), c).validate()
    with pytest.raises(ValueError, match="--task"):
        RunConfig("sort", str(tmp_path), presets.get_config("tiny")).validate()


def test_ablation_variants_change_only_their_part():
    base = presets.get_config()
    assert ablate_moca.variant_config(base, "no_memory").model.use_memory is False
    one = ablate_moca.variant_config(base, "one_expert").model
    assert (one.num_experts, one.top_k) == (1, 1)
    assert ablate_moca.variant_config(base, "dense").model.top_k == base.model.num_experts
    half = ablate_moca.variant_config(base, "half").model
    assert (half.dim, half.num_slots) == (64, 32)
    b = ablate_moca.variant_config(base, "budget=2")
    assert b.loss.budget_weight == 2.0 and b.model.expert_min_ratio == 0.5
    assert base.model.use_memory is True and base.loss.budget_weight == 0.05  # untouched
    with pytest.raises(ValueError, match="unknown variant"):
        ablate_moca.variant_config(base, "bigger")


class _FakeClassifier:
    labels, step = ["a", "b"], 7

    def predict(self, texts):
        return [{"label": "a", "confidence": 0.9, "probs": {"a": 0.9, "b": 0.1}} for _ in texts]

    def stats(self):
        return {"experts": 4, "step": 7}


def test_interactive_session_help_stats_classify_quit():
    out = io.StringIO()
    interactive(_FakeClassifier(), io.StringIO("help\n\nstats\nhello there\nquit\nnever\n"), out)
    lines = out.getvalue().splitlines()
    assert "step 7" in lines[0] and any("stats" in x for x in lines[1:6])
    assert json.loads(lines[-2]) == {"experts": 4, "step": 7}
    assert json.loads(lines[-1])["label"] == "a"  # "never" after quit is not read


@pytest.mark.slow
def test_ablation_tool_prints_a_table_and_json(tmp_path):
    out = tmp_path / "ablate.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "ablate_moca.py"), "--config",
         f"{REPO}/configs/moca.py:tiny", "--steps=2", "--variants=full,no_memory",
         "--budget_weights=1", f"--json={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["variant"] for r in rows] == ["full", "no_memory", "budget=1"]
    assert "variant | tok@6" in proc.stdout
    assert len(json.loads(out.read_text())["rows"]) == 3


def test_plot_run_writes_a_png(tmp_path):
    hist = [
        {"step": s, "token_acc": {"20": a, "40": a / 2}, "seq_acc": {"20": a, "40": 0.0},
         "compute_used": 0.375, "expert_load": [0.25] * 4, "slot_load": [1 / 64] * 64}
        for s, a in ((100, 0.5), (200, 1.0))
    ]  # fmt: skip
    plot_run(hist, str(tmp_path / "moca.png"), 0.3)
    assert (tmp_path / "moca.png").read_bytes()[:4] == b"\x89PNG"
    plot_run([], str(tmp_path / "none.png"), 0.3)
    assert not (tmp_path / "none.png").exists()
