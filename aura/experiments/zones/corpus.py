"""The adapter's routing over a corpus: what the zone heads are fitted on.

Shapes: B batch, L tokens per document, E experts, D embedding width, V vocabulary.

* :func:`documents`: paragraphs of a text directory (or JSONL text fields), spread evenly.
* :func:`document_routing`: one jitted routing-only pass of the SelfTeachingAdapter over them:
  per-document mean gate probabilities and log-probabilities, token embeddings with their top-1
  expert and document id, expert utilisation and mean gate entropy.
* :func:`heldout_batches`: held-out instruction records (``heldout*.jsonl``) through the full
  adapter: (logits, targets, response weights) batches for temperature fitting, and per-expert
  routed accuracy (next-token accuracy of the response tokens each expert routed, top-1).

``cfg`` is a ``zones_loop.ZonesConfig`` (max_len, max_tokens, seed, heldout_records).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aura.data.errors import DataError
from aura.data.instruct import InstructFormatter, find_jsonl_files, read_instruct
from aura.data.text import iter_paragraphs
from aura.models.adapter import SelfTeachingAdapter

__all__ = ["document_routing", "documents", "heldout_batches", "split_jsonl"]


def split_jsonl(json_dir: str) -> tuple[list[str], list[str]]:
    """(training files, held-out files): ``heldout*.jsonl`` are held out, never trained on."""
    files = find_jsonl_files(json_dir)
    held = [f for f in files if os.path.basename(f).startswith("heldout")]
    train = [f for f in files if f not in held]
    if not train:
        raise DataError(f"{json_dir}: only held-out files ({held}); add training *.jsonl files")
    return train, held


def documents(source: str, max_docs: int) -> list[str]:
    """Up to ``max_docs`` paragraphs (>= 5 words) spread evenly over the text, in order."""
    paragraphs = [p for p in iter_paragraphs(source) if len(p.split()) >= 5]
    if len(paragraphs) < 2:
        raise DataError(f"{source}: fewer than 2 paragraphs of text to fit the zone heads on")
    pick = np.unique(np.linspace(0, len(paragraphs) - 1, min(max_docs, len(paragraphs))))
    return [paragraphs[int(i)] for i in pick]


def document_routing(model, params, sp, docs: list[str], cfg) -> dict[str, Any]:
    """Gate statistics of the adapter over documents and a sample of their token embeddings."""

    @jax.jit
    def route(p, tokens):
        r = model.apply({"params": p}, tokens, method=SelfTeachingAdapter.gate_weights)
        emb = model.apply({"params": p}, tokens, method=lambda m, t: m.embed(t))
        return r.probs, r.indices, r.valid, emb

    E, L = model.config.num_experts, cfg.max_len
    log_p, mean_p, embs, top1, doc, loads, ent = [], [], [], [], [], np.zeros(E), []
    for i in range(0, len(docs), 16):
        chunk = [sp.encode(d)[:L] for d in docs[i : i + 16]]
        ids = np.zeros((16, L), np.int32)  # fixed shape: one compilation
        mask = np.zeros((16, L), bool)
        for j, row in enumerate(chunk):
            ids[j, : len(row)], mask[j, : len(row)] = row, True
        probs, idx, valid, emb = jax.device_get(route(params, jnp.asarray(ids)))
        probs = probs.reshape(16, L, E)  # [N, E] -> [B, L, E]
        n = np.maximum(mask.sum(1, keepdims=True), 1)  # [B, 1]
        lp = np.log(np.maximum(probs, 1e-9))
        log_p.append(((lp * mask[..., None]).sum(1) / n)[: len(chunk)])
        mean_p.append(((probs * mask[..., None]).sum(1) / n)[: len(chunk)])
        flat = mask.reshape(-1)
        embs.append(emb.reshape(-1, emb.shape[-1])[flat])
        top1.append(idx[:, 0][flat])
        doc.append(np.repeat(np.arange(i, i + 16), L)[flat])
        hit = (valid & flat[:, None]).reshape(-1)
        loads += np.bincount(idx.reshape(-1)[hit], minlength=E)
        pf = probs.reshape(-1, E)[flat]
        ent.append(-(pf * np.log(np.maximum(pf, 1e-9))).sum(1))
    emb, top, doc = np.concatenate(embs), np.concatenate(top1), np.concatenate(doc)
    if len(emb) > cfg.max_tokens:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(emb), cfg.max_tokens, False))
        emb, top, doc = emb[keep], top[keep], doc[keep]
    return {
        "log_probs": np.concatenate(log_p),
        "probs": np.concatenate(mean_p),
        "emb": emb,
        "top1": top,
        "doc": doc,
        "utilisation": (loads / max(loads.sum(), 1)).tolist(),
        "gate_entropy": float(np.concatenate(ent).mean()),
    }


def heldout_batches(model, params, sp, cfg, held: list[str], train: list[str]):
    """Yields (logits, targets, weights) of held-out records; fills per-expert routed accuracy."""
    records = read_instruct(held) if held else read_instruct(train)[-cfg.heldout_records :]
    records = records[: cfg.heldout_records]
    enc = InstructFormatter(sp, max_len=cfg.max_len, pad_to=cfg.max_len).encode_batch(records)
    E = model.config.num_experts
    stats = {"correct": np.zeros(E), "count": np.zeros(E)}

    @jax.jit
    def forward(p, tokens):
        logits, _, _ = model.apply({"params": p}, tokens)
        r = model.apply({"params": p}, tokens, method=SelfTeachingAdapter.gate_weights)
        return logits, r.indices[:, 0].reshape(tokens.shape)

    def batches():
        B = 8
        ids, mask = enc["ids"], enc["loss_mask"]
        pad = (-len(ids)) % B
        ids = np.concatenate([ids, np.zeros((pad, ids.shape[1]), ids.dtype)])
        mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), mask.dtype)])
        for i in range(0, len(ids), B):
            logits, route = forward(params, jnp.asarray(ids[i : i + B]))
            tgt, w = ids[i : i + B, 1:], mask[i : i + B, 1:]
            right = np.asarray(jnp.argmax(logits[:, :-1], -1)) == tgt
            ex = np.asarray(route[:, :-1])
            stats["correct"] += np.bincount(ex.reshape(-1), (right * w).reshape(-1), E)
            stats["count"] += np.bincount(ex.reshape(-1), w.reshape(-1), E)
            yield logits[:, :-1], jnp.asarray(tgt), jnp.asarray(w)

    return batches(), stats
