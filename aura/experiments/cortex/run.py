"""A whole Cortex run: data -> phase 1 (router + memory) -> phase 2 (MoE and/or dense) -> report.

Each phase is one experiment on the shared loop in its own directory under the workdir
(``phase1/``, ``phase2_moe/``, ``phase2_dense/``: checkpoints, ``metrics.jsonl``, TensorBoard),
so SIGTERM saves the running phase and the same command resumes it; a finished phase is
restored, not retrained (phase 2 reuses phase 1's checkpoint). Every reported number comes from
the held-out split (``data.report_split``, contexts never trained on).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from aura.data.errors import DataError
from aura.experiments.cortex.analysis import (
    answer_metrics,
    encode_labels,
    permutation_test,
    plot_gate_pca,
    ridge_fit,
    utilisation,
)
from aura.experiments.cortex.config import CortexConfig
from aura.experiments.cortex.data import CortexData, prepare_data
from aura.experiments.cortex.memory import MEMORY_RULES
from aura.experiments.cortex.phase1 import Phase1Experiment, phase1_report
from aura.experiments.cortex.phase2 import Phase2Experiment
from aura.models.cortex import block_params
from aura.train import loop, sharding
from aura.train.checkpoint import CheckpointError, TrainCheckpointer

__all__ = ["PHASES", "REASONING", "run_cortex", "train_phase1", "train_reasoner"]

PHASES = ("1", "2", "all")
REASONING = ("moe", "dense", "both")


def _loop_cfg(cfg: CortexConfig, workdir: str, steps: int, desc: str, tb: bool):
    return loop.LoopConfig(
        workdir=workdir, total_steps=steps, eval_every=cfg.eval_every, log_every=cfg.log_every,
        mesh=cfg.mesh, rules=MEMORY_RULES, tensorboard=tb, desc=desc,
    )  # fmt: skip


def _stored(ckpt_dir: str) -> tuple[int | None, dict]:
    """(latest step, experiment meta) of a run directory's checkpoints (None: none)."""
    if not os.path.isdir(ckpt_dir):
        return None, {}
    ck = TrainCheckpointer(ckpt_dir, read_only=True)
    try:
        step = ck.latest_step()
        return step, ({} if step is None else ck.restore_meta().get("experiment", {}))
    finally:
        ck.close()


def _check_data_key(workdir: str, key: str) -> None:
    """Refuses a workdir that holds runs on other data (or another encoder)."""
    for sub in ("phase1", "phase2_moe", "phase2_dense"):
        step, meta = _stored(os.path.join(workdir, sub, "ckpt"))
        if step is not None and meta.get("data_key") not in (None, key):
            raise DataError(
                f"{workdir}/{sub} holds a run on other QA data or another encoder (data key "
                f"{meta.get('data_key')} != {key}); pass a new --workdir"
            )


def _check_phase1_done(workdir: str, p1_steps: int) -> None:
    """Phase 2 alone needs a finished phase 1 in the workdir."""
    step, _ = _stored(os.path.join(workdir, "phase1", "ckpt"))
    if step is None:
        raise CheckpointError(
            f"--phase 2 needs phase 1's checkpoint in {workdir}/phase1; run --phase 1 (or "
            "--phase all) with this --workdir first"
        )
    if step < p1_steps:
        raise CheckpointError(
            f"phase 1 in {workdir}/phase1 stopped at step {step} of {p1_steps}; rerun with "
            "--phase 1 (or all) to finish it first"
        )


def _baselines(cfg: CortexConfig, data: CortexData, split: np.ndarray, top1: np.ndarray) -> dict:
    """Question unchanged, ridge question -> answer (alpha picked on dev), top-1 retrieved
    context; and, for reference only, the gold context (an oracle, not a baseline)."""
    thr = cfg.phase2.exact_threshold
    tr, dev = data.split_questions["train"], data.split_questions["dev"]
    q, a = data.q_emb, data.a_emb
    best = max(
        cfg.phase2.ridge_alphas,
        key=lambda al: answer_metrics(
            q[dev] @ (wb := ridge_fit(q[tr], a[tr], al))[0] + wb[1], a[dev]
        )["close_answer_mean"],
    )
    w, b = ridge_fit(q[tr], a[tr], best)
    return {
        "question": answer_metrics(q[split], a[split], thr),
        "ridge": {**answer_metrics(q[split] @ w + b, a[split], thr), "alpha": best},
        "top1_context": answer_metrics(top1, a[split], thr),
        "gold_context_oracle": answer_metrics(data.ctx_emb[data.q_ctx[split]], a[split], thr),
    }  # fmt: skip


def _specialisation(cfg: CortexConfig, data: CortexData, split, gates, workdir: str) -> dict:
    types = data.types[split]
    codes, names = encode_labels(types)
    mi, p = permutation_test(np.argmax(gates, 1), codes, cfg.phase2.permutations, cfg.seed)
    png = plot_gate_pca(gates, types, os.path.join(workdir, "gate_pca.png"),
                        "MoE gate vectors (2-D PCA), held-out questions")  # fmt: skip
    return {"specialisation_mi": mi, "specialisation_p": p, "types": names,
            "utilisation": utilisation(gates, cfg.reasoner.top_k), "gate_pca_png": png}  # fmt: skip


def train_phase1(cfg, data, workdir, mesh, tb=True, log=print):
    """Trains (or restores) phase 1 in ``workdir``: ``(experiment, loop result)``; the final
    router and memory are in ``experiment.final``."""
    p1 = Phase1Experiment(cfg, data, mesh.size)
    return p1, loop.run(p1, _loop_cfg(cfg, workdir, cfg.phase1.steps, "phase1", tb), log)


def train_reasoner(cfg, data, final1, workdir, kind, mesh, tb=True, log=print) -> dict | None:
    """Trains (or restores) one reasoner in ``workdir`` and measures it on the report split:
    ``{close_answer_mean, exact_match, params_*, train_wall_s, gates?, top1}``; None when
    interrupted (SIGTERM: the checkpoint is saved, rerun to resume)."""
    split = data.split_questions[cfg.data.report_split]
    r = cfg.reasoner
    exp = Phase2Experiment(cfg, data, kind, final1, mesh.size)
    res = loop.run(exp, _loop_cfg(cfg, workdir, cfg.phase2.steps, f"phase2 {kind}", tb), log)
    if res["interrupted"]:
        return None
    with jax.set_mesh(mesh):
        pred = exp.predict(exp.final, data.q_emb[split])
    out = answer_metrics(pred["pred"], data.a_emb[split], cfg.phase2.exact_threshold)
    out["params_total"] = sum(int(np.size(x)) for x in jax.tree.leaves(exp.final["params"]))
    out["params_block"] = block_params(kind, r.width, r.num_experts, r.expert_layers,
                                       r.expert_hidden, r.shared_experts,
                                       exp.model.gate_in())  # fmt: skip
    out["train_wall_s"] = res["wall_s"]
    out["selected_step"] = res["selected_step"]  # the dev-selected step (see phase2)
    out["dev_close_answer_mean"] = res["dev_close_answer_mean"]  # what it was selected on
    out["top1"] = exp.layout.patterns[pred["top1_slot"]]  # the top-1 retrieved context
    if kind == "moe":
        out["gates"] = pred["gates"]
    return out


def _phase2(cfg, data, final1, workdir, kinds, mesh, tb, log) -> dict | None:
    """Each reasoner, the baselines and the MoE's specialisation; None when interrupted."""
    split = data.split_questions[cfg.data.report_split]
    out: dict[str, Any] = {}
    for kind in kinds:
        got = train_reasoner(cfg, data, final1, f"{workdir}/phase2_{kind}", kind, mesh, tb, log)
        if got is None:
            return None
        top1, gates = got.pop("top1"), got.pop("gates", None)
        out[kind] = got
        if gates is not None:
            out.update(_specialisation(cfg, data, split, gates, workdir))
    out["baselines"] = _baselines(cfg, data, split, top1)
    if "moe" in out and "dense" in out:
        out["moe_minus_dense"] = out["moe"]["close_answer_mean"] - out["dense"]["close_answer_mean"]
    return out


def run_cortex(
    cfg: CortexConfig,
    source: str | None,
    workdir: str,
    *,
    phase: str = "all",
    reasoning: str = "both",
    tensorboard: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs (or resumes) Cortex on a QA source; returns the result record (the command's line).

    Raises:
      DataError / CheckpointError: bad data, a workdir of other data, phase 2 without phase 1.
      ValueError: a bad ``phase``, ``reasoning`` or config value.
    """
    if phase not in PHASES or reasoning not in REASONING:
        raise ValueError(f"phase={phase!r} must be in {PHASES}, reasoning={reasoning!r} in "
                         f"{REASONING}")  # fmt: skip
    cfg.validate()
    t0 = time.time()
    if phase == "2":
        _check_phase1_done(workdir, cfg.phase1.steps)
    d = cfg.data
    data = prepare_data(source, workdir, split=d.split, split_seed=d.split_seed,
                        on_bad_record=d.on_bad_record, encoder=d.encoder,
                        embed_batch=d.embed_batch, log=log)  # fmt: skip
    _check_data_key(workdir, data.key)
    mesh = sharding.make_mesh(cfg.mesh or {"data": 1})
    result: dict[str, Any] = {
        "source": data.source, "contexts": len(data.contexts), "questions": len(data.q_ctx),
        "skipped_records": len(data.problems), "report_split": d.report_split,
        "split_questions": {k: int(len(v)) for k, v in data.split_questions.items()},
        "embed_s": data.embed_s, "embeddings_cached": data.cached, "devices": int(mesh.size),
        "config": dataclasses.asdict(cfg), "interrupted": False,
    }  # fmt: skip
    p1, res = train_phase1(cfg, data, f"{workdir}/phase1", mesh, tensorboard, log)
    if res["interrupted"]:
        return {**result, "interrupted": True, "wall_s": round(time.time() - t0, 2)}
    if phase in ("1", "all"):
        with jax.set_mesh(mesh):
            result["phase1"] = phase1_report(p1, p1.final, d.report_split)
    if phase in ("2", "all"):
        kinds = ("moe", "dense") if reasoning == "both" else (reasoning,)
        out = _phase2(cfg, data, p1.final, workdir, kinds, mesh, tensorboard, log)
        if out is None:
            return {**result, "interrupted": True, "wall_s": round(time.time() - t0, 2)}
        result["phase2"] = out
    result["wall_s"] = round(time.time() - t0, 2)
    return result
