"""What ``pretrain_zones`` needs: :class:`ZonesConfig` (built from ``configs/zones.py`` + flags).

The language adapter's settings are one :class:`~aura.experiments.lm.pretrain.PretrainConfig`
(``lm``), the same the ``pretrain`` command builds, so the two commands cannot drift apart; the
zone registry comes from the config too (``registry``), so a run can change a zone's capacity or
growth schedule without touching code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import ml_collections

from aura.data.errors import DataError
from aura.experiments.lm.pretrain import PretrainConfig
from aura.experiments.zones.joint import JointConfig
from aura.experiments.zones.joint_step import JointLossConfig
from aura.experiments.zones.registry import ZONES, ZoneSpec, parse_zones

__all__ = ["LM_ZONES", "ZonesConfig"]

LM_ZONES = ("language", "amygdala", "thalamus", "hypothalamus")


@dataclasses.dataclass
class ZonesConfig:
    """What pretrain_zones needs; the command builds it from flags."""

    zones: tuple[str, ...]
    lm: PretrainConfig  # the adapter's run (its jsonl comes from json_dir's training files)
    ckpt_root: str = "checkpoints"
    txt_dir: str | None = None
    json_dir: str | None = None
    mnist_epochs: int = 2
    mnist_data: str | None = None
    mnist_workdir: str | None = None
    mnist_model: ml_collections.ConfigDict | None = None
    mnist_batch_size: int = 128
    max_docs: int = 256
    max_tokens: int = 16384
    heldout_records: int = 64
    kmeans_iters: int = 10
    joint_epochs: int = 2
    joint_zones: tuple[str, ...] | None = None  # default: every zone of `zones` but thalamus
    joint_model: ml_collections.ConfigDict | None = None
    joint_broadcast: bool = True
    seed: int = 0
    tensorboard: bool = True
    registry: Mapping[str, ZoneSpec] = dataclasses.field(default_factory=lambda: dict(ZONES))

    @property
    def ckpt_out(self) -> str:
        return self.lm.ckpt_out

    @property
    def spm_model(self) -> str | None:
        return self.lm.spm_model

    @property
    def max_len(self) -> int:
        return self.lm.max_len

    @property
    def batch_size(self) -> int:
        return self.lm.batch_size

    @property
    def pad_to(self) -> int | None:
        return self.lm.pad_to

    def validate(self) -> None:
        """Checks flags and inputs before any compute.

        Raises:
          ValueError: a bad value (naming it and the limit). DataError: a missing input.
        """
        self.zones = parse_zones(",".join(self.zones), self.registry)
        if self.joint_epochs < 0:
            raise ValueError(f"--joint_epochs={self.joint_epochs} must be >= 0 (0: no joint stage)")
        if self.joint_zones is not None:
            self.joint_zones = parse_zones(",".join(self.joint_zones), self.registry)
        for name in ("max_docs", "mnist_epochs", "mnist_batch_size", "kmeans_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be >= 1")
        self.lm.validate()
        if self.max_len < 8:
            raise ValueError(f"--max_len={self.max_len} must be >= 8")
        needs_lm = any(z in LM_ZONES for z in self.zones)
        if needs_lm and not self.spm_model:
            raise ValueError(f"zones {[z for z in self.zones if z in LM_ZONES]} need --spm_model")
        if needs_lm and not os.path.exists(self.spm_model):
            raise DataError(f"--spm_model {self.spm_model} does not exist")
        if "language" in self.zones and not self.json_dir:
            raise ValueError("zone language needs --json_dir (instruction *.jsonl to pretrain on)")
        if "hypothalamus" in self.zones and not self.json_dir:
            raise ValueError("zone hypothalamus needs --json_dir (held-out instruction records)")
        if {"amygdala", "thalamus"} & set(self.zones) and not (self.txt_dir or self.json_dir):
            raise ValueError("zones amygdala and thalamus need --txt_dir (or --json_dir) text")
        for name in ("txt_dir", "json_dir", "mnist_data"):
            path = getattr(self, name)
            if path and not path.startswith("tfds:") and not os.path.exists(path):
                raise DataError(f"--{name} {path} does not exist")
        if self.runs_joint():
            self.joint_config().validate()

    def runs_joint(self) -> bool:
        """The joint stage runs when the thalamus is trained, ``joint_epochs > 0`` and there
        are zones to route between (``joint_zones``, or two zones of ``zones`` besides it)."""
        others = [z for z in self.zones if z != "thalamus"]
        enough = self.joint_zones is not None or len(others) >= 2
        return "thalamus" in self.zones and self.joint_epochs > 0 and enough

    def joint_config(self, bus_decay: float = 0.9) -> JointConfig:
        """The joint stage's config; its bus' merit statistics decay at ``bus_decay``."""
        zones = self.joint_zones or tuple(z for z in self.zones if z != "thalamus")
        return JointConfig(
            ckpt_root=self.ckpt_root,
            zones=zones,
            epochs=self.joint_epochs,
            batch_size=self.mnist_batch_size,
            seed=self.seed,
            data=self.mnist_data,
            model=self.joint_model,
            loss=JointLossConfig(broadcast=self.joint_broadcast, bus_decay=bus_decay),
            tensorboard=self.tensorboard,
            registry=self.registry,
            mesh=dict(self.lm.mesh),
        )
