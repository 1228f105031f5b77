"""SentencePiece tokenizer: training from a text directory, loading, and vocabulary checks.

`train_tokenizer` streams cleaned lines (`aura.data.text.iter_lines`) into SentencePiece, either
through `sentence_iterator=` (`use_iterator=True`, nothing written) or through a temporary
corpus file (`use_iterator=False`; both see the same lines and give the same pieces). It trains
into a temporary directory inside `out_dir` and then moves `spiece.vocab` and `spiece.model`
into place, so an existing tokenizer is never left half-written.

Fixed ids, whatever the corpus (`SPECIAL_IDS`):

    0 <pad>   1 <unk>   2 <s> (bos)   3 </s> (eos)
    4.. the user symbols in the order given (default <INST>=4 <INP>=5 <RESP>=6 <SEP>=7),
    then "\\n" (newline_symbol=True) so newlines survive encoding, then 256 byte pieces
    <0x00>..<0xFF> (byte_fallback=True) so any text round-trips, then the learned pieces.

Padding is id 0, so a zero-filled batch is all padding. Note that with `newline_symbol=True`
the human-readable `spiece.vocab` has one piece that is a line break (the model is unaffected).

Round trips: SentencePiece NFKC-normalises (compatibility characters such as "ﬁ" decode as
"fi"); with `normalize_spaces=True` it also collapses runs of spaces when encoding. With
`normalize_spaces=False` everything else, indentation included, decodes to the input exactly.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import sentencepiece as spm

from aura.data.errors import DataError
from aura.data.text import DEFAULT_TEXT_FIELDS, TextOptions, TextStats, iter_lines

__all__ = [
    "DEFAULT_USER_SYMBOLS",
    "MODEL_FILE",
    "SPECIAL_IDS",
    "VOCAB_FILE",
    "TokenizerConfig",
    "TokenizerResult",
    "check_piece_count",
    "load_tokenizer",
    "parse_symbols",
    "symbol_ids",
    "train_tokenizer",
]

SPECIAL_IDS: dict[str, int] = {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
DEFAULT_USER_SYMBOLS: tuple[str, str, str, str] = ("<INST>", "<INP>", "<RESP>", "<SEP>")
MODEL_FILE = "spiece.model"
VOCAB_FILE = "spiece.vocab"
_RESERVED_PIECES = ("<pad>", "<unk>", "<s>", "</s>")
_MODEL_TYPES = ("unigram", "bpe")


def parse_symbols(text: str) -> tuple[str, ...]:
    """Parses ``"<INST>,<INP>"`` into ``("<INST>", "<INP>")`` (empty string: no symbols).

    Raises:
      ValueError: a duplicate, blank or reserved (<pad>, <unk>, <s>, </s>) symbol.
    """
    symbols = tuple(s.strip() for s in text.split(",")) if text.strip() else ()
    for s in symbols:
        if not s:
            raise ValueError(f"user_symbols={text!r} has an empty entry; use 'A,B,C'")
        if s in _RESERVED_PIECES:
            raise ValueError(
                f"user symbol {s!r} is reserved; reserved: {', '.join(_RESERVED_PIECES)}"
            )
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"user_symbols={text!r} has duplicates")
    return symbols


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """SentencePiece training options (the flags of `python -m aura.build tokenizer`).

    Attributes:
      vocab_size: pieces wanted, specials, user symbols and byte pieces included.
      model_type: `unigram` or `bpe`.
      use_iterator: stream lines with `sentence_iterator=`; False writes a temporary file.
      ascii_only: drop every non-ASCII character before training (counted).
      user_symbols: pieces that always encode as one token (ids 4, 5, ...).
      newline_symbol: also add "\\n" as a user symbol so newlines survive encoding.
      byte_fallback: encode unknown characters as UTF-8 byte pieces instead of <unk>.
      clean_controls: remove NUL and other control characters (counted).
      normalize_spaces: collapse runs of whitespace and strip lines, in the training text and
        (SentencePiece's `remove_extra_whitespaces`) whenever the model encodes; False keeps
        every space, so indented code round-trips exactly.
      max_sentence_length: longest line in UTF-8 bytes; longer lines are split, not dropped.
      hard_vocab_limit: fail when the corpus cannot fill `vocab_size`; False trains fewer.
      input_sentence_size: lines SentencePiece samples at most (0: all of them).
      shuffle_input_sentence: sample those lines at random rather than taking the first.
      num_threads: SentencePiece trainer threads (0: one per CPU core).
      text_fields: string fields read from `*.jsonl` records.
      on_bad_record: `skip` or `fail` on a `*.jsonl` line that is not a JSON object.
      verbose: let SentencePiece log its progress.
    """

    vocab_size: int = 4000
    model_type: str = "unigram"
    use_iterator: bool = True
    ascii_only: bool = False
    user_symbols: tuple[str, ...] = DEFAULT_USER_SYMBOLS
    newline_symbol: bool = True
    byte_fallback: bool = True
    clean_controls: bool = True
    normalize_spaces: bool = True
    max_sentence_length: int = 4192
    hard_vocab_limit: bool = False
    input_sentence_size: int = 1_000_000
    shuffle_input_sentence: bool = True
    num_threads: int = 0
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    on_bad_record: str = "skip"
    verbose: bool = False

    def __post_init__(self):
        if self.model_type not in _MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r} must be one of {_MODEL_TYPES}")
        reserved = self.reserved_pieces
        if self.vocab_size <= reserved:
            raise ValueError(
                f"vocab_size={self.vocab_size} must be > {reserved} (4 special pieces + "
                f"{len(self.all_user_symbols)} user symbols"
                + (" + 256 byte pieces)" if self.byte_fallback else ")")
            )
        if self.max_sentence_length < 4:
            raise ValueError(f"max_sentence_length={self.max_sentence_length} must be >= 4")
        if self.input_sentence_size < 0 or self.num_threads < 0:
            raise ValueError(
                f"input_sentence_size={self.input_sentence_size} and "
                f"num_threads={self.num_threads} must be >= 0"
            )
        self.text_options()  # validates on_bad_record and text_fields

    @property
    def all_user_symbols(self) -> tuple[str, ...]:
        """The user symbols in id order, the newline piece included when enabled."""
        return (*self.user_symbols, "\n") if self.newline_symbol else self.user_symbols

    @property
    def reserved_pieces(self) -> int:
        """Pieces that are not learned: specials, user symbols and byte pieces."""
        return 4 + len(self.all_user_symbols) + (256 if self.byte_fallback else 0)

    def text_options(self) -> TextOptions:
        """The cleaning options of the lines SentencePiece trains on."""
        return TextOptions(
            clean_controls=self.clean_controls,
            normalize_spaces=self.normalize_spaces,
            ascii_only=self.ascii_only,
            max_line_bytes=self.max_sentence_length,
            text_fields=self.text_fields,
            on_bad_record=self.on_bad_record,
        )


@dataclasses.dataclass
class TokenizerResult:
    """What `train_tokenizer` produced."""

    model_path: str
    vocab_path: str
    piece_size: int
    vocab_size_requested: int
    seconds: float
    stats: TextStats

    def as_dict(self) -> dict:
        """A JSON-friendly summary (paths, counts, cleaning statistics)."""
        out = dataclasses.asdict(self)
        out["stats"] = self.stats.as_dict()
        return out


class _Recorder:
    """Wraps an iterator so an exception inside it survives SentencePiece's C++ boundary."""

    def __init__(self, it):
        self.it, self.error = it, None

    def __iter__(self):
        try:
            yield from self.it
        except Exception as e:  # re-raised by train_tokenizer once SentencePiece returns
            self.error = e


def _trainer_kwargs(cfg: TokenizerConfig, prefix: str) -> dict:
    return dict(
        model_prefix=prefix,
        vocab_size=cfg.vocab_size,
        model_type=cfg.model_type,
        character_coverage=1.0 if cfg.ascii_only else 0.9995,
        byte_fallback=cfg.byte_fallback,
        user_defined_symbols=list(cfg.all_user_symbols),
        pad_id=SPECIAL_IDS["pad"],
        unk_id=SPECIAL_IDS["unk"],
        bos_id=SPECIAL_IDS["bos"],
        eos_id=SPECIAL_IDS["eos"],
        max_sentence_length=cfg.max_sentence_length,
        remove_extra_whitespaces=cfg.normalize_spaces,
        hard_vocab_limit=cfg.hard_vocab_limit,
        input_sentence_size=cfg.input_sentence_size,
        shuffle_input_sentence=cfg.shuffle_input_sentence,
        num_threads=cfg.num_threads or max(1, os.cpu_count() or 1),
        minloglevel=0 if cfg.verbose else 2,
    )


def train_tokenizer(
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: TokenizerConfig = TokenizerConfig(),
) -> TokenizerResult:
    """Trains a SentencePiece model on the text under `input_path`; writes it to `out_dir`.

    Args:
      input_path: a directory of `*.txt`/`*.jsonl` files (recursive), or one such file.
      out_dir: receives `spiece.model` and `spiece.vocab` (created if missing).
      config: training options.

    Returns:
      Paths, the piece count and the cleaning statistics.

    Raises:
      DataError: missing input, no text left after cleaning, a bad JSONL line under
        `on_bad_record="fail"`, or a corpus too small for `vocab_size` with `hard_vocab_limit`.
    """
    input_path, out_dir = os.fspath(input_path), os.fspath(out_dir)
    stats = TextStats()
    lines = iter_lines(input_path, config.text_options(), stats)
    # Surface "missing input" / "no files" before any temporary directory is made.
    first = next(lines, None)
    if first is None:
        raise DataError(f"no text left in {input_path!r} after cleaning ({stats.files} files)")
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".spiece-", dir=out_dir)
    start = time.perf_counter()
    try:
        prefix = os.path.join(tmp, "spiece")
        kwargs = _trainer_kwargs(config, prefix)

        def all_lines():
            yield first
            yield from lines

        recorder = _Recorder(all_lines())
        try:
            if config.use_iterator:
                spm.SentencePieceTrainer.train(sentence_iterator=iter(recorder), **kwargs)
            else:
                corpus = os.path.join(tmp, "corpus.txt")
                with open(corpus, "w", encoding="utf-8") as f:
                    for line in recorder:
                        f.write(line + "\n")
                if recorder.error is None:
                    spm.SentencePieceTrainer.train(input=corpus, **kwargs)
        except RuntimeError as e:
            if recorder.error is not None:
                raise recorder.error from None
            raise DataError(
                f"SentencePiece could not train on {input_path!r} ({stats.lines_out} lines, "
                f"{stats.chars_out} characters): {str(e).strip().splitlines()[0]} (set "
                "--vocab_size as SentencePiece says, give more text, or use --hard_vocab_limit 0)"
            ) from None
        if recorder.error is not None:
            raise recorder.error
        model_path = os.path.join(out_dir, MODEL_FILE)
        vocab_path = os.path.join(out_dir, VOCAB_FILE)
        os.replace(prefix + ".vocab", vocab_path)
        os.replace(prefix + ".model", model_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    sp = load_tokenizer(model_path)
    if config.hard_vocab_limit:
        check_piece_count(sp, config.vocab_size, what="--vocab_size")
    return TokenizerResult(
        model_path=model_path,
        vocab_path=vocab_path,
        piece_size=sp.get_piece_size(),
        vocab_size_requested=config.vocab_size,
        seconds=seconds,
        stats=stats,
    )


def load_tokenizer(path: str | os.PathLike[str]) -> spm.SentencePieceProcessor:
    """Loads a SentencePiece model from a `.model` file or a directory holding `spiece.model`.

    Raises:
      DataError: the file is missing or is not a SentencePiece model.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(path):
        raise DataError(
            f"tokenizer model {path!r} does not exist; train one with "
            "python -m aura.build tokenizer --input_dir DIR --out_dir DIR"
        )
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(path)
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path!r} is not a SentencePiece model: {e}") from None
    return sp


def check_piece_count(
    sp: spm.SentencePieceProcessor | int, expected: int, *, what: str = "the model vocabulary"
) -> None:
    """Raises `DataError` naming both numbers when the tokenizer's piece count != `expected`.

    Args:
      sp: a loaded processor, or its piece count.
      expected: the vocabulary size that must match (for example an embedding's rows).
      what: how to name `expected` in the message.
    """
    pieces = sp if isinstance(sp, int) else sp.get_piece_size()
    if pieces != expected:
        raise DataError(
            f"tokenizer has {pieces} pieces but {what} is {expected}; use the tokenizer the "
            "model was trained with, or set the vocabulary size to the tokenizer's piece count"
        )


def symbol_ids(
    sp: spm.SentencePieceProcessor, symbols: tuple[str, ...] = DEFAULT_USER_SYMBOLS
) -> dict[str, int]:
    """Maps each symbol to its single piece id.

    Raises:
      DataError: a symbol is not one piece of this tokenizer (it was trained without it).
    """
    ids = {}
    for s in symbols:
        i = sp.piece_to_id(s)
        if i == sp.unk_id() and s != sp.id_to_piece(sp.unk_id()):
            raise DataError(
                f"tokenizer has no piece {s!r}; retrain it with "
                f"--user_symbols {','.join(symbols)!r}"
            )
        ids[s] = i
    return ids
