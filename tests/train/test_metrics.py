"""Tests of aura.train.metrics (JSONL, TensorBoard, console, bar) and the routing PNG plot."""

from __future__ import annotations

import io
import json
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from aura.experiments.mnist_poc.plots import plot_routing
from aura.train import metrics as metrics_lib
from aura.train.metrics import MetricsLogger, format_line, progress, to_jsonable


def _read_events(tb_dir) -> dict[str, list[tuple[int, float]]]:
    """Parses TFRecord event files: tag -> [(step, value)] (a naive reader, no TensorFlow)."""
    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(tb_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {tb_dir}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4  # length, its crc, payload, payload crc
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_jsonl_and_tensorboard(tmp_path):
    with MetricsLogger(tmp_path, process_index=0) as log:
        log.log(
            5,
            {
                "loss": np.float32(0.5),
                "acc": jnp.asarray(0.75),
                "util": jnp.asarray([0.25, 0.5, 0.25]),
                "active": np.int64(3),
                "stats": {"dropped": 0.125},
                "diverged": float("nan"),
                "note": "grew",
                "big": np.arange(10_000, dtype=np.float32),
            },
            prefix="train",
        )
        log.log(6, {"loss": 0.25})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["step"] == 5 and isinstance(first["time"], float)
    assert first["train/loss"] == 0.5 and first["train/acc"] == 0.75
    assert first["train/util"] == [0.25, 0.5, 0.25] and first["train/active"] == 3
    assert first["train/stats/dropped"] == 0.125 and first["train/diverged"] is None
    assert first["train/note"] == "grew"
    assert first["train/big"]["shape"] == [10_000] and first["train/big"]["max"] == 9999.0
    assert second["step"] == 6 and second["loss"] == 0.25

    events = _read_events(tmp_path / "tb")
    assert events["train/loss"] == [(5, 0.5)] and events["loss"] == [(6, 0.25)]
    assert [events[f"train/util/{i}"] for i in range(3)] == [[(5, 0.25)], [(5, 0.5)], [(5, 0.25)]]
    assert "train/note" not in events

    with MetricsLogger(tmp_path, process_index=0, tensorboard=False) as log:
        log.log(7, {"loss": 0.1})  # A resumed run appends.
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_other_processes_write_nothing(tmp_path):
    with MetricsLogger(tmp_path / "run", process_index=1) as log:
        log.log(1, {"loss": 1.0})
    assert not (tmp_path / "run").exists()


def test_to_jsonable_is_strict_json():
    value = {1: (np.float16(0.5), [jnp.int32(2)], np.bool_(True), float("inf"))}
    assert json.dumps(to_jsonable(value), allow_nan=False) == '{"1": [0.5, [2], true, null]}'


def test_format_line():
    line = format_line(
        {
            "epoch": 3,
            "loss": 0.123,
            "accuracy": np.float32(0.981),
            "gate_entropy": 1.23,
            "utilisation": np.array([0.31, 0.40, 0.29]),
            "pruned": [0, 1, 0],
            "epoch_s": 12.34,
        }
    )
    assert line == (
        "epoch 3 | loss 0.123 | acc 98.1% | H 1.23 | util [0.31 0.40 0.29] | pruned [0 1 0] | 12.3s"
    )
    assert format_line({"test_accuracy": 97.5, "lr": 3e-4}) == "test_acc 97.5% | lr 0.0003"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_tty_of_process_zero(monkeypatch):
    bar = progress(range(5), desc="epoch 0")  # pytest captures stderr: not a terminal.
    assert bar.disable and list(bar) == [0, 1, 2, 3, 4]
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert progress(range(3), process_index=1).disable
    bar = progress(range(3), total=3, desc="epoch 1", process_index=0)
    assert not bar.disable and list(bar) == [0, 1, 2]
    bar.close()
    assert "epoch 1" in tty.getvalue()
    assert progress(range(3), enabled=False, process_index=0).disable


def test_routing_plot_is_a_png(tmp_path):
    history = [
        {"epoch": 0, "utilisation": [1.0], "gate_entropy": 0.0, "test_accuracy": 0.90},
        {"epoch": 1, "utilisation": [0.5, 0.3, 0.2], "gate_entropy": 0.9, "test_accuracy": 0.95},
        {"epoch": 2, "utilisation": np.array([0.3, 0.3, 0.2, 0.2]), "gate_entropy": 1.3},
    ]
    path = plot_routing(history, tmp_path / "plots" / "routing.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["routing.png"]  # No temporary left.

    # metrics.jsonl records (prefixed keys, step records without routing mixed in) work too.
    records = [{"step": 1, "train/loss": 0.3}] + [
        {f"epoch/{k}": v for k, v in r.items()} for r in history[:2]
    ]
    assert plot_routing(records, tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no record has utilisation"):
        plot_routing([{"loss": 1.0}], tmp_path / "none.png")


def test_large_arrays_are_summarised_in_json():
    big = np.ones(metrics_lib.MAX_JSON_ARRAY + 1, np.float32)
    assert to_jsonable(big)["mean"] == 1.0
    assert to_jsonable(big[:-1]) == [1.0] * metrics_lib.MAX_JSON_ARRAY
