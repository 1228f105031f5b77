"""The run's metric log: ``<workdir>/metrics.jsonl`` and TensorBoard, written by process 0.

`MetricsLogger` appends one JSON object per `log` call to `<workdir>/metrics.jsonl` (flushed at
once, so a killed run keeps everything it logged) and mirrors the numbers to TensorBoard through
tensorboardX (`<workdir>/tb`, no TensorFlow needed). Only process 0 writes; every other process
gets a logger whose calls do nothing, so a multi-host loop can call it unconditionally.

JSON records are flat: `{"step": 12, "time": 1712.3, "train/loss": 0.41, "train/util": [...]}`
where the key is `<prefix>/<name>` (or `<name>` without prefix) and `time` is the Unix time.

Object-store workdirs (``gs://...``, through ``etils.epath``) have no append: there the JSONL is
kept in memory and the object rewritten whole at each log call (a few thousand short lines), and
TensorBoard is off (tensorboardX writes local files; point TensorBoard at a local copy).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath
from tensorboardX import SummaryWriter

from aura.train.metrics import _resolve_process_index, to_jsonable

__all__ = ["MetricsLogger", "is_remote"]

# 1-D arrays up to this many elements go to TensorBoard as one scalar per element (`name/i`).
MAX_TB_SCALARS = 256


def is_remote(path: str | epath.PathLike) -> bool:
    """Whether ``path`` is an object-store URL (``gs://``, ``s3://``, ...), not a local path."""
    return "://" in str(path)


class MetricsLogger:
    """Writes metrics to `<workdir>/metrics.jsonl` and TensorBoard, on process 0 only.

    Usable as a context manager; `close()` is idempotent.
    """

    def __init__(
        self,
        workdir: str | epath.PathLike,
        *,
        process_index: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        """Opens the log files (appending, so a resumed run continues the same files).

        Args:
          workdir: run directory; created if missing.
          process_index: this process's index; `None` asks jax. Only process 0 writes.
          tensorboard: also write TensorBoard event files under `<workdir>/tb`.
        """
        self.workdir = epath.Path(workdir)
        self.remote = is_remote(workdir)
        self.active = _resolve_process_index(process_index) == 0
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self._file = None
        self._lines: list[str] | None = None  # remote: the whole JSONL, rewritten per call
        self._writer = None
        if not self.active:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._open()
        if tensorboard and not self.remote:
            self._writer = SummaryWriter(str(self.workdir / "tb"))

    def _open(self) -> None:
        if self.remote:
            exists = self.jsonl_path.exists()
            self._lines = self.jsonl_path.read_text().splitlines(keepends=True) if exists else []
        else:
            self._file = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open.

    def _append(self, line: str) -> None:
        if self._lines is not None:
            self._lines.append(line)
            self.jsonl_path.write_text("".join(self._lines))
        else:
            self._file.write(line)
            self._file.flush()

    @property
    def _is_open(self) -> bool:
        return self._file is not None or self._lines is not None

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Appends one JSON line and writes the numeric values to TensorBoard.

        Args:
          step: global training step (the x axis in TensorBoard).
          metrics: name -> number, numpy/jax scalar or small array (e.g. per-expert utilisation),
            or a nested mapping (flattened to `outer/inner`).
          prefix: prepended to every name as `prefix/name` (e.g. "train", "eval", "epoch").
        """
        if not self.active or not self._is_open:
            return
        flat = _flatten(metrics, prefix)
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: to_jsonable(v) for k, v in flat.items()})
        self._append(json.dumps(record, allow_nan=False) + "\n")
        if self._writer is not None:
            for tag, value in flat.items():
                self._write_tb(tag, value, int(step))
            self._writer.flush()

    def truncate_after(self, step: int) -> int:
        """Drops JSONL rows logged after ``step`` (a resumed run repeats those steps).

        Returns:
          How many rows were dropped. TensorBoard keeps its events (it shows the latest value
          of a repeated step).
        """
        if not self.active or not self._is_open:
            return 0
        self.close_jsonl()
        exists = self.jsonl_path.exists()
        lines = self.jsonl_path.read_text().splitlines(keepends=True) if exists else []
        kept = []
        for line in lines:
            try:
                if int(json.loads(line).get("step", 0)) > step:
                    continue
            except (ValueError, AttributeError, TypeError):
                continue  # a torn last line from a killed run
            kept.append(line)
        if len(kept) != len(lines):
            if self.remote:  # an object write is atomic
                self.jsonl_path.write_text("".join(kept))
            else:
                tmp = self.jsonl_path.with_name(f".{self.jsonl_path.name}.tmp")
                tmp.write_text("".join(kept), encoding="utf-8")
                tmp.replace(self.jsonl_path)
        self._open()
        return len(lines) - len(kept)

    def _write_tb(self, tag: str, value: Any, step: int) -> None:
        if isinstance(value, str) or value is None:
            return
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            return
        if arr.dtype.kind not in "biuf" or arr.size == 0:
            return
        arr = arr.astype(np.float32)
        if arr.ndim == 0:
            self._writer.add_scalar(tag, float(arr), step)
        elif arr.ndim == 1 and arr.size <= MAX_TB_SCALARS:
            for i, v in enumerate(arr):
                self._writer.add_scalar(f"{tag}/{i}", float(v), step)
        else:
            self._writer.add_histogram(tag, arr.reshape(-1), step)  # [any] -> [N]

    def close_jsonl(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._lines = None, None

    def close(self) -> None:
        """Flushes and closes the files."""
        self.close_jsonl()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flatten(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, name))
        else:
            out[name] = v
    return out
