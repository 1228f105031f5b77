"""Checks and reports the zone checkpoints under a root: what ``inspect`` prints.

:func:`scan` reads every artefact a pretrain_zones root can hold (``<zone>/expert_<i>``, the
zone's head, the language adapter named in ``language/zone.json``, the joint stage's
``joint/joint.json`` and ``joint/<zone>/expert_<i>``) and returns one
:class:`Entry` each, with a status: ``ok``; ``recovered`` (only the previous copy survives a
crash between a save's two renames; it loads, and the next save repairs it); ``corrupt`` (a file
does not read back, or the arrays disagree with the manifest); ``incomplete`` (manifest or
arrays missing); ``missing`` (an expected zone directory or head is absent); ``unknown`` (a
directory that is not a registered zone). :func:`render` prints the table and
:func:`inspect_root` the whole report, returning the exit code.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from aura.experiments.lm.pretrain import load_adapter
from aura.experiments.zones.layout import (
    JOINT_DIR,
    JOINT_MANIFEST,
    ZONE_MANIFEST,
    expert_ckpt_path,
)
from aura.experiments.zones.registry import ZONES, get_zone
from aura.experiments.zones.store import flat_shapes, list_experts, read_json
from aura.train.checkpoint import CheckpointError, TrainCheckpointer, checkpoint_dir
from aura.train.experts import load_expert
from aura.train.metrics import to_jsonable

__all__ = ["Entry", "inspect_root", "render", "scan", "scan_zone"]


@dataclasses.dataclass
class Entry:
    """One row of ``inspect``: an expert, a head or the language adapter of a zone."""

    zone: str
    name: str
    status: str  # ok | recovered | corrupt | incomplete | missing | unknown
    path: str
    shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    param_count: int | None = None
    step: int | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    message: str = ""

    @property
    def bad(self) -> bool:
        return self.status in ("corrupt", "incomplete", "missing")


def _check_artefact(zone: str, name: str, path: Path, verify: bool) -> Entry:
    entry = Entry(zone, name, "ok", str(path))
    if ".old-" in path.name:
        entry.status = "recovered"
        entry.message = "previous save (a swap was interrupted); the next save repairs it"
    mpath = path / "manifest.json"
    if path.is_dir() and not mpath.is_file():
        return dataclasses.replace(entry, status="incomplete", message="manifest.json missing")
    if path.is_dir() and not (path / "params").is_dir():
        return dataclasses.replace(entry, status="incomplete", message="params/ missing")
    try:
        manifest = read_json(mpath)
    except CheckpointError as err:
        return dataclasses.replace(entry, status="corrupt", message=str(err))
    try:
        entry.shapes = {str(k): list(v) for k, v in dict(manifest.get("shapes") or {}).items()}
        entry.param_count = manifest.get("param_count")
        entry.step = manifest.get("step")
        entry.metrics = dict(manifest.get("metrics") or {})
    except (TypeError, ValueError) as err:  # a hand-edited or damaged manifest
        msg = f"{mpath} has fields of the wrong type ({type(err).__name__}: {err})"
        return dataclasses.replace(entry, status="corrupt", message=msg)
    try:
        params = load_expert(path)[0] if verify else None
    except CheckpointError as err:  # the manifest's facts still show; the arrays do not read
        return dataclasses.replace(entry, status="corrupt", message=str(err))
    if params is not None:
        stored = {k: list(v) for k, v in flat_shapes(params).items()}
        if stored != entry.shapes:
            diff = sorted(
                k for k in set(stored) | set(entry.shapes) if stored.get(k) != entry.shapes.get(k)
            )
            leaf = diff[0]
            return dataclasses.replace(
                entry,
                status="corrupt",
                message=f"leaf '{leaf}' has shape {stored.get(leaf)} on disk but the manifest "
                f"says {entry.shapes.get(leaf)}",
            )
    return entry


def _expert_entries(root: str | Path, zone: str, label: str, verify: bool) -> list[Entry]:
    """Every ``<root>/<zone>/expert_<i>`` (or the copy a crash mid-swap left), as ``label``."""
    entries = []
    for i in list_experts(root, zone):
        path = expert_ckpt_path(root, zone, i)
        if not path.is_dir():
            olds = sorted((Path(root) / zone).glob(f".expert_{i}.old-*"))
            path = olds[-1] if olds else path
        entries.append(_check_artefact(label, f"expert_{i}", path, verify))
    return entries


def scan_zone(root: str | Path, zone: str, verify: bool = True) -> list[Entry]:
    """Checks every artefact of one zone (``verify`` reads the arrays, not just the metadata)."""
    zdir = Path(root) / zone
    if zone not in ZONES:
        return [Entry(zone, "-", "unknown", str(zdir), message="not a registered zone")]
    if not zdir.is_dir():
        return [Entry(zone, "-", "missing", str(zdir), message="zone directory does not exist")]
    entries = _expert_entries(root, zone, zone, verify)
    head = ZONES[zone].head
    if head:
        hpath = zdir / head
        if hpath.is_dir() or list(zdir.glob(f".{head}.old-*")):
            if not hpath.is_dir():
                hpath = sorted(zdir.glob(f".{head}.old-*"))[-1]
            entries.append(_check_artefact(zone, head, hpath, verify))
        else:
            entries.append(Entry(zone, head, "missing", str(hpath), message="head not saved"))
    if zone == "language":
        entries.append(_language_entry(zdir, verify))
    if not entries:
        entries.append(Entry(zone, "-", "incomplete", str(zdir), message="no artefacts saved"))
    return entries


def _language_entry(zdir: Path, verify: bool) -> Entry:
    """The adapter named in ``language/zone.json``: every array read back (``verify``)."""
    try:
        ckpt_out = read_json(zdir / ZONE_MANIFEST).get("ckpt_out")
    except CheckpointError as err:
        return Entry("language", "adapter", "incomplete", str(zdir), message=str(err))
    entry = Entry("language", "adapter", "ok", str(ckpt_out))
    if not ckpt_out or not Path(ckpt_out).is_dir():
        return dataclasses.replace(entry, status="missing", message="adapter directory missing")
    try:
        if verify:
            _, params, meta = load_adapter(ckpt_out)  # restores (and so reads) every array
            entry.shapes = {k: list(v) for k, v in flat_shapes(params).items()}
            entry.param_count = int(sum(int(np.prod(v)) for v in entry.shapes.values()))
        else:
            with TrainCheckpointer(checkpoint_dir(ckpt_out), read_only=True) as ckpt:
                meta = ckpt.restore_meta().get("experiment") or {}
    except CheckpointError as err:
        return dataclasses.replace(entry, status="corrupt", message=str(err))
    entry.step = meta.get("step")
    model = meta.get("model") or {}
    entry.metrics = {k: model.get(k) for k in ("dim", "num_experts", "lang_backend", "vocab_size")}
    return entry


def scan_joint(root: str | Path, verify: bool = True) -> list[Entry]:
    """The joint stage under ``<root>/joint``: each zone's routing analytics and its experts."""
    jdir = Path(root) / JOINT_DIR
    if not jdir.is_dir():
        return [Entry(JOINT_DIR, "-", "missing", str(jdir), message="no joint stage was run")]
    try:
        manifest = read_json(jdir / JOINT_MANIFEST)
    except CheckpointError as err:
        manifest = {}
        entries = [Entry(JOINT_DIR, JOINT_MANIFEST, "incomplete", str(jdir), message=str(err))]
    else:
        metrics = {
            k: manifest.get(k) for k in ("test_accuracy", "specialisation", "class_zone_nmi")
        }
        entries = [Entry(JOINT_DIR, "routing", "ok", str(jdir), step=manifest.get("steps"),
                         metrics=metrics)]  # fmt: skip
    per_zone = manifest.get("per_zone") or {}
    zones = [z for z in ZONES if (jdir / z).is_dir()]
    for zone in zones:
        m, label = per_zone.get(zone) or {}, f"{JOINT_DIR}/{zone}"
        keys = ("routed_accuracy", "share", "local_in", "local_out", "gate_entropy")
        entries.append(Entry(label, "routing", "ok", str(jdir / zone), step=manifest.get("steps"),
                             metrics={k: m.get(k) for k in keys}))  # fmt: skip
        entries += _expert_entries(jdir, zone, label, verify)
    return entries


def scan(root: str | Path, zones: list[str] | None = None, verify: bool = True) -> list[Entry]:
    """Checks the zones under ``root`` (all zone directories found, or the ``zones`` named).

    Raises:
      CheckpointError: ``root`` does not exist.
      ValueError: an unknown zone in ``zones`` (naming the valid ones).
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint root {root} does not exist; run pretrain_zones first")
    if zones:
        for z in zones:
            if z != JOINT_DIR:
                try:
                    get_zone(z)
                except ValueError as err:
                    raise ValueError(f"{err} (or {JOINT_DIR}: the joint stage)") from None
    else:
        found = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        zones = [z for z in ZONES if z in found] + sorted(found - set(ZONES))
    return [
        e
        for z in zones
        for e in (scan_joint(root, verify) if z == JOINT_DIR else scan_zone(root, z, verify))
    ]


_METRIC_KEYS = (
    "routed_accuracy",
    "test_accuracy",
    "share",
    "specialisation",
    "gate_agreement",
    "r2",
    "temperature",
    "merit_momentum",
    "inertia",
)


def _shapes(shapes: dict[str, list[int]]) -> str:
    if not shapes:
        return "-"
    parts = [
        f"{k.split('/')[-1]} {'x'.join(map(str, v)) or '[]'}" for k, v in sorted(shapes.items())
    ]
    text = ", ".join(parts)
    return text if len(text) <= 42 else text[:39] + "..."


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def _metrics(m: dict[str, Any]) -> str:
    keys = [k for k in _METRIC_KEYS if m.get(k) is not None and not isinstance(m[k], list)]
    shown = [f"{k}={_num(m[k])}" for k in keys[:2]]
    if not shown:
        shown = [f"{k}={_num(v)}" for k, v in m.items() if isinstance(v, int | float | str)][:2]
    return " ".join(shown) or "-"


def _status(entry: Entry) -> str:
    return entry.status.upper() if entry.bad else entry.status


def render(entries: list[Entry], out: TextIO = sys.stdout) -> None:
    """Prints the table of ``entries``: one row per :class:`Entry`."""
    header = ("zone", "entry", "status", "params", "step", "util", "metrics", "shapes")
    rows = [header]
    for e in entries:
        util = e.metrics.get("utilisation")
        rows.append(
            (
                e.zone,
                e.name,
                _status(e),
                _num(e.param_count),
                _num(e.step),
                _num(util) if not isinstance(util, list) else "-",
                _metrics(e.metrics),
                _shapes(e.shapes),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for r in rows:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        out.write("\n")


def inspect_root(
    root: str, zone: str | None, as_json: bool, verify: bool = True, out: TextIO = sys.stdout
) -> int:
    """Prints the inspection of ``root`` (a table or JSON); problems go to stderr.

    Returns:
      The exit code: 0 when every artefact is usable, 2 when one is corrupt, incomplete or
      missing, or when there is nothing to inspect.

    Raises:
      CheckpointError: ``root`` does not exist. ValueError: ``zone`` is not a registered zone.
    """
    entries = scan(root, [zone] if zone else None, verify=verify)
    bad = [e for e in entries if e.bad]
    if as_json:
        payload = {"ckpt_root": root, "entries": [dataclasses.asdict(e) for e in entries]}
        payload["problems"] = len(bad)
        out.write(json.dumps(to_jsonable(payload), indent=2) + "\n")
    else:
        render(entries, out)
        total = sum(e.param_count or 0 for e in entries)
        out.write(f"{len(entries)} entries, {total} parameters in zone checkpoints under {root}\n")
    for e in bad:
        print(f"{e.status.upper()}: {e.zone}/{e.name} at {e.path}: {e.message}", file=sys.stderr)
    if not entries:
        print(f"error: no zone directories under {root}", file=sys.stderr)
        return 2
    return 2 if bad else 0
