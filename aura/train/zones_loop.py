"""Zone pretraining: trains or collects each brain zone and writes it under a checkpoint root.

Used by ``python -m aura.build pretrain_zones``. In dependency order:

1. ``language``: instruction pretraining of the SelfTeachingAdapter (``lm_loop.pretrain``) into
   ``ckpt_out`` (resumed by rerunning), then each of its LiquidMoE experts saved on its own
   under ``<root>/language/expert_<i>`` with its utilisation and routed accuracy.
2. A routing pass of the adapter over corpus documents (``txt_dir`` paragraphs) and held-out
   instruction records, shared by the heads:
   ``thalamus/gate_head`` (centroids of token embeddings seeded by the gate),
   ``amygdala/bias_head`` (affect -> routing bias by ridge regression) and
   ``hypothalamus/control_head`` (temperature scaling on held-out responses + merit momentum).
   See ``aura.models.zone_heads`` for each fit and ``aura.train.zone_corpus`` for the pass.
3. ``hippocampus``: the MNIST POC (``poc_loop.train``, short schedule) or, given a POC workdir
   that already holds experts, those experts; collected into ``<root>/hippocampus/expert_<i>``.
4. ``joint`` (with ``thalamus`` and ``joint_epochs > 0``): the zones trained together in one
   model, the thalamus routing each sample between them, the neural-signal bus in the step's
   state and the thalamic gradient broadcaster on (``aura.train.zone_joint``), under
   ``<root>/joint``. The bus' merit statistics (routed accuracy, loss, gate entropy) decay with
   the hypothalamus' merit momentum when its control head is there.

Each zone gets a ``zone.json`` (preset, analytics, artefacts) and the run a ``zones.json`` with
the neural-signal bus' per-zone analytics. A head zone without ``language`` in ``zones`` uses the
adapter already in ``ckpt_out``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

import aura
from aura.brain import bus as bus_lib
from aura.brain.zones import expert_ckpt_path, fit_schedule, get_zone, parse_zones
from aura.data.errors import DataError
from aura.models import zone_heads as heads
from aura.train import zone_store
from aura.train.checkpoint import CheckpointError
from aura.train.expert_ckpt import expert_rows, load_expert, save_expert
from aura.train.zone_corpus import document_routing, documents, heldout_batches, split_jsonl

LM_ZONES = ("language", "amygdala", "thalamus", "hypothalamus")


@dataclasses.dataclass
class ZonesConfig:
    """What pretrain_zones needs; the command builds it from flags."""

    zones: tuple[str, ...]
    ckpt_root: str = "checkpoints"
    ckpt_out: str = "checkpoints/lm"
    txt_dir: str | None = None
    json_dir: str | None = None
    spm_model: str | None = None
    lm_model: ml_collections.ConfigDict | None = None
    steps: int = 100
    batch_size: int = 16
    accumulate_steps: int = 1
    max_len: int = 128
    pad_to: int | None = None
    lr: float = 3e-3
    warmup: int = 20
    log_every: int = 25
    save_every: int = 100
    mesh: dict = dataclasses.field(default_factory=lambda: {"data": 1})
    rules: tuple | None = None  # logical -> mesh axis rules; None: sharding.DEFAULT_RULES
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

    def validate(self) -> None:
        """Checks flags and inputs before any compute.

        Raises:
          ValueError: a bad value (naming it and the limit). DataError: a missing input.
        """
        self.zones = parse_zones(",".join(self.zones))
        if self.joint_epochs < 0:
            raise ValueError(f"--joint_epochs={self.joint_epochs} must be >= 0 (0: no joint stage)")
        if self.joint_zones is not None:
            self.joint_zones = parse_zones(",".join(self.joint_zones))
        for name in ("steps", "batch_size", "accumulate_steps", "max_docs", "mnist_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be >= 1")
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

    def joint_config(self, bus_decay: float = 0.9):
        from aura.train.zone_joint import JointConfig
        from aura.train.zone_joint_step import JointLossConfig

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
        )


def _joint(cfg: ZonesConfig, log) -> dict[str, Any]:
    """The joint stage; its bus decays with the hypothalamus' merit momentum when there is one."""
    from aura.train.zone_joint import train_joint

    decay = 0.9
    try:
        _, manifest = zone_store.load_head(cfg.ckpt_root, "hypothalamus")
        decay = float(manifest["metrics"]["merit_momentum"])
        log(f"joint: bus merit statistics decay with the hypothalamus' merit momentum {decay:.3f}")
    except (CheckpointError, KeyError, TypeError, ValueError):
        log("joint: no hypothalamus control head; the bus' merit statistics decay at 0.9")
    return train_joint(cfg.joint_config(bus_decay=decay), log=log)


def _zone_manifest(cfg: ZonesConfig, zone: str, analytics: dict, **extra) -> None:
    zone_store.write_json_atomic(
        Path(cfg.ckpt_root) / zone / zone_store.ZONE_MANIFEST,
        {
            "zone": zone,
            "preset": get_zone(zone).as_dict(),
            "analytics": analytics,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code_version": aura.__version__,
            **extra,
        },
    )


def _save_language_experts(cfg: ZonesConfig, step: int, params, metrics=None, extra=None):
    """Each adapter expert on its own under ``<root>/language/expert_<i>`` (with a manifest)."""
    experts = params["core"]["experts"]
    for i in range(jax.tree.leaves(experts)[0].shape[0]):
        manifest = {"zone": "language", "expert": i, "step": step, **(extra or {})}
        manifest["metrics"] = (metrics or {}).get(i, {})
        save_expert(
            expert_ckpt_path("language", i, cfg.ckpt_root), expert_rows(experts, i), manifest
        )


def _pretrain_language(cfg: ZonesConfig, log) -> dict:
    from aura.train.lm_loop import PretrainConfig, pretrain

    train, _ = split_jsonl(cfg.json_dir)
    return pretrain(
        PretrainConfig(
            jsonl=train[0] if len(train) == 1 else train,
            spm_model=cfg.spm_model,
            ckpt_out=cfg.ckpt_out,
            model=cfg.lm_model,
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            accumulate_steps=cfg.accumulate_steps,
            max_len=cfg.max_len,
            pad_to=cfg.pad_to,
            lr=cfg.lr,
            warmup=cfg.warmup,
            seed=cfg.seed,
            log_every=cfg.log_every,
            save_every=cfg.save_every,
            mesh=cfg.mesh,
            rules=cfg.rules,
            tensorboard=cfg.tensorboard,
        ),
        log=log,
        # Experts are saved on their own at every adapter checkpoint, not only at the end.
        on_save=lambda step, params: _save_language_experts(cfg, step, params),
    )


def _lm_zones(cfg: ZonesConfig, log, publish) -> dict[str, Any]:
    from aura.data.tokenizer import check_piece_count, load_tokenizer
    from aura.train.lm_loop import load_adapter

    out: dict[str, Any] = {}
    if "language" in cfg.zones:
        out["language"] = _pretrain_language(cfg, log)
        if out["language"].get("interrupted"):
            return out  # saved; the heads wait for the finished adapter (rerun to resume)
    try:
        model, params, meta = load_adapter(cfg.ckpt_out)
    except CheckpointError as err:
        raise CheckpointError(
            f"{err} (or add language to --zones to pretrain the adapter with the zones)"
        ) from err
    sp = load_tokenizer(cfg.spm_model)
    check_piece_count(sp, model.config.vocab_size, what="the adapter's vocabulary")
    step, E = int(meta.get("step", 0)), model.config.num_experts
    common = {"step": step, "adapter": os.path.abspath(cfg.ckpt_out), "config": meta["model"]}
    t = time.time()
    docs = documents(cfg.txt_dir or cfg.json_dir, cfg.max_docs)
    routing = document_routing(model, params, sp, docs, cfg)
    temperature, t_metrics, routed_acc, acc_total = 1.0, {"tokens": 0}, [None] * E, (0.0, 0.0)
    if cfg.json_dir:
        train_files, held_files = split_jsonl(cfg.json_dir)
        batches, acc = heldout_batches(model, params, sp, cfg, held_files, train_files)
        temperature, t_metrics = heads.fit_temperature(batches)
        routed_acc = [
            float(c / n) if n else None for c, n in zip(acc["correct"], acc["count"], strict=True)
        ]
        acc_total = (float(acc["correct"].sum()), float(acc["count"].sum()))
    log(
        f"routing pass: {len(docs)} documents, {len(routing['emb'])} tokens, held-out "
        f"{t_metrics['tokens']} tokens ({time.time() - t:.1f}s)"
    )
    lang = {"gate_entropy": routing["gate_entropy"], "utilisation": routing["utilisation"],
            "routed_accuracy": routed_acc}  # fmt: skip
    if "language" in cfg.zones:
        metrics = {
            i: {"utilisation": lang["utilisation"][i], "routed_accuracy": routed_acc[i]}
            for i in range(E)
        }
        extra = {k: v for k, v in common.items() if k != "step"}
        _save_language_experts(cfg, step, params, metrics, extra)
        _zone_manifest(cfg, "language", lang, ckpt_out=os.path.abspath(cfg.ckpt_out), step=step)
        overall = acc_total[0] / acc_total[1] if acc_total[1] else None
        publish("language", {**lang, "routed_accuracy": overall}, routing["utilisation"])
        out.setdefault("language", {}).update(experts=E, **lang)
    if "thalamus" in cfg.zones:
        p, m = heads.fit_centroids(
            routing["emb"], routing["top1"], E, cfg.kmeans_iters, cfg.seed, groups=routing["doc"]
        )
        zone_store.save_head(cfg.ckpt_root, "thalamus", p, {"metrics": m, **common})
        _zone_manifest(cfg, "thalamus", m, step=step)
        share = np.asarray(m["cluster_sizes"], np.float64) / max(m["tokens"], 1)
        publish("thalamus", {"gate_entropy": routing["gate_entropy"]}, share)
        out["thalamus"] = m
    if "amygdala" in cfg.zones:
        affects = np.stack([heads.affect_vector(d) for d in docs])
        p, m = heads.fit_affect_bias(affects, routing["log_probs"])
        m["mean_affect"] = affects.mean(0).tolist()
        zone_store.save_head(cfg.ckpt_root, "amygdala", p, {"metrics": m, **common})
        _zone_manifest(cfg, "amygdala", m, affect_dims=list(heads.AFFECT_DIMS), step=step)
        publish("amygdala", {}, None)
        out["amygdala"] = m
    if "hypothalamus" in cfg.zones:
        volatility = heads.routing_volatility(routing["probs"])
        momentum = float(np.clip(1.0 - volatility, *heads.MOMENTUM_RANGE))
        p = heads.control_params(temperature, momentum)
        m = {"temperature": temperature, "merit_momentum": momentum,
             "routing_volatility": volatility, **t_metrics}  # fmt: skip
        zone_store.save_head(cfg.ckpt_root, "hypothalamus", p, {"metrics": m, **common})
        _zone_manifest(cfg, "hypothalamus", m, step=step)
        publish("hypothalamus", {"loss": t_metrics["nll_best"]}, None)
        out["hypothalamus"] = m
    return out


def _hippocampus(cfg: ZonesConfig, log, publish) -> dict[str, Any]:
    from aura.brain.orchestrator import BrainConfig
    from aura.models.mnist_poc import default_config
    from aura.train import poc_loop

    root = Path(cfg.ckpt_root)
    workdir = Path(cfg.mnist_workdir or root / "hippocampus" / "poc_run")
    run: dict[str, Any] = {"workdir": str(workdir)}
    if cfg.mnist_workdir and zone_store.list_experts(workdir, "hippocampus"):
        log(f"hippocampus: reusing the experts of the MNIST POC run in {workdir}")
        run["reused"] = True
    else:
        model = cfg.mnist_model or default_config()
        spec = get_zone("hippocampus")
        schedule = fit_schedule(spec.growth_schedule, cfg.mnist_epochs, model.num_experts)
        run_cfg = poc_loop.RunConfig(
            workdir=str(workdir),
            data=cfg.mnist_data,
            epochs=cfg.mnist_epochs,
            batch_size=cfg.mnist_batch_size,
            seed=cfg.seed,
            model=model,
            brain=BrainConfig(capacity=model.num_experts, growth_schedule=schedule),
            tensorboard=cfg.tensorboard,
        )
        log(f"hippocampus: MNIST POC for {cfg.mnist_epochs} epochs (growth {schedule})")
        run.update(poc_loop.train(run_cfg, log=log))
        if run.get("interrupted"):
            return run  # saved in the run's workdir; rerun to resume, then collect
    indices = zone_store.list_experts(workdir, "hippocampus")
    if not indices:
        raise DataError(f"the MNIST POC run in {workdir} saved no experts")
    utilisation = []
    for i in indices:
        rows, manifest = load_expert(expert_ckpt_path("hippocampus", i, workdir))
        manifest = {k: v for k, v in manifest.items() if k not in ("created", "format")}
        save_expert(expert_ckpt_path("hippocampus", i, root), rows,
                    {**manifest, "source": str(workdir)})  # fmt: skip
        utilisation.append((manifest.get("metrics") or {}).get("utilisation") or 0.0)
    last = _last_epoch(workdir)
    analytics = {
        "gate_entropy": last.get("epoch/gate_entropy"),
        "test_accuracy": last.get("epoch/test_accuracy"),
        "routed_accuracy": last.get("epoch/routed_accuracy"),
        "utilisation": utilisation,
    }
    _zone_manifest(cfg, "hippocampus", analytics, experts=indices, source=str(workdir))
    stats = {
        "gate_entropy": analytics["gate_entropy"],
        "routed_accuracy": analytics["test_accuracy"],
    }
    publish("hippocampus", stats, utilisation)
    return {**run, "experts": len(indices), **analytics}


def _last_epoch(workdir: Path) -> dict[str, Any]:
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return {}
    last: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "epoch/test_accuracy" in rec:
            last = rec
    return last


def pretrain_zones(cfg: ZonesConfig, log=print) -> dict[str, Any]:
    """Trains or collects every zone in ``cfg.zones``; returns a JSON-friendly summary."""
    cfg.validate()
    t0 = time.time()
    published: list[tuple[str, dict, Any]] = []

    def publish(zone: str, stats: dict, load) -> None:
        stats = {k: float(v) for k, v in stats.items() if v is not None and k in bus_lib.STATS}
        published.append((zone, stats, load))

    summary: dict[str, Any] = {}
    if any(z in LM_ZONES for z in cfg.zones):
        summary.update(_lm_zones(cfg, log, publish))
    interrupted = any(s.get("interrupted") for s in summary.values())
    if "hippocampus" in cfg.zones and not interrupted:
        summary["hippocampus"] = _hippocampus(cfg, log, publish)
        interrupted = bool(summary["hippocampus"].get("interrupted"))
    if cfg.runs_joint() and not interrupted:
        summary["joint"] = _joint(cfg, log)
        interrupted = bool(summary["joint"].get("interrupted"))
    # The zones' statistics travel on the neural-signal bus (as they would between steps).
    width = max([len(load) for _, _, load in published if load is not None] + [1])
    bus = bus_lib.init_bus(len(cfg.zones), 1, 1, width)
    for zone, stats, load in published:
        bus = bus_lib.publish(bus, bus_lib.zone_index(cfg.zones, zone), stats=stats, load=load)
    result = {
        "zones": list(cfg.zones),
        "ckpt_root": cfg.ckpt_root,
        "ckpt_out": cfg.ckpt_out if any(z in LM_ZONES for z in cfg.zones) else None,
        "summary": summary,
        "bus": bus_lib.zone_analytics(bus, cfg.zones),
        "wall_s": round(time.time() - t0, 2),
        "interrupted": interrupted,
    }
    if interrupted:
        log("interrupted: progress is saved; rerun the same command to resume")
        return result
    zone_store.write_json_atomic(
        Path(cfg.ckpt_root) / zone_store.ROOT_MANIFEST,
        {**result, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "code_version": aura.__version__},
    )  # fmt: skip
    return result
