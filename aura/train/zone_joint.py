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
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import aura
from aura.brain import bus as bus_lib
from aura.brain.zones import fit_schedule, get_zone, zone_controls
from aura.data import batching
from aura.models.zone_brain import ZoneBrain, bus_widths, default_config
from aura.train import checkpoint as ckpt_lib
from aura.train import zone_store
from aura.train.metrics import MetricsLogger, format_line, progress
from aura.train.poc_loop import load_digit_split
from aura.train.poc_step import make_optimizer
from aura.train.preemption import PreemptionGuard
from aura.train.zone_joint_step import (
    JointLossConfig,
    JointState,
    build_eval_step,
    build_train_step,
)
from aura.train.zone_report import JOINT_DIR, JOINT_MANIFEST


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

    @property
    def workdir(self) -> Path:
        return Path(self.ckpt_root) / JOINT_DIR

    def model_config(self) -> ml_collections.ConfigDict:
        c = ml_collections.ConfigDict((self.model or default_config()).to_dict())
        c.zones = tuple(self.zones)
        return c

    def validate(self) -> None:
        """Raises ValueError for a bad value (naming it)."""
        if "thalamus" in self.zones:
            raise ValueError("the thalamus routes between the joint zones; it is not one of them")
        if len(self.zones) < 2:
            raise ValueError(f"joint training needs >= 2 zones besides the thalamus: {self.zones}")
        for z in self.zones:
            get_zone(z)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"joint {name}={getattr(self, name)} must be >= 1")


def zone_schedules(cfg: JointConfig) -> dict[str, str]:
    """Each zone's growth schedule compressed to the joint run's epochs."""
    return {
        z: fit_schedule(get_zone(z).growth_schedule, cfg.epochs, get_zone(z).capacity)
        for z in cfg.zones
    }


def controls_at(cfg: JointConfig, epoch: int) -> tuple:
    schedules = zone_schedules(cfg)
    return tuple(zone_controls(z, epoch, schedule=schedules[z]) for z in cfg.zones)


def analytics(sums: dict[str, np.ndarray], bus, zones) -> dict[str, Any]:
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
        capacity = get_zone(z).capacity
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
    sums: dict[str, Any] = {}
    for i in range(0, len(labels), batch):
        o = jax.device_get(
            eval_fn(params, bus, images[i : i + batch], labels[i : i + batch], controls)
        )
        for k, v in o.items():
            sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
    return sums


def train_joint(cfg: JointConfig, log=print) -> dict[str, Any]:
    """Runs (or resumes) the joint stage; returns its summary (JSON-friendly)."""
    cfg.validate()
    t_start = time.time()
    train_x, train_y, eval_x, eval_y = map(
        jnp.asarray, load_digit_split(cfg.data, cfg.eval_fraction)
    )
    n = len(train_y)
    steps_per_epoch = batching.steps_per_epoch(n, cfg.batch_size)
    mc = cfg.model_config()
    model = ZoneBrain(mc)
    optimizer = make_optimizer(cfg.lr, steps_per_epoch * cfg.epochs)
    step_fn = build_train_step(model, optimizer, cfg.loss)
    eval_fn = build_eval_step(model)

    def fresh():
        bus = bus_lib.init_bus(**bus_widths(mc))
        params = jax.jit(model.init)(jax.random.key(cfg.seed), train_x[:2], controls_at(cfg, 0),
                                     bus)["params"]  # fmt: skip
        return JointState(params, optimizer.init(params), bus, jnp.asarray(0, jnp.int32))

    workdir = cfg.workdir
    checkpointer = ckpt_lib.TrainCheckpointer(workdir / "ckpt", max_to_keep=2)
    meta = {"epoch": 0, "step_in_epoch": 0, "history": [], "wall_s": 0.0}
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(abstract_state=jax.eval_shape(fresh))
        log(f"joint: resumed from step {int(state.step)} (epoch {meta['epoch']})")
    else:
        state = fresh()
    history = list(meta["history"])
    epoch, start, wall_before = int(meta["epoch"]), int(meta["step_in_epoch"]), meta["wall_s"]
    logger = MetricsLogger(workdir, tensorboard=cfg.tensorboard)
    interrupted = False

    def save(epoch_, step_in_epoch_, force=False):
        m = {"epoch": epoch_, "step_in_epoch": step_in_epoch_, "history": history,
             "wall_s": wall_before + time.time() - t_start, "config": mc.to_dict()}  # fmt: skip
        checkpointer.save(int(state.step), state, m, force=force)

    log(
        f"joint: zones {', '.join(cfg.zones)} for {cfg.epochs} epochs, growth {zone_schedules(cfg)}"
    )
    with PreemptionGuard() as guard:
        while epoch < cfg.epochs and not interrupted:
            t_epoch, sums = time.time(), {}
            controls = controls_at(cfg, epoch)
            batches = batching.iterate_batches(n, cfg.batch_size, cfg.seed, epoch, start)
            bar = progress(batches, total=steps_per_epoch - start, desc=f"joint epoch {epoch}")
            for i, idx in enumerate(bar, start=start):
                idx = jnp.asarray(idx)
                state, m = step_fn(state, train_x[idx], train_y[idx], controls)
                for k, v in jax.device_get(m).items():
                    sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
                if guard.requested:
                    save(epoch, i + 1, force=True)
                    checkpointer.wait()
                    log(f"interrupted: saved joint step {int(state.step)}; rerun to resume")
                    interrupted = True
                    break
            if interrupted:
                break
            done = max(steps_per_epoch - start, 1)
            ev = analytics(
                evaluate(eval_fn, state.params, state.bus, eval_x, eval_y, controls),
                state.bus,
                cfg.zones,
            )
            record = {
                "epoch": epoch,
                "step": int(state.step),
                "loss": float(sums["loss"] / done),
                "ce": float(sums["ce"] / done),
                "train_accuracy": float(sums["accuracy"] / done),
                "test_accuracy": ev["accuracy"],
                "specialisation": ev["specialisation"],
                "class_zone_nmi": ev["class_zone_nmi"],
                "zone_share": {z: ev["zones"][z]["share"] for z in cfg.zones},
                "epoch_s": time.time() - t_epoch,
            }
            history.append({**record, "zones": ev["zones"]})
            logger.log(int(state.step), record, prefix="joint")
            log(format_line(record))
            epoch, start = epoch + 1, 0
            save(epoch, 0)
            _save_zone_experts(cfg, state, ev, controls)
    checkpointer.wait()
    checkpointer.close()
    logger.close()
    last = history[-1] if history else {}
    summary = {
        "zones": list(cfg.zones),
        "epochs": epoch,
        "steps": int(state.step),
        "test_accuracy": last.get("test_accuracy"),
        "specialisation": last.get("specialisation"),
        "class_zone_nmi": last.get("class_zone_nmi"),
        "broadcast": cfg.loss.broadcast,
        "bus_decay": cfg.loss.bus_decay,
        "per_zone": last.get("zones"),
        "bus": bus_lib.zone_analytics(state.bus, cfg.zones),
        "wall_s": round(wall_before + time.time() - t_start, 2),
        "interrupted": interrupted,
    }
    if not interrupted:
        zone_store.write_json_atomic(
            workdir / JOINT_MANIFEST,
            {**summary, "config": mc.to_dict(), "code_version": aura.__version__,
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )  # fmt: skip
    return summary


def _save_zone_experts(cfg: JointConfig, state: JointState, ev: dict, controls) -> None:
    """Each active expert of each zone under ``joint/<zone>/expert_<i>`` (with its metrics)."""
    for z, ctl in zip(cfg.zones, controls, strict=True):
        experts = state.params[z]["core"]["experts"]
        zone = ev["zones"][z]
        for i in range(int(ctl.active_count)):
            metrics = {
                "utilisation": zone["utilisation"][i],
                "routed_accuracy": zone["expert_routed_accuracy"][i],
                "lifetime_utilisation": (zone["lifetime_utilisation"] or [None] * (i + 1))[i],
                "zone_share": zone["share"],
            }
            manifest = {"zone": z, "expert": i, "step": int(state.step), "joint": True,
                        "metrics": metrics}  # fmt: skip
            path = ckpt_lib.expert_ckpt_path(cfg.workdir, z, int(i))
            ckpt_lib.save_expert(path, ckpt_lib.expert_rows(experts, int(i)), manifest)
