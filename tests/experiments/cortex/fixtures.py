"""Shared Cortex test fixtures: synthetic embedded data, a tiny random BERT encoder, QA files."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from aura.experiments.cortex.config import CortexConfig
from aura.experiments.cortex.data import SPLITS, CortexData
from aura.models.sentence_encoder import default_encoder_dir

TYPES = ("alpha", "beta", "gamma")


def tiny_config(**overrides) -> CortexConfig:
    """The ``tiny`` preset as a CortexConfig (a dict updates a group's fields)."""
    spec = importlib.util.spec_from_file_location(
        "cortex_presets", Path(__file__).resolve().parents[3] / "configs" / "cortex.py"
    )
    presets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(presets)
    c = presets.get_config("tiny")
    for group, fields in overrides.items():
        if isinstance(fields, dict):
            c[group].update(fields)
        else:
            c[group] = fields
    return CortexConfig.from_dict(c)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_data(contexts: int = 40, per: int = 3, dim: int = 16, seed: int = 0) -> CortexData:
    """Random unit context embeddings; each question is near its context and a type-specific
    direction; its answer window is near the context too (so retrieval helps)."""
    rng = np.random.default_rng(seed)
    ctx = _unit(rng.standard_normal((contexts, dim)))
    type_dirs = _unit(rng.standard_normal((len(TYPES), dim)))
    q_ctx = np.repeat(np.arange(contexts), per).astype(np.int32)
    t = np.arange(len(q_ctx)) % len(TYPES)
    noise = lambda: 0.3 * rng.standard_normal((len(q_ctx), dim))  # noqa: E731
    q = _unit(ctx[q_ctx] + 0.8 * type_dirs[t] + noise())
    a = _unit(ctx[q_ctx] + 0.5 * type_dirs[t] + noise())
    order = rng.permutation(contexts)
    parts = np.split(order, [int(0.6 * contexts), int(0.8 * contexts)])
    split_ctx = {s: np.sort(p) for s, p in zip(SPLITS, parts, strict=True)}
    split_q = {s: np.flatnonzero(np.isin(q_ctx, p)) for s, p in split_ctx.items()}
    return CortexData(
        contexts=[f"context {i}" for i in range(contexts)], ctx_emb=ctx, q_emb=q, a_emb=a,
        q_ctx=q_ctx, types=np.array([TYPES[i] for i in t]), split_contexts=split_ctx,
        split_questions=split_q, source="synthetic", key=f"synthetic-{seed}", problems=[],
        embed_s=0.0, cached=False,
    )  # fmt: skip


def tiny_encoder_dir(root: Path) -> Path:
    """A sentence-transformers directory with MiniLM's tokenizer and a random 1-layer BERT of
    width 32 (fast to compile and run; the embeddings mean nothing)."""
    out = root / "tiny-bert"
    if (out / "model.safetensors").is_file():
        return out
    out.mkdir(parents=True)
    shutil.copy(default_encoder_dir() / "tokenizer.json", out / "tokenizer.json")
    d, f, vocab, pos = 32, 64, 30522, 128
    cfg = {"model_type": "bert", "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": 1,
           "num_attention_heads": 2, "intermediate_size": f, "max_position_embeddings": pos,
           "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12}  # fmt: skip
    (out / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    w = lambda *s: (0.05 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    weights = {"embeddings.word_embeddings.weight": w(vocab, d),
               "embeddings.position_embeddings.weight": w(pos, d),
               "embeddings.token_type_embeddings.weight": w(2, d)}  # fmt: skip
    lns = ["embeddings.LayerNorm", "encoder.layer.0.attention.output.LayerNorm",
           "encoder.layer.0.output.LayerNorm"]  # fmt: skip
    for n in lns:
        weights[f"{n}.weight"], weights[f"{n}.bias"] = np.ones(d, np.float32), w(d)
    p = "encoder.layer.0"
    for n, (i, o) in {"attention.self.query": (d, d), "attention.self.key": (d, d),
                      "attention.self.value": (d, d), "attention.output.dense": (d, d),
                      "intermediate.dense": (d, f), "output.dense": (f, d)}.items():  # fmt: skip
        weights[f"{p}.{n}.weight"], weights[f"{p}.{n}.bias"] = w(o, i), w(o)
    save_file(weights, str(out / "model.safetensors"))
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    modules = [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{k}"}
               for i, (path, k) in enumerate(kinds)]  # fmt: skip
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return out


def write_qa(path: Path, contexts: int = 12, per: int = 2, types=TYPES) -> Path:
    """A small valid QA JSONL file: ``contexts`` short contexts, ``per`` questions each."""
    lines = []
    for c in range(contexts):
        words = ["apple", "river", "stone", "cloud", "ember", "maple"]
        ctx = (f"Item {c} is a {words[c % 6]} of size {c * 3}. It keeps {c + 1} records and "
               f"returns the {words[(c + 2) % 6]} value when asked.")  # fmt: skip
        for j in range(per):
            ans = f"size {c * 3}" if j % 2 == 0 else f"{c + 1} records"
            lines.append({"id": f"{c}-{j}", "context": ctx, "question": f"What about item {c}?",
                          "answer": ans, "type": types[(c + j) % len(types)]})  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path
