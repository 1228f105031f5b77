"""A QA set made from the embedded corpus: contexts are standard-library docstrings, questions ask
about the documented object, answers are spans of the text.

Each documented function, class or module (``aura.data.corpus.iter_stdlib_docs``) becomes a
context: its header line (the qualified name, with the signature for functions) and the first
paragraphs of its docstring (whitespace collapsed, cut at a sentence end near ``max_chars``).
Questions are typed and every answer is a span of the context:

    summary     "What does path.join do?"                 -> the first sentence
    signature   "What arguments does path.join take?"     -> the arguments in the header
    location    "Which module defines path.join?"         -> the qualified prefix (os.path)
    returns     "What does path.join return?"             -> a later sentence about returning
    raises      "When does path.join raise an error?"     -> a sentence about raising/errors
    default     "What default does path.join use?"        -> a sentence about a default
    parameter   "What is the a argument of path.join?"    -> a later sentence naming the argument

Each type has three phrasings; ``phrasings`` of them (in a seeded order) are asked. Documents
are taken at an even stride over the sorted corpus walk (so they span the library), keeping
those with at least ``min_questions`` question types; ``records_per_context`` caps the
questions of one context.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator

import numpy as np

from aura.data.corpus import Doc, iter_stdlib_docs
from aura.data.errors import DataError

__all__ = ["QUESTION_TYPES", "build_qa_records", "doc_questions", "write_qa_jsonl"]

_SENT = re.compile(r"(?<=[a-z0-9)\]'\"`][.!?])\s+(?=[A-Z(\"'`])")
_TEMPLATES = {
    "summary": ("What does {s} do?", "What is {s} used for?", "Describe the purpose of {s}."),
    "signature": ("What arguments does {s} take?", "What are the parameters of {s}?",
                  "How is {s} called?"),
    "location": ("Which module defines {s}?", "Where is {s} defined?",
                 "In which namespace can {s} be found?"),
    "returns": ("What does {s} return?", "What is the return value of {s}?",
                "What result does {s} give back?"),
    "raises": ("When does {s} raise an error?", "What exceptions can {s} raise?",
               "Which errors should a caller of {s} expect?"),
    "default": ("What default does {s} use?", "What happens by default in {s}?",
                "What is the default behaviour of {s}?"),
    "parameter": ("What is the {p} argument of {s} for?", "What does the {p} parameter of {s} do?",
                  "How does {s} use its {p} argument?"),
}  # fmt: skip
QUESTION_TYPES = tuple(_TEMPLATES)
_PATTERNS = {
    "returns": re.compile(r"\breturn(s|ed|ing)?\b", re.I),
    "raises": re.compile(r"\braise[sd]?\b|\b[A-Z]\w*(Error|Exception)\b|\bexceptions?\b"),
    "default": re.compile(r"\bdefault(s|ed)?\b", re.I),
}
_SKIP_PARAMS = {"self", "cls", "args", "kwargs", "kwds"}


def _body(doc: Doc, max_chars: int) -> list[str]:
    """The docstring's sentences (paragraphs in order) up to about ``max_chars``."""
    sentences: list[str] = []
    total = 0
    for para in doc.text.split("\n\n"):
        flat = " ".join(para.split())
        if not flat or flat.startswith((">>>", "Usage", "usage", "Example", "..")):
            break
        for s in _SENT.split(flat):
            if total + len(s) > max_chars and sentences:
                return sentences
            sentences.append(s)
            total += len(s) + 1
    return sentences


def _header(doc: Doc) -> str:
    return {"module": f"module {doc.name}", "class": f"class {doc.name}"}.get(
        doc.kind, doc.signature or doc.name
    )


def doc_questions(doc: Doc, rng: np.random.Generator, max_chars: int = 480):
    """``(context, [(type, [phrasings of the question], answer), ...])`` for one document
    (possibly no questions)."""
    if doc.kind not in ("function", "class", "module"):
        return "", []
    sentences = _body(doc, max_chars)
    if not sentences or len(sentences[0]) < 15 or len(" ".join(sentences)) < 40:
        return "", []
    header = _header(doc)
    context = f"{header}\n\n{' '.join(sentences)}"
    parts = doc.name.split(".")
    subject = doc.name if doc.kind == "module" else ".".join(parts[-2:])
    pick = lambda kind, **kw: [  # every phrasing of ``kind``, in a seeded order
        _TEMPLATES[kind][i].format(s=subject, **kw) for i in rng.permutation(len(_TEMPLATES[kind]))
    ]
    out = [("summary", pick("summary"), sentences[0])]
    if doc.kind == "function":
        args = doc.signature[len(doc.name) + 1 : -1]
        if len(args) >= 3:
            out.append(("signature", pick("signature"), args))
    if doc.kind != "module" and len(parts) > 1:
        out.append(("location", pick("location"), ".".join(parts[:-1])))
    later = sentences[1:]
    for kind, pattern in _PATTERNS.items():
        hit = next((s for s in later if pattern.search(s) and len(s) >= 15), None)
        if hit is not None:
            out.append((kind, pick(kind), hit))
    if doc.kind == "function":
        names = re.findall(
            r"\b([a-z_][a-z0-9_]{2,})\b(?=\s*[=,)]|$)", doc.signature[len(doc.name) :]
        )
        for p in (n for n in names if n not in _SKIP_PARAMS):
            hit = next((s for s in later if re.search(rf"\b{re.escape(p)}\b", s)), None)
            if hit is not None:
                out.append(("parameter", pick("parameter", p=p), hit))
                break
    return context, out


def build_qa_records(
    contexts: int,
    *,
    records_per_context: int = 6,
    phrasings: int = 1,
    min_questions: int = 3,
    seed: int = 0,
    max_chars: int = 480,
    docs: Iterable[Doc] | None = None,
) -> list[dict]:
    """QA records (JSON objects of the ``aura.data.qa`` format) from ``contexts`` documents.

    Raises:
      ValueError: a bad argument. DataError: the corpus has too few usable documents.
    """
    if min(contexts, records_per_context, min_questions) < 1 or not 1 <= phrasings <= 3:
        raise ValueError(
            "contexts, records_per_context and min_questions must be >= 1, phrasings in [1, 3]"
        )
    rng = np.random.default_rng(seed)
    usable = []
    for doc in docs if docs is not None else iter_stdlib_docs():
        context, qs = doc_questions(doc, rng, max_chars)
        if len(qs) >= min_questions:
            usable.append((doc.name, context, qs))
    if len(usable) < contexts:
        raise DataError(
            f"the corpus has {len(usable)} documents with >= {min_questions} question types, "
            f"{contexts} were asked for; lower contexts or min_questions"
        )
    picks = np.linspace(0, len(usable) - 1, contexts).round().astype(int)
    records = []
    for i in picks:
        name, context, qs = usable[i]
        asked = [(kind, k, q[k], a) for kind, q, a in qs for k in range(phrasings)]
        for j in sorted(rng.permutation(len(asked))[:records_per_context]):
            kind, k, question, answer = asked[j]
            rid = f"{name}#{kind}" + (f"-{k}" if k else "")
            records.append({"id": rid, "context": context, "question": question,
                            "answer": answer, "type": kind})  # fmt: skip
    return records


def _lines(records: Iterable[dict]) -> Iterator[str]:
    for r in records:
        yield json.dumps(r, ensure_ascii=False) + "\n"


def write_qa_jsonl(path: str | os.PathLike[str], records: Iterable[dict]) -> None:
    """Writes records as JSONL (to a temporary name, then renamed)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(_lines(records))
    os.replace(tmp, path)
