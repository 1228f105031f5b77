"""The zone stages of pretrain_zones: the language adapter and its heads, the hippocampus.

* :func:`lm_zones`: instruction pretraining of the SelfTeachingAdapter
  (``aura.experiments.lm.pretrain``) into ``ckpt_out`` (resumed by rerunning; each expert saved
  on its own under ``<root>/language/expert_<i>`` at every adapter checkpoint), then one routing
  pass of the adapter over corpus documents and held-out instruction records shared by the heads
  (``aura.experiments.zones.corpus``): ``thalamus/gate_head`` (centroids of token embeddings
  seeded by the gate), ``amygdala/bias_head`` (affect -> routing bias by ridge regression) and
  ``hypothalamus/control_head`` (temperature scaling on held-out responses + merit momentum); see
  ``aura.models.zone_heads`` for each fit.
* :func:`hippocampus`: the MNIST POC (short schedule) or, given a POC workdir that already holds
  experts, those experts; collected into ``<root>/hippocampus/expert_<i>``.

Each stage writes its zone's ``zone.json`` and publishes its statistics for the run's bus.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from aura.brain.orchestrator import BrainConfig
from aura.data.errors import DataError
from aura.data.tokenizer import check_piece_count, load_tokenizer
from aura.experiments.lm.pretrain import load_adapter, pretrain
from aura.experiments.mnist_poc import experiment as poc
from aura.experiments.zones import store as zone_store
from aura.experiments.zones.config import ZonesConfig
from aura.experiments.zones.corpus import document_routing, documents, heldout_batches, split_jsonl
from aura.experiments.zones.layout import (
    expert_ckpt_path,
    save_zone_experts,
    write_zone_manifest,
)
from aura.experiments.zones.registry import fit_schedule, get_zone
from aura.models import zone_heads as heads
from aura.models.mnist_poc import default_config as poc_default_config
from aura.train.checkpoint import CheckpointError
from aura.train.experts import load_expert, save_expert

__all__ = ["hippocampus", "lm_zones"]


def _zone_manifest(cfg: ZonesConfig, zone: str, analytics: dict, **extra) -> None:
    write_zone_manifest(cfg.ckpt_root, zone, get_zone(zone, cfg.registry), analytics, **extra)


def _save_language_experts(cfg: ZonesConfig, step: int, params, metrics=None, extra=None):
    """Each adapter expert on its own under ``<root>/language/expert_<i>`` (with a manifest)."""
    experts = params["core"]["experts"]
    count = int(np.shape(experts[next(iter(experts))])[0])
    save_zone_experts(cfg.ckpt_root, "language", experts, count, step=step, metrics=metrics,
                      **(extra or {}))  # fmt: skip


def _pretrain_language(cfg: ZonesConfig, log) -> dict:
    train, _ = split_jsonl(cfg.json_dir)
    return pretrain(
        dataclasses.replace(cfg.lm, jsonl=train[0] if len(train) == 1 else train),
        log=log,
        # Experts are saved on their own at every adapter checkpoint, not only at the end.
        on_save=lambda step, params: _save_language_experts(cfg, step, params),
    )


def lm_zones(cfg: ZonesConfig, log, publish) -> dict[str, Any]:
    """The language zone and the heads fitted on the adapter's routing (see the module doc)."""
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
        metrics = [
            {"utilisation": lang["utilisation"][i], "routed_accuracy": routed_acc[i]}
            for i in range(E)
        ]
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


def hippocampus(cfg: ZonesConfig, log, publish) -> dict[str, Any]:
    """The hippocampus: a (short) MNIST POC run, or a finished one's experts, collected."""
    root = Path(cfg.ckpt_root)
    workdir = Path(cfg.mnist_workdir or root / "hippocampus" / "poc_run")
    run: dict[str, Any] = {"workdir": str(workdir)}
    if cfg.mnist_workdir and zone_store.list_experts(workdir, "hippocampus"):
        log(f"hippocampus: reusing the experts of the MNIST POC run in {workdir}")
        run["reused"] = True
    else:
        model = cfg.mnist_model or poc_default_config()
        spec = get_zone("hippocampus", cfg.registry)
        schedule = fit_schedule(spec.growth_schedule, cfg.mnist_epochs, model.num_experts)
        run_cfg = poc.RunConfig(
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
        run.update(poc.train(run_cfg, log=log))
        if run.get("interrupted"):
            return run  # saved in the run's workdir; rerun to resume, then collect
    indices = zone_store.list_experts(workdir, "hippocampus")
    if not indices:
        raise DataError(f"the MNIST POC run in {workdir} saved no experts")
    utilisation = []
    for i in indices:
        rows, manifest = load_expert(expert_ckpt_path(workdir, "hippocampus", i))
        manifest = {k: v for k, v in manifest.items() if k not in ("created", "format")}
        save_expert(expert_ckpt_path(root, "hippocampus", i), rows,
                    {**manifest, "source": str(workdir)})  # fmt: skip
        utilisation.append((manifest.get("metrics") or {}).get("utilisation") or 0.0)
    last = _last_epoch(workdir)
    analytics = {
        "gate_entropy": last.get("eval/gate_entropy"),
        "test_accuracy": last.get("eval/test_accuracy"),
        "routed_accuracy": last.get("eval/routed_accuracy"),
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
        if "eval/test_accuracy" in rec:
            last = rec
    return last
