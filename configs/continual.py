"""Presets for ``python -m aura.build continual [--config configs/continual.py:<preset>]``.

    default  Split-MNIST, 5 epochs per task (the README's results)
    tiny     one epoch per task, small experts (tests)

    python -m aura.build continual --scenario class --workdir checkpoints/continual \
        --metrics_out continual.json
    python -m aura.build continual --config configs/continual.py:tiny --config.scenario=task

Flags such as ``--scenario``, ``--epochs_per_task``, ``--hidden_dim`` set the fields below.
"""

import ml_collections


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.scenario = "class"  # class | task | domain (van de Ven & Tolias, 2019)
    c.epochs_per_task, c.batch_size, c.lr, c.weight_decay = 5, 64, 3e-3, 1e-4
    c.hidden_dim, c.ppca_dim, c.noise_floor = 400, 30, 1e-2
    c.augment, c.seed, c.baseline, c.eval_batch = True, 0, True, 1000
    if preset == "tiny":
        c.epochs_per_task, c.batch_size, c.hidden_dim, c.ppca_dim = 1, 32, 48, 5
        c.augment, c.eval_batch = False, 64
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r}; valid: default, tiny")
    return c
