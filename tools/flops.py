"""FLOPs of a compiled step and model FLOP utilisation (MFU), for the benchmarks.

    flops = compiled_flops(jax.jit(step).lower(*args).compile())
    print(f"MFU {mfu(flops, seconds, peak):.1%}")

FLOPs come from XLA's cost analysis of the compiled program (``cost_analysis()["flops"]``):
what the compiled step really executes, dense matmuls and elementwise work alike. XLA counts a
loop body once, not once per iteration, so sequential recurrences (lax.scan) are undercounted;
their FLOPs are small next to the matmuls of these models.

Peaks (``--peak_flops``; per device):

* ``cpu``: 165e9, measured: XLA's float32 matmul on this 2-core machine (1024-2048 square,
  DESIGN.md). Another CPU has another peak: measure it and pass ``--peak_flops``.
* ``tpu_v4``: 275e12 bfloat16 (Cloud TPU v4 documentation, per chip).
* ``tpu_v5e``: 197e12 bfloat16 (Cloud TPU v5e documentation, per chip).
* ``h100`` / ``h200``: 989e12 dense bfloat16 (NVIDIA H100/H200 SXM datasheets, without sparsity).

The coordinator moves this helper into the shared training loop later; until then the
benchmarks import it from here.
"""

from __future__ import annotations

import argparse

import jax

PEAK_FLOPS = {
    "cpu": 165e9,
    "tpu_v4": 275e12,
    "tpu_v5e": 197e12,
    "h100": 989e12,
    "h200": 989e12,
}


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call of a ``jax.stages.Compiled`` (None when the backend reports none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per device program
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def default_peak() -> float:
    """A peak for the running backend: the measured CPU value, else the TPU v4 / H100 figure."""
    backend = jax.default_backend()
    if backend == "tpu":
        kind = jax.devices()[0].device_kind.lower()
        return PEAK_FLOPS["tpu_v5e"] if "v5" in kind else PEAK_FLOPS["tpu_v4"]
    if backend in ("gpu", "cuda", "rocm"):
        return PEAK_FLOPS["h100"]
    return PEAK_FLOPS["cpu"]


def parse_peak(value: str | None) -> float:
    """``--peak_flops`` value: a number (FLOP/s), a name of `PEAK_FLOPS`, or None (default)."""
    if value is None:
        return default_peak()
    if value in PEAK_FLOPS:
        return PEAK_FLOPS[value]
    try:
        peak = float(value)
    except ValueError:
        names = ", ".join(PEAK_FLOPS)
        msg = f"--peak_flops {value!r}: give FLOP/s (e.g. 165e9) or one of {names}"
        raise ValueError(msg) from None
    if not peak > 0:
        raise ValueError(f"--peak_flops must be > 0, got {value!r}")
    return peak


def add_peak_flag(ap: argparse.ArgumentParser) -> None:
    """Adds ``--peak_flops`` (FLOP/s or a name; default: the running backend's)."""
    names = ", ".join(f"{k}={v:.3g}" for k, v in PEAK_FLOPS.items())
    ap.add_argument(
        "--peak_flops",
        default=None,
        help=f"peak FLOP/s per device for MFU: a number or a name ({names}); "
        "default: cpu on CPU, tpu_v4/tpu_v5e on TPU, h100 on GPU",
    )


def mfu(flops: float | None, seconds: float, peak: float, devices: int = 1) -> float | None:
    """Model FLOP utilisation: ``flops / seconds / (peak · devices)`` (None without flops)."""
    if flops is None or seconds <= 0:
        return None
    return flops / seconds / (peak * devices)
