"""Checkpoints with orbax: the resumable training state and per-expert parameter checkpoints.

Two kinds, both plain arrays plus JSON (orbax/zarr/OCDBT on disk, never pickle; loading never
runs code):

* `TrainCheckpointer` wraps `orbax.checkpoint.CheckpointManager` over `<workdir>/ckpt`. Each step
  directory holds two items: `state` (params, optimizer state, controller arrays; a pytree saved
  with `StandardSave`) and `meta` (JSON: step, epoch, data position, config, code version).
  Orbax writes each step into a temporary directory and renames it when complete, so a crash
  mid-save never leaves a step that `latest_step()` would pick. Restoring checks every leaf's
  shape and dtype against the caller's abstract state first, from the stored metadata, and
  names the first leaf that differs with both shapes.
* Per-expert checkpoints under `<root>/<zone>/expert_<i>/` (`expert_ckpt_path`): an orbax
  StandardCheckpoint of one expert's parameter rows in `params/` (the stacked `[E, ...]` leaves
  without the E axis) and a `manifest.json` (zone, expert, shapes, parameter count, step,
  metrics, creation time, code version). `save_expert` builds the new directory under a
  temporary sibling name and swaps it in by renames, so a crash at any point leaves the previous
  checkpoint readable (`load_expert` falls back to it if the crash fell between the renames).

Problems a person can fix (missing or corrupt checkpoint, a checkpoint from another config) raise
`CheckpointError`; commands print it and exit with status 2.
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
from orbax.checkpoint import options as ocp_options

import aura
from aura.train.metrics import to_jsonable

__all__ = [
    "CheckpointError",
    "TrainCheckpointer",
    "expert_ckpt_path",
    "expert_rows",
    "insert_expert_rows",
    "load_expert",
    "save_expert",
]

_STATE, _META = "state", "meta"
_PARAMS_DIR, _MANIFEST = "params", "manifest.json"
EXPERT_FORMAT = "aura.expert/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, incomplete, or from another config."""


# ----------------------------------------------------------------------------- tree checks


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey/FlattenedIndexKey, GetAttrKey, SequenceKey.
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat(tree: Any) -> dict[str, Any]:
    """Leaf path ("params/experts/w", "opt_state/1/0/mu/...") -> leaf."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _sample(names: set[str], n: int = 5) -> str:
    names_s = sorted(names)
    more = f" and {len(names_s) - n} more" if len(names_s) > n else ""
    return ", ".join(names_s[:n]) + more


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _check_tree(stored: Mapping[str, Any], template: Mapping[str, Any], where: str) -> None:
    """Raises CheckpointError unless the stored leaves match the template's paths/shapes/dtypes."""
    only_model = set(template) - set(stored)
    only_ckpt = set(stored) - set(template)
    if only_model or only_ckpt:
        raise CheckpointError(
            f"{where} does not match the model's parameter tree: leaves only in the model: "
            f"[{_sample(only_model)}]; only in the checkpoint: [{_sample(only_ckpt)}]. It was "
            "written by another configuration; use the matching config or a fresh directory."
        )
    problems = []
    for path, leaf in template.items():
        meta = stored[path]
        if _is_key(leaf):  # Typed PRNG keys are stored as their uint32 key data.
            leaf = jax.eval_shape(jax.random.key_data, leaf)
        want = tuple(getattr(leaf, "shape", np.shape(leaf)))
        have = tuple(getattr(meta, "shape", ()) or ())
        want_dt, have_dt = getattr(leaf, "dtype", None), getattr(meta, "dtype", None)
        if want != have:
            problems.append(
                f"leaf '{path}' has shape {have} in the checkpoint but {want} in the model"
            )
        elif want_dt is not None and have_dt is not None and np.dtype(want_dt) != np.dtype(have_dt):
            problems.append(
                f"leaf '{path}' has dtype {np.dtype(have_dt)} in the checkpoint but "
                f"{np.dtype(want_dt)} in the model (shape {want})"
            )
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{where}: {'; '.join(problems[:3])}{more}. The checkpoint was written by another "
            "configuration; use the matching config or a fresh directory."
        )


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


# ----------------------------------------------------------------------------- train state


class TrainCheckpointer:
    """Saves and restores `(state, meta)` pairs by step with an orbax `CheckpointManager`.

    Saves may run in the background (`async_save=True`): `save` returns once the arrays are
    copied to host memory; call `wait()` before reading the files and `close()` at the end
    (also done by the context manager). All processes must call `save`/`restore` together.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
        async_save: bool = True,
        read_only: bool = False,
    ) -> None:
        """Opens (and unless `read_only`, creates) the checkpoint directory.

        Args:
          directory: where step directories live, normally `<workdir>/ckpt`.
          max_to_keep: keep only the newest this many steps; `None` keeps all.
          save_interval_steps: `save` without `force` only writes steps that are multiples.
          async_save: write in a background thread.
          read_only: never create, write or delete (for inspection tools).

        Raises:
          ValueError: `max_to_keep` or `save_interval_steps` below 1.
          CheckpointError: `read_only` and the directory does not exist.
        """
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep={max_to_keep} must be >= 1 (or None to keep all)")
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps={save_interval_steps} must be >= 1")
        self.directory = Path(directory).absolute()
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} does not exist")
        policy = ocp.checkpoint_managers.LatestN(max_to_keep) if max_to_keep else None
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            preservation_policy=policy,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=async_save,
        )
        # Handlers registered up front so metadata can be read before any save or restore.
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            },
        )

    def save(
        self, step: int, state: Any, meta: Mapping[str, Any] | None = None, force: bool = False
    ) -> bool:
        """Saves `state` and `meta` as checkpoint `step`.

        Args:
          step: training step; a step that is already saved is left alone.
          state: pytree of arrays (jax or numpy) and Python scalars.
          meta: JSON-able dict (numpy/jax scalars are converted); `step` and `code_version` are
            added when missing.
          force: save even if `step` is not a multiple of `save_interval_steps`.

        Returns:
          Whether a save was started.
        """
        if step in self._manager.all_steps():
            return False
        meta_json = dict(to_jsonable(dict(meta or {})))
        meta_json.setdefault("step", int(step))
        meta_json.setdefault("code_version", aura.__version__)
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta_json)}
        )
        return bool(self._manager.save(int(step), args=args, force=force))

    def latest_step(self) -> int | None:
        """The newest committed step, or None when there is none (incomplete saves never count)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All committed steps, ascending."""
        return sorted(self._manager.all_steps())

    def step_dir(self, step: int) -> Path:
        """The directory of checkpoint `step`."""
        return self.directory / str(int(step))

    def _pick(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available steps: {steps}"
            )
        return int(step)

    def _corrupt(self, step: int, err: BaseException) -> CheckpointError:
        earlier = [s for s in self.all_steps() if s < step]
        fix = (
            f"delete it to resume from step {earlier[-1]}, or restore an earlier step explicitly"
            if earlier
            else "delete it to start fresh"
        )
        return CheckpointError(
            f"checkpoint step directory {self.step_dir(step)} is corrupt or incomplete "
            f"({_reason(err)}); {fix}."
        )

    def restore(
        self, step: int | None = None, *, abstract_state: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint `step` (default: the latest) into the template's structure.

        Args:
          step: which step; None picks the latest committed one.
          abstract_state: the state's structure: `jax.eval_shape` output (leaves may carry a
            `sharding`, which the restored arrays get) or a concrete state. Its leaf shapes and
            dtypes are checked against the stored metadata before anything is read. None
            restores the tree as saved (arrays on their saved devices).

        Returns:
          `(state, meta)`.

        Raises:
          CheckpointError: no checkpoint or no such step; the tree, a leaf's shape or dtype
            differs from the template (naming the leaf and both shapes); the step directory is
            corrupt or incomplete (naming it).
        """
        step = self._pick(step)
        try:
            state_meta = self._manager.item_metadata(step)[_STATE]
        except Exception as err:  # Orbax/tensorstore raise many types for damaged files.
            raise self._corrupt(step, err) from err
        if state_meta is None:
            raise self._corrupt(step, FileNotFoundError("state metadata (_METADATA) missing"))
        if abstract_state is not None:
            _check_tree(
                _flat(state_meta.tree), _flat(abstract_state), f"checkpoint {self.step_dir(step)}"
            )
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(abstract_state), _META: ocp.args.JsonRestore()}
        )
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as err:
            raise self._corrupt(step, err) from err
        return restored[_STATE], dict(restored[_META] or {})

    def restore_meta(self, step: int | None = None) -> dict[str, Any]:
        """Reads only the JSON `meta` of `step` (default: the latest); cheap."""
        step = self._pick(step)
        try:
            meta = self._manager.restore(
                step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
            )[_META]
        except Exception as err:
            raise self._corrupt(step, err) from err
        return dict(meta or {})

    def wait(self) -> None:
        """Blocks until a background save has finished (and raises its error, if any)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.close()

    def __enter__(self) -> TrainCheckpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- per expert


def expert_ckpt_path(root: str | Path, zone: str, idx: int) -> Path:
    """`<root>/<zone>/expert_<idx>`: where one expert of a zone is saved.

    Raises:
      ValueError: `zone` is not a plain directory name or `idx` is not an int >= 0.
    """
    if not zone or zone in {".", ".."} or "/" in zone or "\\" in zone:
        raise ValueError(f"zone name {zone!r} must be a plain directory name")
    if isinstance(idx, bool) or not isinstance(idx, int | np.integer) or idx < 0:
        raise ValueError(f"expert index {idx!r} must be an int >= 0")
    return Path(root) / zone / f"expert_{int(idx)}"


def _single_process_checkpointer() -> ocp.Checkpointer:
    # One process reads or writes a per-expert checkpoint on its own: no cross-host barriers.
    me = jax.process_index()
    mp = ocp_options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.StandardCheckpointHandler(), multiprocessing_options=mp)


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

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
      path: the expert directory, normally `expert_ckpt_path(root, zone, idx)`.
      expert_params: pytree of one expert's arrays (no leading E axis), e.g. `expert_rows(...)`.
      manifest: JSON-able facts (step, metrics, ...). `zone` and `expert` default to the names
        in `path`; `shapes`, `dtypes`, `param_count`, `created`, `code_version` and `format` are
        filled in.

    Returns:
      `path`.
    """
    path = Path(path).absolute()
    host = jax.tree_util.tree_map(_to_host, dict(expert_params))
    flat = _flat(host)
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
        ckptr.save(tmp / _PARAMS_DIR, args=ocp.args.StandardSave(host))
        with open(tmp / _MANIFEST, "w", encoding="utf-8") as f:
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
        manifest = json.loads((src / _MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("manifest is not a JSON object")
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"expert checkpoint {src} is corrupt or incomplete: {_MANIFEST} unreadable "
            f"({_reason(err)})"
        ) from err
    where = (
        f"expert checkpoint {path} (zone {manifest.get('zone')}, expert {manifest.get('expert')})"
    )
    ckptr = _single_process_checkpointer()
    try:
        try:
            stored = ckptr.metadata(src / _PARAMS_DIR).item_metadata
            if stored is None:
                raise FileNotFoundError(f"{src / _PARAMS_DIR} has no array metadata")
        except Exception as err:
            raise CheckpointError(f"{where} is corrupt or incomplete ({_reason(err)})") from err
        if template is not None:
            _check_tree(_flat(stored.tree), _flat(template), where)
        try:
            if template is None:
                params = ckptr.restore(src / _PARAMS_DIR)
            else:
                params = ckptr.restore(src / _PARAMS_DIR, ocp.args.StandardRestore(template))
        except Exception as err:
            raise CheckpointError(f"{where} is corrupt or incomplete ({_reason(err)})") from err
    finally:
        ckptr.close()
    return params, manifest


def _leading_axis(params_experts: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    flat = _flat(params_experts)
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
    new = _flat(rows)
    if set(new) != set(flat):
        only_model, only_rows = _sample(set(flat) - set(new)), _sample(set(new) - set(flat))
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
    out = [put(x, new["/".join(_key_name(k) for k in path)]) for path, x in paths_leaves]
    return jax.tree_util.tree_unflatten(treedef, out)
