"""Tests for aura.data.tokenizer: training paths, fixed ids, round trips, checks, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.data.tokenizer import (
    DEFAULT_USER_SYMBOLS,
    TokenizerConfig,
    check_piece_count,
    load_tokenizer,
    parse_symbols,
    symbol_ids,
    train_tokenizer,
)

PROSE = (
    "the a of to and in is that it for on with as was by this be are from or an at which "
    "function returns value list string object module class file name path data error type "
    "number line text when if not default new each call argument result"
)
WORDS = PROSE.split()
SMALL = TokenizerConfig(vocab_size=400)


def english_lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(WORDS, size=int(rng.integers(5, 14)))).capitalize() + "."
        for _ in range(n)
    ]


def write_corpus(directory, n: int = 1500, extra: str = "") -> str:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "a.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(english_lines(n)) + "\n" + extra)
    return str(directory)


def pieces(sp) -> list[str]:
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    corpus = write_corpus(root / "text", extra="Un café naïve au bord de l'eau — déjà vu.\n" * 20)
    result = train_tokenizer(corpus, root / "out", SMALL)
    return corpus, result, load_tokenizer(result.model_path)


def test_writes_model_and_vocab_with_fixed_ids(trained):
    _, result, sp = trained
    assert os.path.isfile(result.model_path) and os.path.isfile(result.vocab_path)
    assert result.piece_size == sp.get_piece_size() == 400
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert symbol_ids(sp) == {"<INST>": 4, "<INP>": 5, "<RESP>": 6, "<SEP>": 7}
    assert sp.piece_to_id("\n") == 8
    assert sp.id_to_piece(9) == "<0x00>"  # byte pieces follow the user symbols
    assert not [n for n in os.listdir(os.path.dirname(result.model_path)) if n.startswith(".")]


def test_round_trip_user_symbols_and_non_ascii(trained):
    _, _, sp = trained
    for text in (
        "café naïve — 東京",
        "<INST> Explain the list. <RESP> It returns 😀 東京 <SEP>",
        "first line\nsecond line",
    ):
        ids = sp.encode(text)
        assert sp.unk_id() not in ids  # byte fallback instead of <unk>
        assert sp.decode(ids) == text
    ids = sp.encode("東")
    assert [sp.id_to_piece(i) for i in ids if sp.id_to_piece(i) != "▁"] == [
        "<0xE6>",
        "<0x9D>",
        "<0xB1>",
    ]


def test_user_symbols_are_single_pieces(trained):
    _, _, sp = trained
    for symbol in DEFAULT_USER_SYMBOLS:
        ids = [i for i in sp.encode(f"x{symbol}y") if sp.id_to_piece(i) != "▁"]
        assert sp.piece_to_id(symbol) in ids
        assert [sp.id_to_piece(i) for i in ids].count(symbol) == 1


def test_file_path_gives_the_same_pieces(trained, tmp_path):
    corpus, _, sp = trained
    cfg = TokenizerConfig(vocab_size=400, use_iterator=False)
    result = train_tokenizer(corpus, tmp_path / "file", cfg)
    assert pieces(load_tokenizer(result.model_path)) == pieces(sp)
    assert not os.path.exists(tmp_path / "file" / "corpus.txt")


def test_bpe_trains_and_round_trips(trained, tmp_path):
    corpus, _, _ = trained
    result = train_tokenizer(corpus, tmp_path, TokenizerConfig(vocab_size=400, model_type="bpe"))
    sp = load_tokenizer(tmp_path)
    text = "<INST> naïve 東京 function <SEP>"
    assert sp.decode(sp.encode(text)) == text
    assert result.piece_size == 400


def test_one_long_line_is_split_and_trained_on(tmp_path):
    line = " ".join(english_lines(400))  # ~25k characters, over max_sentence_length
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.txt").write_text(line + "\n")
    cfg = TokenizerConfig(vocab_size=400, max_sentence_length=2000)
    result = train_tokenizer(tmp_path / "in", tmp_path / "out", cfg)
    assert result.stats.split_lines == 1
    assert result.stats.chars_out == len(line)  # nothing dropped (normalised text is unchanged)
    assert result.stats.lines_out == result.stats.extra_pieces + 1 >= len(line.encode()) // 2000


def test_cleaning_counts_and_ascii_only(tmp_path):
    corpus = write_corpus(tmp_path / "in", extra="bad \xff byte")
    with open(os.path.join(corpus, "b.txt"), "wb") as f:
        f.write(b"caf\xc3\xa9 \xff\xfe\x00\x07 end\n" * 3)
    result = train_tokenizer(
        corpus, tmp_path / "out", TokenizerConfig(vocab_size=400, ascii_only=True)
    )
    stats = result.stats
    assert stats.replaced_bytes == 6 and stats.removed_controls == 6
    assert stats.removed_non_ascii == 3 + 6 + 1  # é, the replacement characters, the \xff text
    sp = load_tokenizer(result.model_path)
    assert sp.piece_to_id("é") == sp.unk_id()  # nothing non-ASCII was learned
    assert sp.decode(sp.encode("é")) == "é"  # byte fallback still encodes it


def test_jsonl_text_fields(tmp_path):
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "d.jsonl", "w") as f:
        for i, line in enumerate(english_lines(600)):
            f.write(
                json.dumps({"instruction": f"Explain item {i}.", "output": line, "meta": "zzzz"})
            )
            f.write("\n")
        f.write("{broken\n")
    result = train_tokenizer(tmp_path / "in", tmp_path / "out", SMALL)
    assert result.stats.jsonl_records == 600 and result.stats.bad_records == 1
    assert result.stats.lines_out == 1200
    with pytest.raises(DataError, match=r"d\.jsonl:601"):
        cfg = TokenizerConfig(vocab_size=400, on_bad_record="fail")
        train_tokenizer(tmp_path / "in", tmp_path / "out2", cfg)


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        train_tokenizer(tmp_path / "nope", tmp_path / "out", SMALL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no"):
        train_tokenizer(tmp_path / "empty", tmp_path / "out", SMALL)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("\n  \n\x00\n")
    with pytest.raises(DataError, match="no text left"):
        train_tokenizer(tmp_path / "blank", tmp_path / "out", SMALL)


def test_vocab_too_high_keeps_existing_model(trained, tmp_path):
    corpus, result, _ = trained
    out = tmp_path / "out"
    out.mkdir()
    with open(result.model_path, "rb") as f:
        old = f.read()
    (out / "spiece.model").write_bytes(old)
    cfg = TokenizerConfig(vocab_size=50_000, hard_vocab_limit=True)
    with pytest.raises(DataError, match=r"50000.*<= \d+"):
        train_tokenizer(corpus, out, cfg)
    assert (out / "spiece.model").read_bytes() == old
    assert os.listdir(out) == ["spiece.model"]  # no temporary directory left behind
    soft = train_tokenizer(corpus, out, TokenizerConfig(vocab_size=50_000))
    assert 300 < soft.piece_size < 50_000


def test_config_validation():
    with pytest.raises(ValueError, match=r"vocab_size=200 must be > 265"):
        TokenizerConfig(vocab_size=200)
    assert TokenizerConfig(vocab_size=200, byte_fallback=False).reserved_pieces == 9
    with pytest.raises(ValueError, match="model_type"):
        TokenizerConfig(model_type="word")
    assert parse_symbols(" <A>, <B> ") == ("<A>", "<B>")
    assert parse_symbols("") == ()
    for bad in ("<A>,<A>", "<A>,,<B>", "<pad>"):
        with pytest.raises(ValueError):
            parse_symbols(bad)


def test_load_and_check_helpers(trained, tmp_path):
    _, result, sp = trained
    check_piece_count(sp, 400)
    with pytest.raises(DataError, match=r"400 pieces.*512"):
        check_piece_count(sp, 512, what="the embedding's vocabulary")
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")
    with pytest.raises(DataError, match="no piece '<TOOL>'"):
        symbol_ids(sp, ("<INST>", "<TOOL>"))


def test_normalize_spaces_also_governs_encoding(trained, tmp_path):
    corpus, _, sp = trained
    code = "def f(x):\n    return  x"
    collapsed = sp.decode(sp.encode(code))
    assert collapsed != code and "  " not in collapsed  # runs of spaces collapse
    result = train_tokenizer(
        corpus, tmp_path, TokenizerConfig(vocab_size=400, normalize_spaces=False)
    )
    exact = load_tokenizer(result.model_path)
    assert exact.decode(exact.encode(code)) == code
