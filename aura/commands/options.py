"""Configs as Python for the commands: ``--config`` presets, alias flags onto them, shared flags.

Every training command reads its settings from a preset file in ``configs/`` (installed with the
package as ``aura.configs``; ``get_config(arg)`` returns an ``ml_collections.ConfigDict``):

    python -m aura.build mnist --config configs/mnist.py:tiny --config.epochs=2
    python -m aura.build mnist --epochs 2                        # the same, through an alias

``--config`` defaults to the installed preset file, so a non-editable install works from any
directory. The familiar flags (``--steps``, ``--batch_size``, ``--epochs``, ...) are aliases: an
alias that is given sets its config field (an explicit value is always used as given — a bad
one is refused by the config's validation, never replaced by the preset's value).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from aura.experiments.lm.pretrain import PretrainConfig
from aura.train import sharding

__all__ = ["Alias", "apply_aliases", "define_aliases", "define_config", "preset_path"]

DTYPES = {"bf16": "bfloat16", "f32": "float32"}


def preset_path(name: str) -> str:
    """The installed preset file ``configs/<name>.py`` (``aura.configs.<name>``)."""
    return str(importlib.resources.files("aura.configs") / f"{name}.py")


def define_config(name: str, preset: str, help_: str = "") -> None:
    """Defines ``--config`` (default: ``configs/<name>.py:<preset>``), overridable field by field
    with ``--config.<field>=value``."""
    config_flags.DEFINE_config_file(
        "config",
        f"{preset_path(name)}:{preset}",
        help_ or f"preset file[:preset] (default configs/{name}.py:{preset})",
    )


@dataclasses.dataclass(frozen=True)
class Alias:
    """A flag that sets one config field: ``--<name> v`` means ``--config.<path>=v``."""

    name: str
    path: str
    kind: str  # integer | float | string | boolean | enum
    help: str
    choices: tuple[str, ...] = ()
    convert: tuple[tuple[str, Any], ...] = ()  # enum value -> config value (e.g. bf16 -> bfloat16)

    def define(self) -> None:
        text = f"{self.help} (sets config.{self.path})"
        if self.kind == "enum":
            flags.DEFINE_enum(self.name, None, list(self.choices), text)
        else:
            getattr(flags, f"DEFINE_{self.kind}")(self.name, None, text)


def define_aliases(aliases: Sequence[Alias]) -> None:
    """Defines every alias flag (default None: "not given, keep the preset's value")."""
    for a in aliases:
        a.define()


def _set(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value


def apply_aliases(
    config: ml_collections.ConfigDict, aliases: Sequence[Alias], values=flags.FLAGS
) -> ml_collections.ConfigDict:
    """Sets the config field of every alias given on the command line.

    Returns:
      A copy of ``config`` with the aliases applied (the parsed flag value is left alone).

    Raises:
      ValueError: a value the field cannot hold (naming the flag).
    """
    config = copy.deepcopy(config)
    for a in aliases:
        if values[a.name].present:
            value = dict(a.convert).get(values[a.name].value, values[a.name].value)
            try:
                _set(config, a.path, value)
            except (TypeError, KeyError, AttributeError) as err:
                raise ValueError(f"--{a.name}: cannot set config.{a.path}: {err}") from err
    return config


def define_mesh_flags() -> None:
    """``--mesh`` and its shorthands ``--pmap`` / ``--per_device_batch``."""
    flags.DEFINE_string("mesh", None, "device mesh, e.g. data=2,expert=4 (-1: the rest)")
    flags.DEFINE_boolean("pmap", False, "data parallel over all local devices (--mesh data=-1)")
    flags.DEFINE_integer("per_device_batch", None, "with --pmap or --mesh: batch per device")


def resolve_mesh(
    preset_mesh: dict | None, mesh_spec: str | None, pmap: bool
) -> dict[str, int] | None:
    """The mesh a run uses: ``--pmap`` (data=-1), ``--mesh``, or the preset's.

    Raises:
      ValueError: ``--pmap`` together with ``--mesh``, or a malformed ``--mesh``.
    """
    if pmap and mesh_spec:
        raise ValueError("--pmap means --mesh data=-1; pass one of them")
    if pmap:
        return {"data": -1, "fsdp": 1, "expert": 1}
    if mesh_spec:
        return {"data": 1, "fsdp": 1, "expert": 1, **sharding.parse_mesh(mesh_spec)}
    return dict(preset_mesh) if preset_mesh else None


def per_device_batch_size(mesh: dict | None, per_device: int | None, given: bool) -> int | None:
    """``--per_device_batch`` times the mesh's batch shards (None when not given).

    Raises:
      ValueError: ``--per_device_batch`` without ``--pmap``/``--mesh``, or not >= 1.
    """
    if per_device is None:
        return None
    if not given:
        raise ValueError("--per_device_batch needs --pmap or --mesh")
    if per_device < 1:
        raise ValueError(f"--per_device_batch={per_device} must be >= 1")
    shape = sharding.resolve_mesh_shape(mesh, jax.device_count())
    return per_device * shape[0] * shape[1] * shape[2]


# The language-training flags (pretrain, and pretrain_zones' adapter under ``lm.``).
LM_FIELDS = (
    ("steps", "steps", "integer", "adapter optimizer steps"),
    ("batch_size", "batch_size", "integer", "global batch per micro-step"),
    ("accumulate_steps", "accumulate_steps", "integer", "micro-batches per optimizer step"),
    ("max_len", "max_len", "integer", "tokens kept per example"),
    ("pad_to", "pad_to", "integer", "pad examples to this length (>= max_len)"),
    ("lr", "lr", "float", "adapter peak learning rate"),
    ("warmup", "warmup", "integer", "learning-rate warm-up steps"),
    ("seed", "seed", "integer", "random seed"),
    ("log_every", "log_every", "integer", "steps per log line"),
    ("save_every", "save_every", "integer", "steps per checkpoint"),
)


def lm_aliases(prefix: str = "") -> tuple[Alias, ...]:
    """The adapter flags, setting ``<prefix><field>`` (``lm.`` in pretrain_zones' config)."""
    out = [Alias(n, prefix + p, k, h) for n, p, k, h in LM_FIELDS]
    out.append(Alias("dtype", prefix + "model.dtype", "enum",
                     "compute dtype (master weights stay f32)", ("bf16", "f32"),
                     tuple(DTYPES.items())))  # fmt: skip
    out.append(Alias("on_bad_record", prefix + "on_bad_record", "enum",
                     "a JSONL line that is not a valid record", ("skip", "fail")))  # fmt: skip
    return tuple(out)


LM_ALIASES = lm_aliases()


def pretrain_config(c: ml_collections.ConfigDict, values, **paths: Any):
    """A :class:`PretrainConfig` from a ``configs/pretrain.py`` config (after the aliases), the
    mesh flags (``--mesh``/``--pmap``/``--per_device_batch``) and ``spm_model``/``tensorboard``.

    Raises:
      ValueError: bad values (naming the flag or field).
    """
    mesh = resolve_mesh(c.mesh, values.mesh, values.pmap)
    batch = per_device_batch_size(mesh, values.per_device_batch, bool(values.pmap or values.mesh))
    return PretrainConfig(
        spm_model=values.spm_model, model=ml_collections.ConfigDict(c.model.to_dict()),
        steps=c.steps, batch_size=batch or c.batch_size, accumulate_steps=c.accumulate_steps,
        max_len=c.max_len, pad_to=c.pad_to, lr=c.lr, warmup=c.warmup, seed=c.seed,
        log_every=c.log_every, save_every=c.save_every, on_bad_record=c.on_bad_record,
        mesh=mesh or {"data": 1}, rules=tuple(tuple(r) for r in c.get("rules", ())) or None,
        tensorboard=values.tensorboard, pack=bool(c.get("pack", True)),
        heldout=c.get("heldout"), eval_every=c.get("eval_every"),
        shuffle_window=c.get("shuffle_window", PretrainConfig.shuffle_window),
        prefetch=c.get("prefetch", PretrainConfig.prefetch), **paths,
    ).validated()  # fmt: skip
