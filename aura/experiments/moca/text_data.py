"""Labelled text for MOCA-Net classification: JSONL, the embedded corpus, ``tfds:glue/sst2``.

Shapes: N examples, T tokens.

Sources (:func:`load_text_source`):

* a JSONL file: one object per non-blank line with a non-empty string ``"text"`` and a
  ``"label"`` (string or integer; any number of distinct labels). A line that is not such a
  record raises ``DataError`` naming ``file:line``.
* ``corpus:stdlib`` (the embedded default): standard-library docstrings (``aura.data.corpus``)
  labelled by their top-level package, the ``num_labels`` most documented packages with at
  most ``per_label`` documents each (deterministic). ``corpus:stdlib:K`` skips the K most
  documented packages first, so a model tuned on one label set can be checked on another.
* ``tfds:glue/sst2`` (or any TFDS text dataset with ``sentence``/``label`` features) for
  online users, through tensorflow-datasets (optional dependency, imported on use).

Splits: an explicit eval source, else a deterministic 80/20 shuffle of the training source.
Labels are the sorted distinct training labels; an eval label the training split never saw
raises ``DataError`` naming where it came from. Texts are tokenised with the project's
SentencePiece tokenizer (trained on the training split when none is given) and padded with
id 0 to a fixed length; batches are a pure function of the step (``batch_indices``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from aura.data.batching import epoch_permutation
from aura.data.corpus import iter_stdlib_docs
from aura.data.errors import DataError
from aura.data.tfds_adapter import load_tfds

CORPUS_PREFIX, TFDS_PREFIX = "corpus:", "tfds:"


@dataclasses.dataclass(frozen=True)
class LabelledTexts:
    """Texts, their raw labels (strings) and where each came from (``file:line`` or a name)."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    where: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int]) -> LabelledTexts:
        """The examples at ``index``, in that order."""
        pick = [int(i) for i in index]
        return LabelledTexts(
            tuple(self.texts[i] for i in pick),
            tuple(self.labels[i] for i in pick),
            tuple(self.where[i] for i in pick),
        )


def _parse_line(raw: bytes, where: str) -> tuple[str, str]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 (byte {e.start}); save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be "
            '{"text": "...", "label": ...}'
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("text", "label") if k not in obj]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing} (record has: {sorted(obj)})")
    text, label = obj["text"], obj["label"]
    if not isinstance(text, str):
        raise DataError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataError(f"{where}: empty text; remove the line or give it text")
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise DataError(f"{where}: field 'label' must be a string or an integer, got {label!r}")
    if isinstance(label, str) and not label.strip():
        raise DataError(f"{where}: empty label")
    return text, str(label)


def read_labelled_jsonl(path: str | os.PathLike[str]) -> LabelledTexts:
    """Reads a ``{"text", "label"}`` JSONL file (blank lines skipped).

    Raises:
      DataError: a missing file, a malformed line (``file:line: reason``) or no records.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"labelled data file {path!r} does not exist")
    texts, labels, where = [], [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            loc = f"{path}:{lineno}"
            text, label = _parse_line(raw, loc)
            texts.append(text)
            labels.append(label)
            where.append(loc)
    if not texts:
        raise DataError(f"{path!r} holds no records; each line must be {{'text', 'label'}}")
    return LabelledTexts(tuple(texts), tuple(labels), tuple(where))


def stdlib_corpus(
    num_labels: int = 8, per_label: int = 120, skip: int = 0, stdlib_dir: str | None = None
) -> LabelledTexts:
    """Standard-library docstrings labelled by top-level package (the embedded default).

    Args:
      num_labels: how many packages (the most documented after the first ``skip``).
      per_label: at most this many documents per package (the first in the sorted walk).
      skip: leave out the ``skip`` most documented packages (an untuned label set).
      stdlib_dir: the standard library to read (default: this interpreter's).

    Raises:
      DataError: fewer than two packages are available.
    """
    docs = [(d.name.split(".")[0], d) for d in iter_stdlib_docs(stdlib_dir) if d.kind != "topic"]
    counts = Counter(pkg for pkg, _ in docs)
    ranked = sorted(counts, key=lambda p: (-counts[p], p))[skip : skip + num_labels]
    if len(ranked) < 2:
        raise DataError(
            f"the standard library at {stdlib_dir or 'default'} has {len(counts)} documented "
            f"packages; need at least 2 after skipping {skip}"
        )
    keep, taken = set(ranked), Counter()
    texts, labels, where = [], [], []
    for pkg, d in docs:
        if pkg in keep and taken[pkg] < per_label:
            taken[pkg] += 1
            texts.append(d.text)  # the docstring only: the header names the package
            labels.append(pkg)
            where.append(f"corpus:stdlib:{d.name}")
    return LabelledTexts(tuple(texts), tuple(labels), tuple(where))


def load_tfds_text(
    name: str,
    split: str,
    data_dir: str | None = None,
    _tfds_module: Any = None,
    *,
    download: bool = True,
    text_key: str = "sentence",
    label_key: str = "label",
) -> LabelledTexts:
    """Reads a whole TFDS text-classification split (``glue/sst2``: sentence, label).

    Args:
      name: TFDS name, e.g. ``glue/sst2``.
      split: e.g. ``train`` or ``validation`` (GLUE test splits have no labels).
      data_dir: TFDS data directory.
      _tfds_module: for tests only: an object with ``load`` and ``as_numpy``.
      download: let TFDS download and prepare the dataset when missing.
      text_key, label_key: the feature names.

    Raises:
      DataError: tensorflow-datasets missing, the dataset cannot be loaded, features missing,
        or unlabelled examples (label -1).
    """
    where = f"tfds:{name}:{split}"
    data = load_tfds(name, split, (text_key, label_key), data_dir, _tfds_module, download=download)
    raw_texts, raw_labels = np.asarray(data[text_key]), np.asarray(data[label_key])
    texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw_texts]
    labels = [int(v) for v in raw_labels.reshape(-1)]
    if len(texts) != len(labels):
        raise DataError(f"{where}: {len(texts)} texts but {len(labels)} labels")
    if any(v < 0 for v in labels):
        raise DataError(
            f"{where}: {sum(v < 0 for v in labels)} examples have no label (-1); GLUE test "
            "splits are unlabelled: use train and validation"
        )
    names = [f"{where}[{i}]" for i in range(len(texts))]
    for t, w in zip(texts, names, strict=True):
        if not t.strip():
            raise DataError(f"{w}: empty text")
    return LabelledTexts(tuple(texts), tuple(str(v) for v in labels), tuple(names))


def load_text_source(spec: str, *, eval_split: bool = False, _tfds_module: Any = None):
    """A JSONL path, ``corpus:stdlib[:SKIP]`` or ``tfds:NAME[:SPLIT]`` -> LabelledTexts.

    For ``tfds:`` without a split, ``train`` (or ``validation`` when ``eval_split``).
    """
    if spec.startswith(CORPUS_PREFIX):
        parts = spec[len(CORPUS_PREFIX) :].split(":")
        if parts[0] != "stdlib" or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise DataError(f"unknown corpus source {spec!r}; use corpus:stdlib[:SKIP]")
        return stdlib_corpus(skip=int(parts[1]) if len(parts) == 2 else 0)
    if spec.startswith(TFDS_PREFIX):
        name, _, split = spec[len(TFDS_PREFIX) :].partition(":")
        split = split or ("validation" if eval_split else "train")
        return load_tfds_text(name, split, _tfds_module=_tfds_module)
    return read_labelled_jsonl(spec)


def split_train_eval(
    data: LabelledTexts, eval_fraction: float = 0.2, seed: int = 0
) -> tuple[LabelledTexts, LabelledTexts]:
    """Deterministic shuffle-and-cut into (train, eval).

    Raises:
      ValueError: eval_fraction outside (0, 1), or a split with no example.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction = {eval_fraction} must be in (0, 1)")
    n = len(data)
    n_eval = int(round(n * eval_fraction))
    if n_eval < 1 or n_eval >= n:
        raise ValueError(
            f"{n} examples cannot be split {1 - eval_fraction:.0%}/{eval_fraction:.0%} "
            "into two non-empty parts; give more data or an eval file"
        )
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return data.subset(perm[n_eval:]), data.subset(perm[:n_eval])


def label_ids(train: LabelledTexts, other: LabelledTexts | None = None) -> tuple[list[str], ...]:
    """The label vocabulary (sorted training labels); checks ``other`` uses only those.

    Raises:
      DataError: fewer than two training labels, or an ``other`` label not in training
        (naming where it came from).
    """
    names = sorted(set(train.labels))
    if len(names) < 2:
        raise DataError(
            f"the training split has {len(names)} distinct label(s) {names}; classification "
            "needs at least 2"
        )
    if other is not None:
        known = set(names)
        for label, where in zip(other.labels, other.where, strict=True):
            if label not in known:
                raise DataError(
                    f"{where}: label {label!r} never occurs in the training data (labels: "
                    f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}); remove the "
                    "example or add training examples with that label"
                )
    return names


def encode_labels(data: LabelledTexts, names: Sequence[str]) -> np.ndarray:
    """int32 [N] label ids in ``names`` order (call :func:`label_ids` first to validate)."""
    index = {n: i for i, n in enumerate(names)}
    return np.asarray([index[v] for v in data.labels], np.int32)


def encode_texts(sp, texts: Sequence[str], max_len: int) -> np.ndarray:
    """SentencePiece ids, cut to ``max_len`` and padded with 0: int32 [N, T].

    Raises:
      DataError: a text that encodes to no tokens.
    """
    out = np.zeros((len(texts), max_len), np.int32)
    for i, ids in enumerate(sp.encode(list(texts))):
        if not ids:
            raise DataError(f"text {i} ({texts[i][:40]!r}) encodes to no tokens")
        ids = ids[:max_len]
        out[i, : len(ids)] = ids
    return out


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of training batch ``step``: epoch-wise shuffles, a pure function of step.

    Each epoch (``n // batch_size`` steps; the remainder is dropped) is a fresh permutation
    from ``(seed, epoch)``, so a resumed run draws exactly the batches of an uninterrupted one.
    """
    if not 1 <= batch_size <= n:
        raise DataError(f"batch_size = {batch_size} must be in [1, {n}] (training examples)")
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    return epoch_permutation(seed, epoch, n)[k * batch_size : (k + 1) * batch_size]
