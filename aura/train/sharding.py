"""One code path for parallelism: a device mesh, logical-axis rules, and NamedShardings.

Mesh axes (DESIGN.md): ``data`` (batch), ``fsdp`` (parameters and optimizer state sharded,
gathered by XLA where they are used; batch too), ``expert`` (the stacked ``[E, ...]`` expert axis;
batch too outside the MoE, whose tokens travel to their experts by all-to-all). Sizes come from
config (``--mesh data=2,expert=4``); ``-1`` means "the rest of the devices".

Sharding is data: modules name the axes of their parameters with logical names
(``nn.with_logical_partitioning``: "embed", "mlp", "vocab", "expert", ...) and a rules table
(:data:`DEFAULT_RULES`, overridable from config) maps logical names to mesh axes. The state is
created already sharded: ``jax.eval_shape`` of the init gives the abstract state and its logical
specs, the rules turn them into NamedShardings, and a jitted init with those ``out_shardings``
materialises every array where it belongs (never a full copy on one device). Parameters without
names (modules that do not annotate) are sharded over ``fsdp`` along their largest divisible
axis when they are large (:func:`fsdp_fallback`), else replicated.

Batches are assembled per process (multi-host): each process supplies the rows that its own
devices hold (:func:`process_batch_rows`) and :func:`global_batch` makes the global array with
``jax.make_array_from_process_local_data``.

``--pmap`` in the original CLI means "data parallel over all local devices"; here that is
simply the mesh ``data=-1`` (no ``jax.pmap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert")
BATCH_AXES = MESH_AXES  # a batch is split over every device

# logical axis -> mesh axis (None: replicated), in priority order; a mesh axis is used at most
# once per array (flax.linen.logical_to_mesh_axes).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("expert", "expert"),
    ("embed", "fsdp"),
    ("mlp", None),
    ("vocab", None),
    ("heads", None),
    ("length", None),
)
FSDP_MIN_SIZE = 2**14  # unannotated leaves with fewer elements stay replicated


def parse_mesh(spec: str) -> dict[str, int]:
    """``"data=2,expert=4"`` -> ``{"data": 2, "expert": 4}`` (sizes are ints, ``-1`` allowed).

    Raises:
      ValueError: a malformed entry, an unknown axis, or a size that is not an integer.
    """
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, size = part.partition("=")
        name = name.strip()
        if not eq or name not in MESH_AXES:
            raise ValueError(
                f"--mesh entry {part!r}: expected AXIS=SIZE with AXIS one of {', '.join(MESH_AXES)}"
            )
        try:
            out[name] = int(size)
        except ValueError:
            raise ValueError(f"--mesh entry {part!r}: size {size!r} is not an integer") from None
    return out


def resolve_mesh_shape(
    shape: dict[str, int] | Sequence[int], num_devices: int
) -> tuple[int, int, int]:
    """Resolves ``{"data": -1, "fsdp": 2, "expert": 1}`` (or a 3-sequence) against a device count.

    Without a ``-1`` the mesh may use fewer devices than there are (the first ones).

    Raises:
      ValueError: more than one ``-1``, a non-positive size, or a mesh needing more devices than
        there are (the message names the sizes and the count).
    """
    if isinstance(shape, dict) or hasattr(shape, "items"):
        shape = dict(shape.items())
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
    """A ``Mesh`` over ``devices`` (default: all, every process) with axes ``data, fsdp, expert``.

    When the mesh uses every device, ``mesh_utils.create_device_mesh`` orders them along the
    physical interconnect (TPU ICI torus); otherwise the first devices are used in order.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape if shape is not None else {"data": -1}, len(devices))
    if math.prod(sizes) == len(devices):
        grid = mesh_utils.create_device_mesh(sizes, devices)
    else:
        grid = np.asarray(devices[: math.prod(sizes)], dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def logical_specs(abstract_tree: Any) -> Any:
    """Logical PartitionSpecs of a (possibly boxed) abstract tree (``P()`` for unboxed leaves)."""
    return nn.get_partition_spec(abstract_tree)


def shardings_from_logical(specs: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Logical specs -> NamedShardings on ``mesh`` through ``rules``."""
    return nn.logical_to_mesh_sharding(specs, mesh, [tuple(r) for r in rules])


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes a batch is split over (those of :data:`BATCH_AXES` the mesh has)."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh, ndim: int = 2, batch_axis: int = 0) -> NamedSharding:
    """Sharding of a batch array: its batch axis over every batch mesh axis, the rest replicated."""
    spec = [None] * ndim
    spec[batch_axis] = batch_axes(mesh)
    return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on ``mesh`` (scalars, metrics)."""
    return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways a batch is split: the product of the batch mesh axes."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


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


def fsdp_fallback(
    abstract: Any, shardings: Any, mesh: Mesh, min_size: int = FSDP_MIN_SIZE, axis: str = "fsdp"
) -> Any:
    """Shards large, fully replicated leaves over ``axis`` along their largest divisible dim.

    Modules that do not name their axes (e.g. the language core) still get ZeRO-3 style
    sharding of parameters and optimizer state when the mesh has an ``fsdp`` axis > 1.
    """
    n = mesh.shape.get(axis, 1)
    if n == 1:
        return shardings

    def fallback(leaf, sharding):
        if not isinstance(sharding, NamedSharding) or any(s is not None for s in sharding.spec):
            return sharding
        if math.prod(leaf.shape) < min_size:
            return sharding
        dims = sorted(range(len(leaf.shape)), key=lambda i: -leaf.shape[i])
        for i in dims:
            if leaf.shape[i] % n == 0:
                spec = [None] * len(leaf.shape)
                spec[i] = axis
                return NamedSharding(mesh, P(*spec))
        return sharding

    return jax.tree.map(fallback, abstract, shardings)


def state_shardings(abstract_boxed: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """NamedShardings for every leaf of a (possibly boxed) abstract state."""
    abstract = nn.meta.unbox(abstract_boxed)
    shardings = shardings_from_logical(logical_specs(abstract_boxed), mesh, rules)
    shardings = fit_shardings(abstract, shardings, mesh)
    return fsdp_fallback(abstract, shardings, mesh)


def abstract_sharded(init_fn: Callable[[], Any], mesh: Mesh, rules=DEFAULT_RULES):
    """(abstract unboxed tree of ShapeDtypeStructs carrying their sharding, shardings).

    What a checkpoint restore needs: the shapes, dtypes and target shardings, no memory.
    """
    boxed = jax.eval_shape(init_fn)
    shardings = state_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        nn.meta.unbox(boxed),
        shardings,
    )
    return abstract, shardings


def create_sharded(init_fn: Callable[[], Any], mesh: Mesh, rules=DEFAULT_RULES):
    """Runs ``init_fn`` (returning a possibly boxed pytree) directly into its shardings.

    Returns:
      (tree with metadata boxes removed, tree of NamedShardings).
    """
    shardings = state_shardings(jax.eval_shape(init_fn), mesh, rules)

    def init_unboxed():
        return nn.meta.unbox(init_fn())

    return jax.jit(init_unboxed, out_shardings=shardings)(), shardings


def process_batch_rows(sharding: NamedSharding, global_shape: Sequence[int], axis: int = 0):
    """Global indices along ``axis`` of the rows this process's devices hold, ascending.

    The order ``jax.make_array_from_process_local_data`` expects its ``local_data`` in. On one
    process this is ``arange(global_shape[axis])``.

    Raises:
      ValueError: the batch dimension is not divisible by its mesh axes.
    """
    size = global_shape[axis]
    names = sharding.spec[axis] if axis < len(sharding.spec) else None
    names = () if names is None else names if isinstance(names, tuple) else (names,)
    shards = math.prod(sharding.mesh.shape[a] for a in names)
    if size % shards:
        raise ValueError(f"batch of {size} rows does not split evenly over {shards} devices")
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map(tuple(global_shape)).values():
        rows.update(range(size)[index[axis]])
    return np.asarray(sorted(rows), dtype=np.int64)


def global_batch(
    local: np.ndarray, mesh: Mesh, batch_axis: int = 0, global_rows: int | None = None
) -> jax.Array:
    """Assembles the global batch from this process's rows (multi-host safe).

    Args:
      local: this process's rows (those of :func:`process_batch_rows`, in that order).
      mesh: the mesh; the batch axis is split over :func:`batch_axes`.
      batch_axis: which axis of ``local`` is the batch.
      global_rows: the global batch size (default: inferred, ``local`` rows × processes).
    """
    sharding = batch_sharding(mesh, local.ndim, batch_axis)
    shape = None
    if global_rows is not None:
        shape = tuple(local.shape[:batch_axis]) + (global_rows,) + local.shape[batch_axis + 1 :]
    return jax.make_array_from_process_local_data(sharding, local, shape)


def place_batch(
    data: Any, extras: Any, mesh: Mesh, batch_axis: int = 0, process_local: bool = False
) -> tuple[Any, Any]:
    """Puts a step's host batch on the mesh: ``data`` split over the batch axes, ``extras``
    replicated (copied: they may share buffers with a donated state).

    With several processes each process passes the global batch (its rows are taken here) or,
    with ``process_local``, only its own rows.
    """
    rep = replicated(mesh)
    if jax.process_count() == 1:
        sh = jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x), batch_axis), data)
        return jax.device_put(data, sh), jax.device_put(extras, rep, may_alias=False)

    def put(x):
        x = np.asarray(x)
        rows = x.shape[batch_axis]
        if process_local:
            rows = rows * jax.process_count()
        else:
            idx = process_batch_rows(batch_sharding(mesh, x.ndim, batch_axis), x.shape, batch_axis)
            x = np.take(x, idx, axis=batch_axis)
        return global_batch(x, mesh, batch_axis, global_rows=rows)

    return jax.tree.map(put, data), jax.device_put(extras, rep, may_alias=False)


def _buffer(x: Any) -> int | None:
    try:
        return x.addressable_shards[0].data.unsafe_buffer_pointer()
    except (AttributeError, IndexError, RuntimeError, ValueError):
        return None


def unalias(state: Any) -> Any:
    """Copies leaves that share a device buffer with an earlier leaf (the step donates the state,
    and a buffer cannot be donated twice: e.g. an ``anchor`` that is the init's own params)."""
    seen: set[int] = set()

    def fresh(x):
        ptr = _buffer(x)
        if ptr is None:
            return x
        if ptr in seen:
            return jnp.copy(x)
        seen.add(ptr)
        return x

    return jax.tree.map(fresh, state)
