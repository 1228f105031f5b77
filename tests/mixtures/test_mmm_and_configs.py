"""The "mmm" model type through MM/Cerebrum, and the cerebrum/mixtures presets."""

import importlib.util
import os

import numpy as np
import pytest

from aura.mixtures import mmm
from aura.mixtures.cerebrum import Cerebrum, CerebrumConfig
from aura.mixtures.manager import MM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORIGINAL_FIELDS = ("input_dim", "hidden_dim", "z_dim", "rnn_hidden", "num_states", "n_mix",
                   "trans_d_model", "trans_nhead", "trans_layers", "output_dim")  # fmt: skip


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("preset", ["stream", "tiny", "eeg", "tts", "speaker", "conversational"])
def test_cerebrum_presets_build(preset):
    cfg_mod = _load("cerebrum")
    c = cfg_mod.get_config(preset)
    for field in ORIGINAL_FIELDS:
        assert field in c.model, field
    model = mmm.build_model(cfg_mod.mmm_config(c.model))
    assert model.z_dim == c.model.z_dim and model.trans_d_model % model.trans_nhead == 0
    CerebrumConfig(dim=c.stream.dim, capacity=c.stream.capacity, **c.controller)
    assert "python -m aura.build cerebrum" in cfg_mod.__doc__


def test_presets_reject_unknown_names():
    with pytest.raises(ValueError, match="unknown preset"):
        _load("cerebrum").get_config("nope")
    mixtures = _load("mixtures")
    with pytest.raises(ValueError, match="unknown preset"):
        mixtures.get_config("nope")
    assert {mixtures.get_config(p).model for p in ("gmm", "hmm", "mmm", "tiny")} == {
        "gmm", "hmm", "mmm"
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown mmm config keys"):
        mmm.build_model({"input_dim": 3, "bogus": 1})


@pytest.mark.slow
def test_mmm_fit_score_save_and_cerebrum_expert(tmp_path):
    tiny = _load("cerebrum").mmm_config(_load("cerebrum").get_config("tiny").model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8, 6)).astype(np.float32)
    model = MM("mmm", tiny).fit(x)
    ll = model.score_samples(x)
    assert ll.shape == (40,) and np.isfinite(ll).all()
    model.save(tmp_path / "m")
    np.testing.assert_allclose(MM.load(tmp_path / "m", "mmm").score_samples(x), ll, rtol=1e-5)
    cer = Cerebrum(CerebrumConfig(dim=12, capacity=2), data_kind="sequences")
    cer.fit_and_add(x, "mmm", tiny)
    assert cer.kinds() == {"mmm_0": "legacy:mmm"}
    assert cer.observe(x[:16] + 10.0)["spawned"] == "adapter_0"
