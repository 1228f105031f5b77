"""``pretrain_zones``: trains or collects every brain zone and writes it under a checkpoint root.

In dependency order: the language adapter and its heads (``stages.lm_zones``), the hippocampus
(``stages.hippocampus``), then — with the thalamus in ``zones`` — the joint stage
(``aura.experiments.zones.joint``): the zones trained together in one model, the thalamus
routing each sample between them, the neural-signal bus in the step's state and the thalamic
gradient broadcaster on, under ``<root>/joint``; its bus' merit statistics decay with the
hypothalamus' merit momentum when the control head is there. Each zone gets a ``zone.json`` and
the run a ``zones.json`` with the neural-signal bus' per-zone analytics. A head zone without
``language`` in ``zones`` uses the adapter already in ``ckpt_out``. The whole root is locked for
the run (one writer).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aura
from aura.experiments.zones import store as zone_store
from aura.experiments.zones.config import LM_ZONES, ZonesConfig
from aura.experiments.zones.joint import train_joint
from aura.experiments.zones.layout import ROOT_MANIFEST
from aura.experiments.zones.stages import hippocampus, lm_zones
from aura.nn import bus as bus_lib
from aura.train.checkpoint import CheckpointError
from aura.train.rundir import RunLock, write_json_atomic

__all__ = ["pretrain_zones"]


def _joint(cfg: ZonesConfig, log) -> dict[str, Any]:
    """The joint stage; its bus decays with the hypothalamus' merit momentum when there is one."""
    decay = 0.9
    try:
        _, manifest = zone_store.load_head(cfg.ckpt_root, "hypothalamus")
        decay = float(manifest["metrics"]["merit_momentum"])
        log(f"joint: bus merit statistics decay with the hypothalamus' merit momentum {decay:.3f}")
    except (CheckpointError, KeyError, TypeError, ValueError):
        log("joint: no hypothalamus control head; the bus' merit statistics decay at 0.9")
    return train_joint(cfg.joint_config(bus_decay=decay), log=log)


def pretrain_zones(cfg: ZonesConfig, log=print) -> dict[str, Any]:
    """Trains or collects every zone in ``cfg.zones``; returns a JSON-friendly summary.

    Raises:
      RunLockedError: another run writes ``cfg.ckpt_root``.
    """
    cfg.validate()
    with RunLock(cfg.ckpt_root, what="--ckpt_root"):
        return _pretrain_zones(cfg, log)


def _pretrain_zones(cfg: ZonesConfig, log) -> dict[str, Any]:
    t0 = time.time()
    published: list[tuple[str, dict, Any]] = []

    def publish(zone: str, stats: dict, load) -> None:
        stats = {k: float(v) for k, v in stats.items() if v is not None and k in bus_lib.STATS}
        published.append((zone, stats, load))

    summary: dict[str, Any] = {}
    if any(z in LM_ZONES for z in cfg.zones):
        summary.update(lm_zones(cfg, log, publish))
    interrupted = any(s.get("interrupted") for s in summary.values())
    if "hippocampus" in cfg.zones and not interrupted:
        summary["hippocampus"] = hippocampus(cfg, log, publish)
        interrupted = bool(summary["hippocampus"].get("interrupted"))
    if cfg.runs_joint() and not interrupted:
        summary["joint"] = _joint(cfg, log)
        interrupted = bool(summary["joint"].get("interrupted"))
    # The zones' statistics travel on the neural-signal bus (as they would between steps).
    width = max([len(load) for _, _, load in published if load is not None] + [1])
    bus = bus_lib.init_bus(len(cfg.zones), 1, 1, width)
    for zone, stats, load in published:
        bus = bus_lib.publish(bus, bus_lib.zone_index(cfg.zones, zone), stats=stats, load=load)
    result = {
        "zones": list(cfg.zones),
        "ckpt_root": cfg.ckpt_root,
        "ckpt_out": cfg.ckpt_out if any(z in LM_ZONES for z in cfg.zones) else None,
        "summary": summary,
        "bus": bus_lib.zone_analytics(bus, cfg.zones),
        "wall_s": round(time.time() - t0, 2),
        "interrupted": interrupted,
    }
    if interrupted:
        log("interrupted: progress is saved; rerun the same command to resume")
        return result
    write_json_atomic(
        Path(cfg.ckpt_root) / ROOT_MANIFEST,
        {**result, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "code_version": aura.__version__},
    )  # fmt: skip
    return result
