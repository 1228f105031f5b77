"""MM / MMMan: fit, score per id, getters, removal, save/load round trips, refusal of a save of
another type or kind, and a user-registered model type."""

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.mixtures import registry
from aura.mixtures.manager import MM, MMMan


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) + 5])
    seqs = rng.normal(size=(12, 10, 3)).astype(np.float32)
    seqs[:, 5:] += 4
    return x.astype(np.float32), seqs


def test_mmman_fit_score_getters_remove(data):
    x, seqs = data
    man = MMMan()
    a = man.fit(x, "gmm", "a", n_components=2, covariance_type="diag")
    b = man.fit((seqs, np.full(12, 10)), "hmm", config={"n_states": 2})
    assert (a, b) == ("a", "hmm_1") and man.check_data() == {"a": "gmm", "hmm_1": "hmm"}
    scores = man.score(x[:50], ["a"])
    assert set(scores) == {"a"} and scores["a"] == pytest.approx(man.get("a").score(x[:50]))
    assert man.score(seqs, "hmm_1") == pytest.approx(man.get_log_likelihoods(seqs, b).sum())
    means = man.get_means()
    assert means["a"].shape == (2, 3) and means["hmm_1"].shape == (2, 1, 3)
    assert man.get_weights("a").sum() == pytest.approx(1.0)
    assert man.get_variances("a").shape == (2, 3)
    man.remove("a")
    assert "a" not in man and len(man) == 1
    with pytest.raises(ValueError, match="no model with id 'a'; stored ids"):
        man.score(x, "a")
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        man.fit(x, "gmm", "bad/id")


def test_save_load_round_trip_and_refusals(tmp_path, data):
    x, seqs = data
    man = MMMan()
    man.fit(x, "gmm", "g", n_components=2)
    man.fit(seqs, "hmm", "h", n_states=2, n_mix=2)
    man.save(tmp_path / "man")
    back = MMMan.load(tmp_path / "man")
    assert back.check_data() == man.check_data()
    assert back.score(x, "g") == man.score(x, "g")
    assert back.score(seqs, "h") == man.score(seqs, "h")
    assert back.get("g").info["iterations"] == man.get("g").info["iterations"]
    man.get("g").save(tmp_path / "one")
    assert MM.load(tmp_path / "one", model_type="gmm").score(x) == man.score(x, "g")
    with pytest.raises(DataError, match="holds a 'gmm' model, not 'hmm'"):
        MM.load(tmp_path / "one", model_type="hmm")
    with pytest.raises(DataError, match="holds a saved 'mmman'"):
        MM.load(tmp_path / "man")
    with pytest.raises(DataError, match="does not exist"):
        MM.load(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not a saved model"):
        MM.load(tmp_path / "junk")
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary directories left behind


def test_custom_model_type_through_the_registry(tmp_path, data):
    x, _ = data

    def fit(points, config):
        mu = points.mean(0)
        return {"mu": mu, "var": points.var(0) + config["floor"]}, {"iterations": 1}

    def score_samples(arrays, config, points):
        z = (points - arrays["mu"]) ** 2 / arrays["var"]
        return -0.5 * (z + np.log(2 * np.pi * arrays["var"])).sum(1)

    registry.register_model_type("my_custom", fit=fit, score_samples=score_samples)
    try:
        man = MMMan()
        man.fit(x, "my_custom", "c", floor=1e-3)
        expected = score_samples(fit(x, {"floor": 1e-3})[0], {}, x).mean()
        assert man.score(x, "c") == pytest.approx(expected, rel=1e-6)
        man.save(tmp_path / "c")
        assert MMMan.load(tmp_path / "c").score(x, "c") == pytest.approx(expected, rel=1e-6)
        with pytest.raises(ValueError, match="has no 'means'"):
            man.get_means("c")
        with pytest.raises(ValueError, match="already registered"):
            registry.register_model_type("my_custom", fit=fit, score_samples=score_samples)
    finally:
        registry.unregister_model_type("my_custom")
    with pytest.raises(ValueError, match="unknown model_type 'my_custom'"):
        MM("my_custom")
    with pytest.raises(DataError, match="not registered here"):
        man.get("c").save(tmp_path / "c1")
        MM.load(tmp_path / "c1")
