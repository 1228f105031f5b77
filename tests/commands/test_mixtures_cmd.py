"""``python -m aura.build mixtures``: tiny GMM/HMM fits end to end, and bad inputs -> exit 2."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from aura.mixtures.manager import MM
from tests.commands.conftest import aura, run_cases

TINY = "--config=configs/mixtures.py:tiny"


def _points(n=200, d=3, seed=0):
    rng = np.random.default_rng(seed)
    half = rng.normal(size=(n // 2, d))
    return np.concatenate([half, rng.normal(size=(n // 2, d)) + 6]).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad input files, made once."""
    d = tmp_path_factory.mktemp("mixtures_data")
    np.save(d / "x.npy", _points())
    rng = np.random.default_rng(1)
    lengths = rng.integers(4, 9, size=30)
    np.savez(d / "seqs.npz", x=rng.normal(size=(lengths.sum(), 2)), lengths=lengths)
    bad = _points()
    bad[17, 1] = np.nan
    np.save(d / "nan.npy", bad)
    (d / "inf.csv").write_text("a,b\n1,2\n3,inf\n5,6\n")
    np.save(d / "rank.npy", np.zeros((4, 3, 2, 1)))
    np.save(d / "few.npy", _points()[:4])
    const = _points()
    const[:, 2] = 3.0
    np.save(d / "const.npy", const)
    rank2 = np.repeat(_points()[:2], 30, axis=0)
    rank2[:, 2] = np.arange(60)  # no constant feature, but only rank 2 in 3-D
    np.save(d / "singular.npy", rank2)
    (d / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    (d / "ragged.csv").write_text("1,2\n3\n")
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    with open(d / "obj.npy", "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "x.pkl").write_bytes(pickle.dumps([1, 2]))
    np.save(d / "e4.npy", np.zeros((20, 4), np.float32))
    np.savez(d / "badlen.npz", x=np.zeros((10, 2)), lengths=np.array([4, 4]))
    return d


def _result(proc, out):
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    return printed


def test_gmm_on_a_file_end_to_end(files, tmp_path):
    out, work = tmp_path / "m.json", tmp_path / "work"
    proc = aura("mixtures", TINY, f"--data={files / 'x.npy'}", "--n_components=2",
                f"--workdir={work}", f"--metrics_out={out}")  # fmt: skip
    r = _result(proc, out)
    for key in ("train_ll", "eval_ll", "iterations", "converged", "fit_s"):
        assert key in r, key
    assert r["model"] == "gmm" and r["n_train"] == 160 and r["n_eval"] == 40
    assert r["converged"] is True and 1 <= r["iterations"] <= 20
    assert abs(r["train_ll"] - r["eval_ll"]) < 0.5  # two well-separated blobs: no overfit
    saved = MM.load(work / "model", model_type="gmm")
    assert saved.get_means().shape == (2, 3)
    assert json.loads((work / "record.json").read_text())["eval_ll"] == r["eval_ll"]


def test_hmm_on_sequences_with_lengths(files, tmp_path):
    out = tmp_path / "m.json"
    proc = aura("mixtures", TINY, "--model=hmm", f"--data={files / 'seqs.npz'}",
                "--n_components=2", "--n_mix=1", f"--workdir={tmp_path / 'w'}",
                f"--metrics_out={out}")  # fmt: skip
    r = _result(proc, out)
    assert r["model"] == "hmm" and r["n_train"] == 24 and r["n_eval"] == 6
    assert r["train_ll_per_frame"] < 0 and np.isfinite(r["eval_ll"])
    assert MM.load(tmp_path / "w" / "model", model_type="hmm").config["n_states"] == 2


# (arguments after TINY, text the error line must contain); FILES/ stands for the data folder
BAD = [
    (["--data=FILES/nan.npy"], "nan.npy: row 17 contains NaN"),
    (["--data=FILES/inf.csv"], "inf.csv: row 1 contains inf"),
    (["--data=FILES/rank.npy"], "expected points of shape [N, D], got shape (4, 3, 2, 1)"),
    (["--data=FILES/few.npy", "--n_components=5"], "has 3 point(s), fewer than the 5 needed"),
    (["--data=FILES/const.npy", "--reg_covar=0"], "const.npy: feature 2 is constant"),
    (["--data=FILES/singular.npy", "--reg_covar=0", "--n_components=2", "--covariance=full"],
     "singular.npy: fitting failed"),
    (["--data=FILES/bad.csv"], "bad.csv:3: non-numeric value"),
    (["--data=FILES/ragged.csv"], "ragged.csv:2: 1 columns, expected 2"),
    (["--data=FILES/corrupt.npz"], "corrupt.npz is a corrupt .npz archive"),
    (["--data=FILES/obj.npy"], "obj.npy is not a numeric .npy array"),
    (["--data=FILES/x.pkl"], "x.pkl: unknown file type '.pkl'"),
    (["--data=FILES/nope.npy"], "nope.npy does not exist"),
    (["--data=FILES/x.npy", "--eval_data=FILES/e4.npy"], "e4.npy: 4 features per row, but"),
    (["--data=FILES/badlen.npz", "--model=hmm"], "lengths sum to 8 but there are 10 frames"),
    (["--data=FILES/x.npy", "--covariance=tied"], "--covariance=tied"),
    (["--data=FILES/x.npy", "--model=vae"], "--model=vae"),
    (["--data=FILES/x.npy", "--eval_fraction=1.5"], "eval_fraction=1.5 must be in (0, 1)"),
    (["--data=FILES/x.npy", "--n_components=0"], "n_components"),
    (["--data=FILES/x.npy", "--config=configs/mixtures.py:huge"], "unknown preset 'huge'"),
    (["--data=FILES/x.npy", "stray"], "unexpected arguments ['stray']"),
]  # fmt: skip


def test_bad_input_is_one_error_line_and_writes_nothing(files, tmp_path):
    """Every case through the real entry point (one process re-parsing the flags per case):
    exit 2, one ``error:`` line naming the file/row, no traceback, no workdir, no metrics."""
    table = []
    for i, (args, _) in enumerate(BAD):
        args = [a.replace("FILES", str(files)) for a in args]
        table.append([TINY, *args, f"--workdir={tmp_path}/w{i}", f"--metrics_out={tmp_path}/m{i}"])
    before = sorted(p.name for p in files.iterdir())
    for (args, needle), res in zip(BAD, run_cases("mixtures", table), strict=True):
        lines = [line for line in res["stderr"].splitlines() if line.strip()]
        assert res["code"] == 2, (args, res)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res["stderr"])
        assert needle in lines[0], (args, needle, lines[0])
    assert not list(tmp_path.iterdir())  # no workdir, no metrics file
    assert sorted(p.name for p in files.iterdir()) == before


def test_workdir_holding_another_model_type_or_a_damaged_save_is_refused(files, tmp_path):
    """Through one process: a workdir holding a 'gmm' model refuses an hmm fit (untouched), a
    damaged manifest is not overwritten, a file is no workdir; a same-type refit replaces."""
    other, damaged, same = tmp_path / "other", tmp_path / "damaged", tmp_path / "same"
    for work in (other, damaged, same):
        MM("gmm", n_components=2).fit(_points()).save(work / "model")
    (damaged / "model" / "manifest.json").write_text("{not json")
    (tmp_path / "file").write_text("x")
    before = sorted(str(p) for p in (other.rglob("*")))
    x, seqs, out = files / "x.npy", files / "seqs.npz", tmp_path / "m.json"
    cases = [
        ([TINY, "--model=hmm", f"--data={seqs}", f"--workdir={other}"],
         ["holds a saved 'gmm' model, not 'hmm'", "--workdir"]),
        ([TINY, f"--data={x}", f"--workdir={damaged}"],
         ["manifest.json is missing or unreadable", "refusing to overwrite"]),
        ([TINY, f"--data={x}", f"--workdir={tmp_path / 'file'}"], ["is not a directory"]),
        ([TINY, f"--data={x}", "--n_components=3", f"--workdir={same}", f"--metrics_out={out}"],
         None),
    ]  # fmt: skip
    results = run_cases("mixtures", [args for args, _ in cases])
    for (args, needles), res in zip(cases, results, strict=True):
        lines = [line for line in res["stderr"].splitlines() if line.strip()]
        if needles is None:
            assert res["code"] in (0, None), (args, res)
            continue
        assert res["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), res
        assert all(n in lines[0] for n in needles), (needles, lines[0])
    assert sorted(str(p) for p in (other.rglob("*"))) == before  # nothing touched
    assert json.loads(out.read_text())["config"]["n_components"] == 3
    assert MM.load(same / "model", model_type="gmm").get_means().shape == (3, 3)
