"""Continual Split-MNIST on the shared loop: freezing, growth, gates, no stored images, resume."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aura.brain.novelty import gate_scores
from aura.data.errors import DataError
from aura.data.mnist import load_digits
from aura.data.split_mnist import load_split_data
from aura.experiments.continual import method
from aura.experiments.continual.experiment import ContinualExperiment, run
from aura.experiments.continual.method import (
    ContinualConfig,
    evaluate_method,
    forgetting,
)
from aura.train import loop
from aura.train.checkpoint import TrainCheckpointer

TINY = ContinualConfig(
    epochs_per_task=1,
    batch_size=32,
    hidden_dim=48,
    ppca_dim=5,
    augment=False,
    eval_batch=64,
    baseline=False,
)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    images, labels = load_digits()
    path = tmp_path_factory.mktemp("digits") / "tiny.npz"
    np.savez(path, images=images[:600], labels=labels[:600])
    return str(path)


@pytest.fixture(scope="module")
def data(tiny_npz):
    return load_split_data(tiny_npz, None)


class Recording(ContinualExperiment):
    """Keeps a host copy of the parameters after every task (at its evaluation)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.snaps: list = []

    def evaluate(self, state, step, train):
        self.snaps.append(jax.tree.map(np.array, state["params"]))
        return super().evaluate(state, step, train)


def run_one(cfg, data, workdir, baseline=False, exp_cls=ContinualExperiment):
    """One method (or baseline) run; returns (experiment, loop result, final state)."""
    exp = exp_cls(cfg, data, baseline=baseline)
    loop_cfg = loop.LoopConfig(str(workdir), exp.total_steps, tensorboard=False)
    out = loop.run(exp, loop_cfg, log=lambda s: None)
    abstract = jax.eval_shape(exp.init_state)
    state, _ = TrainCheckpointer(f"{workdir}/ckpt", read_only=True).restore(abstract_state=abstract)
    return exp, out, state


@pytest.fixture(scope="module")
def class_run(data, tmp_path_factory):
    """One class-incremental run, with a copy of the parameters after every task."""
    return run_one(TINY, data, tmp_path_factory.mktemp("class"), exp_cls=Recording)


def test_earlier_experts_are_bit_identical_after_later_tasks(class_run):
    exp, out, state = class_run
    snaps = exp.snaps
    assert len(out["history"]) == 5
    for t in range(1, 5):
        for name, leaf in snaps[t]["experts"].items():
            for j in range(t):  # expert j as it was right after its own task
                assert leaf[j].tobytes() == snaps[j]["experts"][name][j].tobytes(), (t, j, name)
            # the new expert was trained (it is no longer the clone of its predecessor)
            assert not np.array_equal(leaf[t], snaps[t - 1]["experts"][name][t - 1])
            # experts not yet grown never move (their updates are masked)
            for k in range(t + 1, 5):
                assert leaf[k].tobytes() == snaps[0]["experts"][name][k].tobytes()
    # The method's learned gate stays exactly zero: routing comes from the bias alone.
    for leaf in jax.tree.leaves(state["params"]["router"]):
        assert not np.any(np.asarray(leaf))


@pytest.mark.slow  # >= 15 s on 2 cores; make test-all runs it
def test_freeze_check_catches_a_moving_frozen_expert(data, tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, weight_decay=0.1, pairs=((0, 1), (2, 3)))
    run_one(cfg, data, tmp_path / "ok")
    # Without the update mask, AdamW's decoupled weight decay moves frozen experts even though
    # their gradient is exactly zero: the bit-identity check must notice.
    monkeypatch.setattr(method, "expert_row_mask", optax.identity)
    with pytest.raises(RuntimeError, match="frozen expert 0 changed"):
        run_one(cfg, data, tmp_path / "broken")


def test_no_training_images_are_kept_in_the_state(class_run, data):
    state = class_run[2]
    sizes = {len(y) for y in data.train_y} | {sum(len(y) for y in data.train_y)}
    assert not sizes & {784, 48, 10, 5, 30}  # the fixture's sizes do not collide with widths
    leaves = jax.tree.leaves(state)
    for leaf in leaves:
        assert not sizes & set(np.shape(leaf)[:1]), np.shape(leaf)
    images = np.concatenate(data.train_x)
    for leaf in leaves:
        a = np.asarray(leaf)
        if a.ndim >= 1 and a.shape[-1] == 784:  # no stored row is any training image
            rows = a.reshape(-1, 784)  # [..., 784] -> [R, 784]
            hits = (rows[:, None, :] == images[None, :, :]).all(-1)
            assert not hits.any()


def test_class_scenario_routes_by_the_novelty_gates(class_run, data):
    exp, out, state = class_run
    matrix = [r["acc"] for r in out["history"]]
    ev = evaluate_method(state["params"], state["gates"], 5, data, exp.fns)
    x = np.concatenate(data.eval_x)
    scores = np.asarray(gate_scores(state["gates"], jnp.asarray(x)))
    routed = np.argmax(scores, axis=1)
    task_id = np.concatenate([np.full(len(y), j) for j, y in enumerate(data.eval_y)])
    gate_acc = [float(np.mean(routed[task_id == j] == j)) for j in range(5)]
    np.testing.assert_allclose(ev["gate_accuracy"], gate_acc)
    assert np.mean(gate_acc) > 0.6  # far above the 0.2 of a random pick
    np.testing.assert_allclose(ev["accuracy"], matrix[-1])
    for i, row in enumerate(matrix):
        assert all(a is None for a in row[i + 1 :]) and all(a is not None for a in row[: i + 1])


def test_task_scenario_has_exactly_zero_forgetting_and_baseline_forgets(data, tmp_path):
    cfg = dataclasses.replace(TINY, scenario="task", baseline=True, epochs_per_task=3)
    result = run(cfg, data, str(tmp_path), tensorboard=False, log=lambda s: None)
    assert result["forgetting"] == [0.0, 0.0, 0.0, 0.0]
    assert result["average_accuracy"] > 0.8
    assert len(result["baseline_accuracy_matrix"]) == 5
    assert result["baseline_average_accuracy"] < result["average_accuracy"]
    assert result["experts_active"] == 5 and result["method_wall_s"] > 0


def test_class_baseline_forgets_catastrophically(data, tmp_path):
    cfg = dataclasses.replace(TINY, epochs_per_task=3, pairs=((0, 1), (2, 3), (4, 5)))
    _, out, _ = run_one(cfg, data, tmp_path, baseline=True)
    matrix = [r["acc"] for r in out["history"]]
    assert matrix[0][0] > 0.9
    assert matrix[-1][0] < 0.5  # old digits are now answered with the newest classes
    assert forgetting(matrix)[0] > 0.4


def test_domain_scenario_answers_within_pair_labels(data, tmp_path):
    cfg = dataclasses.replace(TINY, scenario="domain", pairs=((0, 1), (6, 7)))
    _, out, _ = run_one(cfg, data, tmp_path)
    matrix = [r["acc"] for r in out["history"]]
    assert matrix[-1][0] > 0.8 and matrix[-1][1] > 0.8


@pytest.mark.slow  # >= 20 s on 2 cores; make test-all runs it
def test_sigterm_mid_task_resumes_to_the_same_accuracy_matrix(
    data, tmp_path, monkeypatch, stop_after
):
    cfg = dataclasses.replace(TINY, pairs=((0, 1), (2, 3), (4, 5)), augment=True, baseline=True)
    full = run(cfg, data, str(tmp_path / "a"), tensorboard=False, log=lambda s: None)
    exp = ContinualExperiment(cfg, data)
    mid_task = int(exp.task_end[0]) + 3  # inside the second task
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(mid_task))
    part = run(cfg, data, str(tmp_path / "b"), tensorboard=False, log=lambda s: None)
    assert part["interrupted"] and "accuracy_matrix" not in part
    monkeypatch.undo()
    resumed = run(cfg, data, str(tmp_path / "b"), tensorboard=False, log=lambda s: None)
    assert not resumed["interrupted"]
    for key in ("accuracy_matrix", "baseline_accuracy_matrix", "forgetting", "gate_accuracy"):
        assert resumed[key] == full[key], key


def test_forgetting_is_best_earlier_minus_final():
    matrix = [[0.9, None, None], [0.8, 0.95, None], [0.5, 0.9, 0.99]]
    np.testing.assert_allclose(forgetting(matrix), [0.4, 0.05])


def test_bad_scenario_and_missing_task_data(tmp_path):
    with pytest.raises(ValueError, match="valid scenarios: class, task, domain"):
        ContinualConfig(scenario="online").validate()
    images, labels = load_digits()
    keep = (labels[:400] != 6) & (labels[:400] != 7)
    np.savez(tmp_path / "no67.npz", images=images[:400][keep], labels=labels[:400][keep])
    with pytest.raises(DataError, match=r"eval data: task 3 \(classes \(6, 7\)\) has no"):
        load_split_data(None, str(tmp_path / "no67.npz"))
    with pytest.raises(DataError, match=r"train data: task 3"):
        load_split_data(str(tmp_path / "no67.npz"), None)
