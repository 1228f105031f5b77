"""How the language-training commands turn a preset plus flags into dtype, mesh and batch.

``pretrain`` and ``pretrain_zones`` share this so ``--dtype``, ``--pmap``, ``--mesh`` and
``--per_device_batch`` mean the same thing in both.
"""

from __future__ import annotations

import ml_collections

DTYPES = {"bf16": "bfloat16", "f32": "float32"}


def resolve_run(
    preset: ml_collections.ConfigDict,
    *,
    dtype: str | None,
    batch_size: int | None,
    pmap: bool,
    per_device_batch: int | None,
    mesh_spec: str | None = None,
) -> tuple[ml_collections.ConfigDict, dict, int]:
    """(model config, mesh shape, global batch) from a preset and the command's flags.

    Raises:
      ValueError: ``--pmap`` together with ``--mesh``, or ``--per_device_batch`` without either.
    """
    import jax

    from aura.train import sharding

    model = preset.model
    if dtype:
        model.dtype = DTYPES[dtype]
    if pmap and mesh_spec:
        raise ValueError("--pmap means --mesh data=-1; pass one of them")
    mesh = dict(preset.mesh)
    if mesh_spec:
        mesh = {"data": 1, "fsdp": 1, "expert": 1, **sharding.parse_mesh(mesh_spec)}
    if pmap:
        mesh = {"data": -1, "fsdp": 1, "expert": 1}
    batch = batch_size or preset.batch_size
    if per_device_batch:
        if not (pmap or mesh_spec):
            raise ValueError("--per_device_batch needs --pmap or --mesh")
        shape = sharding.resolve_mesh_shape(mesh, jax.device_count())
        batch = per_device_batch * shape[0] * shape[1] * shape[2]
    return model, mesh, batch
