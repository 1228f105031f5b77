"""Training metrics: FLOPs and MFU, metric sums and rates, JSON values, the console line.

* FLOPs and MFU (the one implementation; the loop and the benchmarks use it):
  :func:`compiled_flops` (XLA's cost analysis of the compiled step), :data:`PEAK_FLOPS` with
  :func:`default_peak_flops` and :func:`parse_peak_flops` (``--peak_flops``), :func:`mfu`;
* :class:`MetricSums` and :func:`throughput` (steps/s, ``<count>_per_sec`` of every token
  count, MFU);
* :func:`to_jsonable`, :func:`format_line` (one console line per log interval) and
  :func:`progress` (tqdm, off when stderr is not a terminal or on processes other than 0).

The JSONL/TensorBoard writer is `aura.train.logs.MetricsLogger`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

__all__ = [
    "PEAK_FLOPS",
    "MetricSums",
    "compiled_flops",
    "default_peak_flops",
    "format_line",
    "mfu",
    "parse_peak_flops",
    "progress",
    "throughput",
    "to_jsonable",
]

# Arrays up to this many elements are logged as JSON lists; larger ones as a summary.
MAX_JSON_ARRAY = 4096


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


# Console names: long metric names shown short.
_SHORT = {
    "accuracy": "acc",
    "gate_entropy": "H",
    "entropy": "H",
    "utilisation": "util",
    "utilization": "util",
    "tokens_per_sec": "real tok/s",  # non-padding input tokens (prompt and response) per second
    "scored_tokens_per_sec": "scored tok/s",  # response tokens with a loss per second
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


# Peak dense FLOP/s per device for MFU; ``--peak_flops`` takes a number or one of these names.
# cpu: measured, XLA's f32 matmul on the 2-core development machine (1024-2048 square; per
# process; another CPU: measure and pass --peak_flops). TPU v4 275e12, v5e ("v5 lite") 197e12,
# v5p 459e12: bf16 per chip (Cloud TPU docs). H100/H200 989e12 (SXM, dense bf16, no sparsity),
# A100 312e12 (NVIDIA datasheets).
PEAK_FLOPS = {"cpu": 165e9, "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12,
              "tpu v5p": 459e12, "h100": 989e12, "h200": 989e12, "a100": 312e12}  # fmt: skip
PEAK_HELP = "peak FLOP/s per device for MFU: a number (e.g. 165e9) or " + ", ".join(
    f"'{k}'" for k in PEAK_FLOPS
)


def parse_peak_flops(value: str | float | None) -> float | None:
    """A ``--peak_flops`` value: FLOP/s or a name of :data:`PEAK_FLOPS` (None stays None).

    Raises:
      ValueError: neither a positive number nor a known name (the message lists the names).
    """
    if value is None:
        return None
    key = str(value).lower().replace("_", " ")
    if key in PEAK_FLOPS:
        return PEAK_FLOPS[key]
    try:
        peak = float(value)
    except ValueError:
        raise ValueError(f"--peak_flops {value!r}: {PEAK_HELP}") from None
    if not peak > 0:
        raise ValueError(f"--peak_flops must be > 0, got {value!r}")
    return peak


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
    """FLOPs of one call of a compiled jax function: XLA's cost analysis of what it executes
    (matmuls and elementwise work alike; NaN if unavailable). XLA counts a loop body once, not
    once per iteration, so sequential recurrences (lax.scan over tokens) are undercounted;
    their FLOPs are small next to the matmuls here."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # Some backends do not report a cost analysis.
        return float("nan")


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOP utilisation ``flops / seconds / peak`` (NaN without FLOPs, time or peak)."""
    ok = math.isfinite(flops) and math.isfinite(peak) and peak > 0 and seconds > 0
    return flops / seconds / peak if ok else float("nan")


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


def is_count(name: str) -> bool:
    """Whether a step metric is a token count (``tokens``, ``*_tokens``): logged as a rate."""
    return name == "tokens" or name.endswith("_tokens")


def throughput(sums: MetricSums, seconds: float, flops: float, peak: float) -> dict[str, float]:
    """steps/s, ``<count>_per_sec`` of every token count the steps report (:func:`is_count`;
    e.g. ``tokens`` -> ``tokens_per_sec``) and MFU of ``sums.count`` steps.

    Args:
      sums: the steps' summed metrics.
      seconds: wall time they took.
      flops: FLOPs of one step (:func:`compiled_flops`; NaN: no MFU).
      peak: peak FLOP/s of the devices that ran them.
    """
    seconds = max(seconds, 1e-9)
    out: dict[str, float] = {"steps_per_sec": sums.count / seconds}
    for name in sorted(filter(is_count, sums.sums)):
        out[f"{name}_per_sec"] = float(sums.sums[name]) / seconds
    value = mfu(flops * sums.count, seconds, peak)
    if math.isfinite(value):
        out["mfu"] = value
    return out
