"""Presets for ``python -m aura.build cortex [--config configs/cortex.py:<preset>]``.

    default  the README's runs (held-out numbers on the embedded default or a 10k QA file)
    tiny     seconds: small router and reasoner, few steps (tests)

    python -m aura.build cortex --workdir checkpoints/cortex --metrics_out cortex.json
    python -m aura.build cortex --qa_jsonl qa.jsonl --workdir W --metrics_out M.json \
        --config configs/cortex.py:default --phase all --reasoning both
    python -m aura.build cortex --config configs/cortex.py:tiny --config.phase2.steps=50

Fields are grouped as in ``aura.experiments.cortex.config`` (data, memory, router, phase1,
reasoner, phase2); ``--config.<group>.<field>=value`` sets one, and flags such as ``--beta``,
``--seed``, ``--on_bad_record`` are aliases.
"""

import ml_collections


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = dict(
        split=(0.7, 0.1, 0.2),
        split_seed=0,
        report_split="test",
        on_bad_record="skip",
        encoder=ml_collections.FieldReference(None, field_type=str),
        embed_batch=64,
    )
    c.memory = dict(
        beta=32.0, top_k=10, chunk_size=4096, beta_grid=(1.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
    )
    c.router = dict(
        width=256, gray_hidden=512, gray_layers=2, gru_layers=3, settle_steps=2, residual=True
    )
    c.phase1 = dict(
        steps=600,
        batch_size=256,
        lr=1e-3,
        weight_decay=1e-4,
        sigmas=(0.0, 0.05, 0.1, 0.2),
        ce_weight=0.1,
        eval_draws=4,
    )
    c.reasoner = dict(
        width=128,
        num_experts=16,
        expert_layers=4,
        expert_hidden=64,
        top_k=4,
        capacity_factor=2.0,
        shared_experts=4,  # chosen on the dev split (README)
        route_on="input",
        input_noise=0.05,  # chosen on the dev split (README)
        gate_noise=0.0,  # noisy top-k gating in training (MoE only)
        dropout=0.0,
    )
    c.phase2 = dict(
        steps=600,  # chosen on the dev split with each family's lr (README)
        batch_size=128,
        lr=3e-4,  # the MoE's, chosen on the dev split with the parameter average (README)
        dense_lr=3e-4,  # the dense ablation's (None: lr), chosen on the dev split (README)
        weight_decay=1e-4,
        load_balance_weight=1e-2,
        z_loss_weight=1e-3,
        exact_threshold=0.9,
        permutations=1000,
        ridge_alphas=(0.1, 1.0, 10.0, 100.0),
        select_every=10,
        ema=0.998,  # Polyak (EMA) average for selection and report, both kinds (README; 0: off)
    )
    c.seed = 0
    c.mesh = ml_collections.FieldReference(None, field_type=dict)
    c.eval_every = ml_collections.FieldReference(None, field_type=int)
    c.log_every = 50
    if preset == "tiny":
        c.router.update(width=32, gray_hidden=64, gray_layers=1, gru_layers=3, settle_steps=1)
        c.phase1.update(steps=16, batch_size=32, eval_draws=1)
        c.reasoner.update(
            width=16, num_experts=4, expert_layers=2, expert_hidden=8, top_k=2, shared_experts=0
        )
        c.phase2.update(steps=16, batch_size=32, permutations=50, select_every=8, lr=3e-4,
                        dense_lr=3e-4)  # fmt: skip
        c.memory.update(beta_grid=(4.0, 32.0))
        c.log_every, c.eval_every = 8, 8
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r}; valid: default, tiny")
    return c
