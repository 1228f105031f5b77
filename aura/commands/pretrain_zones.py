"""``python -m aura.build pretrain_zones``: train or collect every brain zone under one root.

    python -m aura.build pretrain_zones \
        --zones hippocampus,language,amygdala,thalamus,hypothalamus \
        --txt_dir checkpoints/corpus/text --json_dir checkpoints/corpus \
        --spm_model checkpoints/tok/spiece.model --max_len 128 --pad_to 128 \
        --batch_size 16 --accumulate_steps 1 --dtype f32 \
        [--pmap --per_device_batch 4 | --mesh data=-1] \
        --ckpt_root checkpoints/zones --ckpt_out checkpoints/lm --steps 150 --mnist_epochs 2 \
        [--mnist_workdir checkpoints/mnist] [--config configs/pretrain.py:demo] \
        [--joint_epochs 2 --joint_zones hippocampus,amygdala,hypothalamus,language]

Writes ``<ckpt_root>/hippocampus/expert_<i>``, ``amygdala/bias_head``, ``thalamus/gate_head``,
``hypothalamus/control_head``, ``language/expert_<i>`` (the adapter itself goes to
``--ckpt_out``), a ``zone.json`` per zone and ``zones.json``; ``heldout*.jsonl`` files under
``--json_dir`` are held out (temperature fitting, routed accuracy), never trained on. With the
thalamus in ``--zones``, a joint stage then trains the zones together on the digits, the
thalamus routing each one, into ``<ckpt_root>/joint`` (``--joint_epochs 0`` skips it). Rerunning
resumes the adapter and the POC; ``--mnist_workdir`` pointing at a finished ``mnist`` run reuses
its experts. Inspect the result with ``python -m aura.build inspect --ckpt_root DIR``.
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.distributed import maybe_initialize_distributed
from aura.commands.lm_options import define_adapter_flags, resolve_flags

FLAGS = flags.FLAGS
define_adapter_flags(spm_required=False)
flags.DEFINE_string(
    "zones", "hippocampus,language,amygdala,thalamus,hypothalamus", "comma-separated zones"
)
flags.DEFINE_string("txt_dir", None, "text (*.txt) the thalamus/amygdala heads are fitted on")
flags.DEFINE_string("json_dir", None, "instruction *.jsonl (heldout*.jsonl held out)")
flags.DEFINE_string("ckpt_root", "checkpoints", "root of the per-zone checkpoints")
flags.DEFINE_string("ckpt_out", "checkpoints/lm", "the language adapter's checkpoints")
flags.DEFINE_integer("mnist_epochs", 2, "epochs of the hippocampus' MNIST POC run")
flags.DEFINE_string("mnist_data", None, "digits npz (default: the embedded 8,000)")
flags.DEFINE_string("mnist_workdir", None, "a mnist run to reuse (or to train into)")
flags.DEFINE_integer("max_docs", 256, "corpus documents the heads are fitted on")
flags.DEFINE_integer("kmeans_iters", 10, "Lloyd iterations of the thalamus centroids")
flags.DEFINE_integer("joint_epochs", 2, "epochs of the joint multi-zone stage (0: skip it)")
flags.DEFINE_string("joint_zones", None, "zones trained jointly (default: --zones but thalamus)")
flags.DEFINE_boolean("joint_broadcast", True, "thalamic gradient broadcaster (off: ablation)")
flags.DEFINE_string("metrics_out", None, "also write the JSON result here")


def build_config():
    from aura.train.zones_loop import ZonesConfig

    model, run = resolve_flags(FLAGS)
    joint_zones = FLAGS.joint_zones
    return ZonesConfig(
        zones=tuple(z.strip() for z in FLAGS.zones.split(",")),
        ckpt_root=FLAGS.ckpt_root,
        ckpt_out=FLAGS.ckpt_out,
        txt_dir=FLAGS.txt_dir,
        json_dir=FLAGS.json_dir,
        lm_model=model,
        mnist_epochs=FLAGS.mnist_epochs,
        mnist_data=FLAGS.mnist_data,
        mnist_workdir=FLAGS.mnist_workdir,
        max_docs=FLAGS.max_docs,
        kmeans_iters=FLAGS.kmeans_iters,
        joint_epochs=FLAGS.joint_epochs,
        joint_zones=tuple(z.strip() for z in joint_zones.split(",")) if joint_zones else None,
        joint_broadcast=FLAGS.joint_broadcast,
        **run,
    )


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # orbax warns that the read-only adapter loader won't save
    validated(maybe_initialize_distributed)
    from aura.train.zones_loop import pretrain_zones

    def run():
        cfg = build_config()
        cfg.validate()  # bad flags and missing inputs, before any compute
        return pretrain_zones(cfg)

    result = guarded(lambda: validated(run))
    print(
        f"zones written under {FLAGS.ckpt_root}; inspect them with "
        f"python -m aura.build inspect --ckpt_root {FLAGS.ckpt_root}",
        flush=True,
    )
    emit_result(result, FLAGS.metrics_out)
