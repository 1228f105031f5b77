"""One code path for parallelism: a device mesh, logical-axis rules, and NamedShardings.

Mesh axes (DESIGN.md): ``data`` (batch), ``fsdp`` (parameters sharded, gathered per layer by
XLA; batch too), ``expert`` (expert parallelism: the stacked ``[E, ...]`` expert axis). Sizes
come from config; ``-1`` means "the rest of the devices".

Modules name the axes of their parameters with logical names (``nn.with_logical_partitioning``:
"embed", "mlp", "vocab", "expert", ...); :data:`DEFAULT_RULES` maps logical names to mesh axes.
The state is created already sharded: ``jax.eval_shape`` of the init gives the abstract state
and its logical specs, the rules turn them into NamedShardings, and a jitted init with those
``out_shardings`` materialises every array where it belongs (never a full copy on one device).

``--pmap`` in the original CLI means "data parallel over all local devices"; here that is
simply the mesh ``data=-1`` (no ``jax.pmap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert")

# logical axis -> mesh axis (or None: replicated). Batch-like axes use data and fsdp together.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", None),
    ("vocab", None),
    ("expert", "expert"),
    ("heads", None),
    ("length", None),
)


def resolve_mesh_shape(
    shape: dict[str, int] | Sequence[int], num_devices: int
) -> tuple[int, int, int]:
    """Resolves ``{"data": -1, "fsdp": 2, "expert": 1}`` (or a 3-sequence) against a device count.

    Without a ``-1`` the mesh may use fewer devices than there are (the first ones).

    Raises:
      ValueError: more than one ``-1``, a non-positive size, or a mesh needing more devices than
        there are (the message names the sizes and the count).
    """
    if isinstance(shape, dict):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; valid: {', '.join(MESH_AXES)}")
        sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    else:
        sizes = [int(s) for s in shape]
        if len(sizes) != len(MESH_AXES):
            raise ValueError(f"mesh shape {sizes} must have {len(MESH_AXES)} entries {MESH_AXES}")
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh shape {sizes}: at most one axis may be -1 ('the rest')")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh shape {sizes}: sizes must be positive or -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"mesh shape {dict(zip(MESH_AXES, sizes, strict=True))}: {known} does not divide "
                f"the {num_devices} devices"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) > num_devices:
        raise ValueError(
            f"mesh shape {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} "
            f"devices, but {num_devices} are available"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(shape: dict[str, int] | Sequence[int] | None = None, devices=None) -> Mesh:
    """A ``Mesh`` over ``devices`` (default: all) with axes ``data, fsdp, expert``."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape if shape is not None else {"data": -1}, len(devices))
    grid = np.asarray(devices[: math.prod(sizes)], dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def logical_specs(abstract_tree: Any) -> Any:
    """Logical PartitionSpecs of a (possibly boxed) abstract tree (``None`` axes when unboxed)."""
    return nn.get_partition_spec(abstract_tree)


def shardings_from_logical(specs: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Logical specs -> NamedShardings on ``mesh``; axes whose mesh size does not divide the
    dimension are left replicated by the caller's choice of rules (checked in ``fit``)."""
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int = 2, batch_axis: int = 0) -> NamedSharding:
    """Sharding of a batch array: its batch axis over ``("data", "fsdp")``, the rest replicated."""
    spec = [None] * ndim
    spec[batch_axis] = ("data", "fsdp")
    return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def create_sharded(init_fn: Callable[[], Any], mesh: Mesh, rules=DEFAULT_RULES):
    """Runs ``init_fn`` (returning a possibly boxed pytree) directly into its shardings.

    Returns:
      (tree with metadata boxes removed, tree of NamedShardings).
    """
    abstract = jax.eval_shape(init_fn)
    shardings = shardings_from_logical(logical_specs(abstract), mesh, rules)
    shardings = fit_shardings(nn.meta.unbox(abstract), shardings, mesh)

    def init_unboxed():
        return nn.meta.unbox(init_fn())

    tree = jax.jit(init_unboxed, out_shardings=shardings)()
    return tree, shardings


def fit_shardings(abstract: Any, shardings: Any, mesh: Mesh) -> Any:
    """Replaces a sharded axis that the mesh size does not divide by replication (per leaf)."""

    def fit(leaf, sharding):
        if not isinstance(sharding, NamedSharding):
            return sharding
        spec = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
        for i, axes in enumerate(spec):
            if axes is None:
                continue
            names = axes if isinstance(axes, tuple) else (axes,)
            size = math.prod(mesh.shape[a] for a in names)
            if leaf.shape[i] % size:
                spec[i] = None
        return NamedSharding(mesh, P(*spec))

    return jax.tree.map(fit, abstract, shardings)


def global_batch(local: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
    """Assembles the global batch from this process's rows (multi-host safe).

    Each process passes its own shard of the batch; ``jax.make_array_from_process_local_data``
    places the rows on this process's devices of the mesh.
    """
    sharding = batch_sharding(mesh, local.ndim, batch_axis)
    return jax.make_array_from_process_local_data(sharding, local)
