"""The Brain orchestrator: growth clones a teacher, neurogenesis spawns, pruning masks, biases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.brain.orchestrator import Brain, BrainConfig

E = 4


def params():
    k = jax.random.key(0)
    return {
        "core": {
            "experts": {
                "w": jax.random.normal(k, (E, 3, 2)),
                "b": jnp.arange(E * 2.0).reshape(E, 2),
            }
        },
        "head": jnp.ones((2,)),
    }


def stats(load, correct=None, entropy=0.5, loss=1.0):
    load = np.asarray(load, np.float32)
    count = load * 100
    return {
        "loss": loss,
        "load": load,
        "routed_count": count,
        "routed_correct": count * (0.5 if correct is None else np.asarray(correct)),
        "gate_entropy": entropy,
    }


def test_growth_clones_the_best_teacher_and_starts_teaching():
    brain = Brain(BrainConfig(capacity=E, growth_schedule="0:2,1:3", clone_noise=0.0))
    st = brain.init()
    assert int(st.active) == 2
    p = params()
    for _ in range(5):  # expert 1 is more accurate than expert 0
        st, (p,), _ = brain.after_step(
            st, stats([0.5, 0.5, 0, 0], [0.2, 0.9, 0, 0]), [p], jax.random.key(1)
        )
    st, (p,), events = brain.begin_epoch(st, 1, [p], jax.random.key(2))
    assert int(st.active) == 3 and events == ["growth@epoch1: expert 2 cloned from teacher 1"]
    np.testing.assert_array_equal(p["core"]["experts"]["w"][2], p["core"]["experts"]["w"][1])
    controls, distill = brain.routing(st)
    assert bool(distill.on) and int(distill.teacher) == 1 and int(distill.student) == 2
    assert float(distill.alpha) == 1.0  # bootstrap phase: pure imitation
    assert int(controls.active_count) == 3


def test_neurogenesis_spawns_after_sustained_high_entropy():
    cfg = BrainConfig(capacity=E, growth_schedule="0:2", spawn_entropy=0.9, spawn_patience=3)
    brain = Brain(cfg)
    st, p = brain.init(), params()
    high = 0.95 * np.log(2)
    events = []
    for _ in range(3):
        st, (p,), ev = brain.after_step(
            st, stats([0.5, 0.5, 0, 0], entropy=high), [p], jax.random.key(0)
        )
        events += ev
    assert int(st.active) == 3 and any("neurogenesis: expert 2" in e for e in events)


def test_pruning_masks_an_idle_expert_and_routing_excludes_it():
    cfg = BrainConfig(
        capacity=E,
        growth_schedule="0:3",
        prune_threshold=0.05,
        prune_patience=2,
        utilisation_decay=0.0,
    )
    brain = Brain(cfg)
    st, p = brain.init(), params()
    for _ in range(2):
        st, (p,), ev = brain.after_step(st, stats([0.6, 0.4, 0.0, 0]), [p], jax.random.key(0))
    assert np.asarray(st.pruned).tolist() == [False, False, True, False]
    controls, _ = brain.routing(st)
    assert np.asarray(controls.routable()).tolist() == [True, True, False, False]


@pytest.mark.parametrize("policy", ["ucb", "exp3"])
def test_bandit_policy_biases_routing_towards_merit(policy):
    brain = Brain(BrainConfig(capacity=E, growth_schedule="0:3", bandit_policy=policy))
    st, p = brain.init(), params()
    for _ in range(30):
        st, (p,), _ = brain.after_step(
            st, stats([0.4, 0.3, 0.3, 0], [0.2, 0.9, 0.5, 0]), [p], jax.random.key(0)
        )
    bias = np.asarray(brain.routing(st)[0].bias)
    assert bias[1] == bias[:3].max() and bias[3] == 0.0


def test_personality_sets_temperature():
    hot = Brain(BrainConfig(capacity=E, growth_schedule="0:2", traits="curiosity=1.0,caution=0.0"))
    cold = Brain(BrainConfig(capacity=E, growth_schedule="0:2", traits="curiosity=0.0,caution=1.0"))
    assert float(hot.routing(hot.init())[0].temperature) > float(
        cold.routing(cold.init())[0].temperature
    )
