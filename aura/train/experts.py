"""Per-expert checkpoints: one expert's parameter rows + a JSON manifest, swapped in atomically.

An expert directory (where it lives is the zones layout's business:
``aura.experiments.zones.layout.expert_ckpt_path``) holds an orbax StandardCheckpoint of
the expert's rows in ``params/`` (the stacked ``[E, ...]`` leaves without the E axis) and a
``manifest.json`` (zone, expert, shapes, parameter count, step, metrics, creation time, code
version). :func:`save_expert` builds the new directory under a temporary sibling name and swaps
it in by renames, so a crash at any point leaves the previous checkpoint readable
(:func:`load_expert` falls back to it if the crash fell between the renames). Plain arrays and
JSON only: loading never runs code.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import options as ocp_options

import aura
from aura.train.checkpoint import (
    EXPERT_FORMAT,
    MANIFEST,
    PARAMS_DIR,
    CheckpointError,
    check_tree,
    failure_reason,
    file_checksums,
    flat_tree,
    key_name,
    sample_names,
    verify_checksums,
)
from aura.train.metrics import to_jsonable

__all__ = ["expert_rows", "insert_expert_rows", "load_expert", "save_expert"]


def _single_process_checkpointer() -> ocp.Checkpointer:
    # One process reads or writes a per-expert checkpoint on its own: no cross-host barriers.
    me = jax.process_index()
    mp = ocp_options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.StandardCheckpointHandler(), multiprocessing_options=mp)


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)  # Atomic on POSIX within one filesystem.


def _siblings(path: Path, kind: str) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.{kind}-*"), key=lambda p: p.stat().st_mtime)


def save_expert(
    path: str | Path, expert_params: Mapping[str, Any], manifest: Mapping[str, Any]
) -> Path:
    """Writes one expert's parameters and manifest to `path`, replacing any previous save.

    The new checkpoint is written to a hidden sibling, then swapped in by renames; a crash at
    any point leaves the previous checkpoint loadable. With several processes, all must call
    this (non-addressable arrays are gathered) and process 0 writes.

    Args:
      path: the expert directory, e.g. ``<root>/<zone>/expert_<i>``.
      expert_params: pytree of one expert's arrays (no leading E axis), e.g. `expert_rows(...)`.
      manifest: JSON-able facts (step, metrics, ...). `zone` and `expert` default to the names
        in `path`; `shapes`, `dtypes`, `param_count`, `created`, `code_version`, `format` and
        `checksums` (sha256 of every array file, checked by `load_expert`) are filled in.

    Returns:
      `path`.
    """
    path = Path(path).absolute()
    host = jax.tree_util.tree_map(_to_host, dict(expert_params))
    flat = flat_tree(host)
    if not flat:
        raise ValueError(f"expert_params for {path} has no arrays")
    if jax.process_index() != 0:
        return path
    full = dict(to_jsonable(dict(manifest)))
    full.setdefault("zone", path.parent.name)
    idx = path.name.removeprefix("expert_")
    full.setdefault("expert", int(idx) if idx.isdigit() else None)
    full.update(
        shapes={k: list(v.shape) for k, v in flat.items()},
        dtypes={k: str(v.dtype) for k, v in flat.items()},
        param_count=int(sum(v.size for v in flat.values())),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        code_version=aura.__version__,
        format=EXPERT_FORMAT,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and (olds := _siblings(path, "old")):
        _rename(olds[-1], path)  # An earlier save crashed between its renames: put it back.
    for stale in _siblings(path, "tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    ckptr = _single_process_checkpointer()
    try:
        ckptr.save(tmp / PARAMS_DIR, args=ocp.args.StandardSave(host))
        full["checksums"] = file_checksums(tmp / PARAMS_DIR)  # verified by load_expert
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(full, f, indent=2, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        ckptr.close()
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
        _rename(path, old)
    _rename(tmp, path)
    for stale in _siblings(path, "old"):  # This swap's and any left by earlier crashes.
        shutil.rmtree(stale, ignore_errors=True)
    return path


def load_expert(path: str | Path, template: Any = None) -> tuple[Any, dict[str, Any]]:
    """Loads one expert's parameters and manifest (reads only; never runs code).

    Args:
      path: the expert directory written by `save_expert`.
      template: optional pytree (arrays or `jax.ShapeDtypeStruct`s, e.g. `expert_rows(...)` of
        the model) to check shapes/dtypes against and restore into; None returns numpy arrays.

    Returns:
      `(params, manifest)`.

    Raises:
      CheckpointError: missing, corrupt or incomplete checkpoint (naming the directory), or a
        leaf whose shape differs from the template (naming zone, expert, leaf and both shapes).
    """
    path = Path(path).absolute()
    src = path
    if not path.is_dir():
        olds = _siblings(path, "old") if path.parent.is_dir() else []
        if not olds:
            where = path.parent if not path.parent.is_dir() else path
            raise CheckpointError(f"no expert checkpoint at {path} ({where} does not exist)")
        src = olds[-1]  # The previous save, left by a crash between the two renames.
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("manifest is not a JSON object")
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"expert checkpoint {src} is corrupt or incomplete: {MANIFEST} unreadable "
            f"({failure_reason(err)})"
        ) from err
    where = (
        f"expert checkpoint {path} (zone {manifest.get('zone')}, expert {manifest.get('expert')})"
    )
    if isinstance(manifest.get("checksums"), dict):  # bit rot is named before parsing
        verify_checksums(src / PARAMS_DIR, manifest["checksums"], where)
    ckptr = _single_process_checkpointer()
    try:
        try:
            stored = ckptr.metadata(src / PARAMS_DIR).item_metadata
            if stored is None:
                raise FileNotFoundError(f"{src / PARAMS_DIR} has no array metadata")
        except Exception as err:
            raise CheckpointError(
                f"{where} is corrupt or incomplete ({failure_reason(err)})"
            ) from err
        if template is not None:
            check_tree(flat_tree(stored.tree), flat_tree(template), where)
        try:
            if template is None:
                params = ckptr.restore(src / PARAMS_DIR)
            else:
                params = ckptr.restore(src / PARAMS_DIR, ocp.args.StandardRestore(template))
        except Exception as err:
            raise CheckpointError(
                f"{where} is corrupt or incomplete ({failure_reason(err)})"
            ) from err
    finally:
        ckptr.close()
    return params, manifest


def _leading_axis(params_experts: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    flat = flat_tree(params_experts)
    if not flat:
        raise ValueError("params_experts has no arrays")
    sizes = {p: (np.shape(x)[0] if np.ndim(x) else None) for p, x in flat.items()}
    num = next(iter(sizes.values()))
    for p, n in sizes.items():
        if n is None or n != num:
            raise ValueError(
                f"leaf '{p}' has shape {np.shape(flat[p])}: every leaf of the stacked experts must "
                f"share the leading expert axis E={num}"
            )
    return flat, int(num)


def _check_index(idx: Any, num: int) -> None:
    if isinstance(idx, int | np.integer) and not 0 <= int(idx) < num:
        raise ValueError(
            f"expert index {idx} out of range: the model has {num} slots (0..{num - 1})"
        )


def expert_rows(params_experts: Mapping[str, Any], idx: int) -> Any:
    """Row `idx` of every leaf of a stacked `[E, ...]` experts sub-tree (jit-safe for traced idx).

    Raises:
      ValueError: leaves disagree on E, or a Python-int `idx` is outside `[0, E)`.
    """
    _, num = _leading_axis(params_experts)
    _check_index(idx, num)
    return jax.tree_util.tree_map(lambda x: x[idx], params_experts)  # [E, ...] -> [...]


def insert_expert_rows(params_experts: Mapping[str, Any], idx: int, rows: Any) -> Any:
    """Returns `params_experts` with row `idx` of every leaf replaced by `rows` (cast to its dtype).

    Raises:
      CheckpointError: `rows` has other leaves, or a leaf's shape differs from the slot's
        (naming the leaf and both shapes).
      ValueError: leaves disagree on E, or a Python-int `idx` is outside `[0, E)`.
    """
    flat, num = _leading_axis(params_experts)
    _check_index(idx, num)
    new = flat_tree(rows)
    if set(new) != set(flat):
        only_model, only_rows = (
            sample_names(set(flat) - set(new)),
            sample_names(set(new) - set(flat)),
        )
        raise CheckpointError(
            f"expert rows do not match the model's experts: leaves only in the model: "
            f"[{only_model}]; only in the rows: [{only_rows}]"
        )
    for p, x in flat.items():
        if tuple(np.shape(new[p])) != tuple(np.shape(x)[1:]):
            raise CheckpointError(
                f"leaf '{p}': the expert row has shape {tuple(np.shape(new[p]))} but the model's "
                f"expert slot has shape {tuple(np.shape(x)[1:])} (stacked {tuple(np.shape(x))})"
            )

    def put(x: Any, r: Any) -> Any:
        if isinstance(x, np.ndarray):
            out = x.copy()
            out[idx] = np.asarray(r, dtype=x.dtype)
            return out
        return jnp.asarray(x).at[idx].set(jnp.asarray(r, dtype=x.dtype))

    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params_experts)
    out = [put(x, new["/".join(key_name(k) for k in path)]) for path, x in paths_leaves]
    return jax.tree_util.tree_unflatten(treedef, out)
