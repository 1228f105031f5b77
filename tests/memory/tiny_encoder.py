"""A tiny random BERT sentence-transformers directory for fast tests (no MiniLM needed).

``make_tiny_encoder(dir, dim=32)`` writes config.json, model.safetensors (random weights, fixed
seed), a WordPiece tokenizer.json whose vocabulary holds common words plus every letter (unknown
words split into letters), modules.json and the mean-pooling config. Its embeddings are close to
a bag of words: texts that share words are near. The directory's name is the encoder's name.
"""

from __future__ import annotations

import json
import pathlib
import string

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing

WORDS = [
    "the",
    "a",
    "is",
    "in",
    "of",
    "to",
    "and",
    "what",
    "where",
    "who",
    "my",
    "i",
    "you",
    "it",
    "spare",
    "key",
    "under",
    "blue",
    "pot",
    "lives",
    "lisbon",
    "porto",
    "moved",
    "mara",
    "tomas",
    "sister",
    "cat",
    "dog",
    "name",
    "called",
    "tea",
    "coffee",
    "remember",
    "forget",
    "hello",
    "ok",
    "yes",
]


def make_tiny_encoder(path, dim: int = 32, seed: int = 0) -> pathlib.Path:
    """Writes the directory (created) and returns it."""
    root = pathlib.Path(path)
    root.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = specials + WORDS + letters + [f"##{c}" for c in letters]
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(root / "tokenizer.json"))
    cfg = {
        "model_type": "bert", "vocab_size": len(vocab), "hidden_size": dim,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 2 * dim,
        "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }  # fmt: skip
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ]))  # fmt: skip
    (root / "1_Pooling").mkdir(exist_ok=True)
    (root / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True})
    )
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}

    def put(name, *shape, scale=0.02):
        w[name] = (rng.normal(size=shape) * scale).astype(np.float32)

    put("embeddings.word_embeddings.weight", len(vocab), dim, scale=1.0)
    put("embeddings.position_embeddings.weight", 64, dim)
    put("embeddings.token_type_embeddings.weight", 2, dim)
    w["embeddings.LayerNorm.weight"] = np.ones(dim, np.float32)
    w["embeddings.LayerNorm.bias"] = np.zeros(dim, np.float32)
    p = "encoder.layer.0"
    for name, i, o in (
        ("attention.self.query", dim, dim), ("attention.self.key", dim, dim),
        ("attention.self.value", dim, dim), ("attention.output.dense", dim, dim),
        ("intermediate.dense", dim, 2 * dim), ("output.dense", 2 * dim, dim),
    ):  # fmt: skip
        put(f"{p}.{name}.weight", o, i)
        w[f"{p}.{name}.bias"] = np.zeros(o, np.float32)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        w[f"{p}.{ln}.weight"] = np.ones(dim, np.float32)
        w[f"{p}.{ln}.bias"] = np.zeros(dim, np.float32)
    save_file(w, str(root / "model.safetensors"))
    return root
