"""Copy/recall data: the NTM-style copy task and the original MOCA-Net copy definition.

Shapes: B batch, T tokens, L content length.

NTM-style copy (:func:`copy_batch`): ``x_1 .. x_L <delim> <blank> x L <pad> ...``; the model
must emit ``x_1 .. x_L`` at the L blank positions and is scored (loss and accuracy) only
there. Token ids: 0 pad, 1 delimiter, 2 blank, ``3 .. 3+num_symbols-1`` content symbols.

The original definition (:func:`original_copy_batch`, from the MOCA-Net repository's
``CopyTaskDataset``): content ``x`` of length L in [10, 60] from ids 1 .. vocab-2, zero padded
to 60; the target repeats ``x`` at the same positions and, when ``2L + d <= 60`` for a random
delay d in [3, 8], once more from position ``L + d``; positions with target 0 are not scored.
The delay is never shown to the model, so the delayed copy cannot be predicted exactly:
:func:`original_copy_ceiling` estimates the best accuracy any model can reach (the
Bayes-optimal guess given content and position) by Monte Carlo.

Every batch is a pure function of ``(seed, step)`` (``numpy.random.default_rng([seed,
step])``), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAD, DELIM, BLANK = 0, 1, 2
FIRST_SYMBOL = 3


@dataclasses.dataclass(frozen=True)
class CopySpec:
    """NTM-style copy task.

    Attributes:
      num_symbols: distinct content symbols (chance accuracy is 1/num_symbols).
      min_len, max_len: content lengths drawn uniformly in training.
      offset_period: > 0 draws per-sequence counter offsets in [0, period) (randomised
        positions); 0 starts every sequence at 0.
    """

    num_symbols: int = 16
    min_len: int = 1
    max_len: int = 20
    offset_period: int = 0

    def __post_init__(self):
        if self.num_symbols < 2:
            raise ValueError(f"copy num_symbols = {self.num_symbols} must be >= 2")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(
                f"copy lengths must satisfy 1 <= min_len ({self.min_len}) <= max_len "
                f"({self.max_len})"
            )
        if self.offset_period < 0:
            raise ValueError(f"copy offset_period = {self.offset_period} must be >= 0")

    @property
    def vocab_size(self) -> int:
        """Pad, delimiter, blank and the content symbols."""
        return FIRST_SYMBOL + self.num_symbols

    def seq_len(self, max_len: int | None = None) -> int:
        """Sequence length that holds content, delimiter and answer: ``2·L + 1``."""
        return 2 * (max_len or self.max_len) + 1


def copy_batch(
    rng: np.random.Generator,
    spec: CopySpec,
    batch_size: int,
    length: int | None = None,
    offsets: bool = True,
) -> dict[str, np.ndarray]:
    """One batch of the NTM-style copy task.

    Args:
      rng: numpy generator.
      spec: the task.
      batch_size: B.
      length: a fixed content length for every sequence (evaluation); default uniform in
        ``[spec.min_len, spec.max_len]`` (training).
      offsets: draw counter offsets when ``spec.offset_period > 0`` (else zeros).

    Returns:
      ``tokens`` int32 [B, T], ``targets`` int32 [B, T], ``loss_mask`` bool [B, T] (the answer
      positions), ``lengths`` int32 [B], ``offsets`` int32 [B]; T = 2·max(L) + 1.
    """
    if length is not None and length < 1:
        raise ValueError(f"copy length = {length} must be >= 1")
    max_len = length or spec.max_len
    T = 2 * max_len + 1
    if length is None:
        lengths = rng.integers(spec.min_len, spec.max_len + 1, size=batch_size)
    else:
        lengths = np.full(batch_size, length)
    content = rng.integers(FIRST_SYMBOL, spec.vocab_size, size=(batch_size, max_len))
    pos = np.arange(T)[None, :]  # [1, T]
    L = lengths[:, None]  # [B, 1]
    is_content = pos < L
    is_answer = (pos > L) & (pos <= 2 * L)
    tokens = np.where(is_content, np.pad(content, ((0, 0), (0, T - max_len))), PAD)
    tokens = np.where(pos == L, DELIM, np.where(is_answer, BLANK, tokens))
    src = np.clip(pos - L - 1, 0, max_len - 1)  # answer position -> content index
    targets = np.where(is_answer, np.take_along_axis(content, src, axis=1), PAD)
    if offsets and spec.offset_period > 0:
        off = rng.integers(0, spec.offset_period, size=batch_size)
    else:
        off = np.zeros(batch_size, np.int64)
    return {
        "tokens": tokens.astype(np.int32),
        "targets": targets.astype(np.int32),
        "loss_mask": is_answer,
        "lengths": lengths.astype(np.int32),
        "offsets": off.astype(np.int32),
    }


def copy_batch_at(spec: CopySpec, seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """The training batch of ``step`` (a pure function of ``(seed, step)``)."""
    return copy_batch(np.random.default_rng([seed, step]), spec, batch_size)


def copy_eval_batch(
    spec: CopySpec, seed: int, length: int, batch_size: int, index: int = 0
) -> dict[str, np.ndarray]:
    """A fixed evaluation batch at one content length (offsets 0: the streaming default)."""
    rng = np.random.default_rng([seed, 1_000_003, length, index])
    return copy_batch(rng, spec, batch_size, length=length, offsets=False)


@dataclasses.dataclass(frozen=True)
class OriginalCopySpec:
    """The original MOCA-Net copy definition (``configs/copy_task.yaml`` of that repository)."""

    vocab_size: int = 128
    min_len: int = 10
    max_len: int = 60
    min_delay: int = 3
    max_delay: int = 8
    seq_len: int = 60


def original_copy_batch(
    rng: np.random.Generator, spec: OriginalCopySpec, batch_size: int
) -> dict[str, np.ndarray]:
    """One batch of the original definition: tokens, targets, loss_mask (target != 0)."""
    T = spec.seq_len
    lengths = rng.integers(spec.min_len, spec.max_len + 1, size=batch_size)  # [B]
    delays = rng.integers(spec.min_delay, spec.max_delay + 1, size=batch_size)  # [B]
    content = rng.integers(1, spec.vocab_size - 1, size=(batch_size, T))  # ids 1 .. V-2
    pos = np.arange(T)[None, :]
    L, d = lengths[:, None], delays[:, None]
    tokens = np.where(pos < L, content, 0)
    fits = 2 * L + d <= T
    delayed = fits & (pos >= L + d) & (pos < 2 * L + d)
    src = np.clip(pos - L - d, 0, T - 1)
    targets = np.where(delayed, np.take_along_axis(content, src, axis=1), tokens)
    return {
        "tokens": tokens.astype(np.int32),
        "targets": targets.astype(np.int32),
        "loss_mask": targets != 0,
        "delayed": delayed,
        "lengths": lengths.astype(np.int32),
        "offsets": np.zeros(batch_size, np.int32),
    }


def original_copy_ceiling(
    spec: OriginalCopySpec = OriginalCopySpec(), num_samples: int = 20000, seed: int = 0
) -> dict[str, float]:
    """Best per-token accuracy any predictor can reach on the original definition.

    Scored positions before ``L`` repeat the visible input (always predictable). A scored
    position ``p >= L`` holds ``x[o - d]`` (``o = p - L``) for the unseen delay d; given the
    content and that the position is scored, d is uniform over the delays with ``2L + d <= T``
    and ``0 <= o - d < L``, and the best guess is the most frequent candidate token.

    Returns:
      ``token_acc`` (the ceiling over all scored tokens, a ratio of totals),
      ``delayed_acc`` (over the delayed-copy tokens alone) and ``delayed_share`` (their share).
    """
    rng = np.random.default_rng(seed)
    batch = original_copy_batch(rng, spec, num_samples)
    delays = np.arange(spec.min_delay, spec.max_delay + 1)  # [Dn]
    T = spec.seq_len
    lengths, tokens = batch["lengths"], batch["tokens"]
    best_total, delayed_n = 0.0, 0
    for b in range(num_samples):
        L = int(lengths[b])
        for p in np.nonzero(batch["delayed"][b])[0]:
            o = p - L
            ok = (2 * L + delays <= T) & (o - delays >= 0) & (o - delays < L)
            cands = tokens[b, o - delays[ok]]
            best_total += np.max(np.unique(cands, return_counts=True)[1]) / len(cands)
            delayed_n += 1
    scored = int(batch["loss_mask"].sum())
    identity = scored - delayed_n
    return {
        "token_acc": (identity + best_total) / scored,
        "delayed_acc": best_total / max(delayed_n, 1),
        "delayed_share": delayed_n / scored,
    }
