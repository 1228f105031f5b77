"""Presets for ``python -m aura.build memory_eval [--config configs/memory.py:<preset>]``.

    default        the tuned hybrid: dense, entity and entity-masked cues, write-time supersession
                   with the change-wording bonus
                   (the README's)
    rrf            reciprocal-rank fusion of dense, bm25 and recency (the RRF comparison)
    no_supersede   the default without supersession links (the latest-wins ablation)

    python -m aura.build memory_eval --dialogues aura/memory/assets/memory_dev.jsonl \
        --metrics_out checkpoints/memory_dev.json [--policies window,lexical,hybrid] [--window 64]
    python -m aura.build memory_eval --dialogues held.jsonl --config configs/memory.py:rrf \
        --config.fusion.candidates=128

``--window`` and ``--on_bad_record`` set the fields below; every other field is
``--config.<field>=value``. The fusion weights were tuned on the development set only
(tools/tune_memory.py).
"""

import ml_collections


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.policies = "window,recency,lexical,dense,hybrid,hybrid_wm"  # --policies overrides
    c.window = 64  # turns the `window` policy sees
    c.on_bad_record = "skip"  # skip | fail
    c.fusion = ml_collections.ConfigDict()  # hybrid and hybrid_wm (aura.memory.index.FusionConfig)
    c.fusion.method = "weighted"  # weighted | rrf
    c.fusion.dense, c.fusion.lexical, c.fusion.recency = 1.0, 0.0, 0.0
    c.fusion.importance, c.fusion.entity, c.fusion.masked = 0.0, 0.2, 0.5
    c.fusion.tau_s, c.fusion.rrf_k, c.fusion.candidates = 604800.0, 60.0, 64
    c.fusion.supersede, c.fusion.supersede_threshold, c.fusion.change_bonus = True, 0.6, 0.25
    c.links = ml_collections.ConfigDict()  # write-time supersession (aura.memory.supersede)
    c.links.enabled, c.links.min_cos, c.links.candidates = True, 0.45, 16
    c.wm = ml_collections.ConfigDict()  # hybrid_wm's working memory
    c.wm.capacity, c.wm.tau_s, c.wm.weight, c.wm.rehearse = 16, 3600.0, 0.05, 2
    c.bootstrap, c.seed, c.batch_size = 1000, 0, 64
    if preset == "rrf":
        c.fusion.method, c.fusion.lexical, c.fusion.recency = "rrf", 0.5, 0.25
        c.fusion.entity, c.fusion.masked, c.fusion.tau_s = 0.0, 0.0, 86400.0
        c.fusion.supersede_threshold, c.fusion.change_bonus = 0.45, 0.0  # as measured
    elif preset == "no_supersede":
        c.fusion.supersede, c.links.enabled = False, False
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r}; valid: default, rrf, no_supersede")
    return c
