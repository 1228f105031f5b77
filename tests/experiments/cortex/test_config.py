"""Cortex config: every bad field is refused by name; presets load; unknown keys are named."""

from __future__ import annotations

import pytest

from aura.experiments.cortex.config import CortexConfig
from aura.experiments.cortex.phase2 import peak_lr
from tests.experiments.cortex.fixtures import tiny_config


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"reasoner": {"top_k": 9}}, "config.reasoner.top_k=9"),
        ({"phase1": {"sigmas": (0.1, -1.0)}}, "config.phase1.sigmas"),
        ({"memory": {"beta": 0.0}}, "config.memory.beta=0.0"),
        ({"memory": {"top_k": 5}}, "config.memory.top_k=5"),
        ({"data": {"split": (0.5, 0.5)}}, "config.data.split"),
        ({"data": {"report_split": "train"}}, "config.data.report_split='train'"),
        ({"phase2": {"exact_threshold": 1.5}}, "config.phase2.exact_threshold=1.5"),
        ({"reasoner": {"input_noise": -0.1}}, "config.reasoner.input_noise=-0.1"),
        ({"reasoner": {"dropout": 1.0}}, "config.reasoner.dropout=1.0"),
        ({"reasoner": {"shared_experts": 4}}, "config.reasoner.shared_experts=4"),
        ({"reasoner": {"shared_experts": 3}}, "config.reasoner.top_k=2"),
        ({"reasoner": {"route_on": "context"}}, "config.reasoner.route_on='context'"),
        ({"phase2": {"dense_lr": 0.0}}, "config.phase2.dense_lr=0.0"),
        ({"phase2": {"ema": 1.0}}, "config.phase2.ema=1.0"),
        ({"reasoner": {"gate_noise": -1.0}}, "config.reasoner.gate_noise=-1.0"),
        ({"log_every": 0}, "config.log_every=0"),
    ],
)
def test_bad_values_are_refused_by_name(overrides, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**overrides)


def test_unknown_keys_are_named_and_defaults_validate():
    with pytest.raises(ValueError, match=r"unknown field\(s\) config.router.\['depth'\]"):
        tiny_config(router={"depth": 3})
    with pytest.raises(ValueError, match=r"unknown cortex config field\(s\) \['extra'\]"):
        CortexConfig.from_dict({"extra": 1})
    assert CortexConfig().validate().reasoner.num_experts == 16
    assert tiny_config().phase1.steps == 16


def test_dense_lr_sets_the_dense_ablations_rate_only():
    c = tiny_config(phase2={"lr": 1e-3, "dense_lr": 2e-4})
    assert peak_lr(c, "moe") == 1e-3 and peak_lr(c, "dense") == 2e-4
    same = tiny_config(phase2={"lr": 1e-3, "dense_lr": None})
    assert peak_lr(same, "moe") == peak_lr(same, "dense") == 1e-3
