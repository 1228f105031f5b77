"""What both kinds of orbax checkpoint share: the user-facing error and the tree checks.

Shapes and dtypes of a stored checkpoint are compared leaf by leaf with the caller's template
before anything is restored, so a checkpoint from another config is named, not half-loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

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
