"""Streaming, sharded, checkpointable instruction batches for language-model training (grain).

The pipeline (:func:`lm_batches`), per host:

1. :class:`JsonlLines`: this host's share of the JSONL bytes, read line by line (``etils.epath``,
   so ``gs://`` works), epoch after epoch. The files' bytes, concatenated, are split into
   ``process_count`` equal ranges; a line belongs to the range holding its first byte, so every
   line is read by exactly one host and no host tokenises or even reads the others' records.
2. ``WindowShuffleIterDataset``: shuffled within a bounded window of ``shuffle_window`` lines
   (reseeded per window), so memory stays flat whatever the file size.
3. parse + validate + tokenise each line (``InstructFormatter``); bad lines are skipped and
   counted (``on_bad_record="skip"``) or raise `DataError` naming ``file:line``.
4. rows of ``width`` tokens: packed (``FirstFitPackIterDataset``: several records per row, with
   each token's ``positions`` within its record and ``segments``, 1.. per record, 0 = padding) or
   one record per row (the same fields, so the step is the same).
5. ``batch`` into ``rows`` rows, then ``ThreadPrefetchIterDataset``: steps 1-4 run in grain's
   worker thread, ahead of the training step (tokenisation overlaps the device step).

The iterator is checkpointable: ``get_state()`` is a small JSON dict (the window's start byte
offset, the position within the window, the packer's state) and ``set_state`` continues at the
exact record, so a resumed run sees exactly the batches an uninterrupted run would.

Shapes: R rows per batch, W tokens per row.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from typing import Any

import grain
import grain.experimental as grain_exp
import numpy as np
from etils import epath

from aura.data.errors import DataError
from aura.data.instruct import InstructFormatter, find_jsonl_files, parse_record

__all__ = ["JsonlLines", "StreamStats", "byte_ranges", "encode_row", "lm_batches", "pack_rows"]

FIELDS = ("ids", "mask", "positions", "segments")


@dataclasses.dataclass
class StreamStats:
    """Counters of the lines read by this process's pipeline (thread-safe)."""

    records: int = 0
    bad_records: int = 0
    bad_examples: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def bad(self, where: str, reason: str) -> None:
        with self.lock:
            self.bad_records += 1
            if len(self.bad_examples) < 5:
                self.bad_examples.append(f"{where}: {reason}")


def byte_ranges(files: Sequence[str], index: int, count: int) -> list[tuple[str, int, int, bool]]:
    """This host's ``(file, start, end, starts_at_line_1)`` byte ranges: the ``index``-th of
    ``count`` equal slices of the files' concatenated bytes."""
    sizes = [epath.Path(f).stat().length for f in files]
    total = sum(sizes)
    lo, hi = total * index // count, total * (index + 1) // count
    out, base = [], 0
    for f, size in zip(files, sizes, strict=True):
        s, e = max(lo - base, 0), min(hi - base, size)
        if s < e:
            out.append((f, s, e, s == 0))
        base += size
    return out


class _LinesIterator(grain.DatasetIterator):
    """Reads (line bytes, where) from byte ranges, forever; state: epoch, range, offset, line."""

    def __init__(self, ranges: list[tuple[str, int, int, bool]]):
        super().__init__()
        self.ranges = ranges
        self.epoch, self.range, self.offset, self.line = 0, 0, -1, 0
        self._file = None

    def _open(self) -> None:
        f, start, _, _ = self.ranges[self.range]
        self._close()
        self._file = epath.Path(f).open("rb")
        if self.offset < 0:  # a range's first line: the one starting at or after `start`
            self.offset, self.line = start, 0
            if start > 0:
                self._file.seek(start - 1)
                self.offset = start - 1 + len(self._file.readline())
        self._file.seek(self.offset)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __next__(self) -> tuple[bytes, str]:
        while True:
            if self._file is None:
                self._open()
            f, _, end, from_top = self.ranges[self.range]
            if self.offset < end:
                raw = self._file.readline()
                if raw:
                    self.offset += len(raw)
                    self.line += 1
                    if raw.strip():
                        where = f"{f}:{self.line}" if from_top else f"{f}@byte{self.offset}"
                        return raw, where
                    continue
            self._close()  # the range is done: the next one (a new epoch after the last)
            self.range, self.offset = self.range + 1, -1
            if self.range == len(self.ranges):
                self.epoch, self.range = self.epoch + 1, 0

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "range": self.range, "offset": self.offset, "line": self.line}

    def set_state(self, state: dict[str, Any]) -> None:
        self._close()
        self.epoch, self.range = int(state["epoch"]), int(state["range"])
        self.offset, self.line = int(state["offset"]), int(state["line"])


class JsonlLines(grain.IterDataset):
    """The non-blank lines of this host's byte ranges of ``files``, repeated epoch after epoch.

    Raises:
      DataError: no bytes for this host (files smaller than the number of hosts).
    """

    def __init__(self, files: Sequence[str], process_index: int = 0, process_count: int = 1):
        super().__init__()
        self.ranges = byte_ranges(list(files), process_index, process_count)
        if not self.ranges:
            raise DataError(
                f"{list(files)}: no bytes for process {process_index} of {process_count}; "
                "give more data than hosts"
            )

    def __iter__(self) -> _LinesIterator:
        return _LinesIterator(self.ranges)


def encode_row(enc, width: int) -> dict[str, np.ndarray]:
    """One record alone in a row of ``width``: ids, mask, positions, segments (pads: 0)."""
    n = enc.length
    row = {k: np.zeros((width,), np.float32 if k == "mask" else np.int32) for k in FIELDS}
    row["ids"][:n], row["mask"][:n] = enc.ids[:n], enc.loss_mask[:n]
    row["positions"][:n], row["segments"][:n] = np.arange(n), 1
    return row


def _packed(ds: grain.IterDataset, width: int, bins: int) -> grain.IterDataset:
    """First-fit packing of {ids, mask} records into ``bins`` rows at a time."""
    packed = grain_exp.FirstFitPackIterDataset(
        ds, length_struct={"ids": width, "mask": width}, num_packing_bins=bins, shuffle_bins=False
    )
    return packed.map(
        lambda r: {
            "ids": r["ids"],
            "mask": r["mask"],
            "positions": r["ids_positions"],
            "segments": r["ids_segment_ids"],
        }  # fmt: skip
    )


def pack_rows(encoded: Sequence, width: int, pack: bool = True) -> dict[str, np.ndarray]:
    """All of ``encoded`` (``InstructFormatter.encode`` results) as rows ``[N, width]`` each,
    in order (first fit over the whole list when ``pack``); for evaluation."""
    if not pack:
        rows = [encode_row(e, width) for e in encoded]
    else:
        items = [{"ids": e.ids[: e.length], "mask": e.loss_mask[: e.length]} for e in encoded]
        src = grain.MapDataset.source(items).to_iter_dataset()
        rows = list(_packed(src, width, max(len(items), 1)))
    return {k: np.stack([r[k] for r in rows]) for k in FIELDS}


def _encoder(fmt: InstructFormatter, on_bad_record: str, stats: StreamStats):
    def encode(item: tuple[bytes, str]):
        raw, where = item
        try:
            record, reason = parse_record(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            record, reason = None, f"not UTF-8 (byte {e.start})"
        if record is None:
            if on_bad_record == "fail":
                raise DataError(f"{where}: {reason}; fix the line or use --on_bad_record skip")
            stats.bad(where, reason)
            return None
        enc = fmt.encode(record)
        with stats.lock:
            stats.records += 1
        mask = enc.loss_mask[: enc.length].copy()
        mask[0] = 0.0  # a record's first token is never a target (it would cross records)
        return {"ids": enc.ids[: enc.length], "mask": mask, "length": enc.length}

    return encode


def lm_batches(
    jsonl: str | Sequence[str],
    fmt: InstructFormatter,
    *,
    width: int,
    rows: int,
    pack: bool,
    seed: int,
    shuffle_window: int = 4096,
    prefetch: int = 4,
    process_index: int = 0,
    process_count: int = 1,
    on_bad_record: str = "skip",
    stats: StreamStats | None = None,
) -> grain.IterDataset:
    """The streaming pipeline of the module docstring: batches ``{ids, mask, positions,
    segments}``, each ``[rows, width]`` (int32; mask float32), forever.

    Raises:
      DataError: a missing file, or (lazily, from the iterator) a bad line under "fail".
    """
    stats = StreamStats() if stats is None else stats
    files = find_jsonl_files(jsonl)
    ds = JsonlLines(files, process_index, process_count)
    if shuffle_window > 1:
        ds = grain_exp.WindowShuffleIterDataset(ds, window_size=shuffle_window, seed=seed)
    ds = ds.map(_encoder(fmt, on_bad_record, stats)).filter(lambda r: r is not None)
    if pack:
        ds = _packed(ds.map(lambda r: {"ids": r["ids"], "mask": r["mask"]}), width, rows)
    else:
        ds = ds.map(lambda r: encode_row(_Enc(r["ids"], r["mask"], r["length"]), width))
    ds = ds.batch(rows, drop_remainder=True)
    if prefetch > 0:
        ds = grain_exp.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
    return ds


@dataclasses.dataclass(frozen=True)
class _Enc:
    ids: np.ndarray
    loss_mask: np.ndarray
    length: int


def state_json(iterator) -> str:
    """The iterator's state as compact JSON (saved with the training checkpoint)."""
    return json.dumps(iterator.get_state(), sort_keys=True, default=int)
