"""A trained MOCA text classifier loaded from a run directory (what ``classify`` uses).

:func:`load_classifier` reads ``<run>/classifier.json`` (labels, tokenizer, model config),
``<run>/log_idf.npy`` (the pooling prior of the training split), for a wide-and-deep model
``<run>/wide_idf.npy`` (the idf of its hashed TF-IDF features) and always the *final*
checkpoint of the run (the latest step in ``<run>/ckpt``), checked leaf by leaf against the
model the config describes, so a checkpoint of another configuration names the leaf that
differs. :meth:`Classifier.predict` returns label, probabilities and confidence per text.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from aura.data.errors import DataError
from aura.data.hashed_tfidf import HashedTfidf
from aura.experiments.moca import pretrained, steps, text_data, textcls
from aura.experiments.moca.experiment import (
    CLASSIFIER_FILE,
    IDF_FILE,
    WIDE_IDF_FILE,
    classifier_logits,
    full_view,
    init_params,
    routing_controls,
    stored_view,
)
from aura.models.moca import MocaNet, moca_config
from aura.train.checkpoint import CheckpointError, TrainCheckpointer, checkpoint_dir


class Classifier:
    """Labels, tokenizer, model and the restored parameters of a text run."""

    def __init__(self, run_dir: str):
        info_path = os.path.join(run_dir, CLASSIFIER_FILE)
        if not os.path.isdir(run_dir):
            raise DataError(f"--ckpt {run_dir!r} is not a run directory")
        if not os.path.isfile(info_path):
            raise DataError(
                f"{run_dir!r} holds no {CLASSIFIER_FILE}; pass the --workdir of a finished "
                "`moca --task textcls` run"
            )
        try:
            with open(info_path) as f:
                self.info = json.load(f)
            self.labels = list(self.info["labels"])
            self.max_len = int(self.info["max_len"])
            # Fields newer than the run keep their defaults.
            fields = {**moca_config().to_dict(), **self.info["model"]}
            self.model_cfg = ml_collections.ConfigDict(fields)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{info_path}: unreadable classifier description ({e})") from None
        self.model_cfg.separator_ids = tuple(self.model_cfg.separator_ids)
        self.log_idf = np.load(os.path.join(run_dir, IDF_FILE), allow_pickle=False)
        self.sp = pretrained.load_text_tokenizer(self.info["tokenizer"])
        self.wide = None
        if self.model_cfg.wide_buckets:
            wide = self.info.get("wide", {})
            self.wide_top_k = int(wide.get("top_k", 256))
            self.wide = HashedTfidf.load(
                os.path.join(run_dir, WIDE_IDF_FILE),
                self.model_cfg.wide_buckets,
                int(wide.get("ngrams", 2)),
            )
        self.model = MocaNet(self.model_cfg)
        self.controls = routing_controls(self.model_cfg)
        self.params, self.step = self._restore(run_dir)
        self._logits = jax.jit(self._apply)

    def _restore(self, run_dir: str):
        frozen = steps.frozen_params(self.model_cfg)
        own = steps.own_rates(self.model_cfg, 1e-3, 0.0)
        optimizer = steps.make_optimizer(1e-3, 1, 2, 1.0, 0.01, frozen, own)  # state structure

        def fresh():
            params = init_params(self.model, 0, self.max_len)
            return steps.MocaState(params, optimizer.init(params))

        # runs before the frozen table left the checkpoints have no "frozen_table": theirs hold it
        frozen_table = self.info.get("frozen_table")
        abstract = stored_view(jax.eval_shape(fresh), frozen_table)
        with TrainCheckpointer(checkpoint_dir(run_dir), read_only=True) as ckpt:
            if ckpt.latest_step() is None:
                raise CheckpointError(f"no checkpoint found in {run_dir}")
            step = ckpt.latest_step()
            state, _ = ckpt.restore(step, abstract_state=abstract)
        return full_view(state, frozen_table).params, step

    def _apply(self, params, batch):
        return classifier_logits(self.model, self.controls, params, batch)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: ``{"label", "confidence", "probs": {label: p}}``.

        Raises:
          DataError: an empty text.
        """
        for i, t in enumerate(texts):
            if not t.strip():
                raise DataError(f"text {i + 1} is empty; give some text to classify")
        tokens = text_data.encode_texts(self.sp, texts, self.max_len)
        wide = self.wide and self.wide.transform(texts, self.wide_top_k)
        inputs = textcls.model_inputs(tokens, self.log_idf, wide)
        probs = textcls.predict_proba(self._logits, self.params, inputs, 16)
        out = []
        for p in probs:
            best = int(np.argmax(p))
            out.append({
                "label": self.labels[best],
                "confidence": round(float(p[best]), 4),
                "probs": {name: round(float(v), 4) for name, v in zip(self.labels, p, strict=True)},
            })  # fmt: skip
        return out

    def stats(self) -> dict[str, Any]:
        """Architecture and config of the loaded run."""
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))
        m = self.model_cfg
        return {"step": self.step, "parameters": n, "labels": self.labels,
                "max_len": self.max_len, "vocab_size": m.vocab_size, "dim": m.dim,
                "layers": m.num_layers, "experts": m.num_experts, "top_k": m.top_k,
                "slots": m.num_slots, "slot_top_k": m.slot_top_k,
                "use_memory": m.use_memory, "wide_buckets": m.wide_buckets,
                "tokenizer": self.info["tokenizer"]}  # fmt: skip
