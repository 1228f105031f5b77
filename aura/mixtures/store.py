"""Saving mixture models: an orbax array checkpoint plus a JSON manifest, never pickle.

Layout of a saved model directory::

    <path>/arrays/          orbax StandardCheckpoint of a nested dict of arrays
    <path>/manifest.json    {"format": "aura.mixture/1", "kind": ..., ...}

`kind` says what wrote the directory ("mm", "mmman", "cerebrum"); the loaders refuse a
directory of another kind, or (for single models) of another model type, with a `DataError`
that says what the directory holds and how to load it. The directory is written under a hidden
temporary name and renamed into place, so a crash never leaves a half-written model where a
complete one was; loading reads arrays and JSON only and never runs code.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import options as ocp_options

import aura
from aura.data.errors import DataError

__all__ = ["FORMAT", "load_model_dir", "read_manifest", "save_model_dir"]

FORMAT = "aura.mixture/1"
_ARRAYS, _MANIFEST = "arrays", "manifest.json"


def _checkpointer() -> ocp.Checkpointer:
    me = jax.process_index()  # one process writes/reads on its own: no cross-host barriers
    mp = ocp_options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.StandardCheckpointHandler(), multiprocessing_options=mp)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic | np.ndarray) and np.ndim(obj) == 0:
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def save_model_dir(path: str | os.PathLike[str], arrays: dict, manifest: dict) -> Path:
    """Writes `arrays` (nested dict of arrays, at least one) and `manifest` to `path`.

    Replaces an existing save atomically (temporary sibling, then renames).

    Args:
      path: target directory.
      arrays: nested dict of numpy/jax arrays.
      manifest: JSON-able dict; must hold "kind". "format", "created" and "code_version" are
        added.

    Returns:
      The absolute path.
    """
    path = Path(path).absolute()
    host = jax.tree.map(np.asarray, arrays)
    if not jax.tree.leaves(host):
        raise ValueError(f"nothing to save at {path}: no arrays")
    full = dict(_jsonable(manifest))
    full.update(
        format=FORMAT,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        code_version=aura.__version__,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    ckptr = _checkpointer()
    try:
        ckptr.save(tmp / _ARRAYS, args=ocp.args.StandardSave(host))
        with open(tmp / _MANIFEST, "w", encoding="utf-8") as f:
            json.dump(full, f, indent=2, allow_nan=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        ckptr.close()
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a saved model directory.

    Raises:
      DataError: missing directory, unreadable manifest, or not an AURA mixture save.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"no saved model at {path} (directory does not exist)")
    try:
        manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path}: {_MANIFEST} is missing or unreadable ({e}); not a saved model"
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(f"{path}: format {got!r} is not {FORMAT!r}; not a saved mixture model")
    return manifest


def load_model_dir(path: str | os.PathLike[str], kind: str) -> tuple[dict, dict[str, Any]]:
    """Loads ``(arrays, manifest)`` from a directory written by `save_model_dir`.

    Args:
      path: the directory.
      kind: the kind the caller can load ("mm", "mmman", "cerebrum").

    Raises:
      DataError: missing/corrupt directory, or a save of another kind (named in the message).
    """
    manifest = read_manifest(path)
    if manifest.get("kind") != kind:
        raise DataError(
            f"{path} holds a saved {manifest.get('kind')!r} "
            f"(model type {manifest.get('model_type')!r}), not a {kind!r}; load it with the "
            f"matching class"
        )
    ckptr = _checkpointer()
    try:
        arrays = ckptr.restore(Path(path).absolute() / _ARRAYS)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise DataError(f"{path}: arrays are missing or corrupt ({type(e).__name__}: {e})") from e
    finally:
        ckptr.close()
    return jax.tree.map(np.asarray, arrays), manifest
