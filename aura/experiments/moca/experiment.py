"""MOCA-Net on the shared loop: copy/recall and text classification as one :class:`Experiment`.

Used by ``python -m aura.build moca`` (and ``tools/ablate_moca.py``). :func:`train` runs or
resumes a run in ``workdir`` on ``aura.train.loop`` (orbax checkpoints at every evaluation and
on SIGTERM/SIGINT, metrics JSONL + TensorBoard, a progress bar) and returns the result dict.

Settings come from a ``configs/moca.py`` preset (a ConfigDict with ``model``, ``loss``, ``copy``,
``text`` and the optimizer fields). The task fixes the model's input/output sizes
(:func:`task_model`): copy uses the symbol vocabulary, a per-token head and the delimiter as the
counters' separator; text uses the tokenizer's vocabulary and one class per label.

Copy evaluation: fixed batches (a pure function of the seed) at lengths drawn in
``[min_len, max_len]`` (key ``"<max_len>"``) and at each longer ``eval_lengths`` entry, per-token
and per-sequence accuracy on the answer segment. Text evaluation: accuracy and macro-F1 on the
eval split; the TF-IDF + logistic-regression baseline on the same split is added to the summary
when scikit-learn is installed. A text run also writes ``<workdir>/classifier.json`` and
``<workdir>/log_idf.npy`` (what ``classify`` needs besides the checkpoint), and for a
wide-and-deep model (``model.wide_buckets > 0``) ``<workdir>/wide_idf.npy``, the idf of its
hashed TF-IDF features (their settings are in ``classifier.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aura.experiments.moca import copy_task, pretrained, steps, textcls
from aura.experiments.moca.plots import plot_run
from aura.models.moca import MocaNet, summarize, validate_config
from aura.nn.moe import RoutingControls
from aura.train import loop
from aura.train.metrics import format_line

CLASSIFIER_FILE, IDF_FILE, WIDE_IDF_FILE = "classifier.json", "log_idf.npy", "wide_idf.npy"
TASKS = ("copy", "copy_original", "textcls")
COPY_KEYS = ("tokens", "targets", "loss_mask", "offsets")


@dataclasses.dataclass
class RunConfig:
    """A MOCA run: the preset (``config``), the task and the paths/run flags."""

    task: str
    workdir: str
    config: ml_collections.ConfigDict
    data: str | None = None
    eval_data: str | None = None
    tokenizer: str | None = None
    resume: bool = True
    tensorboard: bool = True
    mesh: dict | None = None

    def validate(self) -> RunConfig:
        """Returns self; raises ValueError naming a bad value."""
        c = self.config
        if self.task not in TASKS:
            raise ValueError(f"--task={self.task!r}; valid: {', '.join(TASKS)}")
        for name in ("steps", "batch_size"):
            if c[name] < 1:
                raise ValueError(f"{name}={c[name]} must be >= 1")
        if c.eval_every is not None and c.eval_every < 1:
            raise ValueError(f"eval_every={c.eval_every} must be >= 1")
        if not 0 <= c.text.word_dropout < 1 or not 0 < c.text.eval_fraction < 1:
            raise ValueError(
                f"text.word_dropout={c.text.word_dropout} must be in [0, 1) and "
                f"text.eval_fraction={c.text.eval_fraction} in (0, 1)"
            )
        steps.make_optimizer(c.lr, c.warmup, c.steps, c.clip)  # validates the optimizer values
        if c.wide_lr <= 0 or c.wide_weight_decay < 0 or c.text.wide_top_k < 1:
            raise ValueError(
                f"wide_lr={c.wide_lr} must be > 0, wide_weight_decay={c.wide_weight_decay} >= 0 "
                f"and text.wide_top_k={c.text.wide_top_k} >= 1"
            )
        return self


def copy_spec(c: ml_collections.ConfigDict) -> copy_task.CopySpec:
    """The copy task of a preset (raises ValueError naming a bad field)."""
    return copy_task.CopySpec(c.copy.num_symbols, c.copy.min_len, c.copy.max_len,
                              c.copy.offset_period)  # fmt: skip


def task_model(c: ml_collections.ConfigDict, task: str, vocab_size: int = 0, num_labels: int = 0):
    """The preset's model config with the task's sizes filled in (validated)."""
    m = ml_collections.ConfigDict(c.model.to_dict())
    if task == "copy":
        m.vocab_size, m.num_classes = copy_spec(c).vocab_size, 0
        m.separator_ids = (copy_task.DELIM,)
    elif task == "copy_original":
        m.vocab_size, m.num_classes, m.separator_ids = (
            copy_task.OriginalCopySpec().vocab_size,
            0,
            (),
        )
    else:
        m.vocab_size, m.num_classes, m.separator_ids = vocab_size, num_labels, ()
    validate_config(m)
    return m


def routing_controls(m: ml_collections.ConfigDict) -> RoutingControls:
    """Expert routing controls of a model config (all experts, its temperature and top-k)."""
    return RoutingControls.create(m.num_experts, temperature=m.temperature, top_k=m.top_k)


def init_params(model: MocaNet, seed: int, seq_len: int):
    """Fresh parameters (pure; the caller may jit or ``eval_shape`` it)."""
    return model.init(jax.random.key(seed), jnp.zeros((2, seq_len), jnp.int32))["params"]


def stored_view(state: steps.MocaState, frozen_table: str | None) -> steps.MocaState:
    """What a checkpoint holds: the state without the token table when that is a frozen
    pretrained one (``frozen_table="minilm"``: 30,522 x 384 f32, 47 MB a checkpoint, never
    changed by training); :func:`full_view` rebuilds it from the installed package."""
    if not frozen_table:
        return state
    return state.replace(params={k: v for k, v in state.params.items() if k != "embed"})


def with_minilm_table(params: dict) -> dict:
    """``params`` with MiniLM's word table [V, 384] as the token table."""
    return {**params, "embed": {"embedding": jnp.asarray(pretrained.minilm_word_table())}}


def full_view(state: steps.MocaState, frozen_table: str | None) -> steps.MocaState:
    """The state from a :func:`stored_view` (the frozen table put back)."""
    return state.replace(params=with_minilm_table(state.params)) if frozen_table else state


class MocaExperiment(loop.Experiment):
    """Copy or text classification; state :class:`steps.MocaState`."""

    def __init__(self, cfg: RunConfig, log=print):
        self.cfg, self.log = cfg.validate(), log
        c = cfg.config
        if cfg.task == "copy":
            self.spec = copy_spec(c)
            self.model_cfg = task_model(c, "copy")
            self.seq_len = self.spec.seq_len()
        elif cfg.task == "copy_original":
            self.orig = copy_task.OriginalCopySpec()
            self.model_cfg = task_model(c, cfg.task)
            self.seq_len = self.orig.seq_len
        else:
            self.text = textcls.prepare_text_task(
                cfg.data or c.text.data, cfg.workdir, eval_data=cfg.eval_data,
                tokenizer=cfg.tokenizer, max_len=c.text.max_len, vocab_size=c.text.vocab_size,
                eval_fraction=c.text.eval_fraction, seed=c.seed, embeddings=c.text.embeddings,
                wide=(c.model.wide_buckets, c.text.wide_top_k, c.text.wide_ngrams),
            )  # fmt: skip
            self.model_cfg = task_model(c, "textcls", self.text.vocab_size, self.text.num_labels)
            if c.text.embeddings == "minilm":
                self.model_cfg.embed_dim = pretrained.MINILM_WIDTH
            self.seq_len = c.text.max_len
        # a frozen pretrained table stays out of the checkpoints (stored_view)
        minilm = cfg.task == "textcls" and c.text.embeddings == "minilm"
        self.frozen_table = "minilm" if minilm and self.model_cfg.freeze_embed else None
        self.model = MocaNet(self.model_cfg)
        self.controls = routing_controls(self.model_cfg)
        self.optimizer = steps.make_optimizer(
            c.lr, c.warmup, c.steps, c.clip, c.weight_decay, steps.frozen_params(self.model_cfg),
            steps.own_rates(self.model_cfg, c.wide_lr, c.wide_weight_decay),
        )  # fmt: skip
        loss = "textcls" if cfg.task == "textcls" else "copy"
        self.train_step = steps.build_train_step(self.model, self.optimizer, c.loss, loss)
        self._eval = jax.jit(steps.build_eval_step(self.model, c.loss, loss))
        self._baseline: dict | None = None

    # -- the loop's contract -------------------------------------------------------------------
    def init_state(self):
        params = init_params(self.model, self.cfg.config.seed, self.seq_len)
        if self.cfg.task == "textcls" and self.cfg.config.text.embeddings == "minilm":
            params = with_minilm_table(params)
        return steps.MocaState(params, self.optimizer.init(params))

    def stored_state(self, state):
        return stored_view(state, self.frozen_table)

    def full_state(self, stored):
        return full_view(stored, self.frozen_table)

    def batch(self, step: int):
        c = self.cfg.config
        if self.cfg.task == "copy":
            b = copy_task.copy_batch_at(self.spec, c.seed, step, c.batch_size)
            data = {k: b[k] for k in COPY_KEYS}
        elif self.cfg.task == "copy_original":
            b = copy_task.original_copy_batch(np.random.default_rng([c.seed, step]), self.orig,
                                              c.batch_size)  # fmt: skip
            data = {k: b[k] for k in COPY_KEYS}
        else:
            data = self.text.batch(step, c.batch_size, c.seed, c.text.word_dropout)
        return data, self.controls

    def evaluate(self, state, step: int, train: dict) -> dict:
        record = {k: train[k] for k in ("loss", "task_loss", "compute") if k in train}
        if self.cfg.task == "copy":
            record.update(self.evaluate_copy(state.params))
            tokens = self.copy_eval_batch(self.spec.max_len)["tokens"]
        elif self.cfg.task == "copy_original":
            b = self.original_eval_batch()
            m = jax.device_get(self._eval(state.params, b, self.controls))
            acc = {"token_acc": {"orig": float(m["token_acc"])}}
            record.update(
                acc, seq_acc={"orig": float(m["seq_acc"])}, compute_used=float(m["compute"])
            )
            tokens = b["tokens"]
        else:
            record.update(self.evaluate_text(state.params))
            tokens = self.text.eval_tokens[: self.cfg.config.batch_size]
        record.update(self.usage(state.params, tokens))
        png = os.path.join(self.cfg.workdir, "moca.png")
        plot_run([*self.history, {"step": step, **record}], png, self.cfg.config.loss.budget)
        return record

    def usage(self, params, tokens: np.ndarray) -> dict[str, list[float]]:
        """Share of the expert and slot activations per expert/slot on ``tokens`` [B, T]."""
        if not hasattr(self, "_usage"):
            model, controls = self.model, self.controls

            def loads(p, t):
                s = summarize(model.apply({"params": p}, t, None, controls, t != 0)[2])
                return s["expert_load"], s.get("slot_load", jnp.zeros((0,)))

            self._usage = jax.jit(loads)
        e, s = jax.device_get(self._usage(params, tokens))
        return {"expert_load": np.round(e, 4).tolist(), "slot_load": np.round(s, 4).tolist()}

    def format_record(self, record: dict) -> str:
        flat = {}
        for k, v in record.items():
            if k in ("expert_load", "slot_load"):
                continue
            if isinstance(v, dict):
                flat.update({f"{k}@{n}": x for n, x in v.items()})
            else:
                flat[k] = v
        return format_line(flat)

    def meta(self) -> dict:
        c = self.cfg
        return {"task": c.task, "model": self.model_cfg.to_dict(),
                "config": c.config.to_dict(), "data": c.data, "eval_data": c.eval_data}  # fmt: skip

    def summary(self, state, history: list[dict]) -> dict:
        last = history[-1] if history else {}
        out = {"task": self.cfg.task, "budget": float(self.cfg.config.loss.budget),
               "compute_used": last.get("compute_used")}  # fmt: skip
        if self.cfg.task.startswith("copy"):
            out.update(token_acc=last.get("token_acc"), seq_acc=last.get("seq_acc"))
            if self.cfg.task == "copy_original":  # the best any model can do on it
                out["ceiling"] = copy_task.original_copy_ceiling(self.orig, 2000, 0)
            return out
        base = self.baseline()
        out.update(
            accuracy=last.get("accuracy"), macro_f1=last.get("macro_f1"),
            baseline_accuracy=base and base["accuracy"],
            baseline_macro_f1=base and base["macro_f1"],
            num_labels=self.text.num_labels, train_size=len(self.text.train_labels),
            eval_size=len(self.text.eval_labels),
        )  # fmt: skip
        self.write_classifier()
        return out

    # -- evaluation ----------------------------------------------------------------------------
    def original_eval_batch(self) -> dict[str, np.ndarray]:
        c = self.cfg.config
        rng = np.random.default_rng([c.seed, 1_000_003, 1])
        b = copy_task.original_copy_batch(rng, self.orig, c.copy.eval_size)
        return {k: b[k] for k in COPY_KEYS}

    def copy_eval_lengths(self) -> list[int]:
        longer = [n for n in self.cfg.config.copy.eval_lengths if n > self.spec.max_len]
        return [self.spec.max_len, *longer]

    def copy_eval_batch(self, length: int) -> dict[str, np.ndarray]:
        """The fixed evaluation batch: training lengths for ``max_len``, else one length."""
        c = self.cfg.config
        if length == self.spec.max_len:
            rng = np.random.default_rng([c.seed, 1_000_003, 0])
            b = copy_task.copy_batch(rng, self.spec, c.copy.eval_size, offsets=False)
        else:
            b = copy_task.copy_eval_batch(self.spec, c.seed, length, c.copy.eval_size)
        return {k: b[k] for k in COPY_KEYS}

    def evaluate_copy(self, params) -> dict[str, Any]:
        tok, seq, used = {}, {}, None
        for n in self.copy_eval_lengths():
            m = jax.device_get(self._eval(params, self.copy_eval_batch(n), self.controls))
            tok[str(n)], seq[str(n)] = float(m["token_acc"]), float(m["seq_acc"])
            used = float(m["compute"]) if used is None else used
        return {"token_acc": tok, "seq_acc": seq, "compute_used": used}

    def logits_fn(self):
        model, controls = self.model, self.controls

        return jax.jit(lambda params, batch: classifier_logits(model, controls, params, batch))

    def evaluate_text(self, params) -> dict[str, Any]:
        if not hasattr(self, "_logits"):
            self._logits = self.logits_fn()
        out = textcls.evaluate_text(self._logits, params, self.text)
        b = self.text.eval_batches(self.cfg.config.batch_size)[0]
        out["compute_used"] = float(self._eval(params, b, self.controls)["compute"])
        return out

    def baseline(self) -> dict | None:
        if self._baseline is None:
            self._baseline = self.text.baseline(self.cfg.config.seed)
        return self._baseline

    def write_classifier(self) -> None:
        """What ``classify`` needs next to the checkpoint (written atomically)."""
        d = self.cfg.workdir
        t = self.cfg.config.text
        info = {"labels": list(self.text.label_names), "tokenizer": self.text.tokenizer_path,
                "max_len": int(t.max_len), "model": self.model_cfg.to_dict(),
                "seed": int(self.cfg.config.seed), "frozen_table": self.frozen_table,
                "wide": {"top_k": int(t.wide_top_k), "ngrams": int(t.wide_ngrams)}}  # fmt: skip
        if self.text.wide is not None:
            self.text.wide.save(os.path.join(d, WIDE_IDF_FILE))
        tmp = os.path.join(d, IDF_FILE + ".tmp.npy")
        np.save(tmp, self.text.log_idf, allow_pickle=False)
        os.replace(tmp, os.path.join(d, IDF_FILE))
        tmp = os.path.join(d, CLASSIFIER_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=2, sort_keys=True, default=list)
        os.replace(tmp, os.path.join(d, CLASSIFIER_FILE))


def classifier_logits(model: MocaNet, controls, params, batch: dict) -> jax.Array:
    """Logits [B, L] of a text model for a :func:`textcls.model_inputs` batch (pure)."""
    tokens = batch["tokens"]
    wide = (batch["wide_ids"], batch["wide_vals"]) if "wide_ids" in batch else None
    out = model.apply({"params": params}, tokens, None, controls, tokens != 0, None,
                      batch["pool_bias"], wide)  # fmt: skip
    return out[0]


def train(cfg: RunConfig, log=print) -> dict:
    """Runs (or resumes) a MOCA run; returns the final summary dict."""
    exp = MocaExperiment(cfg, log)
    c = cfg.config
    loop_cfg = loop.LoopConfig(
        workdir=cfg.workdir, total_steps=c.steps, eval_every=c.eval_every,
        log_every=c.log_every, resume=cfg.resume, mesh=cfg.mesh, tensorboard=cfg.tensorboard,
        desc=f"moca {cfg.task}",
    )  # fmt: skip
    result = loop.run(exp, loop_cfg, log=log)
    result.pop("history")
    result.pop("train", None)
    return result
