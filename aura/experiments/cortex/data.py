"""Cortex data: QA records -> embeddings (cached in the workdir) -> splits by context.

Shapes: C contexts (the memories), Q questions, D embedding width.

Every distinct text (context, question, answer window) is embedded once with the JAX sentence
encoder (``aura.models.sentence_encoder``). The embeddings are cached in
``<workdir>/embeddings/<encoder>-<key>.npz`` where the key hashes the QA file's bytes (for a
``tfds:`` source, the records' text) with the encoder's name and width and the answer-window
radius, so a rerun on the same file does not embed again and a changed file or encoder does.
The cache is written to a temporary name and renamed; it is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from aura.data.errors import DataError
from aura.data.qa import WINDOW_RADIUS, QARecord, default_qa_path, load_qa, split_by_context
from aura.models.sentence_encoder import load_sentence_encoder

__all__ = ["SPLITS", "CortexData", "data_key", "embed_texts", "prepare_data"]

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class CortexData:
    """Embedded QA data, split by context.

    Attributes:
      contexts: the distinct contexts (memory slot i holds context i).
      ctx_emb: [C, D] unit context embeddings.
      q_emb: [Q, D] unit question embeddings.
      a_emb: [Q, D] unit answer-window embeddings.
      q_ctx: [Q] the context index of each question.
      types: [Q] question types (analysis only).
      split_contexts: split name -> context indices.
      split_questions: split name -> question indices (the questions about those contexts).
      source, key: where the records came from and the cache key.
      problems: the skipped records' ``file:line: reason``.
      embed_s: seconds spent embedding (0 when the cache was used).
      cached: whether the embeddings came from the cache.
    """

    contexts: list[str]
    ctx_emb: np.ndarray
    q_emb: np.ndarray
    a_emb: np.ndarray
    q_ctx: np.ndarray
    types: np.ndarray
    split_contexts: dict[str, np.ndarray]
    split_questions: dict[str, np.ndarray]
    source: str
    key: str
    problems: list[str]
    embed_s: float
    cached: bool

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.ctx_emb.shape[1])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def data_key(source: str, records: Sequence[QARecord], encoder_name: str, dim: int) -> str:
    """The cache key: a hash of the file's bytes (or the records' text) + encoder + radius."""
    h = hashlib.sha256()
    if os.path.isfile(source):
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        for r in records:
            h.update(json.dumps([r.id, r.context, r.question, r.answer]).encode())
    h.update(f"|{encoder_name}|{dim}|r{WINDOW_RADIUS}".encode())
    return h.hexdigest()[:20]


def embed_texts(encode: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
    """Embeds each distinct text once; returns [len(texts), D] unit rows in the input order."""
    unique = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(unique)}
    vecs = _unit(np.asarray(encode(unique), np.float32))
    return vecs[[where[t] for t in texts]]


def _load_cache(path: str, c: int, q: int):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = z["contexts"], z["questions"], z["windows"]
    except (OSError, ValueError, KeyError):
        return None  # unreadable or partial: embed again
    if arrays[0].shape[0] != c or arrays[1].shape[0] != q or arrays[2].shape[0] != q:
        return None
    return arrays


def _embeddings(source, records, contexts, workdir, encoder_path, batch, log):
    """(ctx_emb, q_emb, a_emb, key, seconds, cached) for the records."""
    encoder = load_sentence_encoder(encoder_path)
    key = data_key(source, records, encoder.name, encoder.dim)
    cache_dir = os.path.join(workdir, "embeddings")
    path = os.path.join(cache_dir, f"{encoder.name}-{key}.npz")
    if os.path.isfile(path):
        got = _load_cache(path, len(contexts), len(records))
        if got is not None:
            log(f"embeddings: cached ({path})")
            return (*got, key, 0.0, True)
    t0 = time.time()
    texts = contexts + [r.question for r in records] + [r.window for r in records]
    n_unique = len(set(texts))
    log(f"embeddings: {n_unique} distinct texts with {encoder.name} ...")
    vecs = embed_texts(lambda t: encoder.encode(t, batch_size=batch), texts)
    c, q = len(contexts), len(records)
    ctx, qv, av = vecs[:c], vecs[c : c + q], vecs[c + q :]
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, contexts=ctx, questions=qv, windows=av)
    os.replace(tmp, path)
    seconds = time.time() - t0
    log(f"embeddings: {n_unique} texts in {seconds:.1f} s -> {path}")
    return ctx, qv, av, key, seconds, False


def prepare_data(
    source: str | None,
    workdir: str,
    *,
    split: Sequence[float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    on_bad_record: str = "skip",
    encoder: str | None = None,
    embed_batch: int = 64,
    log: Callable[[str], None] = print,
) -> CortexData:
    """Reads, embeds (or loads the cache) and splits the QA data by context.

    Args:
      source: a JSONL file, ``tfds:squad[:split]``, or None for the embedded default.
      workdir: the run directory (the cache lives in ``embeddings/``).
      split: train / dev / test fractions of the contexts.
      split_seed: the split's shuffle seed.
      on_bad_record: ``skip`` (count the bad records) or ``fail``.
      encoder: a sentence-transformers directory (None: the packaged MiniLM).
      embed_batch: encoder batch size.
      log: progress lines.

    Raises:
      DataError: unreadable or empty data, too few contexts, or a missing encoder.
    """
    records, problems, label = load_qa(source, on_bad_record=on_bad_record)
    if problems:
        log(f"skipped {len(problems)} bad QA record(s); first: {problems[0]}")
    contexts, parts = split_by_context(records, split, split_seed)
    ctx_index = {c: i for i, c in enumerate(contexts)}
    q_ctx = np.array([ctx_index[r.context] for r in records], np.int32)
    path = default_qa_path() if label == "default" else label
    ctx, qv, av, key, seconds, cached = _embeddings(
        path, records, contexts, workdir, encoder, embed_batch, log
    )
    split_contexts = dict(zip(SPLITS, parts, strict=True))
    member = np.zeros((len(SPLITS), len(contexts)), bool)
    for s, idx in enumerate(parts):
        member[s, idx] = True
    split_questions = {name: np.flatnonzero(member[s][q_ctx]) for s, name in enumerate(SPLITS)}
    for name, idx in split_questions.items():
        if idx.size == 0:
            raise DataError(f"{label}: the {name} split has no question; more contexts needed")
    return CortexData(
        contexts=contexts, ctx_emb=ctx, q_emb=qv, a_emb=av, q_ctx=q_ctx,
        types=np.array([r.type for r in records]), split_contexts=split_contexts,
        split_questions=split_questions, source=label, key=key, problems=problems,
        embed_s=round(seconds, 2), cached=cached,
    )  # fmt: skip
