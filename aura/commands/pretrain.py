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

    c, model, mesh, batch = resolve_flags(FLAGS)
    return PretrainConfig(
        jsonl=FLAGS.jsonl,
        spm_model=FLAGS.spm_model,
        ckpt_out=FLAGS.ckpt_out,
        model=model,
        steps=FLAGS.steps or c.steps,
        batch_size=batch,
        accumulate_steps=FLAGS.accumulate_steps or c.accumulate_steps,
        max_len=FLAGS.max_len or c.max_len,
        pad_to=FLAGS.pad_to,
        lr=FLAGS.lr or c.lr,
        warmup=c.warmup,
        seed=FLAGS.seed,
        log_every=FLAGS.log_every or c.log_every,
        save_every=FLAGS.save_every or c.save_every,
        on_bad_record=FLAGS.on_bad_record,
        mesh=mesh,
        rules=tuple(tuple(r) for r in c.get("rules", ())) or None,
        tensorboard=FLAGS.tensorboard,
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
