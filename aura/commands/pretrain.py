"""``python -m aura.build pretrain``: instruction pretraining of the SelfTeachingAdapter.

    python -m aura.build pretrain --jsonl data/instruct.jsonl --spm_model tok/spiece.model \
        --steps 300 --batch_size 16 --accumulate_steps 1 --max_len 128 --dtype f32 \
        --ckpt_out checkpoints/lm [--config configs/pretrain.py:demo] [--pmap --per_device_batch 4]
        [--mesh data=2,fsdp=1,expert=4]
        [--init_distributed [--coordinator HOST:PORT --process_count N --process_index I]]

Records ``{instruction, input, output}`` are formatted with <INST>/<INP>/<RESP>/<SEP> and the
loss is masked to the response. Rerunning the same command resumes from ``--ckpt_out`` (exactly:
same data position, bit-identical parameters). ``--mesh`` (or the preset's ``mesh``) shapes the
device mesh, ``-1`` meaning "the rest"; ``--pmap`` is ``--mesh data=-1``. On a pod every host
runs the same command (``launch/``); only process 0 prints. Settings come from
``configs/pretrain.py``; the flags below set its fields.
"""

from __future__ import annotations

import jax
from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.distributed import maybe_initialize_distributed
from aura.commands.options import (
    LM_ALIASES,
    apply_aliases,
    define_aliases,
    define_config,
    define_mesh_flags,
    pretrain_config,
)
from aura.experiments.lm.pretrain import pretrain

FLAGS = flags.FLAGS
define_config("pretrain", "demo")
define_aliases(LM_ALIASES)
define_mesh_flags()
flags.DEFINE_string("jsonl", None, "instruction JSONL file or directory", required=True)
flags.DEFINE_string("spm_model", None, "SentencePiece model (file or dir)", required=True)
flags.DEFINE_string("ckpt_out", "checkpoints/lm", "checkpoints, metrics and TensorBoard")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard events")


def build():
    c = apply_aliases(FLAGS.config, LM_ALIASES)
    return pretrain_config(c, FLAGS, jsonl=FLAGS.jsonl, ckpt_out=FLAGS.ckpt_out)


def main(argv):
    del argv
    validated(maybe_initialize_distributed)
    cfg = validated(build)
    result = guarded(lambda: validated(lambda: pretrain(cfg)))
    if jax.process_index() == 0:
        emit_result(result, None)
