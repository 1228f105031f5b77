"""``python -m aura.build moca``: MOCA-Net (token router, slot memory, compute budget).

Trains on the NTM-style copy task (``--task copy``: per-token and per-sequence accuracy at the
training lengths and at longer ones; ``--task copy_original``: the original MOCA-Net copy
definition, reported beside its ceiling) or on labelled text (``--task textcls``: ``--data`` JSONL
with {"text", "label"}, ``corpus:stdlib`` (the embedded default) or ``tfds:glue/sst2``; accuracy
and macro-F1 beside a TF-IDF + logistic-regression baseline on the same split). Resumable
(rerun the same command), SIGTERM-safe; ends with one JSON line, also written to
``--metrics_out``. Settings come from ``configs/moca.py`` (``--config``).

    python -m aura.build moca --task copy --workdir runs/moca_copy --metrics_out copy.json
    python -m aura.build moca --task textcls --workdir runs/moca_text --metrics_out text.json
"""

from __future__ import annotations

from absl import flags

from aura.commands.common import emit_result, guarded, validated
from aura.commands.options import (
    Alias,
    apply_aliases,
    define_aliases,
    define_config,
    define_mesh_flags,
    resolve_mesh,
)
from aura.experiments.moca.experiment import TASKS, RunConfig, train

FLAGS = flags.FLAGS
define_config("moca", "default")
ALIASES = (
    Alias("steps", "steps", "integer", "optimizer steps"),
    Alias("batch_size", "batch_size", "integer", "batch size"),
    Alias("seed", "seed", "integer", "random seed"),
    Alias("lr", "lr", "float", "peak learning rate (warmup, then cosine)"),
    Alias("warmup", "warmup", "integer", "learning-rate warm-up steps"),
    Alias("eval_every", "eval_every", "integer", "steps between evaluations"),
    Alias("num_experts", "model.num_experts", "integer", "experts per layer"),
    Alias("top_k", "model.top_k", "integer", "experts per token"),
    Alias("num_slots", "model.num_slots", "integer", "memory slots"),
    Alias("slot_top_k", "model.slot_top_k", "integer", "memory slots per token"),
    Alias("use_memory", "model.use_memory", "boolean", "use the slot memory (ablation: false)"),
    Alias("budget", "loss.budget", "float", "target compute fraction"),
    Alias("budget_weight", "loss.budget_weight", "float", "weight of the budget loss"),
    Alias("max_len", "text.max_len", "integer", "textcls: tokens kept per text"),
)  # fmt: skip
define_aliases(ALIASES)
define_mesh_flags()
flags.DEFINE_enum("task", "copy", list(TASKS), "copy/recall or text classification")
flags.DEFINE_string("data", None, "textcls: JSONL {text,label}, corpus:stdlib[:K] or tfds:NAME")
flags.DEFINE_string("eval_data", None, "textcls: eval source (default: 20% of --data)")
flags.DEFINE_string("tokenizer", None, "textcls: SentencePiece model (default: trained)")
flags.DEFINE_string("workdir", "checkpoints/moca", "checkpoints, metrics")
flags.DEFINE_boolean("resume", True, "resume from the latest checkpoint in --workdir")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard event files")


def build() -> RunConfig:
    c = apply_aliases(FLAGS.config, ALIASES)
    mesh = resolve_mesh(c.mesh, FLAGS.mesh, FLAGS.pmap)
    return RunConfig(
        task=FLAGS.task, workdir=FLAGS.workdir, config=c, data=FLAGS.data,
        eval_data=FLAGS.eval_data, tokenizer=FLAGS.tokenizer, resume=FLAGS.resume,
        tensorboard=FLAGS.tensorboard, mesh=mesh,
    ).validate()  # fmt: skip


def main(argv):
    del argv
    cfg = validated(build)
    result = guarded(lambda: validated(lambda: train(cfg)))
    emit_result(result, FLAGS.metrics_out)
