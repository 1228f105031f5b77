"""Presets for ``python -m aura.build mnist [--config configs/mnist.py:<preset>]``.

    default  15 epochs, experts grown 1 -> 3 -> 6 (the README's result)
    demo     6 epochs (what ``make demo`` runs)
    tiny     a few-second smoke run (tests)

    python -m aura.build mnist --workdir checkpoints/mnist --metrics_out mnist.json
    python -m aura.build mnist --config configs/mnist.py:tiny --config.model.num_experts=4

Flags such as ``--epochs``, ``--batch_size``, ``--num_experts``, ``--growth_schedule`` set the
fields below (``python -m aura.build mnist --help`` lists them).
"""

import ml_collections

from aura.models.mnist_poc import default_config


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = default_config()
    c.epochs, c.batch_size, c.seed = 15, 128, 0
    c.lr, c.weight_decay, c.eval_fraction = 3e-3, 1e-4, 0.125
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "expert": 1})
    # Between-step controllers (aura.brain.orchestrator.BrainConfig; capacity = num_experts).
    c.brain = ml_collections.ConfigDict(
        dict(growth_schedule="0:1,2:3,4:6", bandit_policy="none", bandit_scale=0.5,
             prune_threshold=0.0, prune_patience=200, spawn_entropy=0.0, spawn_patience=200,
             teach_steps=100, traits="")
    )  # fmt: skip
    # Step losses (aura.experiments.mnist_poc.step.LossConfig).
    c.loss = ml_collections.ConfigDict(
        dict(load_balance=1e-2, z_loss=1e-3, predictive=0.1, emc_lambda=1e-4,
             distill_weight=0.1, distill_mode="pair")
    )  # fmt: skip
    if preset == "demo":
        c.epochs = 6
    elif preset == "tiny":
        c.epochs, c.batch_size = 2, 32
        c.model.update(stem_channels=(4, 8), feature_dim=16, phasor_oscillators=3, attention_k=8)
        c.brain.growth_schedule = "0:1,1:3"
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r}; valid: default, demo, tiny")
    return c
