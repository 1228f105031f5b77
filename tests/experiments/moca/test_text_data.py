"""The tfds:glue/sst2 text source on a fake tensorflow_datasets module (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.experiments.moca.text_data import load_text_source
from tests.data.test_tfds_adapter import FakeTfds


def test_tfds_source_reads_sentences_and_labels():
    fake = FakeTfds({"sentence": np.array([b"good film", b"dull"]), "label": np.array([1, 0])})
    data = load_text_source("tfds:glue/sst2", _tfds_module=fake)
    assert data.texts == ("good film", "dull") and data.labels == ("1", "0")
    assert fake.calls[0][0] == "glue/sst2" and fake.calls[0][1]["split"] == "train"
    load_text_source("tfds:glue/sst2", eval_split=True, _tfds_module=fake)
    assert fake.calls[1][1]["split"] == "validation"


@pytest.mark.parametrize(
    "features, match",
    [
        ({"sentence": np.array([b"a"]), "label": np.array([-1])}, "no label"),
        ({"sentence": np.array([b"  "]), "label": np.array([1])}, "empty text"),
        ({"text": np.array([b"a"]), "label": np.array([1])}, "sentence"),
    ],
)
def test_tfds_source_refuses_unlabelled_empty_or_missing_features(features, match):
    with pytest.raises(DataError, match=match):
        load_text_source("tfds:glue/sst2:test", _tfds_module=FakeTfds(features))
