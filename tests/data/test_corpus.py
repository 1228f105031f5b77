"""Tests for aura.data.corpus: the stdlib walk (ast only), records, held-out split, outputs."""

from __future__ import annotations

import json
import os
import re
import textwrap

import pytest

from aura.data.corpus import Doc, build_corpus, instruct_records, iter_stdlib_docs
from aura.data.errors import DataError
from aura.data.instruct import read_instruct
from aura.data.text import iter_lines, iter_paragraphs


def _read(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


FAKE_MODULE = textwrap.dedent(
    '''
    """A fake module that would exit if it were imported."""
    raise SystemExit("imported!")


    def public(path, *parts, sep="/"):
        """Join path components. The separator is configurable.

        Second paragraph with details.
        """


    def _private(x):
        """A private helper that is skipped."""


    class Thing:
        """A thing with methods and enough words."""

        def method(self, value):
            """Set the value of this thing to value."""

        def _hidden(self):
            """A hidden method that is skipped."""
    '''
)


def _fake_stdlib(root):
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text('"""The package docstring, long enough."""\n')
    (root / "mod.py").write_text(FAKE_MODULE)
    (root / "_private.py").write_text('"""A private module that is skipped entirely."""\n')
    (root / "broken.py").write_text('"""Docstring of a file that does not parse."""\ndef (:\n')
    for skipped in ("test", "idlelib", "site-packages"):
        (root / skipped).mkdir()
        (root / skipped / "x.py").write_text('"""Skipped directory module docstring."""\n')
    return str(root)


def test_walk_parses_without_importing_and_skips(tmp_path):
    docs = list(iter_stdlib_docs(_fake_stdlib(tmp_path)))
    assert [(d.name, d.kind) for d in docs] == [
        ("mod", "module"),
        ("mod.public", "function"),
        ("mod.Thing", "class"),
        ("mod.Thing.method", "function"),
        ("pkg", "module"),
    ]
    assert docs[1].signature == "mod.public(path, *parts, sep='/')"
    assert docs[3].signature == "mod.Thing.method(value)"  # self dropped
    assert docs[1].text.endswith("Second paragraph with details.")


def test_instruct_records_from_a_doc():
    doc = Doc(
        "mod.public",
        "function",
        "mod.public(path, *parts)",
        "Join path components. The separator is\nconfigurable.\n\nSecond paragraph.",
    )
    records = instruct_records(doc)
    assert records == [
        {
            "instruction": "Explain mod.public.",
            "input": "mod.public(path, *parts)",
            "output": "Join path components. The separator is configurable.",
        },
        {
            "instruction": "Summarize mod.public in one sentence.",
            "input": "",
            "output": "Join path components.",
        },
        {
            "instruction": "Give the signature of mod.public.",
            "input": "",
            "output": "mod.public(path, *parts)",
        },
    ]
    assert instruct_records(Doc("m", "module", "", "Short.")) == []
    topic = Doc("assert", "topic", "", 'The "assert" statement\n*****\n\nAssert statements check.')
    assert instruct_records(topic)[0]["output"] == "Assert statements check."


def test_build_small_corpus(tmp_path):
    result = build_corpus(tmp_path / "c", max_docs=200)
    assert result.docs == 200 and result.heldout_docs == 4 and result.train_docs == 196
    assert len(result.shards) == 4 and all(os.path.getsize(s) > 0 for s in result.shards)
    paragraphs = list(iter_paragraphs(result.text_dir))
    assert len(paragraphs) >= result.train_docs * 2  # a header and at least one paragraph each
    assert sum(len(x) for x in iter_lines(result.text_dir)) > 20_000
    records = read_instruct(result.instruct, on_bad_record="fail")
    assert len(records) == result.records > 200
    assert all(r.instruction and r.output for r in records)
    modules = []  # in order of first appearance: the sorted walk's order unless shuffled
    for r in records:
        m = re.search(r"(?:Explain|Summarize|of) (\w+)", r.instruction).group(1)
        if m not in modules:
            modules.append(m)
    assert len(modules) > 3 and modules != sorted(modules)
    held = read_instruct(result.heldout_instruct, on_bad_record="fail")
    assert {r.instruction for r in held}.isdisjoint({r.instruction for r in records})
    assert len(_read(result.heldout_text)) == result.heldout_chars
    assert result.text_chars == sum(len(_read(s)) for s in result.shards)
    manifest = json.loads(_read(result.manifest))
    assert manifest["records"] == result.records and manifest["max_docs"] == 200


def test_build_is_deterministic_and_replaces_stale_shards(tmp_path):
    a = build_corpus(tmp_path / "a", max_docs=60, num_shards=3)
    b = build_corpus(tmp_path / "b", max_docs=60, num_shards=3)
    for x, y in zip(
        [*a.shards, a.instruct, a.heldout_text],
        [*b.shards, b.instruct, b.heldout_text],
        strict=True,
    ):
        assert _read(x) == _read(y)
    again = build_corpus(tmp_path / "a", max_docs=60, num_shards=2)
    assert sorted(os.listdir(again.text_dir)) == ["shard_000.txt", "shard_001.txt"]


def test_build_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found 0 documented Python sources"):
        build_corpus(tmp_path / "c", stdlib_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="max_docs=1"):
        build_corpus(tmp_path / "c", max_docs=1)
    with pytest.raises(ValueError, match="heldout_fraction=0.9"):
        build_corpus(tmp_path / "c", heldout_fraction=0.9)
