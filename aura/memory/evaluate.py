"""The memory benchmark: how well each retrieval policy recalls what a dialogue said.

For every dialogue each policy stores the turns in order (one `EpisodicStore` file per dialogue
and store-writing policy, in a temporary directory), then answers each question by retrieval:

* ``window``: a plain LM's view, the last ``window`` turns and nothing else. It sees all of them
  at once, so its recall@k is "an evidence turn is in the window" for every k.
* ``recency``: the most recent turns first.
* ``lexical``: SQLite FTS5 bm25 over the turn texts.
* ``dense``: cosine of sentence embeddings (the hippocampal index's dense cue alone).
* ``hybrid``: the index's fused cues (`FusionConfig`; the tuned default is `HYBRID`), with the
  write-time supersession links that storing the turns recorded (`aura.memory.supersede`).
* ``hybrid_wm``: ``hybrid`` plus a working-memory buffer: each user turn is added to the buffer
  and recalls from it (rehearsal); evicted items that were rehearsed go back to the store with a
  raised importance, and at question time the buffer's priority is added to the score of the
  episodes it holds.
* ``hybrid_qc``: ``hybrid`` with the fusion config picked per question by a `QueryTypePolicy`.

Metrics per policy, overall and per question kind: ``recall@k`` (an evidence turn among the top
k), ``answer@k`` (the normalised gold answer inside one of the top-k texts), 95% bootstrap
intervals of the overall numbers, the median retrieval latency per question (the question's
embedding is computed beforehand, in a batch, and reported as ``embed_s``) and the store's size.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from aura.memory.dialogues import Dialogue, normalize_answer
from aura.memory.index import FusionConfig, HippocampalIndex
from aura.memory.query_type import QueryTypePolicy
from aura.memory.store import EpisodicStore
from aura.memory.supersede import LinkConfig, link_new
from aura.memory.working import WMItem, WorkingMemory

__all__ = ["HYBRID", "KS", "POLICIES", "EvalConfig", "evaluate"]

POLICIES = ("window", "recency", "lexical", "dense", "hybrid", "hybrid_wm")
_EXTRA = ("hybrid_qc",)
KS = (1, 5, 10)
# Tuned on the development set only (tools/tune_memory.py; see the README): FusionConfig's defaults.
HYBRID = FusionConfig()
_SINGLE = {
    "recency": FusionConfig(dense=0.0, recency=1.0, entity=0.0, masked=0.0, supersede=False),
    "lexical": FusionConfig(dense=0.0, lexical=1.0, entity=0.0, masked=0.0, supersede=False),
    "dense": FusionConfig(dense=1.0, entity=0.0, masked=0.0, supersede=False),
}


class Encoder(Protocol):
    """What the benchmark needs of an encoder (`SentenceEncoder` fits)."""

    name: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Benchmark settings.

    Attributes:
      window: turns the ``window`` policy sees.
      hybrid: fusion config of ``hybrid`` and ``hybrid_wm``.
      wm_capacity, wm_tau_s, wm_weight, wm_rehearse: the working memory of ``hybrid_wm``
        (capacity, decay time constant, weight of its priority in the final score, items each
        user turn recalls).
      query_policy: the `QueryTypePolicy` of ``hybrid_qc`` (required for that policy).
      bootstrap: bootstrap resamples for the 95% intervals.
      seed: bootstrap seed.
      batch_size: encoder batch size.
      links: write-time supersession settings (None: record no links).
    """

    window: int = 64
    hybrid: FusionConfig = HYBRID
    wm_capacity: int = 16
    wm_tau_s: float = 3600.0
    wm_weight: float = 0.05
    wm_rehearse: int = 2
    query_policy: QueryTypePolicy | None = None
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 64
    links: LinkConfig | None = LinkConfig()


def _times(d: Dialogue) -> np.ndarray:
    t = [turn.time for turn in d.turns]
    if all(x is not None for x in t):
        return np.array(t, np.float64)
    return 1_700_000_000.0 + 60.0 * np.arange(len(t))  # no times: a turn a minute


def _fill(store: EpisodicStore, d: Dialogue, emb, times, links: LinkConfig | None) -> list[int]:
    fields = [
        {"session": t.session, "turn": i, "speaker": t.speaker, "event_time": float(times[i])}
        for i, t in enumerate(d.turns)
    ]
    ids = []
    index = HippocampalIndex(store) if links is not None else None
    for s in range(0, len(d.turns), 50):  # a transaction per 50 turns, in order
        new = store.add_many(
            [t.text for t in d.turns[s : s + 50]], emb[s : s + 50], fields[s : s + 50]
        )
        if index is not None:
            link_new(store, index, new, links)
        ids += new
    return ids


def _fill_with_wm(store, d, emb, times, cfg: EvalConfig) -> tuple[list[int], WorkingMemory]:
    def evict(item: WMItem) -> None:
        if item.uses:
            store.update([item.episode_id], importance=min(1.0, 0.5 + 0.1 * item.uses))

    wm = WorkingMemory(cfg.wm_capacity, tau_s=cfg.wm_tau_s, on_evict=evict)
    ids = []
    index = HippocampalIndex(store) if cfg.links is not None else None
    linked = 0
    for i, t in enumerate(d.turns):
        ids.append(
            store.add(
                t.text,
                emb[i],
                session=t.session,
                turn=i,
                speaker=t.speaker,
                event_time=float(times[i]),
            )
        )
        if index is not None and (len(ids) - linked == 50 or i == len(d.turns) - 1):
            link_new(store, index, ids[linked:], cfg.links)  # in blocks of 50, as `_fill` does
            linked = len(ids)
        if t.speaker != "assistant" and len(wm):
            wm.recall(emb[i], cfg.wm_rehearse, float(times[i]))  # rehearsal refreshes them
        wm.add(WMItem(t.text, emb[i], episode_id=ids[-1]), float(times[i]))
    return ids, wm


def _ranked_hits(index, q, qv, fusion, now, k, wm=None, wm_weight=0.0) -> list[int]:
    hits = index.search(
        q, qv, k=2 * k if wm is not None else k, fusion=fusion, now=now, touch=False
    )
    if wm is None:
        return [h.episode.id for h in hits]
    pr = dict(zip((it.episode_id for it in wm.items), wm.priorities(qv, now), strict=True))
    scored = sorted(hits, key=lambda h: -(h.score + wm_weight * pr.get(h.episode.id, 0.0)))
    return [h.episode.id for h in scored[:k]]


def _score(ranked_turns: list[list[int]], q_ev, q_ans, texts, ks, window_mode) -> dict:
    out = {f"recall@{k}": [] for k in ks} | {f"answer@{k}": [] for k in ks}
    for turns, ev, ans in zip(ranked_turns, q_ev, q_ans, strict=True):
        for k in ks:
            top = turns if window_mode else turns[:k]
            out[f"recall@{k}"].append(float(bool(set(top) & set(ev))))
            out[f"answer@{k}"].append(float(any(f" {ans} " in f" {texts[t]} " for t in top)))
    return out


def _dialogue(d: Dialogue, encoder: Encoder, policies, cfg: EvalConfig, tmp: str) -> dict:
    """Per-question rows (metrics, kind, latency) of every policy on one dialogue."""
    t0 = time.perf_counter()
    emb = encoder.encode([t.text for t in d.turns], batch_size=cfg.batch_size)
    qemb = encoder.encode([q.question for q in d.questions], batch_size=cfg.batch_size)
    embed_s = time.perf_counter() - t0
    times = _times(d)
    now = float(times[-1]) + 60.0
    norm_texts = [normalize_answer(t.text) for t in d.turns]
    q_ev = [q.evidence for q in d.questions]
    q_ans = [normalize_answer(q.answer) for q in d.questions]
    rows: dict[str, dict] = {}
    shared = None
    for policy in policies:
        wm = None
        if policy == "window":
            recent = list(range(len(d.turns) - 1, max(-1, len(d.turns) - 1 - cfg.window), -1))
            ranked, lat, size = [recent] * len(d.questions), [0.0] * len(d.questions), 0
        else:
            if policy == "hybrid_wm":
                path = os.path.join(tmp, f"{d.id}-wm.db")
                store = EpisodicStore(path, encoder_name=encoder.name, dim=encoder.dim)
                ids, wm = _fill_with_wm(store, d, emb, times, cfg)
            else:
                if shared is None:  # read-only policies share one store of the dialogue
                    path = os.path.join(tmp, f"{d.id}.db")
                    store = EpisodicStore(path, encoder_name=encoder.name, dim=encoder.dim)
                    shared = (store, _fill(store, d, emb, times, cfg.links))
                store, ids = shared
            turn_of = {e: i for i, e in enumerate(ids)}
            index = HippocampalIndex(store, encoder=encoder)
            fusions = [_SINGLE.get(policy, cfg.hybrid)] * len(d.questions)
            if policy == "hybrid_qc":
                if cfg.query_policy is None:
                    raise ValueError("policy hybrid_qc needs EvalConfig.query_policy")
                kinds = cfg.query_policy.predict([q.question for q in d.questions])
                fusions = cfg.query_policy.fusion_for(kinds)
            ranked, lat = [], []
            for q, qv, fusion in zip(d.questions, qemb, fusions, strict=True):
                s = time.perf_counter()
                hit_ids = _ranked_hits(
                    index, q.question, qv, fusion, now, max(KS), wm, cfg.wm_weight
                )
                lat.append(time.perf_counter() - s)
                ranked.append([turn_of[i] for i in hit_ids if i in turn_of])
            store.checkpoint()
            size = store.size_bytes()
            if policy == "hybrid_wm":
                store.close()
        metrics = _score(ranked, q_ev, q_ans, norm_texts, KS, policy == "window")
        rows[policy] = {"metrics": metrics, "latency": lat, "db_bytes": size}
    if shared is not None:
        shared[0].close()
    return {"rows": rows, "kinds": [q.kind for q in d.questions], "embed_s": embed_s}


def _summarise(values: dict[str, list[float]], mask=None) -> dict[str, float]:
    return {
        k: float(np.mean(np.asarray(v)[mask] if mask is not None else v)) for k, v in values.items()
    }


def _ci95(values: dict[str, list[float]], n_boot: int, rng) -> dict[str, list[float]]:
    n = len(next(iter(values.values())))
    idx = rng.integers(0, n, size=(n_boot, n))
    out = {}
    for k, v in values.items():
        means = np.asarray(v)[idx].mean(axis=1)
        out[k] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return out


def evaluate(
    dialogues: Sequence[Dialogue],
    encoder: Encoder,
    *,
    policies: Sequence[str] = POLICIES,
    config: EvalConfig = EvalConfig(),
    workdir: str | None = None,
) -> dict:
    """Runs the benchmark; returns the metrics dict (see the module docstring).

    Args:
      dialogues: the dialogues (e.g. from `read_dialogues`).
      encoder: sentence encoder with ``name``, ``dim`` and ``encode``.
      policies: policy names (`POLICIES`, plus ``"hybrid_qc"``).
      config: benchmark settings.
      workdir: where the per-dialogue SQLite files go (default a temporary directory, removed).

    Returns:
      ``{"questions", "wall_s", "embed_s", "dialogues", "encoder", "policies": {name: {"overall",
      "by_kind", "ci95", "latency_ms", "db_bytes"}}}``.

    Raises:
      ValueError: an unknown policy, or no questions.
    """
    unknown = set(policies) - set(POLICIES) - set(_EXTRA)
    if unknown or not policies:
        raise ValueError(f"unknown policies {sorted(unknown)}; choose from {POLICIES + _EXTRA}")
    if not sum(len(d.questions) for d in dialogues):
        raise ValueError("the dialogues hold no question to evaluate")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        per = [_dialogue(d, encoder, policies, config, tmp) for d in dialogues]
    kinds = np.array([k for p in per for k in p["kinds"]])
    rng = np.random.default_rng(config.seed)
    out = {}
    for policy in policies:
        metrics = {
            key: [v for p in per for v in p["rows"][policy]["metrics"][key]]
            for key in per[0]["rows"][policy]["metrics"]
        }
        lat = [v for p in per for v in p["rows"][policy]["latency"]]
        out[policy] = {
            "overall": _summarise(metrics),
            "by_kind": {k: _summarise(metrics, kinds == k) for k in sorted(set(kinds))},
            "ci95": _ci95(metrics, config.bootstrap, rng),
            "latency_ms": 1000.0 * float(np.median(lat)),
            "db_bytes": int(np.mean([p["rows"][policy]["db_bytes"] for p in per])),
        }
    return {
        "questions": int(len(kinds)),
        "wall_s": time.perf_counter() - start,
        "embed_s": float(sum(p["embed_s"] for p in per)),
        "dialogues": len(dialogues),
        "encoder": encoder.name,
        "policies": out,
    }
