"""Training metrics: a JSONL log, TensorBoard scalars, a compact console line and a progress bar.

`MetricsLogger` appends one JSON object per `log` call to `<workdir>/metrics.jsonl` (flushed at
once, so a killed run keeps everything it logged) and mirrors the numbers to TensorBoard through
tensorboardX (`<workdir>/tb`, no TensorFlow needed). Only process 0 writes; every other process
gets a logger whose calls do nothing, so a multi-host loop can call it unconditionally.

`format_line` renders one console line per log interval and `progress` wraps tqdm, switched off
when stderr is not a terminal or on processes other than 0.

JSON records are flat: `{"step": 12, "time": 1712.3, "train/loss": 0.41, "train/util": [...]}`
where the key is `<prefix>/<name>` (or `<name>` without prefix) and `time` is the Unix time.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

__all__ = [
    "PEAK_FLOPS",
    "MetricSums",
    "MetricsLogger",
    "compiled_flops",
    "default_peak_flops",
    "format_line",
    "progress",
    "throughput",
    "to_jsonable",
]

# Arrays up to this many elements are logged as JSON lists; larger ones as a summary.
MAX_JSON_ARRAY = 4096
# 1-D arrays up to this many elements go to TensorBoard as one scalar per element (`name/i`).
MAX_TB_SCALARS = 256


def _float(x: float) -> float | None:
    # JSON has no NaN/Infinity; a null reads as "not a number" in every parser.
    return x if math.isfinite(x) else None


def to_jsonable(value: Any) -> Any:
    """Converts numbers, numpy/jax scalars and arrays and containers to plain JSON values.

    Non-finite floats become `None`; arrays with more than `MAX_JSON_ARRAY` elements become a
    summary dict (shape, dtype, mean, min, max); mappings keep their (stringified) keys.

    Args:
      value: any Python, numpy or jax value.

    Returns:
      A value `json.dumps` accepts with `allow_nan=False`.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic) or hasattr(value, "__array__"):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            if arr.ndim == 0:
                return to_jsonable(arr.item())
            if arr.size > MAX_JSON_ARRAY:
                a = arr.astype(np.float32)
                return {
                    "shape": list(arr.shape),
                    "dtype": str(arr.dtype),
                    "mean": _float(float(a.mean())),
                    "min": _float(float(a.min())),
                    "max": _float(float(a.max())),
                }
            return to_jsonable(arr.tolist())
        if arr.ndim == 0:
            return str(arr.item())
    return str(value)


def _resolve_process_index(process_index: int | None) -> int:
    if process_index is not None:
        return int(process_index)
    return jax.process_index()


class MetricsLogger:
    """Writes metrics to `<workdir>/metrics.jsonl` and TensorBoard, on process 0 only.

    Usable as a context manager; `close()` is idempotent.
    """

    def __init__(
        self,
        workdir: str | Path,
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
        self.workdir = Path(workdir)
        self.active = _resolve_process_index(process_index) == 0
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self._file = None
        self._writer = None
        if not self.active:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open.
        if tensorboard:
            self._writer = SummaryWriter(str(self.workdir / "tb"))

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Appends one JSON line and writes the numeric values to TensorBoard.

        Args:
          step: global training step (the x axis in TensorBoard).
          metrics: name -> number, numpy/jax scalar or small array (e.g. per-expert utilisation),
            or a nested mapping (flattened to `outer/inner`).
          prefix: prepended to every name as `prefix/name` (e.g. "train", "eval", "epoch").
        """
        if not self.active or self._file is None:
            return
        flat = _flatten(metrics, prefix)
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: to_jsonable(v) for k, v in flat.items()})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
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
        if not self.active or self._file is None:
            return 0
        self._file.close()
        lines = self.jsonl_path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                if int(json.loads(line).get("step", 0)) > step:
                    continue
            except (ValueError, AttributeError, TypeError):
                continue  # a torn last line from a killed run
            kept.append(line)
        if len(kept) != len(lines):
            tmp = self.jsonl_path.with_name(f".{self.jsonl_path.name}.tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            tmp.replace(self.jsonl_path)
        self._file = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open.
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

    def close(self) -> None:
        """Flushes and closes the files."""
        if self._file is not None:
            self._file.close()
            self._file = None
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


# Console names: long metric names shown short.
_SHORT = {
    "accuracy": "acc",
    "gate_entropy": "H",
    "entropy": "H",
    "utilisation": "util",
    "utilization": "util",
}
# Durations shown as "12.3s" without a name; other keys ending in "_s" keep theirs.
_TIME_KEYS = ("time", "seconds", "wall", "wall_s", "epoch_s", "epoch_time", "elapsed", "dt")


def _fmt_number(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def format_line(metrics: Mapping[str, Any]) -> str:
    """Renders metrics as one compact console line.

    `epoch 3 | loss 0.123 | acc 98.1% | H 1.23 | util [0.31 0.40 0.29] | 12.3s`: integers as
    they are, names containing "acc" as a percentage (fractions in [0, 1] are scaled by 100),
    vectors as `[a b c]` with two decimals (integers as they are; None/NaN as "-"), durations
    (`time`, `wall_s`, `epoch_s`, ...) as seconds without a name, other `*_s` keys as seconds,
    other floats with 4 significant digits; "accuracy" in a name is shortened to "acc".

    Args:
      metrics: name -> value (numbers, numpy/jax scalars, 1-D arrays, strings).

    Returns:
      The line, without a newline.
    """
    parts = []
    for key, value in metrics.items():
        name = _SHORT.get(key, key.replace("accuracy", "acc"))
        if isinstance(value, str) or value is None:
            parts.append(f"{name} {value}")
            continue
        if isinstance(value, list | tuple) and any(v is None for v in value):
            value = [np.nan if v is None else v for v in value]  # shown as "-"
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            parts.append(f"{name} {value}")
        elif arr.ndim >= 1:
            fmt = "{:d}" if arr.dtype.kind in "biu" else "{:.2f}"
            cells = [fmt.format(v) if v == v else "-" for v in arr.reshape(-1).tolist()]
            parts.append(f"{name} [{' '.join(cells)}]")
        elif arr.dtype.kind in "biu":
            parts.append(f"{name} {int(arr)}")
        elif key in _TIME_KEYS:
            parts.append(f"{float(arr):.1f}s")
        elif key.endswith("_s"):
            parts.append(f"{name} {float(arr):.1f}s")
        elif "acc" in key.lower():
            pct = float(arr) * 100.0 if 0.0 <= float(arr) <= 1.0 else float(arr)
            parts.append(f"{name} {pct:.1f}%")
        else:
            parts.append(f"{name} {_fmt_number(float(arr))}")
    return " | ".join(parts)


def progress(
    iterable: Iterable[Any],
    total: int | None = None,
    desc: str | None = None,
    enabled: bool | None = None,
    *,
    process_index: int | None = None,
) -> Iterable[Any]:
    """Wraps an iterable in a tqdm progress bar on stderr.

    Args:
      iterable: what to iterate over.
      total: number of items, when `len(iterable)` is not defined.
      desc: label shown before the bar.
      enabled: force the bar on or off; `None` enables it only when stderr is a terminal and
        this is process 0.
      process_index: this process's index; `None` asks jax (only when `enabled` is `None`).

    Returns:
      A tqdm iterator (a pass-through when disabled; `.disable` tells which).
    """
    if enabled is None:
        isatty = getattr(sys.stderr, "isatty", None)
        enabled = bool(isatty and isatty()) and _resolve_process_index(process_index) == 0
    return tqdm(
        iterable, total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True
    )


# Peak dense FLOP/s per device for MFU (bf16 on accelerators; f32 XLA matmul on the 2-core CPU
# development machine, measured: about 165 GFLOP/s for the whole process).
PEAK_FLOPS = {"cpu": 165e9, "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12,
              "tpu v5p": 459e12, "h100": 989e12, "h200": 989e12, "a100": 312e12}  # fmt: skip


def default_peak_flops(devices=None) -> float:
    """Peak FLOP/s of ``devices`` (default: all), from :data:`PEAK_FLOPS` (CPU: per process)."""
    devices = list(jax.devices() if devices is None else devices)
    kind = devices[0].device_kind.lower()
    if devices[0].platform == "cpu":
        return PEAK_FLOPS["cpu"] * jax.process_count()
    for name, peak in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if name in kind:
            return peak * len(devices)
    return float("nan")


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled jax function (its cost analysis; NaN if unavailable)."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # Some backends do not report a cost analysis.
        return float("nan")


class MetricSums:
    """Sums of host metrics over steps (arrays elementwise)."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.count = 0

    def add(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + np.asarray(v, np.float64)
        self.count += 1

    def merge(self, other: MetricSums) -> None:
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += other.count

    def to_json(self) -> dict[str, Any]:
        """A JSON-able copy (saved with a checkpoint, so a resumed period's means are exact)."""
        return {
            "count": self.count,
            "sums": {k: np.asarray(v).tolist() for k, v in self.sums.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> MetricSums:
        out = cls()
        if data:
            out.count = int(data["count"])
            out.sums = {k: np.asarray(v, np.float64) for k, v in data["sums"].items()}
        return out

    def means(self) -> dict[str, Any]:
        n = max(self.count, 1)
        return {k: (v / n).tolist() if np.ndim(v) else float(v / n) for k, v in self.sums.items()}


def throughput(sums: MetricSums, seconds: float, flops: float, peak: float) -> dict[str, float]:
    """steps/s, tokens/s (when the steps report ``tokens``) and MFU of ``sums.count`` steps.

    Args:
      sums: the steps' summed metrics.
      seconds: wall time they took.
      flops: FLOPs of one step (:func:`compiled_flops`; NaN: no MFU).
      peak: peak FLOP/s of the devices that ran them.
    """
    steps = sums.count
    out: dict[str, float] = {"steps_per_sec": steps / max(seconds, 1e-9)}
    if "tokens" in sums.sums:
        out["tokens_per_sec"] = float(sums.sums["tokens"]) / max(seconds, 1e-9)
    if math.isfinite(flops) and math.isfinite(peak) and peak > 0:
        out["mfu"] = flops * steps / max(seconds, 1e-9) / peak
    return out
