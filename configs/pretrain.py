"""Presets for ``python -m aura.build pretrain [--config configs/pretrain.py:<preset>]``.

    python -m aura.build pretrain --jsonl data/corpus/instruct.jsonl \
        --spm_model data/tok/spiece.model --ckpt_out checkpoints/lm --steps 300

    tiny     a few-second smoke test (tests use it)
    demo     what ``make demo`` trains on the embedded corpus in a few minutes on 2 CPU cores
    default  a 4-layer, 512-wide SRWKV adapter for real accelerators (TPU v4 / GPU, bf16)

Command-line flags (--steps, --batch_size, --max_len, --dtype, --mesh, ...) set these values;
``--config.<field>=value`` sets any of them.

Sharding is configuration: ``mesh`` sizes the device mesh (axes data, fsdp, expert; -1 = the
rest of the devices) and ``rules`` maps the logical axis names of the parameters and batches to
mesh axes (``aura.train.sharding.DEFAULT_RULES``; None after a name means replicated). Override
per run, e.g. ``--config configs/pretrain.py:default --config.mesh.expert=4``.
"""

import ml_collections

from aura.models.adapter import adapter_config
from aura.train.sharding import DEFAULT_RULES


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = adapter_config()
    c.model.vocab_size = 0  # 0: take the tokenizer's piece count
    c.steps, c.batch_size, c.accumulate_steps = 300, 16, 1
    c.max_len, c.lr, c.warmup = 128, 3e-3, 30
    c.pad_to = ml_collections.config_dict.placeholder(int)  # None: pad to max_len
    c.log_every, c.save_every, c.seed = 25, 100, 0
    c.pack = True  # several records per row (the recurrent state resets at each record)
    c.heldout = ml_collections.config_dict.placeholder(str)  # held-out JSONL: bits per char
    c.eval_every = ml_collections.config_dict.placeholder(int)  # None: evaluate at the end
    c.on_bad_record = "skip"  # skip | fail: a JSONL line that is not a valid record
    c.shuffle_window, c.prefetch = 4096, 4  # input: lines shuffled together, batches prepared ahead
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "expert": 1})
    c.rules = DEFAULT_RULES  # batch over every device, experts on 'expert', width on 'fsdp'
    if preset == "tiny":
        c.model.update(dim=32, expert_hidden=64, num_layers=1, num_experts=2, rope_max_len=256)
        c.steps, c.batch_size, c.max_len, c.log_every, c.save_every = 4, 4, 32, 2, 2
    elif preset == "demo":
        c.model.update(dim=192, expert_hidden=384, num_layers=2, num_experts=4, rope_max_len=1024)
    elif preset == "default":
        c.model.update(dim=512, expert_hidden=1536, num_layers=4, num_experts=8, dtype="bfloat16")
        c.model.capacity_factor = 1.25
        c.steps, c.batch_size, c.max_len, c.lr = 20000, 256, 512, 1e-3
        c.log_every, c.save_every = 50, 1000
        c.mesh.data = -1
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: tiny, demo, default")
    return c
