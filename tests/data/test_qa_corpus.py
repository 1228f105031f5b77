"""The QA set made from docstrings: typed questions whose answers are spans of the context."""

from __future__ import annotations

import numpy as np
import pytest

from aura.data.corpus import Doc
from aura.data.errors import DataError
from aura.data.qa import read_qa_jsonl
from aura.data.qa_corpus import build_qa_records, doc_questions, write_qa_jsonl

JOIN = Doc(
    "os.path.join", "function", "os.path.join(a, *p, sep=None)",
    "Join two or more pathname components, inserting '/' as needed.\n\n"
    "If any component is an absolute path, all previous path components will be discarded. "
    "The sep argument overrides the separator. Returns the joined path. "
    "Raises TypeError for bytes mixed with str. By default the separator is '/'.",
)  # fmt: skip


def test_every_question_type_of_a_rich_docstring():
    context, qs = doc_questions(JOIN, np.random.default_rng(0))
    kinds = [k for k, _, _ in qs]
    assert kinds == ["summary", "signature", "location", "returns", "raises", "default",
                     "parameter"]  # fmt: skip
    by_kind = {k: (q, a) for k, q, a in qs}
    assert context.startswith("os.path.join(a, *p, sep=None)\n\nJoin two or more")
    assert by_kind["summary"][1] == "Join two or more pathname components, inserting '/' as needed."
    assert by_kind["signature"][1] == "a, *p, sep=None"
    assert by_kind["location"][1] == "os.path"
    assert by_kind["returns"][1] == "Returns the joined path."
    assert by_kind["raises"][1] == "Raises TypeError for bytes mixed with str."
    assert by_kind["parameter"][1] == "The sep argument overrides the separator."
    assert all(a in context for _, _, a in qs)
    assert all(len(q) == 3 and "path.join" in q[0] for _, q, _ in qs)  # three phrasings each


def test_records_are_valid_qa_lines_and_deterministic(tmp_path):
    poor = Doc("m.f", "function", "m.f()", "Do it.")  # too short: no questions
    docs = [
        JOIN,
        poor,
        Doc(
            "pkg.Klass",
            "class",
            "",
            "A klass that holds things.\n\nIt "
            "returns a default value when asked; see also the raise rules.",
        ),
    ]
    recs = build_qa_records(2, records_per_context=4, phrasings=2, docs=docs, seed=1)
    assert recs == build_qa_records(2, records_per_context=4, phrasings=2, docs=docs, seed=1)
    assert len(recs) == 8 and len({r["context"] for r in recs}) == 2
    path = tmp_path / "qa.jsonl"
    write_qa_jsonl(path, recs)
    parsed, problems = read_qa_jsonl(path)
    assert not problems and len(parsed) == 8
    assert {r.type for r in parsed} <= {"summary", "signature", "location", "returns", "raises",
                                       "default", "parameter"}  # fmt: skip
    with pytest.raises(DataError, match=r"2 documents with >= 3 question types, 3 were asked"):
        build_qa_records(3, docs=docs)
