"""Streaming plain text out of a directory of `*.txt` and `*.jsonl` files, cleaned and counted.

`find_text_files` lists the inputs (sorted, recursive); `iter_lines` streams one cleaned line at
a time (what SentencePiece trains on) and `iter_paragraphs` streams blank-line-separated
paragraphs with their newlines kept (what a language model reads). Nothing is held in memory
beyond one line or paragraph, so any corpus size works.

Cleaning, each step optional and counted in a `TextStats`:

* bytes that are not UTF-8 become U+FFFD, one per bad byte (`replaced_bytes`); always on, since
  nothing downstream can use them;
* control characters (category Cc, NUL included) other than tab and newline are removed
  (`clean_controls`, counted in `removed_controls`);
* non-ASCII characters are removed (`ascii_only`, counted in `removed_non_ascii`);
* runs of spaces and tabs become one space and lines are stripped (`normalize_spaces`);
* lines whose UTF-8 size exceeds `max_line_bytes` are split into pieces that concatenate back
  to the line, preferably after a space (`split_lines` counts the lines split, `extra_pieces`
  the pieces added). SentencePiece silently skips sentences over its `max_sentence_length`,
  so splitting first means no text is ever dropped.

In a `*.jsonl` file each line is a JSON object; its string fields named in `text_fields` are
read in that order, each as text of its own (embedded newlines become line breaks). A line that
is not a JSON object is reported as `file:line` and skipped (`on_bad_record="skip"`, counted in
`bad_records`) or raises `DataError` (`"fail"`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence

from aura.data.errors import DataError

__all__ = [
    "DEFAULT_TEXT_FIELDS",
    "TextOptions",
    "TextStats",
    "clean_line",
    "decode_utf8",
    "find_text_files",
    "iter_lines",
    "iter_paragraphs",
    "split_long_line",
]

DEFAULT_TEXT_FIELDS: tuple[str, ...] = ("text", "instruction", "input", "output")
_SUFFIXES = (".txt", ".jsonl")
# C0 and C1 control characters except tab and newline, mapped to None for str.translate.
_CONTROLS = {c: None for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))}
_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except newline
_MAX_REPORTED = 5


@dataclasses.dataclass(frozen=True)
class TextOptions:
    """How text is cleaned. See the module docstring for what each step does.

    Attributes:
      clean_controls: remove control characters (NUL and other Cc, except tab and newline).
      normalize_spaces: collapse runs of whitespace to one space and strip each line.
      ascii_only: remove every non-ASCII character.
      max_line_bytes: split lines longer than this many UTF-8 bytes; `None` never splits.
      text_fields: the string fields of a `*.jsonl` record that are read as text.
      on_bad_record: `"skip"` (count and report) or `"fail"` (raise `DataError`) for a
        `*.jsonl` line that is not a JSON object.
    """

    clean_controls: bool = True
    normalize_spaces: bool = True
    ascii_only: bool = False
    max_line_bytes: int | None = 4192
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    on_bad_record: str = "skip"

    def __post_init__(self):
        if self.max_line_bytes is not None and self.max_line_bytes < 4:
            raise ValueError(f"max_line_bytes={self.max_line_bytes} must be >= 4 (one character)")
        if self.on_bad_record not in ("skip", "fail"):
            raise ValueError(f"on_bad_record={self.on_bad_record!r} must be 'skip' or 'fail'")
        if not self.text_fields:
            raise ValueError("text_fields must name at least one JSONL field")


@dataclasses.dataclass
class TextStats:
    """Counters filled while streaming; every cleaning step that changes text is counted."""

    files: int = 0
    lines_read: int = 0
    lines_out: int = 0
    chars_out: int = 0
    replaced_bytes: int = 0
    removed_controls: int = 0
    removed_non_ascii: int = 0
    split_lines: int = 0
    extra_pieces: int = 0
    jsonl_records: int = 0
    bad_records: int = 0
    bad_examples: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        """The counters as a JSON-friendly dict."""
        return dataclasses.asdict(self)


def find_text_files(path: str | os.PathLike[str]) -> list[str]:
    """Lists the `*.txt` and `*.jsonl` files under `path` (sorted, recursive), or `[path]`.

    Raises:
      DataError: `path` does not exist, or holds no `*.txt`/`*.jsonl` file.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"input {path!r} does not exist; pass a directory of *.txt/*.jsonl files")
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if f.endswith(_SUFFIXES)]
    found.sort()
    if not found:
        raise DataError(
            f"no *.txt or *.jsonl files under {path!r}; put text files there (or build the "
            "embedded corpus: python -m aura.build corpus --out_dir DIR)"
        )
    return found


def decode_utf8(raw: bytes, stats: TextStats | None = None) -> str:
    """Decodes UTF-8, replacing each byte that is not valid UTF-8 with U+FFFD (and counting it)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")  # bad bytes -> lone surrogates U+DC80..FF
        text, n = _SURROGATE_ESCAPES.subn("\ufffd", text)
        if stats is not None:
            stats.replaced_bytes += n
        return text


def clean_line(text: str, options: TextOptions, stats: TextStats | None = None) -> str:
    """Applies control removal, the ASCII filter and space normalisation to one string.

    Newlines inside `text` are kept (spaces around them are normalised line by line).
    """
    if options.clean_controls:
        cleaned = text.translate(_CONTROLS)
        if stats is not None:
            stats.removed_controls += len(text) - len(cleaned)
        text = cleaned
    if options.ascii_only and not text.isascii():
        cleaned = text.encode("ascii", "ignore").decode("ascii")
        if stats is not None:
            stats.removed_non_ascii += len(text) - len(cleaned)
        text = cleaned
    if options.normalize_spaces:
        text = "\n".join(_SPACES.sub(" ", part).strip() for part in text.split("\n"))
    return text


def split_long_line(line: str, max_bytes: int) -> list[str]:
    """Splits `line` into pieces of at most `max_bytes` UTF-8 bytes that concatenate to `line`.

    A piece ends after the last space that fits, or mid-word when a single word is too long;
    characters are never cut inside their UTF-8 encoding.
    """
    if max_bytes < 4:
        raise ValueError(f"max_bytes={max_bytes} must be >= 4 (the longest UTF-8 character)")
    if len(line) * 4 <= max_bytes or len(line.encode("utf-8")) <= max_bytes:
        return [line]
    pieces, start, size, last_space = [], 0, 0, -1
    for i, ch in enumerate(line):
        n = len(ch.encode("utf-8")) if ord(ch) >= 0x80 else 1
        if size + n > max_bytes:
            cut = last_space + 1 if last_space >= start else i
            rest = len(line[cut:i].encode("utf-8"))
            if rest + n > max_bytes:  # the word after the space is too long: cut right here
                cut, rest = i, 0
            pieces.append(line[start:cut])
            start, size, last_space = cut, rest, -1
        size += n
        if ch == " ":
            last_space = i
    pieces.append(line[start:])
    return pieces


def _note_bad(stats: TextStats, where: str, reason: str, options: TextOptions) -> None:
    message = f"{where}: {reason}"
    if options.on_bad_record == "fail":
        raise DataError(f"{message} (use on_bad_record='skip' to skip bad lines)")
    stats.bad_records += 1
    if len(stats.bad_examples) < _MAX_REPORTED:
        stats.bad_examples.append(message)


def _raw_texts(files: Sequence[str], options: TextOptions, stats: TextStats) -> Iterator[str]:
    """Yields decoded, uncleaned text lines; a JSONL record yields each text field's lines."""
    for path in files:
        stats.files += 1
        is_jsonl = path.endswith(".jsonl")
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                stats.lines_read += 1
                text = decode_utf8(raw.rstrip(b"\r\n"), stats)
                if not is_jsonl:
                    yield text
                    continue
                if not text.strip():
                    yield ""  # a blank line still ends a paragraph
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as e:
                    _note_bad(stats, f"{path}:{lineno}", f"not valid JSON ({e.msg})", options)
                    continue
                if not isinstance(record, dict):
                    _note_bad(stats, f"{path}:{lineno}", "not a JSON object", options)
                    continue
                stats.jsonl_records += 1
                for field in options.text_fields:
                    value = record.get(field)
                    if isinstance(value, str) and value:
                        yield from value.replace("\r\n", "\n").split("\n")
                yield ""  # records are paragraphs of their own
        yield ""  # a paragraph never runs across files


def iter_lines(
    source: str | os.PathLike[str] | Sequence[str],
    options: TextOptions = TextOptions(),
    stats: TextStats | None = None,
) -> Iterator[str]:
    """Streams cleaned, non-empty lines (no newline characters) for tokenizer training.

    Args:
      source: a directory (searched recursively), one file, or a list of files.
      options: cleaning options.
      stats: filled in while the iterator is consumed.

    Yields:
      Lines at most `options.max_line_bytes` UTF-8 bytes long.

    Raises:
      DataError: missing input, no text files, or a bad JSONL line under `on_bad_record="fail"`.
    """
    stats = TextStats() if stats is None else stats
    files = find_text_files(source) if isinstance(source, str | os.PathLike) else list(source)
    for text in _raw_texts(files, options, stats):
        line = clean_line(text, options, stats)
        if not line.strip():
            continue
        pieces = [line]
        if options.max_line_bytes is not None:
            pieces = split_long_line(line, options.max_line_bytes)
            if len(pieces) > 1:
                stats.split_lines += 1
                stats.extra_pieces += len(pieces) - 1
        for piece in pieces:
            stats.lines_out += 1
            stats.chars_out += len(piece)
            yield piece


def iter_paragraphs(
    source: str | os.PathLike[str] | Sequence[str],
    options: TextOptions = TextOptions(max_line_bytes=None),
    stats: TextStats | None = None,
) -> Iterator[str]:
    """Streams cleaned paragraphs (blank-line separated) with their inner newlines kept.

    A JSONL record is a paragraph of its own (its text fields joined by newlines). Long lines
    are not split here unless `options.max_line_bytes` is set.
    """
    stats = TextStats() if stats is None else stats
    files = find_text_files(source) if isinstance(source, str | os.PathLike) else list(source)
    lines: list[str] = []
    for text in _raw_texts(files, options, stats):
        line = clean_line(text, options, stats)
        if line.strip():
            if options.max_line_bytes is not None:
                pieces = split_long_line(line, options.max_line_bytes)
                if len(pieces) > 1:
                    stats.split_lines += 1
                    stats.extra_pieces += len(pieces) - 1
                line = "\n".join(pieces)
            lines.append(line)
            continue
        if lines:
            paragraph = "\n".join(lines)
            stats.lines_out += len(lines)
            stats.chars_out += len(paragraph)
            lines = []
            yield paragraph
    if lines:
        paragraph = "\n".join(lines)
        stats.lines_out += len(lines)
        stats.chars_out += len(paragraph)
        yield paragraph
