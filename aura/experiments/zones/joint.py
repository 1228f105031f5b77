"""Joint multi-zone training: the zones learn together, the thalamus routing samples between them.

Used by ``python -m aura.build pretrain_zones`` (``--joint_epochs``). One call of
:func:`train_joint` runs or resumes a run in ``<ckpt_root>/joint``: a :class:`ZoneBrain` over the
zones named (each zone's LiquidMoE from its registry preset, its growth schedule compressed to the
run), trained on digits with the neural-signal bus in the step's state and the thalamic gradient
broadcaster on. Orbax checkpoints every epoch and on SIGTERM/SIGINT (with the data position, so
the same command resumes mid-epoch); metrics JSONL + TensorBoard; each zone's experts saved on
their own under ``joint/<zone>/expert_<i>``; ``joint/joint.json`` holds the per-zone and
per-expert routing analytics and the bus. Each zone keeps its registry freeze policy: the
hippocampus ("grown") freezes the experts that existed before its latest growth, and the
consolidated zones ("all": amygdala, hypothalamus) keep their experts fixed, so only their
column's phasor bank, attention, gate and head adapt.

Routing analytics (:func:`analytics`), per zone: share of the held-out samples routed to it, the
combined model's accuracy on them (routed accuracy), its own head's accuracy on them (``local_in``)
and on the samples routed elsewhere (``local_out``), its MoE gate entropy and each expert's
lifetime utilisation (from the bus). ``specialisation`` is the mean ``local_in - local_out`` (near
0 when every zone learned everything) and ``class_zone_nmi`` the mutual information between class
and routed zone over the class entropy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import aura
from aura.data.batching import StepBatcher
from aura.data.mnist import load_digit_split
from aura.experiments.zones.joint_step import (
    JointLossConfig,
    JointState,
    build_eval_step,
    build_train_step,
)
from aura.experiments.zones.layout import JOINT_MANIFEST, joint_dir, save_zone_experts
from aura.experiments.zones.registry import (
    ZONES,
    ZoneSpec,
    build_core_kwargs_for_zone,
    fit_schedule,
    get_zone,
    zone_controls,
)
from aura.models.zone_brain import ZoneBrain, bus_widths, default_config
from aura.nn import bus as bus_lib
from aura.train import loop
from aura.train.metrics import format_line
from aura.train.optim import make_optimizer
from aura.train.rundir import write_json_atomic


@dataclasses.dataclass
class JointConfig:
    """What a joint run needs; pretrain_zones builds it from its flags."""

    ckpt_root: str
    zones: tuple[str, ...] = ("hippocampus", "amygdala", "hypothalamus", "language")
    epochs: int = 2
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    data: str | None = None
    eval_fraction: float = 0.125
    model: ml_collections.ConfigDict | None = None
    loss: JointLossConfig = dataclasses.field(default_factory=JointLossConfig)
    tensorboard: bool = True
    registry: Mapping[str, ZoneSpec] = dataclasses.field(default_factory=lambda: dict(ZONES))
    mesh: dict | None = None

    @property
    def workdir(self) -> Path:
        return joint_dir(self.ckpt_root)

    def model_config(self) -> ml_collections.ConfigDict:
        return model_config(self.zones, self.registry, self.model)

    def validate(self) -> None:
        """Raises ValueError for a bad value (naming it)."""
        if "thalamus" in self.zones:
            raise ValueError("the thalamus routes between the joint zones; it is not one of them")
        if len(self.zones) < 2:
            raise ValueError(f"joint training needs >= 2 zones besides the thalamus: {self.zones}")
        for z in self.zones:
            get_zone(z, self.registry)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"joint {name}={getattr(self, name)} must be >= 1")


def model_config(
    zones, registry: Mapping[str, ZoneSpec] | None = None, base=None
) -> ml_collections.ConfigDict:
    """A ZoneBrain config for ``zones``: ``base`` (default: ``default_config()``) with each
    zone's LiquidMoE arguments filled in from the registry."""
    c = ml_collections.ConfigDict((base or default_config()).to_dict())
    c.zones = tuple(zones)
    c.zone_cores = {
        z: build_core_kwargs_for_zone(z, c.feature_dim, registry=registry)["moe"] for z in zones
    }
    return c


def zone_schedules(cfg: JointConfig) -> dict[str, str]:
    """Each zone's growth schedule compressed to the joint run's epochs."""
    specs = {z: get_zone(z, cfg.registry) for z in cfg.zones}
    return {z: fit_schedule(s.growth_schedule, cfg.epochs, s.capacity) for z, s in specs.items()}


def controls_at(cfg: JointConfig, epoch: int) -> tuple:
    schedules = zone_schedules(cfg)
    return tuple(
        zone_controls(z, epoch, schedule=schedules[z], registry=cfg.registry) for z in cfg.zones
    )


def analytics(sums: dict[str, np.ndarray], bus, zones, registry=None) -> dict[str, Any]:
    """Per-zone and per-expert routing analytics from summed eval outputs and the bus."""
    n = float(sums["count"])
    routed = sums["routed_count"]
    out: dict[str, Any] = {"accuracy": float(sums["correct"] / n), "zones": {}}
    bus_view = bus_lib.zone_analytics(bus, zones)
    gaps = []
    for i, z in enumerate(zones):
        k, rest = float(routed[i]), n - float(routed[i])
        local_in = float(sums["local_in_correct"][i] / k) if k else None
        local_out = float(sums["local_out_correct"][i] / rest) if rest else None
        if local_in is not None and local_out is not None:
            gaps.append(local_in - local_out)
        capacity = get_zone(z, registry).capacity
        out["zones"][z] = {
            "share": k / n,
            "routed_accuracy": float(sums["routed_correct"][i] / k) if k else None,
            "local_in": local_in,
            "local_out": local_out,
            "gate_entropy": float(sums["gate_entropy"][i] / n),
            "utilisation": (sums["load"][i][:capacity] / n).round(6).tolist(),
            "expert_routed_accuracy": [
                float(c / k) if k else None
                for c, k in zip(
                    sums["expert_correct"][i][:capacity],
                    sums["expert_count"][i][:capacity],
                    strict=True,
                )
            ],  # fmt: skip
            "lifetime_utilisation": (bus_view[z]["lifetime_utilisation"] or [])[:capacity],
            "classes": sums["class_zone"][:, i].astype(int).tolist(),
        }
    out["specialisation"] = float(np.mean(gaps)) if gaps else None
    out["class_zone_nmi"] = class_zone_nmi(sums["class_zone"])
    return out


def class_zone_nmi(counts: np.ndarray) -> float:
    """I(class; zone) / H(class) of a [C, Z] count table (0: routing ignores the class)."""
    p = np.asarray(counts, np.float64)
    p = p / max(p.sum(), 1.0)
    pc, pz = p.sum(1, keepdims=True), p.sum(0, keepdims=True)  # [C, 1], [1, Z]
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log(p[nz] / (pc @ pz)[nz])))
    hc = float(-np.sum(pc[pc > 0] * np.log(pc[pc > 0])))
    return mi / hc if hc > 0 else 0.0


def evaluate(eval_fn, params, bus, images, labels, controls, batch: int = 1000) -> dict:
    """Eval outputs summed over ``images`` in batches of ``batch``."""
    sums: dict[str, Any] = {}
    for i in range(0, len(labels), batch):
        o = jax.device_get(
            eval_fn(params, bus, images[i : i + batch], labels[i : i + batch], controls)
        )
        for k, v in o.items():
            sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
    return sums


class JointExperiment(loop.Experiment):
    """The joint stage on the shared loop: one step per batch, an evaluation per epoch."""

    def __init__(self, cfg: JointConfig):
        cfg.validate()
        self.cfg = cfg
        self.train_x, self.train_y, eval_x, eval_y = load_digit_split(cfg.data, cfg.eval_fraction)
        self.eval_x, self.eval_y = jnp.asarray(eval_x), jnp.asarray(eval_y)
        self.batches = StepBatcher(len(self.train_y), cfg.batch_size, cfg.seed)
        self.total_steps = self.batches.steps_per_epoch * cfg.epochs
        self.mc = cfg.model_config()
        self.model = ZoneBrain(self.mc)
        self.optimizer = make_optimizer(cfg.lr, self.total_steps)
        self.train_step = build_train_step(self.model, self.optimizer, cfg.loss)
        self.eval_fn = build_eval_step(self.model)
        self.controls = [controls_at(cfg, e) for e in range(cfg.epochs)]

    def init_state(self) -> JointState:
        bus = bus_lib.init_bus(**bus_widths(self.mc))
        x = jnp.zeros((2, 28, 28, 1), jnp.float32)
        params = self.model.init(jax.random.key(self.cfg.seed), x, self.controls[0], bus)
        params = params["params"]
        return JointState(params, self.optimizer.init(params), bus, jnp.asarray(0, jnp.int32))

    def batch(self, step: int):
        idx = self.batches.indices(step)
        return (self.train_x[idx], self.train_y[idx]), self.controls[self.batches.epoch_of(step)]

    def evaluate(self, state: JointState, step: int, train: dict) -> dict:
        cfg, epoch = self.cfg, self.batches.epoch_of(step - 1)
        controls = self.controls[epoch]
        sums = evaluate(self.eval_fn, state.params, state.bus, self.eval_x, self.eval_y, controls)
        ev = analytics(sums, state.bus, cfg.zones, cfg.registry)
        self._save_zone_experts(state, ev, controls, step)
        record = {
            "epoch": epoch,
            "loss": train.get("loss"),
            "ce": train.get("ce"),
            "train_accuracy": train.get("accuracy"),
            "test_accuracy": ev["accuracy"],
            "specialisation": ev["specialisation"],
            "class_zone_nmi": ev["class_zone_nmi"],
            "zone_share": {z: ev["zones"][z]["share"] for z in cfg.zones},
        }
        return {**record, "zones": ev["zones"]}

    def format_record(self, record: dict) -> str:
        """The epoch line without the per-zone analytics (they go to JSONL and joint.json)."""
        return format_line({k: v for k, v in record.items() if k != "zones"})

    def _save_zone_experts(self, state: JointState, ev: dict, controls, step: int) -> None:
        """Each active expert of each zone under ``joint/<zone>/expert_<i>`` (with metrics)."""
        for z, ctl in zip(self.cfg.zones, controls, strict=True):
            zone, n = ev["zones"][z], int(ctl.active_count)
            lifetime = zone["lifetime_utilisation"] or [None] * n
            metrics = [
                {"utilisation": zone["utilisation"][i],
                 "routed_accuracy": zone["expert_routed_accuracy"][i],
                 "lifetime_utilisation": lifetime[i], "zone_share": zone["share"]}
                for i in range(n)
            ]  # fmt: skip
            experts = state.params[z]["core"]["experts"]
            save_zone_experts(self.cfg.workdir, z, experts, n, step=step, metrics=metrics,
                              joint=True)  # fmt: skip

    def meta(self) -> dict:
        return {"config": self.mc.to_dict(), "zones": list(self.cfg.zones),
                "batch_size": self.cfg.batch_size, "seed": self.cfg.seed}  # fmt: skip

    def summary(self, state: JointState, history: list[dict]) -> dict:
        last = history[-1] if history else {}
        return {
            "zones": list(self.cfg.zones),
            "epochs": len(history),
            "test_accuracy": last.get("test_accuracy"),
            "specialisation": last.get("specialisation"),
            "class_zone_nmi": last.get("class_zone_nmi"),
            "broadcast": self.cfg.loss.broadcast,
            "bus_decay": self.cfg.loss.bus_decay,
            "per_zone": last.get("zones"),
            "bus": bus_lib.zone_analytics(state.bus, self.cfg.zones),
        }


def train_joint(cfg: JointConfig, log=print) -> dict[str, Any]:
    """Runs (or resumes) the joint stage; returns its summary (JSON-friendly)."""
    exp = JointExperiment(cfg)
    log(f"joint: zones {', '.join(cfg.zones)} for {cfg.epochs} epochs, "
        f"growth {zone_schedules(cfg)}")  # fmt: skip
    loop_cfg = loop.LoopConfig(
        workdir=str(cfg.workdir),
        total_steps=exp.total_steps,
        eval_every=exp.batches.steps_per_epoch,
        mesh=cfg.mesh,
        tensorboard=cfg.tensorboard,
        desc="joint",
    )
    result = loop.run(exp, loop_cfg, log=log)
    result.pop("history", None)
    if not result["interrupted"]:
        write_json_atomic(
            cfg.workdir / JOINT_MANIFEST,
            {**result, "config": exp.mc.to_dict(), "code_version": aura.__version__,
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )  # fmt: skip
    return result
