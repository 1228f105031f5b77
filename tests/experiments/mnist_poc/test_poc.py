"""MNIST POC training: growth without retrace, freezing, pruning, routed learning, exact resume."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.brain.orchestrator import Brain, BrainConfig, DistillArgs
from aura.experiments.mnist_poc import experiment as poc
from aura.experiments.mnist_poc.step import LossConfig, build_train_step
from aura.models.mnist_poc import MnistPOC, default_config
from aura.nn.moe import RoutingControls
from aura.train import loop
from aura.train.checkpoint import TrainCheckpointer
from aura.train.optim import TrainState, make_optimizer

E = 4


def tiny_model():
    c = default_config()
    c.stem_channels = (4, 8)
    c.feature_dim = 16
    c.phasor_oscillators = 4
    c.phasor_steps = 2
    c.attention_k = 12
    c.attention_steps = 2
    c.num_experts = E
    c.expert_hidden = 16
    c.capacity_factor = E / 2
    return c


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (96, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (96,), dtype=np.uint8)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=labels)
    return str(path), images, labels


@pytest.fixture(scope="module")
def setup():
    model = MnistPOC(tiny_model())
    x = jax.random.uniform(jax.random.key(0), (32, 28, 28, 1))
    y = jax.random.randint(jax.random.key(1), (32,), 0, 10)
    controls = RoutingControls.create(E)
    params = model.init(jax.random.key(2), x[:2], controls)["params"]
    opt = make_optimizer(1e-2, 100)
    # Every test below drives this one jitted step with other controls: one trace in all.
    step = jax.jit(chex.assert_max_traces(build_train_step(model, opt, LossConfig(emc_lambda=1e-2)),
                                          n=1))  # fmt: skip
    return model, opt, step, x, y, params


def no_distill():
    z = jnp.asarray(0, jnp.int32)
    return DistillArgs(jnp.asarray(False), jnp.asarray(0.5), z, z)


def run_steps(setup, controls, n=3, distill=None):
    model, opt, step, x, y, params = setup
    params = jax.tree.map(jnp.copy, params)
    anchor = jax.tree.map(jnp.copy, params["core"]["experts"])
    train = TrainState(params, opt.init(params), jnp.asarray(0, jnp.int32))
    state = {"train": train, "anchor": anchor}
    loads = []
    for i in range(n):
        idx = jnp.arange(16) + 16 * (i % 2)
        state, m = step(state, (x[idx], y[idx]), (controls, distill or no_distill()))
        loads.append(np.asarray(m["load"]))
    return state["train"], np.stack(loads)


def expert_rows_equal(a, b, e):
    return all(
        np.array_equal(np.asarray(la)[e], np.asarray(lb)[e])
        for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_growth_activates_experts_without_retrace(setup):
    for n in (1, 2, 4):  # the step is wrapped in chex.assert_max_traces(n=1)
        state, loads = run_steps(setup, RoutingControls.create(E, active=n), n=2)
        assert np.all(loads[:, n:] == 0) and loads[:, :n].sum() > 0


def test_frozen_experts_do_not_change(setup):
    params0 = setup[-1]
    controls = RoutingControls.create(E, frozen=[0, 2])
    state, loads = run_steps(setup, controls, n=4)
    assert loads[:, [0, 2]].sum() > 0  # they were routed, and still did not move
    new, old = state.params["core"]["experts"], params0["core"]["experts"]
    assert expert_rows_equal(new, old, 0) and expert_rows_equal(new, old, 2)
    assert not expert_rows_equal(new, old, 1) or not expert_rows_equal(new, old, 3)


def test_pruned_experts_get_no_traffic_and_no_update(setup):
    params0 = setup[-1]
    state, loads = run_steps(setup, RoutingControls.create(E, pruned=[1]), n=3)
    assert np.all(loads[:, 1] == 0)
    assert expert_rows_equal(state.params["core"]["experts"], params0["core"]["experts"], 1)


def test_only_routed_experts_update(setup):
    # Bias routing onto expert 3 only (k=2 picks 3 and one other); experts never routed stay put.
    params0 = setup[-1]
    bias = jnp.array([0.0, -30.0, -30.0, 30.0])
    state, loads = run_steps(setup, RoutingControls.create(E, bias=bias), n=3)
    never = np.flatnonzero(loads.sum(0) == 0)
    assert len(never) >= 1
    for e in never:
        assert expert_rows_equal(state.params["core"]["experts"], params0["core"]["experts"], e)


def test_distillation_trains_the_student_towards_the_teacher(setup):
    model, *_ = setup
    params0 = setup[-1]
    z = jnp.asarray
    distill = DistillArgs(z(True), z(1.0), z(0, jnp.int32), z(3, jnp.int32))
    controls = RoutingControls.create(E, active=1)  # only expert 0 is routed
    state, _ = run_steps(setup, controls, n=4, distill=distill)
    moved = not expert_rows_equal(state.params["core"]["experts"], params0["core"]["experts"], 3)
    assert moved  # the student learns although it was never routed


def run_cfg(path, workdir, epochs, **kw):
    return poc.RunConfig(
        workdir=str(workdir),
        data=path,
        eval_fraction=0.25,
        epochs=epochs,
        batch_size=16,
        model=tiny_model(),
        brain=BrainConfig(capacity=E, growth_schedule="0:1,1:2,2:4", teach_steps=3),
        tensorboard=False,
        **kw,
    )


def test_training_grows_saves_experts_and_resumes_step_count(digits, tmp_path):
    path, *_ = digits
    r1 = poc.train(run_cfg(path, tmp_path, 2), log=lambda s: None)
    assert r1["steps"] == 2 * 4 and r1["experts_active"] == 2
    r2 = poc.train(run_cfg(path, tmp_path, 3), log=lambda s: None)
    assert r2["steps"] == 3 * 4 and r2["experts_active"] == 4 and r2["epochs"] == 3
    for i in range(4):
        assert (tmp_path / "hippocampus" / f"expert_{i}" / "manifest.json").exists()
    assert (tmp_path / "routing.png").stat().st_size > 1000
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    evals = [line for line in lines if '"eval/test_accuracy"' in line]
    assert len(evals) == 3  # one record per epoch, the resumed run appended


def test_preempted_run_resumes_mid_epoch_to_the_same_parameters(
    digits, tmp_path, monkeypatch, stop_after
):
    path, *_ = digits
    full = poc.train(run_cfg(path, tmp_path / "a", 3), log=lambda s: None)
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(6))  # stop inside epoch 1
    part = poc.train(run_cfg(path, tmp_path / "b", 3), log=lambda s: None)
    assert part["interrupted"] and part["steps"] == 7
    monkeypatch.undo()
    resumed = poc.train(run_cfg(path, tmp_path / "b", 3), log=lambda s: None)
    assert resumed["steps"] == full["steps"] == 12
    assert resumed["test_accuracy"] == full["test_accuracy"]

    a = TrainCheckpointer(tmp_path / "a" / "ckpt").restore()[0]
    b = TrainCheckpointer(tmp_path / "b" / "ckpt").restore()[0]
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


def test_bad_growth_schedule_and_policy_are_rejected():
    with pytest.raises(ValueError, match="capacity"):
        Brain(BrainConfig(capacity=4, growth_schedule="0:1,1:8"))
    with pytest.raises(ValueError, match="bandit_policy = 'greedy'"):
        BrainConfig(capacity=4, bandit_policy="greedy")
