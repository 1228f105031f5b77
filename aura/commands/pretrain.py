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
runs the same command (``launch/``); only process 0 prints.
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.distributed import maybe_initialize_distributed
from aura.commands.lm_options import define_adapter_flags, resolve_flags

FLAGS = flags.FLAGS
define_adapter_flags(spm_required=True)
flags.DEFINE_string("jsonl", None, "instruction JSONL file or directory", required=True)
flags.DEFINE_string("ckpt_out", "checkpoints/lm", "checkpoints, metrics and TensorBoard")
flags.DEFINE_integer("log_every", None, "steps per log line (default: the preset's)")
flags.DEFINE_integer("save_every", None, "steps per checkpoint (default: the preset's)")
flags.DEFINE_enum("on_bad_record", "skip", ["skip", "fail"], "corrupt JSONL lines")


def build_config():
    from aura.train.lm_loop import PretrainConfig

    model, run = resolve_flags(FLAGS)
    run["log_every"] = FLAGS.log_every or run["log_every"]
    run["save_every"] = FLAGS.save_every or run["save_every"]
    return PretrainConfig(
        jsonl=FLAGS.jsonl,
        ckpt_out=FLAGS.ckpt_out,
        model=model,
        on_bad_record=FLAGS.on_bad_record,
        **run,
    )


def main(argv):
    del argv
    validated(maybe_initialize_distributed)
    cfg = validated(build_config)
    import jax

    from aura.train.lm_loop import pretrain

    result = guarded(lambda: validated(lambda: pretrain(cfg)))
    if jax.process_index() == 0:
        emit_result(result, None)
