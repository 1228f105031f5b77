"""Tests for aura.data.text: file discovery, cleaning counts, long-line splitting, JSONL fields."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.data.text import (
    TextOptions,
    TextStats,
    decode_utf8,
    find_text_files,
    iter_lines,
    iter_paragraphs,
    split_long_line,
)

RAW = TextOptions(clean_controls=False, normalize_spaces=False, max_line_bytes=None)


def _write(path, data: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_find_text_files_sorted_recursive(tmp_path):
    _write(tmp_path / "b.txt", "b")
    _write(tmp_path / "a" / "z.jsonl", "{}")
    _write(tmp_path / "a" / "y.md", "ignored")
    _write(tmp_path / ".hidden" / "h.txt", "ignored")
    files = find_text_files(tmp_path)
    assert files == [str(tmp_path / "a" / "z.jsonl"), str(tmp_path / "b.txt")]
    assert find_text_files(tmp_path / "b.txt") == [str(tmp_path / "b.txt")]


def test_find_text_files_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_text_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \*\.txt or \*\.jsonl"):
        find_text_files(tmp_path / "empty")


def test_split_long_line_concatenates_and_respects_limit():
    rng = np.random.default_rng(0)
    alphabet = list("abcdefgh  ") + ["é", "東", "😀", "—"]
    for limit in (4, 5, 7, 16, 33):
        for _ in range(30):
            line = "".join(rng.choice(alphabet, size=int(rng.integers(0, 120))))
            pieces = split_long_line(line, limit)
            assert "".join(pieces) == line
            assert all(len(p.encode("utf-8")) <= limit for p in pieces)
            assert all(pieces) or pieces == [""]


def test_split_prefers_spaces():
    pieces = split_long_line("aaaa bbbb cccc", 10)
    assert pieces == ["aaaa bbbb ", "cccc"]
    assert split_long_line("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_long_line_is_split_not_dropped(tmp_path):
    words = " ".join(f"word{i}" for i in range(3000))  # ~26k characters on one line
    _write(tmp_path / "long.txt", f"short line\n{words}\n")
    stats = TextStats()
    lines = list(iter_lines(tmp_path, TextOptions(max_line_bytes=1000), stats))
    assert lines[0] == "short line"
    assert "".join(lines[1:]) == words  # every character survives
    assert all(len(x.encode()) <= 1000 for x in lines)
    assert stats.split_lines == 1
    assert stats.extra_pieces == len(lines) - 2
    assert stats.chars_out == len("short line") + len(words)


def test_invalid_utf8_replaced_and_counted(tmp_path):
    _write(tmp_path / "bad.txt", b"ok \xff\xfe end\ncaf\xc3\xa9 \xc3\n")
    stats = TextStats()
    lines = list(iter_lines(tmp_path, RAW, stats))
    assert lines == ["ok \ufffd\ufffd end", "café \ufffd"]
    assert stats.replaced_bytes == 3
    assert decode_utf8(b"\xe6\x9d\xb1") == "東"  # valid multi-byte text is untouched


def test_control_characters_removed_and_counted(tmp_path):
    _write(tmp_path / "c.txt", "a\x00b\x07c\td\x1b\n\x00\x01\n")
    stats = TextStats()
    lines = list(iter_lines(tmp_path, TextOptions(normalize_spaces=False), stats))
    assert lines == ["abc\td"]  # tab kept, the all-control line vanishes
    assert stats.removed_controls == 5
    kept = list(iter_lines(tmp_path, RAW))
    assert kept == ["a\x00b\x07c\td\x1b", "\x00\x01"]


def test_normalize_spaces_and_crlf(tmp_path):
    _write(tmp_path / "s.txt", "  a \t  b  \r\n\r\nc\r\n")
    assert list(iter_lines(tmp_path)) == ["a b", "c"]
    assert list(iter_lines(tmp_path, RAW)) == ["  a \t  b  ", "c"]


def test_ascii_only_counts_removed(tmp_path):
    _write(tmp_path / "u.txt", "café 東京 ok\n")
    stats = TextStats()
    assert list(iter_lines(tmp_path, TextOptions(ascii_only=True), stats)) == ["caf ok"]
    assert stats.removed_non_ascii == 3


def test_jsonl_text_fields_and_bad_lines(tmp_path):
    good = {"instruction": "Explain x.", "input": "", "output": "Line one.\nLine two.", "id": 3}
    path = _write(
        tmp_path / "d.jsonl", json.dumps(good) + "\n{not json\n[1, 2]\n" + json.dumps(good) + "\n"
    )
    stats = TextStats()
    lines = list(iter_lines(tmp_path, TextOptions(), stats))
    assert lines == ["Explain x.", "Line one.", "Line two."] * 2
    assert stats.jsonl_records == 2 and stats.bad_records == 2
    assert stats.bad_examples[0].startswith(f"{path}:2: not valid JSON")
    assert stats.bad_examples[1] == f"{path}:3: not a JSON object"
    with pytest.raises(DataError, match=f"{path}:2"):
        list(iter_lines(tmp_path, TextOptions(on_bad_record="fail")))


def test_paragraphs_keep_newlines(tmp_path):
    _write(tmp_path / "a.txt", "l1\nl2\n\n\nl3")
    _write(tmp_path / "b.txt", "m1\n")
    _write(tmp_path / "c.jsonl", json.dumps({"text": "r1\nr2"}) + "\n" + json.dumps({"text": "s"}))
    assert list(iter_paragraphs(tmp_path)) == ["l1\nl2", "l3", "m1", "r1\nr2", "s"]


def test_bad_options():
    with pytest.raises(ValueError, match="max_line_bytes=2"):
        TextOptions(max_line_bytes=2)
    with pytest.raises(ValueError, match="on_bad_record"):
        TextOptions(on_bad_record="ignore")
