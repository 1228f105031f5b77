"""Instruction data: `{instruction, input, output}` JSONL records and their token formatting.

Reading (`iter_instruct`, `read_instruct`): each non-blank line of a `*.jsonl` file (or of
every `*.jsonl` under a directory, sorted) is a JSON object with string fields `instruction`
and `output` (both required and non-empty) and `input` (optional; missing or null means "").
A line that is not such a record is reported as `file:line: reason` and either skipped and
counted (`on_bad_record="skip"`) or raises `DataError` (`"fail"`). A source with no usable
record raises `DataError` that quotes the first problems.

Formatting (`InstructFormatter`), with the tokenizer's user symbols:

    [<s>] <INST> instruction [<INP> input] <RESP> output <SEP> [</s>]
    mask:  0     0  ...        0    ...      0     1 ...  1     1

`<INP> input` is left out when the input is empty. `loss_mask[t] == 1` exactly when `ids[t]`
is a response token (the output, the closing `<SEP>` and `</s>`): the loss of predicting
`ids[t]` from `ids[:t]` counts only there (`shift_for_next_token` lines the two up). A record
longer than `max_len` keeps at least half of `max_len` (or all) of its response, cut from the
right, and the prompt's end, cut from the left, the same rule the chat prompt uses; `pad_to`
pads with the pad id (0) and mask 0. User text that spells a symbol (for example "<SEP>")
encodes as that symbol, as SentencePiece matches user symbols anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import sentencepiece as spm

from aura.data.errors import DataError
from aura.data.tokenizer import DEFAULT_USER_SYMBOLS, symbol_ids

__all__ = [
    "Encoded",
    "InstructFormatter",
    "InstructRecord",
    "ReadStats",
    "find_jsonl_files",
    "iter_instruct",
    "parse_record",
    "read_instruct",
    "shift_for_next_token",
]

_MAX_REPORTED = 5


@dataclasses.dataclass(frozen=True)
class InstructRecord:
    """One instruction example; `where` is its `file:line`."""

    instruction: str
    input: str
    output: str
    where: str = ""


@dataclasses.dataclass
class ReadStats:
    """Counters filled by `iter_instruct`."""

    files: int = 0
    records: int = 0
    bad_records: int = 0
    bad_examples: list[str] = dataclasses.field(default_factory=list)


def find_jsonl_files(source: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """Lists `source` itself (a file), every `*.jsonl` under it (a directory), or the list given.

    Raises:
      DataError: a path that does not exist, or a directory without `*.jsonl` files.
    """
    if not isinstance(source, str | os.PathLike):
        files = [os.fspath(s) for s in source]
    elif os.path.isdir(source):
        files = []
        for root, dirs, names in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".jsonl")]
        files.sort()
        if not files:
            raise DataError(f"no *.jsonl files under {os.fspath(source)!r}")
    else:
        files = [os.fspath(source)]
    for f in files:
        if not os.path.isfile(f):
            raise DataError(
                f"instruction file {f!r} does not exist; build one with "
                "python -m aura.build corpus --out_dir DIR (it writes DIR/instruct.jsonl)"
            )
    return files


def parse_record(text: str) -> tuple[InstructRecord | None, str]:
    """Parses one JSONL line into a record, or returns (None, reason)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    fields = {}
    for name, required in (("instruction", True), ("input", False), ("output", True)):
        value = obj.get(name)
        if value is None:
            if required:
                keys = ", ".join(sorted(obj)) or "none"
                return None, f"missing field {name!r} (record has: {keys})"
            value = ""
        if not isinstance(value, str):
            return None, f"field {name!r} must be a string, got {type(value).__name__}"
        if required and not value.strip():
            return None, f"field {name!r} is empty"
        fields[name] = value
    return InstructRecord(**fields), ""


def iter_instruct(
    source: str | os.PathLike[str] | Sequence[str],
    *,
    on_bad_record: str = "skip",
    stats: ReadStats | None = None,
) -> Iterator[InstructRecord]:
    """Streams validated records from a `*.jsonl` file, a directory of them, or a list.

    Args:
      source: the JSONL source.
      on_bad_record: `"skip"` counts and skips a bad line (first few kept in
        `stats.bad_examples` as `file:line: reason`); `"fail"` raises `DataError` on it.
      stats: filled while iterating.

    Raises:
      DataError: a missing file, or a bad line under `on_bad_record="fail"`.
    """
    if on_bad_record not in ("skip", "fail"):
        raise ValueError(f"on_bad_record={on_bad_record!r} must be 'skip' or 'fail'")
    stats = ReadStats() if stats is None else stats
    for path in find_jsonl_files(source):
        stats.files += 1
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    record, reason = None, f"not UTF-8 (byte {e.start})"
                else:
                    record, reason = parse_record(text)
                if record is None:
                    if on_bad_record == "fail":
                        raise DataError(
                            f"{where}: {reason}; fix the line or use --on_bad_record skip"
                        )
                    stats.bad_records += 1
                    if len(stats.bad_examples) < _MAX_REPORTED:
                        stats.bad_examples.append(f"{where}: {reason}")
                    continue
                stats.records += 1
                yield dataclasses.replace(record, where=where)


def read_instruct(
    source: str | os.PathLike[str] | Sequence[str],
    *,
    on_bad_record: str = "skip",
    stats: ReadStats | None = None,
    limit: int | None = None,
) -> list[InstructRecord]:
    """Reads records like `iter_instruct` (at most `limit`).

    Raises:
      DataError: as `iter_instruct`, and when no usable record is found.
    """
    stats = ReadStats() if stats is None else stats
    records = []
    for record in iter_instruct(source, on_bad_record=on_bad_record, stats=stats):
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        detail = "; ".join(stats.bad_examples) or "the files hold no records"
        raise DataError(
            f"no usable instruction records in {source!r} ({stats.bad_records} bad lines: "
            f"{detail}); each line must be a JSON object with string fields "
            "'instruction', 'output' and optionally 'input'"
        )
    return records


class Encoded(NamedTuple):
    """One formatted example: `ids` int32 [L], `loss_mask` float32 [L], real `length`."""

    ids: np.ndarray
    loss_mask: np.ndarray
    length: int
    truncated: bool


class InstructFormatter:
    """Turns records into token ids and a response-only loss mask (see the module docstring).

    Args:
      sp: a SentencePiece processor trained with the four user symbols.
      max_len: the most tokens kept per example (>= 4).
      pad_to: pad every example to this length (>= max_len); None leaves them unpadded.
      add_bos: start with `<s>`.
      add_eos: end the response with `</s>` after `<SEP>`.
      symbols: the instruction, input, response and separator symbols, in that order.

    Raises:
      ValueError: bad lengths. DataError: the tokenizer lacks a symbol.
    """

    def __init__(
        self,
        sp: spm.SentencePieceProcessor,
        *,
        max_len: int,
        pad_to: int | None = None,
        add_bos: bool = True,
        add_eos: bool = True,
        symbols: tuple[str, str, str, str] = DEFAULT_USER_SYMBOLS,
    ):
        if max_len < 4:
            raise ValueError(f"max_len={max_len} must be >= 4")
        if pad_to is not None and pad_to < max_len:
            raise ValueError(f"pad_to={pad_to} must be >= max_len={max_len}")
        if len(symbols) != 4:
            raise ValueError(f"symbols={symbols} must name 4 pieces: <INST>, <INP>, <RESP>, <SEP>")
        self.sp, self.max_len, self.pad_to = sp, max_len, pad_to
        ids = symbol_ids(sp, tuple(symbols))
        self.inst_id, self.inp_id, self.resp_id, self.sep_id = (ids[s] for s in symbols)
        self.bos = [sp.bos_id()] if add_bos and sp.bos_id() >= 0 else []
        self.eos = [sp.eos_id()] if add_eos and sp.eos_id() >= 0 else []
        self.pad_id = max(sp.pad_id(), 0)

    def encode_prompt(self, instruction: str, input: str = "") -> list[int]:  # noqa: A002
        """The prompt part, ending with `<RESP>` (what generation starts from); not truncated."""
        ids = [*self.bos, self.inst_id, *self.sp.encode(instruction)]
        if input:
            ids += [self.inp_id, *self.sp.encode(input)]
        return [*ids, self.resp_id]

    def encode(self, record: InstructRecord) -> Encoded:
        """Formats, truncates and pads one record."""
        prompt = self.encode_prompt(record.instruction, record.input)
        response = [*self.sp.encode(record.output), self.sep_id, *self.eos]
        truncated = len(prompt) + len(response) > self.max_len
        if truncated:
            keep_response = min(len(response), max(self.max_len - len(prompt), self.max_len // 2))
            response = response[:keep_response]
            prompt = prompt[len(prompt) - (self.max_len - keep_response) :]
        length = len(prompt) + len(response)
        total = self.pad_to or length
        ids = np.full((total,), self.pad_id, np.int32)
        mask = np.zeros((total,), np.float32)
        ids[:length] = prompt + response
        mask[len(prompt) : length] = 1.0
        return Encoded(ids, mask, length, truncated)

    def encode_batch(self, records: Iterable[InstructRecord]) -> dict[str, np.ndarray]:
        """Encodes records into `ids` int32 [N, P], `loss_mask` float32 [N, P], `lengths` [N].

        P is `pad_to`, or `max_len` when `pad_to` is None.
        """
        width = self.pad_to or self.max_len
        rows = [self.encode(r) for r in records]
        ids = np.full((len(rows), width), self.pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.float32)
        for i, row in enumerate(rows):
            ids[i, : row.length] = row.ids[: row.length]
            mask[i, : row.length] = row.loss_mask[: row.length]
        return {
            "ids": ids,
            "loss_mask": mask,
            "lengths": np.array([r.length for r in rows], np.int32),
            "truncated": np.array([r.truncated for r in rows], bool),
        }


def shift_for_next_token(
    ids: np.ndarray, loss_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits `[..., L]` ids and mask into inputs, targets and weights, each `[..., L-1]`.

    `targets[..., t] = ids[..., t+1]` and `weights[..., t] = loss_mask[..., t+1]`: position t
    is trained to predict the next token only where that token is part of the response.
    """
    return ids[..., :-1], ids[..., 1:], loss_mask[..., 1:]
