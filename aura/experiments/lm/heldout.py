"""Held-out bits per character of the language model (``pretrain --heldout``, every eval).

The held-out slice is the corpus command's ``heldout_instruct.jsonl`` (records derived from
documents never trained on). Each record is formatted like training data, packed into rows and
scored with the training loss: the next-token cross-entropy of its response tokens (the output,
the closing ``<SEP>`` and ``</s>``). Bits per character = that sum in bits / the characters of
the responses (the output text; of a response cut by ``max_len``, the characters of the pieces
kept), so the cost of ending a response is charged to its characters.

Shapes: N rows, R rows per evaluation batch, W tokens per row.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from aura.data.instruct import InstructFormatter, read_instruct
from aura.data.stream import pack_rows
from aura.experiments.lm.step import build_lm_eval
from aura.models.adapter import SelfTeachingAdapter

ROWS_PER_BATCH = 16


def heldout_batches(
    path: str, fmt: InstructFormatter, width: int, limit: int = 256, pack: bool = True
) -> tuple[dict[str, np.ndarray], int, int]:
    """The held-out records of ``path`` (at most ``limit``) as evaluation batches.

    Returns ``(batches, chars, records)``: ``batches`` maps each row field to ``[N / R, R, W]``
    (rows packed with several records each, or one record per row without ``pack``; zero rows
    pad the last batch), ``chars`` the characters the scored response tokens stand for (see the
    module docstring), ``records`` how many were read.
    """
    records = read_instruct(path, limit=limit)
    encoded = [fmt.encode(r) for r in records]
    chars = 0
    for rec, enc in zip(records, encoded, strict=True):
        if not enc.truncated:
            chars += len(rec.output)
        else:  # the kept response pieces, without <SEP> and </s>
            ids = enc.ids[: enc.length][enc.loss_mask[: enc.length] > 0]
            chars += len(fmt.sp.decode([int(i) for i in ids if i != fmt.sep_id]))
    rows = pack_rows(encoded, width, pack=pack)
    n = -(-len(rows["ids"]) // ROWS_PER_BATCH) * ROWS_PER_BATCH
    pad = {k: np.zeros((n - len(v), width), v.dtype) for k, v in rows.items()}
    batches = {k: np.concatenate([v, pad[k]]) for k, v in rows.items()}  # [N, W] padded
    # [N, W] -> [N / R, R, W]
    return (
        {k: v.reshape(-1, ROWS_PER_BATCH, width) for k, v in batches.items()},
        chars,
        len(records),
    )


class HeldOut:
    """The held-out records of ``path`` (at most ``limit``) as packed rows, and their scorer."""

    def __init__(
        self, path: str, fmt: InstructFormatter, width: int, model: SelfTeachingAdapter, limit=256
    ):
        self.batches, self.chars, self.records = heldout_batches(path, fmt, width, limit)
        self.evaluate = jax.jit(build_lm_eval(model))

    def bpc(self, params) -> float:
        """Bits per character of the held-out responses under ``params``."""
        nats = 0.0
        for i in range(len(self.batches["ids"])):
            batch = {k: v[i] for k, v in self.batches.items()}
            total, _ = self.evaluate(params, batch)
            nats += float(total)
        return nats / math.log(2.0) / max(self.chars, 1)
