"""Where zone artefacts live on disk, and the one function that saves a zone's experts.

Layout under a checkpoint root (``pretrain_zones --ckpt_root``; a ``mnist`` run's workdir uses
the same layout for its hippocampus experts)::

    <root>/zones.json                          run summary: zones, bus analytics, code version
    <root>/<zone>/zone.json                    the zone's preset, analytics, artefacts
    <root>/<zone>/expert_<i>/                  one expert: params/ (orbax) + manifest.json
    <root>/<zone>/<head>/                      bias_head | gate_head | control_head, same format
    <root>/joint/joint.json                    the joint stage's analytics
    <root>/joint/<zone>/expert_<i>/            the joint stage's experts

Every artefact is written by :func:`aura.train.experts.save_expert` (temporary sibling + renames:
a crash mid-save leaves the previous one readable) and holds plain arrays plus JSON.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import aura
from aura.experiments.zones.registry import ZoneSpec, get_zone
from aura.train.experts import expert_rows, save_expert
from aura.train.rundir import write_json_atomic

__all__ = [
    "JOINT_DIR",
    "JOINT_MANIFEST",
    "ROOT_MANIFEST",
    "ZONE_MANIFEST",
    "expert_ckpt_path",
    "head_path",
    "joint_dir",
    "save_zone_experts",
    "write_zone_manifest",
]

ZONE_MANIFEST, ROOT_MANIFEST = "zone.json", "zones.json"
JOINT_DIR, JOINT_MANIFEST = "joint", "joint.json"


def expert_ckpt_path(root: str | Path, zone: str, idx: int) -> Path:
    """``<root>/<zone>/expert_<idx>``: where expert ``idx`` of ``zone`` is saved.

    Raises:
      ValueError: ``zone`` is not a plain directory name, or ``idx`` is not an int >= 0.
    """
    if not zone or zone in {".", ".."} or "/" in zone or "\\" in zone:
        raise ValueError(f"zone name {zone!r} must be a plain directory name")
    if isinstance(idx, bool) or not isinstance(idx, int | np.integer) or idx < 0:
        raise ValueError(f"expert index {idx!r} must be an int >= 0")
    return Path(root) / zone / f"expert_{int(idx)}"


def head_path(root: str | Path, zone: str, registry: Mapping[str, ZoneSpec] | None = None) -> Path:
    """``<root>/<zone>/<head>``: the zone's head directory.

    Raises:
      ValueError: unknown zone, or a zone without a head.
    """
    spec = get_zone(zone, registry)
    if not spec.head:
        raise ValueError(f"zone {zone!r} has no head (zones with heads: amygdala, thalamus, "
                         "hypothalamus)")  # fmt: skip
    return Path(root) / zone / spec.head


def joint_dir(root: str | Path) -> Path:
    """``<root>/joint``: the joint stage's run directory."""
    return Path(root) / JOINT_DIR


def save_zone_experts(
    root: str | Path,
    zone: str,
    experts: Any,
    count: int,
    *,
    step: int,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    per_expert: Sequence[Mapping[str, Any]] | None = None,
    **common: Any,
) -> list[Path]:
    """Saves experts ``0 .. count-1`` of a stacked ``[E, ...]`` experts tree on their own.

    Args:
      root: the checkpoint root (``<root>/<zone>/expert_<i>``).
      zone: the zone's directory name.
      experts: the stacked expert parameters (``params[...]["experts"]``).
      count: how many experts (the active ones) to save.
      step: the training step, recorded in each manifest.
      metrics: per expert, its metrics (utilisation, routed accuracy, ...).
      per_expert: per expert, other manifest fields (frozen, pruned, ...).
      **common: manifest fields shared by every expert (source, joint, ...).

    Returns:
      The expert directories written.
    """
    paths = []
    for i in range(int(count)):
        manifest = {"zone": zone, "expert": i, "step": int(step), **common}
        manifest["metrics"] = dict(metrics[i]) if metrics is not None else {}
        manifest.update(per_expert[i] if per_expert is not None else {})
        path = expert_ckpt_path(root, zone, i)
        paths.append(save_expert(path, expert_rows(experts, i), manifest))
    return paths


def write_zone_manifest(root: str | Path, zone: str, spec: ZoneSpec, analytics: dict, **extra):
    """Writes ``<root>/<zone>/zone.json``: the zone's preset, analytics and artefacts."""
    return write_json_atomic(
        Path(root) / zone / ZONE_MANIFEST,
        {
            "zone": zone,
            "preset": spec.as_dict(),
            "analytics": analytics,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code_version": aura.__version__,
            **extra,
        },
    )
