"""Continual Split-MNIST library: freezing, growth, gates, no stored images, metrics."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.brain.novelty import gate_scores
from aura.data.errors import DataError
from aura.data.mnist import load_digits
from aura.train import continual
from aura.train.continual import (
    ContinualConfig,
    evaluate,
    forgetting,
    load_split_data,
    run,
    train_baseline,
    train_method,
)

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


@pytest.fixture(scope="module")
def class_run(data):
    """One class-incremental run, with a copy of the state after every task."""
    snaps = []

    def on_task(t, state):
        snaps.append(jax.tree.map(np.array, state.params))

    state, matrix, extras = train_method(TINY, data, on_task=on_task)
    return state, matrix, extras, snaps


def test_earlier_experts_are_bit_identical_after_later_tasks(class_run):
    state, _, extras, snaps = class_run
    assert extras["frozen_bit_identical"] and state.tasks_learned == 5
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
    for leaf in jax.tree.leaves(state.params["router"]):
        assert not np.any(np.asarray(leaf))


def test_freeze_check_catches_a_moving_frozen_expert(data, monkeypatch):
    cfg = dataclasses.replace(TINY, weight_decay=0.1, pairs=((0, 1), (2, 3)))
    assert train_method(cfg, data)[2]["frozen_bit_identical"]
    # Without the update mask, AdamW's decoupled weight decay moves frozen experts even though
    # their gradient is exactly zero: the bit-identity check must notice.
    monkeypatch.setattr(continual, "_mask_updates", lambda updates, rows, shared: updates)
    with pytest.raises(RuntimeError, match="frozen expert 0 changed"):
        train_method(cfg, data)


def test_no_training_images_are_kept_in_the_state(class_run, data):
    state = class_run[0]
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
    state, matrix, extras, _ = class_run
    ev = evaluate(state, data, TINY)
    x = np.concatenate(data.eval_x)
    scores = np.asarray(gate_scores(state.gates, jnp.asarray(x)))
    np.testing.assert_array_equal(ev["routed"], np.argmax(scores, axis=1))
    task_id = np.concatenate([np.full(len(y), j) for j, y in enumerate(data.eval_y)])
    gate_acc = [float(np.mean(ev["routed"][task_id == j] == j)) for j in range(5)]
    np.testing.assert_allclose(ev["gate_accuracy"], gate_acc)
    assert np.mean(gate_acc) > 0.6  # far above the 0.2 of a random pick
    np.testing.assert_allclose(ev["accuracy"], matrix[-1])
    for i, row in enumerate(matrix):
        assert all(a is None for a in row[i + 1 :]) and all(a is not None for a in row[: i + 1])


def test_task_scenario_has_exactly_zero_forgetting_and_baseline_forgets(data):
    cfg = dataclasses.replace(TINY, scenario="task", baseline=True, epochs_per_task=3)
    result = run(cfg, data)
    assert result["forgetting"] == [0.0, 0.0, 0.0, 0.0]
    assert result["average_accuracy"] > 0.8
    assert len(result["baseline_accuracy_matrix"]) == 5
    assert result["baseline_average_accuracy"] < result["average_accuracy"]
    assert result["experts_active"] == 5 and result["wall_s"] > 0


def test_class_baseline_forgets_catastrophically(data):
    cfg = dataclasses.replace(TINY, epochs_per_task=3, pairs=((0, 1), (2, 3), (4, 5)))
    matrix = train_baseline(cfg, data)
    assert matrix[0][0] > 0.9
    assert matrix[-1][0] < 0.5  # old digits are now answered with the newest classes
    assert forgetting(matrix)[0] > 0.4


def test_domain_scenario_answers_within_pair_labels(data):
    cfg = dataclasses.replace(TINY, scenario="domain", pairs=((0, 1), (6, 7)))
    _, matrix, _ = train_method(cfg, data)
    assert matrix[-1][0] > 0.8 and matrix[-1][1] > 0.8


def test_forgetting_is_best_earlier_minus_final():
    matrix = [[0.9, None, None], [0.8, 0.95, None], [0.5, 0.9, 0.99]]
    np.testing.assert_allclose(forgetting(matrix), [0.4, 0.05])


def test_mask_updates_zeroes_exactly_the_masked_rows():
    updates = {"experts": {"w": jnp.ones((3, 2, 2))}, "router": {"k": jnp.ones((4,))}}
    out = continual._mask_updates(updates, jnp.array([False, True, False]), jnp.asarray(False))
    np.testing.assert_array_equal(out["experts"]["w"][:, 0, 0], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(out["router"]["k"], 0.0)


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
