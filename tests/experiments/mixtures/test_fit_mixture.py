"""fit_mixture: files (.npy/.npz/.csv), held-out data, the embedded digits, bad inputs."""

import json
import pickle

import numpy as np
import pytest

from aura.data.errors import DataError
from aura.experiments.mixtures import fit_mixture
from aura.experiments.mixtures.data import load_file
from aura.mixtures.manager import MM


def _points(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n // 2, 3)), rng.normal(size=(n // 2, 3)) + 6])


def test_gmm_on_npy_csv_and_npz_with_eval_file(tmp_path):
    x = _points()
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b,c", comments="")
    np.savez(tmp_path / "e.npz", x=_points(100, seed=1))
    r1 = fit_mixture("gmm", tmp_path / "x.npy", n_components=2, covariance="diag",
                     workdir=tmp_path / "w")  # fmt: skip
    for key in ("train_ll", "eval_ll", "iterations", "converged", "fit_s"):
        assert key in r1
    assert r1["n_train"] == 320 and r1["n_eval"] == 80 and r1["converged"] is True
    assert abs(r1["train_ll"] - r1["eval_ll"]) < 0.5
    saved = MM.load(tmp_path / "w" / "model", model_type="gmm")
    assert saved.get_means().shape == (2, 3)
    assert json.loads((tmp_path / "w" / "record.json").read_text())["eval_ll"] == r1["eval_ll"]
    r2 = fit_mixture("gmm", tmp_path / "x.csv", n_components=2, covariance="diag")
    assert r2["train_ll"] == pytest.approx(r1["train_ll"], rel=1e-4)  # same rows, same split
    r3 = fit_mixture("gmm", tmp_path / "x.npy", tmp_path / "e.npz", n_components=2)
    assert r3["n_train"] == 400 and r3["n_eval"] == 100


def test_hmm_on_npz_with_lengths(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 15, size=40)
    frames = rng.normal(size=(lengths.sum(), 2)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=frames, lengths=lengths)
    r = fit_mixture("hmm", tmp_path / "s.npz", n_components=2, n_mix=2)
    assert r["n_train"] == 32 and r["n_eval"] == 8
    assert r["train_ll_per_frame"] < 0 and np.isfinite(r["eval_ll"])
    np.save(tmp_path / "p.npy", rng.normal(size=(30, 12, 2)))
    r = fit_mixture("hmm", tmp_path / "p.npy", n_components=2)
    assert r["n_train"] == 24


def test_bad_files_raise_data_errors(tmp_path):
    x = _points()
    x[17, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match=r"nan\.npy: row 17 contains NaN"):
        fit_mixture("gmm", tmp_path / "nan.npy")
    np.save(tmp_path / "rank.npy", np.zeros((4, 3, 2, 1)))
    with pytest.raises(DataError, match="expected points"):
        fit_mixture("gmm", tmp_path / "rank.npy")
    np.save(tmp_path / "few.npy", _points()[:5])
    with pytest.raises(DataError, match="fewer than the 10 needed"):
        fit_mixture("gmm", tmp_path / "few.npy", n_components=10, eval_fraction=0.2)
    flat = _points()
    flat[:, 2] = 3.0
    np.save(tmp_path / "const.npy", flat)
    with pytest.raises(DataError, match=r"const\.npy: feature 2 is constant"):
        fit_mixture("gmm", tmp_path / "const.npy", n_components=2, config={"reg_covar": 0.0})
    rank2 = np.repeat(_points()[:2], 30, axis=0)
    rank2[:, 2] = np.arange(60)  # no constant feature, but only rank 2 in 3-D
    np.save(tmp_path / "singular.npy", rank2)
    with pytest.raises(DataError, match=r"singular\.npy: fitting failed: .* singular"):
        fit_mixture("gmm", tmp_path / "singular.npy", n_components=2, config={"reg_covar": 0.0})
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: non-numeric"):
        load_file(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(DataError, match=r"ragged\.csv:2: 1 columns, expected 2"):
        load_file(tmp_path / "ragged.csv")
    with open(tmp_path / "obj.npy", "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a numeric .npy"):
        load_file(tmp_path / "obj.npy")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="unknown file type"):
        load_file(tmp_path / "x.pkl")
    with pytest.raises(DataError, match="does not exist"):
        load_file(tmp_path / "missing.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(DataError, match="name it 'x'"):
        load_file(tmp_path / "two.npz")
    np.savez(tmp_path / "badlen.npz", x=np.zeros((10, 2)), lengths=np.array([4, 4]))
    with pytest.raises(DataError, match="lengths sum to 8 but there are 10 frames"):
        fit_mixture("hmm", tmp_path / "badlen.npz")
    with pytest.raises(ValueError, match="model='vae'"):
        fit_mixture("vae", tmp_path / "x.npy")


def test_embedded_digits_gmm():
    r = fit_mixture("gmm", n_components=3, covariance="diag", classifier=False,
                    config={"max_iter": 30})  # fmt: skip
    assert r["n_train"] == 6400 and r["n_eval"] == 1600
    assert r["data"].startswith("embedded MNIST")
    assert np.isfinite(r["train_ll"]) and r["eval_ll"] < r["train_ll"] + 1.0


@pytest.mark.slow
def test_embedded_digits_classifiers():
    gmm = fit_mixture("gmm")
    assert gmm["classifier_accuracy"] > 0.9
    hmm = fit_mixture("hmm")
    assert hmm["classifier_accuracy"] > 0.8
