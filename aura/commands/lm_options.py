"""The flags the language-training commands share, and how a preset plus flags become a run.

``pretrain`` and ``pretrain_zones`` both call :func:`define_adapter_flags` and
:func:`resolve_flags`, so ``--config``, ``--dtype``, ``--pmap``, ``--mesh``,
``--per_device_batch`` and the rest mean the same thing in both.
"""

from __future__ import annotations

import os

import ml_collections
from absl import flags
from ml_collections import config_flags

PRESETS = os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "..", "configs", "pretrain.py")
)

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


def define_adapter_flags(*, spm_required: bool) -> None:
    """Defines the adapter-training flags (call once, from the command module that uses them)."""
    config_flags.DEFINE_config_file("config", f"{PRESETS}:demo", "adapter preset")
    flags.DEFINE_string(
        "spm_model", None, "SentencePiece model (file or dir)", required=spm_required
    )
    flags.DEFINE_integer("steps", None, "adapter optimizer steps (default: the preset's)")
    flags.DEFINE_integer("batch_size", None, "global batch per micro-step")
    flags.DEFINE_integer("accumulate_steps", None, "micro-batches per optimizer step")
    flags.DEFINE_integer("max_len", None, "tokens kept per example")
    flags.DEFINE_integer("pad_to", None, "pad examples to this length (>= max_len)")
    flags.DEFINE_enum("dtype", None, ["bf16", "f32"], "compute dtype (master weights stay f32)")
    flags.DEFINE_float("lr", None, "adapter peak learning rate")
    flags.DEFINE_integer("seed", 0, "random seed")
    flags.DEFINE_boolean("pmap", False, "data parallel over all local devices (a mesh, not pmap)")
    flags.DEFINE_integer("per_device_batch", None, "with --pmap or --mesh: batch per device")
    flags.DEFINE_string("mesh", None, "device mesh, e.g. data=2,expert=4 (default: the preset's)")
    flags.DEFINE_boolean("tensorboard", True, "write TensorBoard events")


def resolve_flags(values) -> tuple[ml_collections.ConfigDict, dict]:
    """(model config, the shared run fields) from parsed :func:`define_adapter_flags`.

    The fields are named as in ``PretrainConfig`` (and ``ZonesConfig``): spm_model, steps,
    batch_size, accumulate_steps, max_len, pad_to, lr, warmup, seed, log_every, save_every, mesh,
    rules, tensorboard; a flag that is not set takes the preset's value.

    Raises:
      ValueError: as :func:`resolve_run`.
    """
    c = values.config
    model, mesh, batch = resolve_run(
        c,
        dtype=values.dtype,
        batch_size=values.batch_size,
        pmap=values.pmap,
        per_device_batch=values.per_device_batch,
        mesh_spec=values.mesh,
    )
    return model, {
        "spm_model": values.spm_model,
        "steps": values.steps or c.steps,
        "batch_size": batch,
        "accumulate_steps": values.accumulate_steps or c.accumulate_steps,
        "max_len": values.max_len or c.max_len,
        "pad_to": values.pad_to,
        "lr": values.lr or c.lr,
        "warmup": c.warmup,
        "seed": values.seed,
        "log_every": c.log_every,
        "save_every": c.save_every,
        "mesh": mesh,
        "rules": tuple(tuple(r) for r in c.get("rules", ())) or None,
        "tensorboard": values.tensorboard,
    }
