"""QA records: the reader's file:line problems, answer windows, tfds:squad, split by context."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.data.qa import (
    answer_span,
    default_qa_path,
    load_qa,
    read_qa_jsonl,
    split_by_context,
    wh_type,
)
from tests.data.test_tfds_adapter import FakeTfds, install

CTX = "The quick brown fox jumps over the lazy dog. " * 3 + "It returns nothing at all."


def _write(tmp_path, lines) -> str:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def _rec(i, context=CTX, answer="lazy dog", **kw):
    return {"id": f"q{i}", "context": context, "question": f"What is {i}?", "answer": answer, **kw}


def test_window_is_the_answer_with_60_characters_each_side(tmp_path):
    ctx = "a" * 100 + "ANSWER" + "b" * 100
    path = _write(tmp_path, [{"id": 1, "context": ctx, "question": "What?", "answer": "ANSWER"}])
    recs, problems = read_qa_jsonl(path)
    assert not problems and len(recs) == 1
    r = recs[0]
    assert (r.id, r.start, r.end) == ("1", 100, 106)
    assert r.window == "a" * 60 + "ANSWER" + "b" * 60
    assert r.type == "what"  # no type given: the wh-word


def test_bad_lines_are_reported_with_file_and_line_and_skipped(tmp_path):
    lines = [
        _rec(1, type="summary"),
        "{not json",
        {"id": "q3", "context": CTX, "question": "Why?"},  # no answer
        _rec(4, answer="a purple elephant"),  # does not overlap its context
        _rec(1),  # duplicate id
        "",
        _rec(6, context="   "),  # empty context
        _rec(7, type=3),
        _rec(8, answer="RETURNS NOTHING"),  # case-insensitive span
    ]
    path = _write(tmp_path, lines)
    recs, problems = read_qa_jsonl(path)
    assert [r.id for r in recs] == ["q1", "q8"]
    assert recs[0].type == "summary" and recs[0].where == f"{path}:1"
    assert recs[1].context[recs[1].start : recs[1].end] == "returns nothing"
    assert len(problems) == 6, problems
    for line, needle in [(2, "not valid JSON"), (3, "missing field(s) ['answer']"),
                         (4, "does not overlap its context"), (5, "duplicate id 'q1' (first at"),
                         (7, '"context" must be a non-empty string'),
                         (8, '"type" must be a string')]:  # fmt: skip
        assert any(p.startswith(f"{path}:{line}: ") and needle in p for p in problems), line
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON.*--on_bad_record skip"):
        read_qa_jsonl(path, on_bad_record="fail")


def test_no_overlap_anywhere_and_missing_file_are_clear_errors(tmp_path):
    path = _write(tmp_path, [_rec(i, answer="zebra crossing") for i in range(3)])
    with pytest.raises(
        DataError, match=r"no valid QA record \(3 bad\); no answer overlaps its con"
    ):
        read_qa_jsonl(path)
    with pytest.raises(DataError, match=r"QA file .*nope.jsonl does not exist"):
        read_qa_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="on_bad_record='ignore' must be 'skip' or 'fail'"):
        read_qa_jsonl(path, on_bad_record="ignore")


def test_answer_span_exact_case_and_near_spans():
    assert answer_span("Hello World", "World") == (6, 11)
    assert answer_span("Hello World", "world") == (6, 11)
    assert answer_span("the default is 42 bytes", "default is 42 byte.") == (4, 22)  # nearly
    assert answer_span("abcdef", "xyz") is None and answer_span("abc", "  ") is None


def test_wh_types():
    assert wh_type("Who wrote it?") == "who" and wh_type("In which year?") == "which"
    assert wh_type("Whose book is it?") == "who" and wh_type("Name the author.") == "other"


def test_split_by_context_is_disjoint_deterministic_and_covers_all(tmp_path):
    recs = []
    for c in range(20):
        ctx = f"Context number {c} says the value is {c * 7}."
        recs += [r for r in read_qa_jsonl(_write(tmp_path, [
            {"id": f"{c}-{j}", "context": ctx, "question": "What value?", "answer": str(c * 7)}
            for j in range(3)]))[0]]  # fmt: skip
    contexts, parts = split_by_context(recs, (0.7, 0.1, 0.2), seed=3)
    assert len(contexts) == 20 and [len(p) for p in parts] == [14, 2, 4]
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))
    again = split_by_context(recs, (0.7, 0.1, 0.2), seed=3)[1]
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    with pytest.raises(DataError, match=r"2 distinct context\(s\) cannot be split 3 ways"):
        split_by_context(recs[:6], (0.7, 0.1, 0.2), seed=0)
    with pytest.raises(ValueError, match="must be positive and sum to 1"):
        split_by_context(recs, (0.7, 0.2, 0.2), seed=0)


def test_embedded_default_is_valid_and_typed():
    recs, problems, label = load_qa(None)
    assert label == "default" and not problems and len(recs) > 500
    assert {r.type for r in recs} >= {"summary", "signature", "location", "returns"}
    assert all(r.answer.lower() in r.context.lower() for r in recs)
    assert recs[0].where.startswith(default_qa_path())


def test_tfds_squad_through_the_adapter(monkeypatch):
    ctx = [b"Paris is the capital of France.", b"Water boils at 100 degrees."]
    feats = {
        "id": np.array([b"a", b"b", b"c"]),
        "context": np.array([ctx[0], ctx[1], ctx[1]]),
        "question": np.array([b"What is the capital?", b"When does water boil?", b"Who?"]),
        # several answers padded with b"" (batch_size=-1); the first non-empty one is used
        "answers": {
            "text": np.array([[b"Paris", b"Paris"], [b"", b"100 degrees"], [b"nobody", b""]])
        },  # fmt: skip
        "title": np.array([b"x", b"y", b"z"]),
    }
    fake = FakeTfds(features=feats)
    install(monkeypatch, fake)
    recs, problems, label = load_qa("tfds:squad:validation")
    assert fake.calls[0][0] == "squad" and fake.calls[0][1]["split"] == "validation"
    assert label == "tfds:squad:validation"
    assert [(r.id, r.answer, r.type) for r in recs] == [
        ("a", "Paris", "what"),
        ("b", "100 degrees", "when"),
    ]
    assert problems == ["tfds:squad:validation[2]: the answer 'nobody' does not overlap its "
                        "context (it must be a span of it)"]  # fmt: skip
