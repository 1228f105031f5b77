"""Pretrained token embeddings for the text task: all-MiniLM-L6-v2's WordPiece and word table.

``text.embeddings = "minilm"`` (``configs/moca.py``) swaps the SentencePiece tokenizer trained on
the split for the WordPiece tokenizer of the sentence encoder the project ships
(``aura.models.sentence_encoder``; nothing is downloaded) and starts the
model's token table from that encoder's word embeddings (``[30522, 384]``, projected to the model
width by ``MocaNet``; kept fixed with ``model.freeze_embed``). Only the non-contextual table is
used: the router, the slot memory and the experts still do all the mixing.

:class:`WordPiece` has the two methods the text pipeline calls on a SentencePiece processor
(``encode(list_of_texts)`` and ``get_piece_size()``); :func:`load_text_tokenizer` opens either
kind from a saved path (``classify`` reads it from ``classifier.json``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from aura.data.tokenizer import load_tokenizer
from aura.models.sentence_encoder import load_wordpiece, transformer_dir, word_embeddings

EMBEDDINGS = ("", "minilm")
MINILM_WIDTH = 384


class WordPiece:
    """A ``tokenizers`` WordPiece model with SentencePiece's encode/size interface.

    Ids exclude ``[CLS]``/``[SEP]``; ``[PAD]`` is id 0, the text task's padding id.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.tok = load_wordpiece(path)  # no padding, no truncation

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def get_piece_size(self) -> int:
        return self.tok.get_vocab_size()


def minilm_tokenizer() -> tuple[WordPiece, str]:
    """(the MiniLM WordPiece tokenizer, the path of its ``tokenizer.json``)."""
    path = os.fspath(transformer_dir() / "tokenizer.json")
    return WordPiece(path), path


@functools.cache
def minilm_word_table() -> np.ndarray:
    """MiniLM's word-embedding table, f32 [V, 384] (row = WordPiece id), read once per process
    (a fresh state, a restore and ``classify`` share it; read-only)."""
    table = word_embeddings()
    table.setflags(write=False)
    return table


def load_text_tokenizer(path: str):
    """A saved text tokenizer: WordPiece for a ``.json`` file, else SentencePiece."""
    return WordPiece(path) if os.fspath(path).endswith(".json") else load_tokenizer(path)
