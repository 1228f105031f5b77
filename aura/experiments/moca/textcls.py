"""Text classification wiring: sources -> split -> tokenizer -> padded arrays -> batches, eval.

Shapes: N examples, T tokens (``max_len``), L labels, B batch.

:func:`prepare_text_task` turns a data source (see ``text_data``) into a :class:`TextTask`:
the split (an eval source, else 80/20), the validated label vocabulary, the SentencePiece
tokenizer (``tokenizer`` given, else the one already in ``<workdir>/tokenizer`` from an earlier
run of the same workdir, else one trained on the training texts only and saved there) and the
token arrays. ``TextTask.batch(step)`` is a pure function of the step; ``eval_batches`` covers
the eval split once with padding rows of weight 0. :func:`evaluate_text` reports accuracy
and macro-F1; :func:`predict_proba` is what a ``classify`` command calls.

With ``wide_buckets > 0`` each text also gets hashed TF-IDF word 1..``wide_ngrams``-gram
features (``aura.data.hashed_tfidf``, idf fitted on the training split only; its ``wide_top_k``
largest weights), the input of the wide path of a wide-and-deep classifier; batches then carry
``wide_ids``/``wide_vals`` [B, K] beside the tokens.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from aura.data.errors import DataError
from aura.data.hashed_tfidf import HashedTfidf
from aura.data.tokenizer import MODEL_FILE, TokenizerConfig, load_tokenizer, train_tokenizer
from aura.experiments.moca import pretrained, text_data
from aura.experiments.moca.metrics import accuracy, macro_f1, tfidf_baseline


@dataclasses.dataclass
class TextTask:
    """A prepared classification task (arrays on the host)."""

    label_names: list[str]
    train: text_data.LabelledTexts
    eval: text_data.LabelledTexts
    train_tokens: np.ndarray  # int32 [N, T]
    train_labels: np.ndarray  # int32 [N]
    eval_tokens: np.ndarray
    eval_labels: np.ndarray
    tokenizer_path: str
    vocab_size: int
    log_idf: np.ndarray  # f32 [V] from the training split (the classifier's pooling prior)
    wide: HashedTfidf | None = None  # hashed TF-IDF of the training split (wide-and-deep)
    train_wide: tuple[np.ndarray, np.ndarray] | None = None  # (int32 ids, f32 weights) [N, K]
    eval_wide: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def batch(
        self, step: int, batch_size: int, seed: int = 0, word_dropout: float = 0.0
    ) -> dict[str, np.ndarray]:
        """Training batch ``step`` (pure function of ``(seed, step)``).

        ``word_dropout`` replaces that share of the real tokens by padding (augmentation; the
        pooling mask leaves them out), drawn from ``(seed, step)`` too.
        """
        idx = text_data.batch_indices(len(self.train_labels), batch_size, seed, step)
        tokens = self.train_tokens[idx]
        if word_dropout > 0:
            drop = np.random.default_rng([seed, step, 11]).random(tokens.shape) < word_dropout
            tokens = np.where(drop, 0, tokens)
        out = {
            "tokens": tokens,
            "labels": self.train_labels[idx],
            "weight": np.ones(len(idx), np.float32),
            "pool_bias": self.log_idf[tokens],
        }
        if self.train_wide is not None:
            out["wide_ids"], out["wide_vals"] = (a[idx] for a in self.train_wide)
        return out

    def eval_inputs(self) -> dict[str, np.ndarray]:
        """The eval split's model inputs (see :func:`model_inputs`)."""
        return model_inputs(self.eval_tokens, self.log_idf, self.eval_wide)

    def eval_batches(self, batch_size: int) -> list[dict[str, np.ndarray]]:
        """The eval split in order, the last batch padded with weight-0 rows."""
        n = len(self.eval_labels)
        rows = {**self.eval_inputs(), "labels": self.eval_labels, "weight": np.ones(n, np.float32)}
        return [_pad_rows(rows, s, batch_size)[0] for s in range(0, n, batch_size)]

    def baseline(self, seed: int = 0) -> dict[str, float] | None:
        """TF-IDF + logistic regression on the same split (None without scikit-learn)."""
        return tfidf_baseline(
            self.train.texts,
            self.train_labels,
            self.eval.texts,
            self.eval_labels,
            self.num_labels,
            seed,
        )


def _pad_rows(arrays: dict[str, np.ndarray], start: int, size: int):
    """Rows ``start:start+size`` of every array [N, ...], zero-padded to ``size`` rows (one
    compiled shape); returns (the padded dict, the number of real rows)."""
    rows = {k: v[start : start + size] for k, v in arrays.items()}
    n = len(next(iter(rows.values())))
    return {k: np.pad(v, [(0, size - n)] + [(0, 0)] * (v.ndim - 1)) for k, v in rows.items()}, n


def log_idf(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Smoothed log inverse document frequency per token id, ``log(log((1+N)/(1+df)) + 1)``.

    The weight is scikit-learn's smoothed idf (what the TF-IDF baseline uses); its log is a
    pooling-score bias, so pooling weights are proportional to idf. Pad (id 0) gets 0.
    """
    N = len(tokens)
    df = np.zeros(vocab_size, np.int64)
    for row in tokens:
        df[np.unique(row[row > 0])] += 1
    out = np.log(np.log((1.0 + N) / (1.0 + df)) + 1.0).astype(np.float32)
    out[0] = 0.0
    return out


def tokenizer_for(train_texts, workdir: str, tokenizer: str | None = None, vocab_size: int = 4000):
    """The tokenizer to use: given, else ``<workdir>/tokenizer``, else trained there.

    Training reads the training texts only (one text per line) and writes atomically
    (``aura.data.tokenizer.train_tokenizer``).

    Returns:
      (SentencePieceProcessor, path of its model file).
    """
    if tokenizer:
        sp = load_tokenizer(tokenizer)
        path = os.path.join(tokenizer, MODEL_FILE) if os.path.isdir(tokenizer) else tokenizer
        return sp, os.fspath(path)
    out_dir = os.path.join(workdir, "tokenizer")
    model_path = os.path.join(out_dir, MODEL_FILE)
    if not os.path.isfile(model_path):
        os.makedirs(out_dir, exist_ok=True)
        text_path = os.path.join(out_dir, "train_texts.txt")
        tmp = text_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for t in train_texts:
                f.write(" ".join(t.split()) + "\n")
        os.replace(tmp, text_path)
        cfg = TokenizerConfig(vocab_size=vocab_size, hard_vocab_limit=False, num_threads=1)
        train_tokenizer(text_path, out_dir, cfg)
    return load_tokenizer(model_path), model_path


def prepare_text_task(
    data: str,
    workdir: str,
    *,
    eval_data: str | None = None,
    tokenizer: str | None = None,
    max_len: int = 128,
    vocab_size: int = 4000,
    eval_fraction: float = 0.2,
    seed: int = 0,
    embeddings: str = "",
    wide: tuple[int, int, int] = (0, 0, 2),
    _tfds_module=None,
) -> TextTask:
    """Loads, splits, validates and tokenises a classification source.

    Args:
      data: a JSONL path, ``corpus:stdlib[:SKIP]`` or ``tfds:NAME[:SPLIT]``.
      workdir: run directory (the tokenizer is kept in ``<workdir>/tokenizer``).
      eval_data: an eval source; default: ``eval_fraction`` of ``data`` (for ``tfds:``
        sources without it, the ``validation`` split).
      tokenizer: a SentencePiece model (file or directory); default: trained on the split.
      max_len: tokens per text (longer texts are cut).
      vocab_size: pieces for a newly trained tokenizer.
      eval_fraction: the held-out share when no eval source is given.
      seed: split seed.
      embeddings: "" (the tokenizer above) or "minilm" (all-MiniLM-L6-v2's WordPiece
        tokenizer, whose word table the model then starts from; ``tokenizer`` must be unset).
      wide: (hash buckets, kept features per text, n-gram order) of the wide path's TF-IDF
        features; 0 buckets: none.

    Raises:
      DataError: bad files or records, unknown eval labels, too few labels.
    """
    if max_len < 1:
        raise ValueError(f"max_len = {max_len} must be >= 1")
    train = text_data.load_text_source(data, _tfds_module=_tfds_module)
    if eval_data is None and data.startswith(text_data.TFDS_PREFIX) and data.count(":") == 1:
        eval_data = data  # tfds:NAME -> the validation split
    if eval_data is not None:
        evals = text_data.load_text_source(eval_data, eval_split=True, _tfds_module=_tfds_module)
    else:
        train, evals = text_data.split_train_eval(train, eval_fraction, seed)
    names = text_data.label_ids(train, evals)
    if embeddings not in pretrained.EMBEDDINGS:
        raise ValueError(f"text.embeddings = {embeddings!r}; valid: '', minilm")
    if embeddings and tokenizer:
        raise ValueError(f"--tokenizer cannot be combined with text.embeddings={embeddings!r}")
    if embeddings == "minilm":
        sp, path = pretrained.minilm_tokenizer()
    else:
        sp, path = tokenizer_for(train.texts, workdir, tokenizer, vocab_size)
    train_tokens = text_data.encode_texts(sp, train.texts, max_len)
    buckets, top_k, max_n = wide
    tfidf = HashedTfidf.fit(train.texts, buckets, max_n) if buckets else None
    return TextTask(
        label_names=names,
        train=train,
        eval=evals,
        train_tokens=train_tokens,
        train_labels=text_data.encode_labels(train, names),
        eval_tokens=text_data.encode_texts(sp, evals.texts, max_len),
        eval_labels=text_data.encode_labels(evals, names),
        tokenizer_path=path,
        vocab_size=sp.get_piece_size(),
        log_idf=log_idf(train_tokens, sp.get_piece_size()),
        wide=tfidf,
        train_wide=tfidf and tfidf.transform(train.texts, top_k),
        eval_wide=tfidf and tfidf.transform(evals.texts, top_k),
    )


def model_inputs(tokens: np.ndarray, log_idf: np.ndarray, wide=None) -> dict[str, np.ndarray]:
    """What the classifier reads per text: tokens [N, T], their ``pool_bias`` (log idf) [N, T]
    and, for a wide-and-deep model, ``wide_ids``/``wide_vals`` [N, K] (``wide`` = the pair)."""
    out = {"tokens": tokens, "pool_bias": log_idf[tokens]}
    if wide is not None:
        out["wide_ids"], out["wide_vals"] = wide
    return out


def predict_proba(logits_fn, params, inputs: dict[str, np.ndarray], batch_size: int = 64):
    """Class probabilities f32 [N, L] for :func:`model_inputs` ``inputs`` (arrays [N, ...]).

    ``logits_fn(params, batch) -> [B, L]`` (jitted by the caller) reads a dict with the same
    keys, ``batch_size`` rows each (the last chunk padded: one compiled shape).
    """
    n_all = len(inputs["tokens"])
    if n_all == 0:
        raise DataError("nothing to classify: no texts given")
    out = []
    for start in range(0, n_all, batch_size):
        chunk, n = _pad_rows(inputs, start, batch_size)  # [B, ...]
        logits = logits_fn(params, chunk)
        out.append(np.asarray(jax.nn.softmax(logits, axis=-1))[:n])
    return np.concatenate(out)


def evaluate_text(logits_fn, params, task: TextTask, batch_size: int = 64) -> dict[str, float]:
    """Accuracy and macro-F1 of the model on the eval split."""
    probs = predict_proba(logits_fn, params, task.eval_inputs(), batch_size)
    preds = probs.argmax(-1)
    return {
        "accuracy": accuracy(task.eval_labels, preds),
        "macro_f1": macro_f1(task.eval_labels, preds, task.num_labels),
    }
