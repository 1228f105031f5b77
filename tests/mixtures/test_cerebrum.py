"""Cerebrum: novelty that fires with one expert, spawning on a 5-regime stream, routing,
export/import/assimilate, save/load, sequence experts, bad inputs."""

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.mixtures.cerebrum import Cerebrum, CerebrumConfig
from aura.mixtures.manager import MM

D = 6


def _regimes(seed=0, k=5):
    return np.random.default_rng(seed).normal(size=(k, D)) * 4


def _batch(centers, r, n=128, seed=0):
    rng = np.random.default_rng(1000 * r + seed)
    return (centers[r] + rng.normal(size=(n, D)) * (0.5 + 0.1 * r)).astype(np.float32)


def test_novelty_fires_with_a_single_expert():
    c = _regimes()
    cer = Cerebrum(CerebrumConfig(dim=D, capacity=4))
    cer.fit_and_add(_batch(c, 0, 400), "gmm", {"n_components": 2}, model_id="base")
    assert cer.kinds() == {"base": "legacy:gmm"}
    for i in range(3):  # the expert's own regime is not novel
        m = cer.observe(_batch(c, 0, seed=i + 1))
        assert m["spawned"] is None and m["novel_fraction"] < 0.2
    m = cer.observe(_batch(c, 1))
    assert m["spawned"] == "adapter_0" and m["novel_fraction"] > 0.9 and m["active"] == 2
    m = cer.observe(_batch(c, 1, seed=5))  # the new regime now has its expert
    assert m["spawned"] is None and m["novel_fraction"] < 0.2


def test_five_regimes_end_with_five_experts_and_route_correctly():
    c = _regimes(1)
    cer = Cerebrum(CerebrumConfig(dim=D, capacity=8))
    spawned = []
    for r in range(5):
        for i in range(6):
            m = cer.observe(_batch(c, r, seed=i))
            if m["spawned"]:
                spawned.append((r, i, m["spawned"]))
    assert 4 <= len(cer.active_ids()) <= 6, spawned
    owner = {}
    for r in range(5):
        ids, w = cer.route(_batch(c, r, 100, seed=99))
        top = [row[0] for row in ids]
        owner[r], count = max(((i, top.count(i)) for i in set(top)), key=lambda t: t[1])
        assert count >= 95
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    assert len(set(owner.values())) == 5  # one expert per regime
    scores = cer.score(_batch(c, 2, 50, seed=7))
    assert scores.shape == (50,) and np.isfinite(scores).all()


def test_export_import_assimilate_save_load(tmp_path):
    c = _regimes(2)
    a = Cerebrum(CerebrumConfig(dim=D, capacity=4), seed=1)
    a.fit_and_add(_batch(c, 0, 300), "gmm", {"n_components": 1, "covariance_type": "diag"})
    a.observe(_batch(c, 1))
    assert a.active_ids() == ["gmm_0", "adapter_0"]
    x = _batch(c, 1, 64, seed=3)
    exported = a.export_model("adapter_0", tmp_path / "adapter")
    # The exported diagonal GMM scores exactly like the adapter inside the controller.
    np.testing.assert_allclose(exported.score_samples(x), a.score_experts(x)["adapter_0"],
                               rtol=1e-4)  # fmt: skip
    b = Cerebrum(CerebrumConfig(dim=D, capacity=4))
    new = b.import_model(tmp_path / "adapter", "imported")
    assert new == "imported" and b.kinds() == {"imported": "legacy:gmm"}
    assert b.observe(_batch(c, 1, seed=4))["spawned"] is None  # calibration travelled along
    merged = b.assimilate(a)
    assert merged == ["gmm_0", "adapter_0"] and len(b.active_ids()) == 3
    with pytest.raises(ValueError, match="free slots"):
        b.assimilate(a)
    a.save(tmp_path / "cer")
    back = Cerebrum.load(tmp_path / "cer")
    assert back.kinds() == a.kinds()
    np.testing.assert_allclose(back.score(x), a.score(x), rtol=1e-6)
    m1, m2 = a.observe(_batch(c, 2)), back.observe(_batch(c, 2))
    assert m1 == m2 and m1["spawned"] == "adapter_1"
    np.testing.assert_allclose(back.score(x), a.score(x), rtol=1e-5)
    with pytest.raises(DataError, match="holds a saved 'cerebrum'"):
        MM.load(tmp_path / "cer")
    with pytest.raises(DataError, match="holds a saved 'mm'"):
        Cerebrum.load(tmp_path / "adapter")


def test_bad_inputs():
    cer = Cerebrum(CerebrumConfig(dim=D, capacity=1))
    with pytest.raises(DataError, match="has 3 features"):
        cer.observe(np.zeros((8, 3), np.float32))
    x = _batch(_regimes(), 0, 200)
    bad = x.copy()
    bad[4, 0] = np.nan
    with pytest.raises(DataError, match="row 4 contains NaN"):
        cer.observe(bad)
    mm = MM("gmm", n_components=1).fit(x)
    with pytest.raises(ValueError, match="needs a novelty calibration"):
        cer.add_model(mm)
    cer.add_model(mm, calibration_data=x)
    with pytest.raises(ValueError, match="slots are taken"):
        cer.add_model(mm, calibration_data=x)
    with pytest.raises(ValueError, match="no expert 'nope'"):
        cer.export_model("nope")
    with pytest.raises(ValueError, match="does not fit this Cerebrum's points"):
        Cerebrum(CerebrumConfig(dim=D, capacity=2)).fit_and_add(x, "hmm")
    with pytest.raises(ValueError, match="top_k"):
        CerebrumConfig(dim=2, capacity=2, top_k=0)


def test_sequence_cerebrum_with_an_hmm_expert():
    rng = np.random.default_rng(0)

    def seqs(shift, n=60):
        x = rng.normal(size=(n, 12, 2)).astype(np.float32)
        x[:, 6:] += 3.0
        return x + shift

    cer = Cerebrum(CerebrumConfig(dim=4, capacity=3), data_kind="sequences")
    cer.fit_and_add(seqs(0.0, 150), "hmm", {"n_states": 2})
    assert cer.observe(seqs(0.0))["spawned"] is None
    m = cer.observe(seqs(8.0))
    assert m["spawned"] == "adapter_0"
    ids, _ = cer.route(seqs(8.0, 20))
    assert all(row[0] == "adapter_0" for row in ids)
    ids, _ = cer.route(seqs(0.0, 20))
    assert all(row[0] == "hmm_0" for row in ids)
