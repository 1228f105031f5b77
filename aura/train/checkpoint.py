"""Checkpoints with orbax: the resumable training state, and the checks every restore shares.

`TrainCheckpointer` wraps `orbax.checkpoint.CheckpointManager` over `<workdir>/ckpt`. Each step
directory holds two items: `state` (params, optimizer state, controller arrays; a pytree saved
with `StandardSave`) and `meta` (JSON: step, history, config, code version). Orbax writes each
step into a temporary directory and renames it when complete, so a crash mid-save never leaves a
step that `latest_step()` would pick. Once a step is final its files' sha256 go into
`checksums.json` beside them (orbax has no checksum of its own), verified before every restore,
so silent bit rot (bytes changed in place, same size) is named instead of loaded. Restoring
checks every leaf's shape and dtype against the caller's abstract state first, from the stored
metadata, and names the first leaf that differs with both shapes (:func:`check_tree`, also used
by the per-expert checkpoints in ``experts``).
Plain arrays and JSON only (orbax/zarr/OCDBT on disk, never pickle): loading never runs code.

Problems a person can fix (missing or corrupt checkpoint, a checkpoint from another config) raise
`CheckpointError`; commands print it and exit with status 2.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

import aura
from aura.train.metrics import to_jsonable

__all__ = [
    "EXPERT_FORMAT",
    "CheckpointError",
    "TrainCheckpointer",
    "check_tree",
    "checkpoint_dir",
    "file_checksums",
    "verify_checksums",
    "failure_reason",
    "flat_tree",
]

PARAMS_DIR, MANIFEST = "params", "manifest.json"  # a per-expert checkpoint's parts
CHECKSUMS = "checksums.json"  # sha256 of every file of a step, written once the step is final
EXPERT_FORMAT = "aura.expert/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, incomplete, or from another config."""


# ----------------------------------------------------------------------------- tree checks


def key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey/FlattenedIndexKey, GetAttrKey, SequenceKey.
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def flat_tree(tree: Any) -> dict[str, Any]:
    """Leaf path ("params/experts/w", "opt_state/1/0/mu/...") -> leaf."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(key_name(k) for k in path): leaf for path, leaf in leaves}


def sample_names(names: set[str], n: int = 5) -> str:
    names_s = sorted(names)
    more = f" and {len(names_s) - n} more" if len(names_s) > n else ""
    return ", ".join(names_s[:n]) + more


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def check_tree(stored: Mapping[str, Any], template: Mapping[str, Any], where: str) -> None:
    """Raises CheckpointError unless the stored leaves match the template's paths/shapes/dtypes."""
    only_model = set(template) - set(stored)
    only_ckpt = set(stored) - set(template)
    if only_model or only_ckpt:
        raise CheckpointError(
            f"{where} does not match the model's parameter tree: leaves only in the model: "
            f"[{sample_names(only_model)}]; only in the checkpoint: [{sample_names(only_ckpt)}]. "
            "It was written by another configuration; use the matching config or a fresh "
            "directory."
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


def failure_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


_STATE, _META = "state", "meta"


def file_checksums(directory: str | Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative path -> hex), the checksum file aside."""
    root = Path(directory)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
        out[str(path.relative_to(root))] = h.hexdigest()
    return out


def verify_checksums(directory: str | Path, recorded: dict[str, str], where: str) -> None:
    """Checks the files under ``directory`` against checksums recorded at save time.

    Raises:
      CheckpointError: a file missing, added or changed since the save (silent bit rot or a
        partial copy), naming the file.
    """
    have = file_checksums(directory)
    for name, digest in sorted(recorded.items()):
        if name not in have:
            raise CheckpointError(f"{where} is corrupt or incomplete: file {name} is missing")
        if have[name] != digest:
            raise CheckpointError(
                f"{where} is corrupt or incomplete: file {name} changed since it was saved "
                "(checksum mismatch: bit rot or a damaged copy)"
            )


def checkpoint_dir(path: str | Path) -> Path:
    """A run directory (holding ``ckpt/``) or a checkpoint directory -> the checkpoint directory."""
    sub = Path(path) / "ckpt"
    return sub if sub.is_dir() else Path(path)


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
        self._read_only = read_only
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
        self._seal_finished()
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

    def _seal_finished(self) -> None:
        """Writes ``checksums.json`` into every committed step that has none yet.

        A step is sealed only once orbax has finished it (an async save is waited for first),
        so the checksums describe exactly the files of the final step. Process 0 writes.
        """
        if self._read_only or jax.process_index() != 0:
            return
        self._manager.wait_until_finished()
        for step in self._manager.all_steps():
            path = self.step_dir(step) / CHECKSUMS
            if path.parent.is_dir() and not path.exists():
                tmp = path.with_name(f".{CHECKSUMS}.tmp")
                tmp.write_text(json.dumps(file_checksums(path.parent), indent=1, sort_keys=True))
                os.replace(tmp, path)

    def verify(self, step: int) -> bool:
        """Checks step ``step``'s files against the checksums recorded when it was sealed.

        Returns:
          Whether the step had checksums to check (a step sealed by no save yet has none).

        Raises:
          CheckpointError: a file changed or went missing since the save (naming it).
        """
        path = self.step_dir(step) / CHECKSUMS
        if not path.is_file():
            return False
        try:
            recorded = json.loads(path.read_text())
        except ValueError as err:
            raise CheckpointError(f"{path} is unreadable ({err})") from err
        verify_checksums(path.parent, recorded, f"checkpoint {self.step_dir(step)}")
        return True

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
            f"({failure_reason(err)}); {fix}."
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
            self.verify(step)  # silent bit rot is named before anything is parsed
            state_meta = self._manager.item_metadata(step)[_STATE]
        except Exception as err:  # Orbax/tensorstore raise many types for damaged files.
            raise self._corrupt(step, err) from err
        if state_meta is None:
            raise self._corrupt(step, FileNotFoundError("state metadata (_METADATA) missing"))
        if abstract_state is not None:
            check_tree(
                flat_tree(state_meta.tree),
                flat_tree(abstract_state),
                f"checkpoint {self.step_dir(step)}",
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
        """Blocks until a background save has finished (and raises its error, if any), then
        records the checksums of the finished steps."""
        self._manager.wait_until_finished()
        self._seal_finished()

    def close(self) -> None:
        """Waits for pending saves, seals them and releases the manager."""
        self._seal_finished()
        self._manager.close()

    def __enter__(self) -> TrainCheckpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
