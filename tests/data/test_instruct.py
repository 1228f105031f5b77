"""Tests for aura.data.instruct: JSONL validation (file:line), formatting and the loss mask."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.data.instruct import (
    InstructFormatter,
    InstructRecord,
    ReadStats,
    iter_instruct,
    read_instruct,
    shift_for_next_token,
)
from aura.data.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer

GOOD = {"instruction": "Explain os.path.join.", "input": "os.path.join(a, *p)", "output": "Join."}


def _jsonl(path, lines: list) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    rng = np.random.default_rng(0)
    prose = "explain the join path list returns a value of string name when with"
    words = prose.split()
    lines = [" ".join(rng.choice(words, size=10)) for _ in range(800)]
    (root / "a.txt").write_text("\n".join(lines) + "\n")
    train_tokenizer(root / "a.txt", root / "out", TokenizerConfig(vocab_size=350))
    return load_tokenizer(root / "out")


def test_read_valid_records_with_optional_input(tmp_path):
    path = _jsonl(
        tmp_path / "d.jsonl",
        [GOOD, "", {"instruction": "Say hi.", "output": "Hi."}, {**GOOD, "input": None}],
    )
    records = read_instruct(path)
    assert [r.input for r in records] == ["os.path.join(a, *p)", "", ""]
    assert records[0].output == "Join."
    assert [r.where for r in records] == [f"{path}:1", f"{path}:3", f"{path}:4"]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ({"instruction": "x"}, "missing field 'output' (record has: instruction)"),
        ({"output": "x"}, "missing field 'instruction'"),
        ({**GOOD, "input": 3}, "field 'input' must be a string, got int"),
        ({**GOOD, "output": "  "}, "field 'output' is empty"),
    ],
)
def test_bad_line_skipped_or_failed(tmp_path, line, reason):
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, line, GOOD])
    stats = ReadStats()
    records = list(iter_instruct(path, stats=stats))
    assert len(records) == 2 and stats.records == 2 and stats.bad_records == 1
    assert stats.bad_examples[0].startswith(f"{path}:2: {reason}")
    with pytest.raises(DataError, match=f"{path}:2: "):
        list(iter_instruct(path, on_bad_record="fail"))


def test_non_utf8_line_is_bad(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"instruction": "\xff"}\n')
    stats = ReadStats()
    assert len(read_instruct(path, stats=stats)) == 1
    assert stats.bad_examples == [f"{path}:2: not UTF-8 (byte 17)"]


def test_empty_or_all_bad_corpus(tmp_path):
    empty = _jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="no usable instruction records"):
        read_instruct(empty)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: missing field 'instruction'"):
        read_instruct(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_instruct(tmp_path / "missing.jsonl")
    os.mkdir(tmp_path / "none")
    with pytest.raises(DataError, match=r"no \*\.jsonl files"):
        read_instruct(tmp_path / "none")
    with pytest.raises(ValueError, match="on_bad_record"):
        read_instruct(bad, on_bad_record="ignore")


def test_directory_source_is_sorted(tmp_path):
    _jsonl(tmp_path / "b.jsonl", [{**GOOD, "output": "B"}])
    _jsonl(tmp_path / "a.jsonl", [{**GOOD, "output": "A"}, {**GOOD, "output": "A2"}])
    assert [r.output for r in read_instruct(tmp_path)] == ["A", "A2", "B"]
    assert [r.output for r in read_instruct(tmp_path, limit=2)] == ["A", "A2"]


def _reference(sp, record):
    """Naive formatting: ids and the set of positions the loss may see."""
    prompt = [sp.bos_id(), sp.piece_to_id("<INST>"), *sp.encode(record.instruction)]
    if record.input:
        prompt += [sp.piece_to_id("<INP>"), *sp.encode(record.input)]
    prompt += [sp.piece_to_id("<RESP>")]
    response = [*sp.encode(record.output), sp.piece_to_id("<SEP>"), sp.eos_id()]
    return prompt + response, set(range(len(prompt), len(prompt) + len(response)))


def test_loss_mask_covers_only_the_response(sp):
    fmt = InstructFormatter(sp, max_len=128)
    record = InstructRecord("explain the join", "path list", "returns a string name")
    enc = fmt.encode(record)
    ids, response_positions = _reference(sp, record)
    assert enc.ids.tolist() == ids and enc.length == len(ids) and not enc.truncated
    assert enc.ids.dtype == np.int32 and enc.loss_mask.dtype == np.float32
    assert set(np.flatnonzero(enc.loss_mask).tolist()) == response_positions
    response = enc.ids[enc.loss_mask == 1].tolist()
    assert response[-2:] == [sp.piece_to_id("<SEP>"), sp.eos_id()]
    assert sp.decode(response[:-2]) == "returns a string name"
    no_input = fmt.encode(InstructRecord("explain", "", "a value"))
    assert sp.piece_to_id("<INP>") not in no_input.ids.tolist()


def test_shift_weights_next_token_predictions(sp):
    enc = InstructFormatter(sp, max_len=64).encode(InstructRecord("explain", "", "a value"))
    inputs, targets, weights = shift_for_next_token(enc.ids, enc.loss_mask)
    resp = enc.ids.tolist().index(sp.piece_to_id("<RESP>"))
    assert inputs[resp] == sp.piece_to_id("<RESP>") and weights[resp] == 1.0
    assert weights[:resp].sum() == 0 and weights[resp:].all()
    assert targets[-1] == sp.eos_id()


def test_padding_and_batch(sp):
    fmt = InstructFormatter(sp, max_len=32, pad_to=40)
    records = [InstructRecord("explain", "", "a value"), InstructRecord("explain the", "x", "b")]
    one = fmt.encode(records[0])
    assert one.ids.shape == (40,) and (one.ids[one.length :] == 0).all()
    assert one.loss_mask[one.length :].sum() == 0
    batch = fmt.encode_batch(records)
    assert batch["ids"].shape == batch["loss_mask"].shape == (2, 40)
    for row, r in enumerate(records):
        ref, positions = _reference(sp, r)
        assert batch["ids"][row, : len(ref)].tolist() == ref
        assert set(np.flatnonzero(batch["loss_mask"][row]).tolist()) == positions
    unpadded = InstructFormatter(sp, max_len=32).encode_batch(records)
    assert unpadded["ids"].shape == (2, 32)


def test_truncation(sp):
    fmt = InstructFormatter(sp, max_len=16)
    long_prompt = InstructRecord("explain the join path " * 10, "", "a value")
    enc = fmt.encode(long_prompt)
    ids, positions = _reference(sp, long_prompt)
    assert enc.truncated and enc.length == 16
    assert enc.ids.tolist() == ids[-16:]  # the response fits: the prompt is cut from the left
    assert int(enc.loss_mask.sum()) == len(positions)
    long_answer = InstructRecord("explain", "", "the join path list " * 10)
    enc = fmt.encode(long_answer)
    ids, _ = _reference(sp, long_answer)
    prompt_len = ids.index(sp.piece_to_id("<RESP>")) + 1
    assert enc.length == 16 and enc.ids[:prompt_len].tolist() == ids[:prompt_len]
    assert int(enc.loss_mask.sum()) == 16 - prompt_len
    both = fmt.encode(InstructRecord("explain the join " * 10, "", "path list " * 10))
    assert int(both.loss_mask.sum()) == 8  # half of max_len for the response
    assert both.ids[7] == sp.piece_to_id("<RESP>")


def test_formatter_validation(sp, tmp_path):
    with pytest.raises(ValueError, match="pad_to=8 must be >= max_len=16"):
        InstructFormatter(sp, max_len=16, pad_to=8)
    with pytest.raises(ValueError, match="max_len=2"):
        InstructFormatter(sp, max_len=2)
    (tmp_path / "t.txt").write_text("\n".join(["plain words only here"] * 200))
    cfg = TokenizerConfig(vocab_size=300, user_symbols=())
    train_tokenizer(tmp_path / "t.txt", tmp_path / "tok", cfg)
    with pytest.raises(DataError, match="no piece '<INST>'"):
        InstructFormatter(load_tokenizer(tmp_path / "tok"), max_len=16)
