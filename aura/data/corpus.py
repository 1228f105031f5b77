"""The embedded corpus: real English text from the Python standard library, built offline.

Every Python installation carries documentation: the docstrings of its standard library and
the reference topics in `pydoc_data/topics.py`. `build_corpus` collects them, without importing
anything (each `.py` file is parsed with `ast`, so no module code runs), in a sorted and so
deterministic walk of `sysconfig.get_paths()["stdlib"]` that skips tests, IDLE, turtledemo,
installed packages and private (`_name`) modules and members. Each documented module, class,
function or topic becomes one document: a header line (the qualified name, with the signature
for functions) and the docstring, paragraphs separated by blank lines.

Outputs under `out_dir`:

    text/shard_000.txt ...   training text (point the tokenizer's --input_dir here)
    heldout.txt              every 50th document (heldout_fraction=0.02) for bits per character
    instruct.jsonl           {instruction, input, output} records derived from training documents,
                             in a fixed pseudo-random order (seed 0): a streaming shuffle with a
                             bounded window then sees every module from the first step, where the
                             sorted walk would feed a short run only `abc` to `collections`
    heldout_instruct.jsonl   the same derived from the held-out documents
    manifest.json            counts, sizes and the Python version the text came from

Records: "Explain <name>." -> the first paragraph of its docstring (input: the signature of a
function, else empty); "Summarize <name> in one sentence." -> the first sentence, when the first
paragraph has more than one; "Give the signature of <name>." -> `name(args)` for functions.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import random
import re
import sys
import sysconfig
import time
from collections.abc import Iterator

from aura.data.errors import DataError

__all__ = ["CorpusResult", "Doc", "build_corpus", "instruct_records", "iter_stdlib_docs"]

_SKIP_DIRS = frozenset(
    {"test", "tests", "idlelib", "turtledemo", "site-packages", "dist-packages", "lib2to3"}
    | {"ensurepip", "__pycache__", "lib-dynload", "__phello__"}
)
_TOPICS_MODULE = "pydoc_data.topics"
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]'\"`][.!?])\s+(?=[A-Z(\"'`])")
_CONTROLS = {c: None for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))}


@dataclasses.dataclass(frozen=True)
class Doc:
    """One document: `name` (qualified), `kind`, the function `signature` (or ""), `text`."""

    name: str
    kind: str  # module | class | function | topic
    signature: str
    text: str

    def render(self) -> str:
        """The document as written to the text shards: header, blank line, docstring."""
        header = {"module": f"module {self.name}", "class": f"class {self.name}"}.get(
            self.kind, self.signature or self.name
        )
        if self.kind == "topic":
            header = f"Python reference: {self.name}"
        return f"{header}\n\n{self.text}"


def _sanitize(text: str) -> str:
    """Removes control characters and unpaired surrogates (not writable as UTF-8)."""
    text = text.translate(_CONTROLS)
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def _module_name(rel_path: str) -> str:
    parts = rel_path[: -len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> str:
    args = node.args
    if is_method and (args.posonlyargs or args.args):
        first = (args.posonlyargs or args.args)[0].arg
        if first in ("self", "cls", "mcls", "metacls"):
            args = ast.arguments(**{f: getattr(args, f) for f in args._fields})
            if args.posonlyargs:
                args.posonlyargs = args.posonlyargs[1:]
            else:
                args.args = args.args[1:]
    try:
        return ast.unparse(args)
    except (ValueError, TypeError, RecursionError):
        return "..."


def _docs_in_tree(tree: ast.Module, module: str) -> Iterator[Doc]:
    doc = ast.get_docstring(tree)
    if doc:
        yield Doc(module, "module", "", doc)

    def visit(body: list[ast.stmt], prefix: str, in_class: bool) -> Iterator[Doc]:
        for node in body:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name.startswith("_"):
                continue
            name = f"{prefix}.{node.name}"
            doc = ast.get_docstring(node)
            if isinstance(node, ast.ClassDef):
                if doc:
                    yield Doc(name, "class", "", doc)
                yield from visit(node.body, name, True)
            elif doc:
                yield Doc(name, "function", f"{name}({_signature(node, in_class)})", doc)

    yield from visit(tree.body, module, False)


def _topic_docs(tree: ast.Module) -> Iterator[Doc]:
    """The `topics = {...}` dict of `pydoc_data/topics.py`: the language reference's topics."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                k, v = getattr(key, "value", None), getattr(value, "value", None)
                if isinstance(k, str) and isinstance(v, str):  # string constants only
                    yield Doc(k, "topic", "", v.strip())


def iter_stdlib_docs(stdlib_dir: str | None = None) -> Iterator[Doc]:
    """Yields the standard library's documents in a deterministic (sorted) order.

    Args:
      stdlib_dir: the directory to walk; default `sysconfig.get_paths()["stdlib"]`.
    """
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "_", "config-"))
        )
        for fname in sorted(files):
            if not fname.endswith(".py") or (fname.startswith("_") and fname != "__init__.py"):
                continue
            path = os.path.join(dirpath, fname)
            module = _module_name(os.path.relpath(path, root))
            try:
                with open(path, "rb") as f:
                    tree = ast.parse(f.read(), filename=path)
            except (SyntaxError, ValueError, OSError, RecursionError):
                continue
            docs = _topic_docs(tree) if module == _TOPICS_MODULE else _docs_in_tree(tree, module)
            for doc in docs:
                text = _sanitize(doc.text).strip()
                if len(text) >= 20:
                    yield dataclasses.replace(doc, text=text)


def _is_heading(paragraph: str) -> bool:
    lines = paragraph.strip().splitlines()
    return len(lines) <= 2 and set(lines[-1].strip()) <= set("*=-~^+")


def _first_paragraph(doc: Doc) -> str:
    text = doc.text
    if doc.kind == "topic":  # skip headings: a title line and its ***** underline
        text = "\n\n".join(p for p in text.split("\n\n") if p.strip() and not _is_heading(p))
    first = text.split("\n\n", 1)[0]
    return " ".join(first.split())


def instruct_records(doc: Doc) -> list[dict[str, str]]:
    """The instruction records derived from one document (possibly none)."""
    para = _first_paragraph(doc)
    if not 20 <= len(para) <= 600 or para.startswith((">>>", "Usage", "usage")) or " " not in para:
        return []
    label = f"the Python topic '{doc.name}'" if doc.kind == "topic" else doc.name
    records = [{"instruction": f"Explain {label}.", "input": doc.signature, "output": para}]
    sentences = _SENTENCE_END.split(para)
    if len(sentences) > 1 and len(sentences[0]) >= 15:
        records.append(
            {
                "instruction": f"Summarize {label} in one sentence.",
                "input": "",
                "output": sentences[0],
            }
        )
    if doc.kind == "function" and not doc.signature.endswith("()"):
        records.append(
            {
                "instruction": f"Give the signature of {doc.name}.",
                "input": "",
                "output": doc.signature,
            }
        )
    return records


@dataclasses.dataclass
class CorpusResult:
    """What `build_corpus` wrote."""

    out_dir: str
    text_dir: str
    shards: list[str]
    heldout_text: str
    instruct: str
    heldout_instruct: str
    manifest: str
    docs: int
    train_docs: int
    heldout_docs: int
    text_chars: int
    heldout_chars: int
    records: int
    heldout_records: int
    seconds: float

    def as_dict(self) -> dict:
        """A JSON-friendly summary."""
        return dataclasses.asdict(self)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _jsonl(records: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


_INSTRUCT_FILES = ("instruct.jsonl", "heldout_instruct.jsonl")


def _write_shards(text_dir: str, train: list, num_shards: int) -> tuple[list[str], int]:
    """Writes the training documents into ``shard_NNN.txt`` files; removes stale shards."""
    os.makedirs(text_dir, exist_ok=True)
    n_shards = min(num_shards, len(train))
    shards, text_chars = [], 0
    for s in range(n_shards):
        part = train[s * len(train) // n_shards : (s + 1) * len(train) // n_shards]
        path = os.path.join(text_dir, f"shard_{s:03d}.txt")
        text = "\n\n".join(d.render() for d in part) + "\n"
        _write_atomic(path, text)
        shards.append(path)
        text_chars += len(text)
    for name in sorted(os.listdir(text_dir)):  # shards of an earlier, larger build
        path = os.path.join(text_dir, name)
        if re.fullmatch(r"shard_\d{3}\.txt", name) and path not in shards:
            os.remove(path)
    return shards, text_chars


def build_corpus(
    out_dir: str | os.PathLike[str],
    *,
    max_docs: int | None = None,
    heldout_fraction: float = 0.02,
    num_shards: int = 4,
    stdlib_dir: str | None = None,
) -> CorpusResult:
    """Builds the embedded text corpus and instruction JSONL (see the module docstring).

    Args:
      out_dir: output directory (created; existing shards are replaced).
      max_docs: stop after this many documents (the first ones of the sorted walk); None: all.
      heldout_fraction: share of documents held out (every round(1/fraction)-th one).
      num_shards: text shards for the training documents.
      stdlib_dir: walk this directory instead of the running Python's standard library.

    Raises:
      ValueError: a bad argument. DataError: no documented source was found.
    """
    if max_docs is not None and max_docs < 2:
        raise ValueError(f"max_docs={max_docs} must be >= 2 (training and held-out documents)")
    if not 0.0 < heldout_fraction <= 0.5:
        raise ValueError(f"heldout_fraction={heldout_fraction} must be in (0, 0.5]")
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} must be >= 1")
    start = time.perf_counter()
    docs = []
    for doc in iter_stdlib_docs(stdlib_dir):
        docs.append(doc)
        if max_docs is not None and len(docs) >= max_docs:
            break
    if len(docs) < 2:
        where = stdlib_dir or sysconfig.get_paths()["stdlib"]
        raise DataError(
            f"found {len(docs)} documented Python sources under {where!r}; this Python ships "
            "without its standard library sources, so pass your own text directory instead"
        )
    every = max(2, round(1.0 / heldout_fraction))
    held_idx = {i for i in range(len(docs)) if i % every == every - 1} or {len(docs) - 1}
    held = [d for i, d in enumerate(docs) if i in held_idx]
    train = [d for i, d in enumerate(docs) if i not in held_idx]

    out_dir = os.fspath(out_dir)
    text_dir = os.path.join(out_dir, "text")
    shards, text_chars = _write_shards(text_dir, train, num_shards)
    heldout_text = os.path.join(out_dir, "heldout.txt")
    held_text = "\n\n".join(d.render() for d in held) + "\n"
    _write_atomic(heldout_text, held_text)
    records = [r for d in train for r in instruct_records(d)]
    random.Random(0).shuffle(records)  # see the module docstring
    heldout_records = [r for d in held for r in instruct_records(d)]
    instruct, heldout_instruct = (os.path.join(out_dir, n) for n in _INSTRUCT_FILES)
    _write_atomic(instruct, _jsonl(records))
    _write_atomic(heldout_instruct, _jsonl(heldout_records))
    result = CorpusResult(
        out_dir=out_dir,
        text_dir=text_dir,
        shards=shards,
        heldout_text=heldout_text,
        instruct=instruct,
        heldout_instruct=heldout_instruct,
        manifest=os.path.join(out_dir, "manifest.json"),
        docs=len(docs),
        train_docs=len(train),
        heldout_docs=len(held),
        text_chars=text_chars,
        heldout_chars=len(held_text),
        records=len(records),
        heldout_records=len(heldout_records),
        seconds=time.perf_counter() - start,
    )
    source = stdlib_dir or sysconfig.get_paths()["stdlib"]
    manifest = {**result.as_dict(), "source": source, "python": sys.version.split()[0],
                "max_docs": max_docs, "heldout_fraction": heldout_fraction}  # fmt: skip
    _write_atomic(result.manifest, json.dumps(manifest, indent=2) + "\n")
    return result
