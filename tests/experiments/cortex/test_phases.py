"""Cortex phases on the shared loop: router reads like exact NN at init, the memory sharded over
8 devices trains like one device, phase 1 is frozen in phase 2 (exact zero gradients)."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from aura.experiments.cortex.memory import MEMORY_RULES
from aura.experiments.cortex.phase1 import Phase1Experiment, noisy_copies, retrieval_metrics
from aura.experiments.cortex.phase2 import Phase2Experiment, frozen_grads
from aura.train import loop
from tests.experiments.cortex.fixtures import synthetic_data, tiny_config


def _fresh_state(exp):
    """The experiment's init state (unboxed) after its first-step fill."""
    return exp.before_step(nn.meta.unbox(jax.jit(exp.init_state)()), 0)


def test_noisy_copies_are_unit_and_noise_scales_with_sigma():
    clean = np.eye(4, 64, dtype=np.float32)
    rng = np.random.default_rng(0)
    out = noisy_copies(clean, np.array([0.0, 0.05, 0.1, 0.2]), rng)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    cos = np.sum(out * clean, axis=1)
    assert cos[0] == pytest.approx(1.0) and cos[0] > cos[1] > cos[2] > cos[3]


def test_untrained_router_reads_exactly_like_nearest_neighbour():
    data = synthetic_data(contexts=42)
    exp = Phase1Experiment(tiny_config(), data)
    state = _fresh_state(exp)
    assert int(state["memory"]["count"]) == 42
    kw = dict(draws=2, seed=3)
    pats = exp.layout.patterns
    routed = retrieval_metrics(exp.reader, state["params"], state["memory"], pats, np.arange(42),
                               0.2, **kw)  # fmt: skip
    exact = retrieval_metrics(exp.reader, state["params"], state["memory"], pats, np.arange(42),
                              0.2, route=False, **kw)  # fmt: skip
    assert routed == pytest.approx(exact, abs=1e-6)
    assert 0 < exact["recall@1"] <= exact["recall@5"] <= exact["recall@10"] <= 1


def _phase1_params(tmp_path, mesh):
    data = synthetic_data(contexts=42)  # 42 slots: padded to 48 over 8 devices
    cfg = tiny_config(phase1={"steps": 3})
    exp = Phase1Experiment(cfg, data, devices=1 if mesh is None else 8)
    lc = loop.LoopConfig(workdir=str(tmp_path), total_steps=3, mesh=mesh, rules=MEMORY_RULES,
                         tensorboard=False)  # fmt: skip
    out = loop.run(exp, lc, log=lambda s: None)
    return out, exp.final


@pytest.mark.slow  # ~70 s on 2 shared cores (compiles the step on 1 and on 8 devices)
def test_memory_sharded_over_8_devices_trains_like_one_device(tmp_path):
    out1, one = _phase1_params(tmp_path / "one", None)
    out8, eight = _phase1_params(tmp_path / "eight", {"data": 8})
    assert out8["devices"] == 8 and eight["memory"]["patterns"].shape == (48, 16)
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(eight["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    # The loss is a mean of 1 - cos with cos ~ 1 in float32: its error is absolute (~1e-7 per
    # term), so it is compared on that scale, not relative to a loss that is itself ~1e-4.
    assert out1["history"][-1]["loss"] == pytest.approx(out8["history"][-1]["loss"], abs=1e-6)


@pytest.mark.parametrize("kind", [pytest.param("moe", marks=pytest.mark.slow), "dense"])
def test_phase1_is_frozen_in_phase2_exact_zero_gradients(kind):
    data = synthetic_data(contexts=42)
    cfg = tiny_config(phase2={"select_every": 0})  # no dev scoring in the first-step fill
    p1 = Phase1Experiment(cfg, data)
    s1 = _fresh_state(p1)
    moved = jax.tree.map(lambda p: p + 0.05, s1["params"])  # a router that is not the identity
    exp = Phase2Experiment(cfg, data, kind, {"params": jax.device_get(moved)})
    state = _fresh_state(exp)
    idx = data.split_questions["train"][:8]
    g_reasoner, g_frozen = frozen_grads(exp, state, data.q_emb[idx], data.a_emb[idx])
    floats = [x for x in jax.tree.leaves(g_frozen) if np.issubdtype(x.dtype, np.floating)]
    assert floats and all(not np.asarray(x).any() for x in floats)
    assert any(np.asarray(x).any() for x in jax.tree.leaves(g_reasoner))
    # what the frozen part holds is phase 1's router and the memory of every context
    for a, b in zip(jax.tree.leaves(state["frozen"]["router"]), jax.tree.leaves(moved),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    mem = np.asarray(state["frozen"]["memory"]["patterns"])
    np.testing.assert_array_equal(mem[exp.layout.slot], data.ctx_emb)  # train contexts first
    assert set(exp.layout.order[: exp.layout.n_train]) == set(data.split_contexts["train"])


@pytest.mark.slow  # ~30-100 s on 2 shared cores
def test_phase2_reports_the_dev_selected_parameters(tmp_path):
    data = synthetic_data(contexts=42)
    cfg = tiny_config(phase2={"steps": 6, "select_every": 2, "lr": 3e-2}, eval_every=2)
    exp = Phase2Experiment(cfg, data, "dense", {"params": Phase1Experiment(cfg, data).reader.init(
        jax.random.key(0))})  # fmt: skip
    lc = loop.LoopConfig(workdir=str(tmp_path), total_steps=6, eval_every=2, tensorboard=False)
    out = loop.run(exp, lc, log=lambda s: None)
    scores = {0: exp._dev_score(exp.final, exp.final["params"])}  # re-scored: the selected ones
    dev = {r["step"]: r["dev_close_answer_mean"] for r in out["history"]}
    assert sorted(dev) == [2, 4, 6]
    best = out["history"][-1]["best_dev"]
    assert best == pytest.approx(max(dev.values()) if out["selected_step"] else best)
    assert best >= max(dev.values()) - 1e-6
    assert scores[0] == pytest.approx(best, abs=1e-6)
    if out["selected_step"]:
        assert dev[out["selected_step"]] == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize("kind", [pytest.param("moe", marks=pytest.mark.slow), "dense"])
def test_phase2_training_noise_is_drawn_per_step_and_reproducible(kind):
    data = synthetic_data(contexts=42)
    cfg = tiny_config(reasoner={"input_noise": 0.1, "dropout": 0.2}, phase2={"select_every": 0})
    p1 = {"params": Phase1Experiment(cfg, data).reader.init(jax.random.key(0))}
    exp = Phase2Experiment(cfg, data, kind, p1)
    state = _fresh_state(exp)
    state = {**state, "params": jax.tree.map(lambda p: p + 0.05, state["params"])}
    step = jax.jit(exp.train_step)
    (b0, x0), (_, x0_again), (_, x1) = exp.batch(0), exp.batch(0), exp.batch(1)
    np.testing.assert_array_equal(x0["key"], x0_again["key"])  # a pure function of the step
    assert not np.array_equal(x0["key"], x1["key"])
    loss = lambda extras: float(step(state, b0, extras)[1]["loss"])  # noqa: E731
    # the same batch under another step's noise trains on another loss; the same step repeats
    assert loss(x0) == loss(x0_again) and loss(x0) != pytest.approx(loss(x1), abs=1e-7)
    clean = exp.loss(state["params"], state["frozen"], b0["q"], b0["a"])[0]  # no key: eval mode
    plain = Phase2Experiment(tiny_config(phase2={"select_every": 0}), data, kind, p1)
    assert float(clean) == pytest.approx(
        float(plain.loss(state["params"], state["frozen"], b0["q"], b0["a"])[0]), abs=1e-7
    )


def test_phase2_ema_averages_the_parameters_and_is_what_is_selected():
    data = synthetic_data(contexts=42)
    p1 = {"params": Phase1Experiment(tiny_config(), data).reader.init(jax.random.key(0))}
    off = Phase2Experiment(tiny_config(phase2={"ema": 0.0}), data, "dense", p1)
    assert "ema" not in _fresh_state(off)
    exp = Phase2Experiment(tiny_config(phase2={"select_every": 1, "ema": 0.3, "lr": 3e-2}), data,
                           "dense", p1)  # fmt: skip
    step = jax.jit(exp.train_step)
    one, _ = step(_fresh_state(exp), *exp.batch(0))
    two, _ = step(one, *exp.batch(1))
    leaves = lambda *trees: zip(*map(jax.tree.leaves, trees), strict=True)  # noqa: E731
    # the first update takes the iterate (the initial parameters get no weight); the second
    # would take the mean (r = 1/2) but decay caps the old average's weight at 0.3
    for a, p in leaves(one["ema"]["params"], one["params"]):
        np.testing.assert_allclose(a, p, rtol=1e-6, atol=1e-7)
    for a, p, q in leaves(two["ema"]["params"], one["params"], two["params"]):
        np.testing.assert_allclose(a, 0.3 * p + 0.7 * q, rtol=1e-5, atol=1e-7)
    assert int(two["ema"]["count"]) == 2 and exp.eval_params(two) is two["ema"]["params"]
    assert any(not np.allclose(a, q) for a, q in leaves(two["ema"]["params"], two["params"]))
    picked = exp.after_step({**two, "best": {**two["best"], "score": -np.inf}}, 1, {})
    for a, b in leaves(picked["best"]["params"], two["ema"]["params"]):
        np.testing.assert_array_equal(a, b)
