"""Presets for ``python -m aura.build pretrain_zones [--config configs/zones.py:<preset>]``.

    demo     the adapter of ``configs/pretrain.py:demo``, a 2-epoch hippocampus, 2 joint epochs
    tiny     seconds-long smoke run (tests)
    default  the accelerator-sized adapter (``configs/pretrain.py:default``)

    python -m aura.build pretrain_zones \
        --zones hippocampus,language,amygdala,thalamus,hypothalamus \
        --txt_dir data/corpus/text --json_dir data/corpus --spm_model data/tok/spiece.model \
        --ckpt_root checkpoints/zones --ckpt_out checkpoints/lm

The zone registry is data here (``registry``): change a zone's capacity, growth schedule or
freeze policy with e.g. ``--config.registry.hippocampus.capacity=8``. ``lm`` is the adapter's
pretrain config (the same fields as ``configs/pretrain.py``).
"""

import ml_collections

from aura.configs import pretrain
from aura.experiments.zones.registry import ZONE_PRESETS
from aura.models.mnist_poc import default_config as mnist_model
from aura.models.zone_brain import default_config as joint_model


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
    if preset not in ("demo", "tiny", "default"):
        raise ValueError(f"unknown preset {preset!r}; valid: demo, tiny, default")
    c = ml_collections.ConfigDict()
    c.zones = "hippocampus,language,amygdala,thalamus,hypothalamus"
    c.registry = ml_collections.ConfigDict({k: dict(v) for k, v in ZONE_PRESETS.items()})
    c.lm = pretrain.get_config(preset)
    c.mnist = ml_collections.ConfigDict(dict(epochs=2, batch_size=128, model=mnist_model()))
    c.joint = ml_collections.ConfigDict(
        dict(epochs=2, zones="", broadcast=True, model=joint_model())
    )  # zones "": every zone of --zones but the thalamus
    c.max_docs, c.max_tokens, c.heldout_records, c.kmeans_iters = 256, 16384, 64, 10
    c.seed = 0
    if preset == "tiny":
        c.mnist.epochs, c.mnist.batch_size, c.joint.epochs = 1, 32, 1
        c.mnist.model.update(stem_channels=(4, 8), feature_dim=16, phasor_oscillators=3,
                             attention_k=8)  # fmt: skip
        c.joint.model.update(stem_channels=(4, 8), feature_dim=16, phasor_oscillators=3,
                             attention_k=8)  # fmt: skip
        c.max_docs, c.max_tokens, c.heldout_records = 16, 2048, 8
    return c
