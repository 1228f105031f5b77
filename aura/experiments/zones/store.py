"""Reading zone checkpoints: heads, manifests, lazy expert loading and restore into a model.

The layout is ``layout.py``'s; everything here reads plain arrays plus JSON (loading never runs
code). Heads are saved with :func:`save_head` (the per-expert format, swapped in atomically).

:class:`LazyExpertStore` loads a zone's experts only when the gate routes tokens to them and
keeps at most ``max_resident`` of them in host memory (least recently used evicted).
:func:`restore_zone_experts` loads saved experts into a model whose capacity (and so number of
active experts) differs from the one that saved them.
``aura.experiments.zones.report`` checks every artefact for ``python -m aura.build inspect``.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from aura.experiments.zones.layout import expert_ckpt_path, head_path
from aura.experiments.zones.registry import get_zone
from aura.train.checkpoint import CheckpointError
from aura.train.experts import expert_rows, insert_expert_rows, load_expert, save_expert

__all__ = [
    "LazyExpertStore",
    "ZoneHeads",
    "flat_shapes",
    "list_experts",
    "load_head",
    "load_zone_heads",
    "read_json",
    "restore_zone_experts",
    "save_head",
]

_EXPERT_DIR = re.compile(r"^(?:expert_(\d+)|\.expert_(\d+)\.old-[0-9a-f]+)$")  # saved | set aside


def read_json(path: str | Path) -> dict[str, Any]:
    """Reads a JSON object.

    Raises:
      CheckpointError: missing or unreadable file (naming it).
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is missing or corrupt ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is corrupt: not a JSON object")
    return obj


def list_experts(root: str | Path, zone: str) -> list[int]:
    """Indices of the experts saved for ``zone`` (including ones only left by a crashed swap)."""
    zdir = Path(root) / zone
    if not zdir.is_dir():
        return []
    found = {
        int(m.group(1) or m.group(2)) for p in zdir.iterdir() if (m := _EXPERT_DIR.match(p.name))
    }
    return sorted(found)


def save_head(root: str | Path, zone: str, params: Any, manifest: dict[str, Any]) -> Path:
    """Saves a zone head's params + manifest under ``<root>/<zone>/<head>`` (atomic swap)."""
    return save_expert(head_path(root, zone), params, {"zone": zone, **manifest})


def load_head(
    root: str | Path, zone: str, expected: dict[str, tuple[int, ...]] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Loads a zone head; ``expected`` maps leaf path -> shape to check.

    Raises:
      CheckpointError: missing or corrupt head, or a leaf whose shape differs from ``expected``
        (naming the zone, the head, the leaf and both shapes).
    """
    path = head_path(root, zone)
    if not (Path(root) / zone).is_dir():
        raise CheckpointError(
            f"zone directory {Path(root) / zone} does not exist; train it with "
            f"python -m aura.build pretrain_zones --zones {zone} --ckpt_root {root} ..."
        )
    params, manifest = load_expert(path)
    flat = flat_shapes(params)
    for leaf, shape in (expected or {}).items():
        have = flat.get(leaf)
        if have != tuple(shape):
            raise CheckpointError(
                f"zone {zone}, {path.name}: leaf '{leaf}' has shape {have} in {path} but the "
                f"model needs {tuple(shape)}; it was fitted for another adapter — rerun "
                f"pretrain_zones --zones {zone} with this adapter's --ckpt_out"
            )
    return params, manifest


def flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        else:
            out[prefix] = tuple(np.shape(node))

    walk(tree, "")
    return out


class ZoneHeads(NamedTuple):
    """The heads found under a checkpoint root: (params, manifest) or None for each."""

    amygdala: tuple[Any, dict] | None
    thalamus: tuple[Any, dict] | None
    hypothalamus: tuple[Any, dict] | None

    def present(self) -> list[str]:
        return [z for z in self._fields if getattr(self, z) is not None]


def load_zone_heads(root: str | Path, num_experts: int, dim: int) -> ZoneHeads:
    """Loads the amygdala, thalamus and hypothalamus heads present under ``root``.

    Args:
      root: the ``--ckpt_root`` of pretrain_zones.
      num_experts: the adapter's expert capacity E (heads must produce [E] biases).
      dim: the adapter's embedding width D (thalamus centroids are [E, D]).

    Raises:
      CheckpointError: ``root`` is missing or holds none of the heads; a head is corrupt or
        was fitted for another adapter (naming the leaf and both shapes).
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"--ckpt_root {root} does not exist; run pretrain_zones first")
    expected = {
        "amygdala": {"proj/kernel": (3, num_experts), "proj/bias": (num_experts,)},
        "thalamus": {"centroids": (num_experts, dim), "scale": (), "offset": (num_experts,)},
        "hypothalamus": {"log_temperature": (), "momentum_logit": ()},
    }
    found = {}
    for zone, shapes in expected.items():
        if (root / zone).is_dir():
            found[zone] = load_head(root, zone, shapes)
    if not found:
        paths = ", ".join(str(head_path(root, z)) for z in expected)
        raise CheckpointError(
            f"no zone heads under {root} (looked for {paths}); run python -m aura.build "
            f"pretrain_zones --zones amygdala,thalamus,hypothalamus --ckpt_root {root} ..."
        )
    return ZoneHeads(**{z: found.get(z) for z in expected})


# ----------------------------------------------------------------------------- experts


class LazyExpertStore:
    """Loads a zone's experts from disk only when routed; at most ``max_resident`` in memory.

    Args:
      root: checkpoint root.
      zone: the zone whose ``expert_<i>`` directories are read.
      template: one expert's rows (arrays or ShapeDtypeStructs, e.g. ``expert_rows(p, 0)``):
        every load is checked against it (a mismatch names zone, expert, leaf and both shapes).
      max_resident: host-memory bound, in experts.

    The model's stacked ``[E, ...]`` expert buffer keeps its static shape (no recompiles);
    :meth:`assemble` writes the routed experts' rows into it and leaves the others as they
    are — they receive no tokens, so their contents never reach an output.
    """

    def __init__(self, root: str | Path, zone: str, template: Any, max_resident: int = 2):
        get_zone(zone)
        if max_resident < 1:
            raise ValueError(f"max_resident={max_resident} must be >= 1")
        self.root, self.zone, self.template = Path(root), zone, template
        self.max_resident = max_resident
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self.loads: list[int] = []  # every disk read, in order
        self.hits = 0
        self.evictions = 0

    @property
    def available(self) -> list[int]:
        return list_experts(self.root, self.zone)

    @property
    def resident(self) -> list[int]:
        """Experts held in memory, least recently used first."""
        return list(self._cache)

    def get(self, idx: int) -> Any:
        """Expert ``idx``'s rows, read from disk on a miss (evicting the least recently used)."""
        idx = int(idx)
        if idx in self._cache:
            self.hits += 1
            self._cache.move_to_end(idx)
            return self._cache[idx]
        rows, _ = load_expert(expert_ckpt_path(self.root, self.zone, idx), self.template)
        self.loads.append(idx)
        self._cache[idx] = rows
        while len(self._cache) > self.max_resident:
            self._cache.popitem(last=False)
            self.evictions += 1
        return rows

    def routed(self, indices: Any, valid: Any = None) -> list[int]:
        """Sorted unique experts in ``indices`` [N, K] (where ``valid`` [N, K], if given)."""
        idx = np.asarray(indices).reshape(-1)
        if valid is not None:
            idx = idx[np.asarray(valid).reshape(-1)]
        return sorted({int(i) for i in idx})

    def assemble(self, params_experts: Any, indices: Any, valid: Any = None) -> Any:
        """``params_experts`` [E, ...] with the rows of every routed expert loaded from disk.

        Raises:
          ValueError: more experts are routed than ``max_resident`` can hold at once.
          CheckpointError: a routed expert is missing, corrupt, or of another shape.
        """
        need = self.routed(indices, valid)
        if len(need) > self.max_resident:
            raise ValueError(
                f"{len(need)} experts of zone {self.zone} are routed ({need}) but max_resident="
                f"{self.max_resident}; raise max_resident or route fewer experts per call"
            )
        out = params_experts
        for i in need:
            out = insert_expert_rows(out, i, self.get(i))
        return out


def restore_zone_experts(
    root: str | Path, zone: str, params_experts: Any, *, order: str = "index"
) -> tuple[Any, int, list[int]]:
    """Loads a zone's saved experts into a model of any capacity.

    The first ``min(E_model, saved)`` experts (by index, or by the manifests' utilisation when
    ``order="utilisation"``) fill slots ``0..n-1``; the other slots keep their values.

    Returns:
      ``(params_experts, active, loaded)``: the new stacked params, the number of experts to
      activate (``RoutingControls.with_active(active)``), and which saved experts fill the slots.

    Raises:
      CheckpointError: no saved experts, or a shape mismatch (naming zone, expert, leaf, shapes).
      ValueError: an unknown ``order``.
    """
    if order not in ("index", "utilisation"):
        raise ValueError(f"order={order!r}; valid: index, utilisation")
    saved = list_experts(root, zone)
    if not saved:
        raise CheckpointError(f"no experts saved for zone {zone} under {Path(root) / zone}")
    if order == "utilisation":
        util = {}
        for i in saved:
            path = expert_ckpt_path(root, zone, i)
            try:
                util[i] = float(read_json(path / "manifest.json")["metrics"]["utilisation"])
            except (CheckpointError, KeyError, TypeError, ValueError):
                util[i] = 0.0
        saved = sorted(saved, key=lambda i: -util[i])
    capacity = int(np.shape(_first_leaf(params_experts))[0])
    chosen = saved[:capacity]
    template = expert_rows(params_experts, 0)
    out = params_experts
    for slot, i in enumerate(chosen):
        rows, _ = load_expert(expert_ckpt_path(root, zone, i), template)
        out = insert_expert_rows(out, slot, rows)
    return out, len(chosen), chosen


def _first_leaf(tree: Any) -> Any:
    return jax.tree.leaves(tree)[0]
