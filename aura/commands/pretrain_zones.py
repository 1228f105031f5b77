"""``python -m aura.build pretrain_zones``: train or collect every brain zone under one root.

    python -m aura.build pretrain_zones \
        --zones hippocampus,language,amygdala,thalamus,hypothalamus \
        --txt_dir checkpoints/corpus/text --json_dir checkpoints/corpus \
        --spm_model checkpoints/tok/spiece.model --max_len 128 --pad_to 128 \
        --batch_size 16 --accumulate_steps 1 --dtype f32 \
        [--pmap --per_device_batch 4 | --mesh data=-1] \
        --ckpt_root checkpoints/zones --ckpt_out checkpoints/lm --steps 150 --mnist_epochs 2 \
        [--mnist_workdir checkpoints/mnist] [--config configs/zones.py:demo] \
        [--joint_epochs 2 --joint_zones hippocampus,amygdala,hypothalamus,language]

Writes ``<ckpt_root>/hippocampus/expert_<i>``, ``amygdala/bias_head``, ``thalamus/gate_head``,
``hypothalamus/control_head``, ``language/expert_<i>`` (the adapter itself goes to
``--ckpt_out``), a ``zone.json`` per zone and ``zones.json``; ``heldout*.jsonl`` files under
``--json_dir`` are held out (temperature fitting, routed accuracy), never trained on. With the
thalamus in ``--zones``, a joint stage then trains the zones together on the digits, the
thalamus routing each one, into ``<ckpt_root>/joint`` (``--joint_epochs 0`` skips it). Rerunning
resumes the adapter and the POC; ``--mnist_workdir`` pointing at a finished ``mnist`` run reuses
its experts. Settings (and the zone registry) come from ``configs/zones.py``; the adapter flags
set its ``lm.`` fields. Inspect the result with ``python -m aura.build inspect --ckpt_root DIR``.
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.distributed import maybe_initialize_distributed
from aura.commands.options import (
    Alias,
    apply_aliases,
    define_aliases,
    define_config,
    define_mesh_flags,
    lm_aliases,
    pretrain_config,
)
from aura.experiments.zones.config import ZonesConfig
from aura.experiments.zones.pretrain import pretrain_zones
from aura.experiments.zones.registry import registry_from_config

FLAGS = flags.FLAGS
define_config("zones", "demo")
ALIASES = lm_aliases("lm.") + (
    Alias("zones", "zones", "string", "comma-separated zones"),
    Alias("mnist_epochs", "mnist.epochs", "integer", "epochs of the hippocampus' MNIST POC"),
    Alias("max_docs", "max_docs", "integer", "corpus documents the heads are fitted on"),
    Alias("kmeans_iters", "kmeans_iters", "integer", "Lloyd iterations of the centroids"),
    Alias("joint_epochs", "joint.epochs", "integer", "epochs of the joint stage (0: skip it)"),
    Alias("joint_zones", "joint.zones", "string", "zones trained jointly (default: all but "
          "the thalamus)"),
    Alias("joint_broadcast", "joint.broadcast", "boolean", "thalamic gradient broadcaster"),
)  # fmt: skip
define_aliases(ALIASES)
define_mesh_flags()
flags.DEFINE_string("spm_model", None, "SentencePiece model (file or dir)")
flags.DEFINE_string("txt_dir", None, "text (*.txt) the thalamus/amygdala heads are fitted on")
flags.DEFINE_string("json_dir", None, "instruction *.jsonl (heldout*.jsonl held out)")
flags.DEFINE_string("ckpt_root", "checkpoints", "root of the per-zone checkpoints")
flags.DEFINE_string("ckpt_out", "checkpoints/lm", "the language adapter's run directory")
flags.DEFINE_string("mnist_data", None, "digits npz (default: the embedded 8,000)")
flags.DEFINE_string("mnist_workdir", None, "a mnist run to reuse (or to train into)")
flags.DEFINE_string("metrics_out", None, "also write the JSON result here")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard events")


def _names(spec: str) -> tuple[str, ...] | None:
    names = tuple(z.strip() for z in spec.split(",") if z.strip())
    return names or None


def build_config() -> ZonesConfig:
    c = apply_aliases(FLAGS.config, ALIASES)
    return ZonesConfig(
        zones=_names(c.zones) or (),
        lm=pretrain_config(c.lm, FLAGS, jsonl=None, ckpt_out=FLAGS.ckpt_out),
        ckpt_root=FLAGS.ckpt_root, txt_dir=FLAGS.txt_dir, json_dir=FLAGS.json_dir,
        mnist_epochs=c.mnist.epochs, mnist_data=FLAGS.mnist_data,
        mnist_workdir=FLAGS.mnist_workdir, mnist_model=c.mnist.model,
        mnist_batch_size=c.mnist.batch_size, max_docs=c.max_docs, max_tokens=c.max_tokens,
        heldout_records=c.heldout_records, kmeans_iters=c.kmeans_iters,
        joint_epochs=c.joint.epochs, joint_zones=_names(c.joint.zones),
        joint_model=c.joint.model, joint_broadcast=c.joint.broadcast, seed=c.seed,
        tensorboard=FLAGS.tensorboard, registry=registry_from_config(c.registry.to_dict()),
    )  # fmt: skip


def main(argv):
    del argv
    validated(maybe_initialize_distributed)

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
