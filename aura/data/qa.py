"""Question-answering records (SQuAD-like JSONL, ``tfds:squad``, the embedded default) for Cortex.

One JSON object per line::

    {"id": "q1", "context": "...", "question": "...", "answer": "...", "type": "returns"}

``type`` is optional (used only for analysis, never for training); without it a record's type is
its question's wh-word (``what``, ``which``, ``how``, ..., else ``other``). The answer is located
in its context (exactly, then ignoring case, then as the longest block the two share when that
covers at least half the answer and 4 characters); the "answer window" is the located span with
up to ``radius`` (60) characters of context on each side. A line that is not JSON, lacks a field,
repeats an id or has an answer that does not overlap its context is reported as ``file:line:
reason`` and skipped (``on_bad_record="skip"``, the problems are returned) or stops the read
(``"fail"``, a :class:`DataError`).

Unique contexts are the memories: :func:`split_by_context` splits the records into train / dev /
test so that no context appears in two splits.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from aura.data.errors import DataError
from aura.data.tfds_adapter import load_tfds

__all__ = [
    "QARecord",
    "answer_span",
    "default_qa_path",
    "load_qa",
    "read_qa_jsonl",
    "records_from_squad",
    "split_by_context",
    "wh_type",
]

WINDOW_RADIUS = 60
_WH = ("what", "which", "who", "whom", "whose", "when", "where", "why", "how")
_FIELDS = ("id", "context", "question", "answer")


@dataclasses.dataclass(frozen=True)
class QARecord:
    """One question about one context.

    Attributes:
      id: the record's id.
      context, question, answer: the texts.
      type: the question type (given, or the wh-word).
      start, end: the located answer span in ``context``.
      window: the answer window (the span with up to 60 characters either side).
      where: ``file:line`` (or ``tfds:squad:split[i]``) of the record.
    """

    id: str
    context: str
    question: str
    answer: str
    type: str
    start: int
    end: int
    window: str
    where: str


def default_qa_path() -> str:
    """The embedded default QA set (built from the standard library's docstrings)."""
    return str(importlib.resources.files("aura.data") / "assets" / "cortex_qa.jsonl")


def wh_type(question: str) -> str:
    """The first wh-word of ``question`` (``whom``/``whose`` count as ``who``), else ``other``."""
    for word in re.findall(r"[a-z]+", question.lower())[:6]:
        if word in _WH:
            return "who" if word in ("whom", "whose") else word
    return "other"


def answer_span(context: str, answer: str) -> tuple[int, int] | None:
    """Where ``answer`` sits in ``context``: ``(start, end)`` or None when they do not overlap.

    Exact match first, then case-insensitive, then the longest common block when it is at least
    half the (stripped) answer and at least 4 characters (answers that are nearly a span).
    """
    answer = answer.strip()
    if not answer:
        return None
    i = context.find(answer)
    if i < 0:
        i = context.lower().find(answer.lower())
    if i >= 0:
        return i, i + len(answer)
    m = difflib.SequenceMatcher(None, context, answer, autojunk=False)
    block = m.find_longest_match(0, len(context), 0, len(answer))
    if block.size >= max(4, (len(answer) + 1) // 2):
        return block.a, block.a + block.size
    return None


def _text(obj: dict, key: str) -> str:
    value = obj.get(key)
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'"{key}" must be a non-empty string, got {json.dumps(value)[:60]}')
    return value


def make_record(obj, where: str, radius: int = WINDOW_RADIUS) -> QARecord:
    """Validates one parsed JSON object; raises ValueError naming what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")
    missing = [k for k in _FIELDS if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {missing}; a record needs {list(_FIELDS)}")
    rid, context, question, answer = (_text(obj, k) for k in _FIELDS)
    qtype = obj.get("type")
    if qtype is not None and not isinstance(qtype, str):
        raise ValueError(f'"type" must be a string, got {json.dumps(qtype)[:40]}')
    span = answer_span(context, answer)
    if span is None:
        raise ValueError(
            f"the answer {answer[:40]!r} does not overlap its context (it must be a span of it)"
        )
    start, end = span
    window = context[max(0, start - radius) : end + radius]
    return QARecord(rid, context, question, answer, qtype or wh_type(question), start, end,
                    window, where)  # fmt: skip


def _check_policy(on_bad_record: str) -> None:
    if on_bad_record not in ("skip", "fail"):
        raise ValueError(f"on_bad_record={on_bad_record!r} must be 'skip' or 'fail'")


def _collect(items: Iterable[tuple[str, object]], on_bad_record: str, radius: int, name: str):
    """(records, problems) from ``(where, parsed object or exception)`` pairs."""
    records: list[QARecord] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for where, obj in items:
        try:
            if isinstance(obj, Exception):
                raise ValueError(f"not valid JSON ({obj})")
            rec = make_record(obj, where, radius)
            if rec.id in seen:
                raise ValueError(f"duplicate id {rec.id!r} (first at {seen[rec.id]})")
        except ValueError as e:
            msg = f"{where}: {e}"
            if on_bad_record == "fail":
                raise DataError(f"{msg} (pass --on_bad_record skip to skip bad records)") from e
            problems.append(msg)
            continue
        seen[rec.id] = where
        records.append(rec)
    if not records:
        overlap = problems and all("does not overlap" in p for p in problems)
        hint = (" no answer overlaps its context: each answer must be a span of its context"
                if overlap else f" first problem: {problems[0]}" if problems else "")  # fmt: skip
        raise DataError(f"{name} has no valid QA record ({len(problems)} bad);{hint}")
    return records, problems


def read_qa_jsonl(
    path: str | os.PathLike[str], *, on_bad_record: str = "skip", radius: int = WINDOW_RADIUS
) -> tuple[list[QARecord], list[str]]:
    """Reads a QA JSONL file.

    Returns:
      ``(records, problems)``: the good records and one ``file:line: reason`` per skipped line.

    Raises:
      DataError: a missing file, no valid record, or (``"fail"``) the first bad line.
      ValueError: a bad ``on_bad_record``.
    """
    _check_policy(on_bad_record)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"QA file {path} does not exist (expected JSONL records {list(_FIELDS)})")

    def items():
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{lineno}", e

    return _collect(items(), on_bad_record, radius, path)


def _decode(x) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def records_from_squad(
    features: dict[str, np.ndarray], where: str, *, on_bad_record: str = "skip"
) -> tuple[list[QARecord], list[str]]:
    """QA records from TFDS SQuAD features (``id``, ``context``, ``question``, ``answers/text``:
    one answer per row, or several padded with empty strings; the first non-empty one is used)."""
    _check_policy(on_bad_record)
    answers = features["answers/text"]

    def items():
        for i in range(len(features["id"])):
            row = answers[i]
            texts = [row] if isinstance(row, bytes | str) else list(np.ravel(row))
            answer = next((_decode(t) for t in texts if _decode(t).strip()), "")
            obj = {k: _decode(features[k][i]) for k in ("id", "context", "question")}
            yield f"{where}[{i}]", {**obj, "answer": answer}

    return _collect(items(), on_bad_record, WINDOW_RADIUS, where)


def load_qa(
    source: str | None, *, on_bad_record: str = "skip", _tfds_module=None
) -> tuple[list[QARecord], list[str], str]:
    """Records from a JSONL file, ``tfds:squad[:split]`` or (None) the embedded default.

    Returns:
      ``(records, problems, label)``; ``label`` names the source.
    """
    if source is None or source == "default":
        path = default_qa_path()
        return (*read_qa_jsonl(path, on_bad_record=on_bad_record), "default")
    if source.startswith("tfds:"):
        name, _, split = source[len("tfds:") :].partition(":")
        split = split or "train"
        feats = load_tfds(name, split, ("id", "context", "question", "answers/text"),
                          _tfds_module=_tfds_module)  # fmt: skip
        return (*records_from_squad(feats, source, on_bad_record=on_bad_record), source)
    return (*read_qa_jsonl(source, on_bad_record=on_bad_record), source)


def split_by_context(
    records: Sequence[QARecord], fractions: Sequence[float], seed: int
) -> tuple[list[str], list[np.ndarray]]:
    """Unique contexts (in order of first appearance) and, per split, the context indices.

    The contexts are shuffled with ``seed`` and cut by ``fractions`` (e.g. train, dev, test);
    every split gets at least one context.

    Raises:
      DataError: fewer contexts than splits.
      ValueError: fractions that are not positive or do not sum to 1.
    """
    if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {list(fractions)} must be positive and sum to 1")
    contexts = list(dict.fromkeys(r.context for r in records))
    n, k = len(contexts), len(fractions)
    if n < k:
        raise DataError(
            f"{n} distinct context(s) cannot be split {k} ways by context; "
            f"the QA data needs at least {k} (more for useful numbers)"
        )
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.rint(np.cumsum(fractions)[:-1] * n).astype(int)
    cuts = np.clip(cuts, np.arange(1, k), n - np.arange(k - 1, 0, -1))  # >= 1 per split
    return contexts, [np.sort(part) for part in np.split(order, cuts)]
