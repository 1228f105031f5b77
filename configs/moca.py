"""Presets for ``python -m aura.build moca [--config configs/moca.py:<preset>]``.

    default  the original MOCA-Net sizes: embedding 128, 4 experts (top-2), 64 slots (top-16),
             temperature 1.0, batch 64, lr 1e-3 with warmup 200, clip 1.0; 100 steps (copy is
             learned by then: the LR is still warming up, so longer runs match it to step 100)
    textcls  text classification, wide and deep: MOCA over a fixed MiniLM token table
             (``text.embeddings="minilm"``, ``model.freeze_embed``; word dropout 0.25, label
             smoothing 0.1, batch 32, 64 tokens, 300 steps) plus a linear path over hashed TF-IDF
             word uni+bigrams (``model.wide_buckets`` 2^18, the 256 largest per text, its own
             AdamW rate ``wide_lr`` 0.05, no decay); all tuned on an inner dev split of the
             training texts only. Ablations: ``--config.model.wide_buckets=0`` (MOCA only),
             ``--config.model.deep_scale=0`` (wide only)
    tiny     a few-second smoke run (tests)

    python -m aura.build moca --task copy --workdir runs/moca_copy --metrics_out copy.json
    python -m aura.build moca --task textcls --workdir runs/moca_text --steps 600
    python -m aura.build moca --task textcls --config configs/moca.py:textcls --workdir runs/t

Flags such as ``--steps``, ``--batch_size``, ``--lr``, ``--num_experts``, ``--top_k``,
``--num_slots``, ``--budget`` set the fields below (``python -m aura.build moca --help``).
"""

import ml_collections

from aura.experiments.moca.steps import loss_config
from aura.models.moca import moca_config


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = moca_config()
    c.loss = loss_config()
    c.steps, c.batch_size, c.seed = 100, 64, 0
    c.lr, c.warmup, c.clip, c.weight_decay = 1e-3, 200, 1.0, 0.01
    c.wide_lr, c.wide_weight_decay = 0.05, 0.0  # the wide path's own AdamW (model.wide_buckets)
    c.eval_every, c.log_every = 100, 50
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "expert": 1})
    # NTM-style copy: symbols, training lengths, evaluation lengths and batch size.
    c.copy = ml_collections.ConfigDict(
        dict(num_symbols=16, min_len=1, max_len=20, offset_period=0, eval_lengths=(40, 80),
             eval_size=256)
    )  # fmt: skip
    # Text classification: the default source, tokens per text, tokenizer size, split;
    # embeddings "minilm": MiniLM's WordPiece tokenizer and word table (projected to model.dim);
    # wide_top_k / wide_ngrams: the wide path's TF-IDF features (with model.wide_buckets > 0).
    c.text = ml_collections.ConfigDict(
        dict(data="corpus:stdlib", max_len=128, vocab_size=4000, eval_fraction=0.2,
             word_dropout=0.1, embeddings="", wide_top_k=256, wide_ngrams=2)
    )  # fmt: skip
    if preset == "tiny":
        c.model.update(
            dim=32,
            expert_hidden=32,
            num_slots=16,
            slot_top_k=4,
            key_dim=16,
            value_dim=32,
            position_key_dim=8,
            router_hidden=16,
            position_period=32,
        )
        c.steps, c.batch_size, c.warmup, c.eval_every, c.log_every = 6, 8, 2, 3, 3
        c.copy.update(max_len=6, eval_lengths=(10,), eval_size=16)
        c.text.update(max_len=32, vocab_size=300)
    elif preset == "textcls":
        c.model.freeze_embed = True
        c.loss.label_smoothing = 0.1
        c.steps, c.batch_size, c.warmup, c.eval_every = 300, 32, 50, 100
        c.text.update(embeddings="minilm", max_len=64, word_dropout=0.25)
        c.model.wide_buckets = 1 << 18
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r}; valid: default, textcls, tiny")
    return c
