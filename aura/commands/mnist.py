"""``python -m aura.build mnist``: the MNIST expert POC with growth, cloning and routing.

Trains conv stem -> phasor map -> spiking attention -> LiquidMoE -> classifier on the embedded
8,000 digits (or ``--data``), growing experts 1 -> 3 -> 6 by default, and prints one JSON line:
test accuracy on held-out digits, per-expert utilisation, experts active, wall seconds, steps.
Settings come from ``configs/mnist.py`` (``--config``); the flags below set its fields.

    python -m aura.build mnist --epochs 15 --workdir checkpoints/mnist --metrics_out mnist.json
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
from aura.experiments.mnist_poc.experiment import run_config, train
from aura.nn.moe import EXPERT_KINDS

FLAGS = flags.FLAGS
define_config("mnist", "default")
ALIASES = (
    Alias("epochs", "epochs", "integer", "training epochs"),
    Alias("batch_size", "batch_size", "integer", "batch size"),
    Alias("seed", "seed", "integer", "random seed"),
    Alias("lr", "lr", "float", "peak learning rate (cosine one-cycle)"),
    Alias("num_experts", "model.num_experts", "integer", "expert capacity (growth activates)"),
    Alias("top_k", "model.top_k", "integer", "experts per sample"),
    Alias("expert_kind", "model.expert_kind", "enum", "expert kind", tuple(EXPERT_KINDS)),
    Alias("thalamic_scale", "model.thalamic_scale", "float", "thalamic head's gate-bias scale"),
    Alias("predictive_weight", "model.predictive_weight", "float", "predictive head's weight"),
    Alias("growth_schedule", "brain.growth_schedule", "string", "epoch:active_experts,..."),
    Alias("bandit_policy", "brain.bandit_policy", "enum", "merit bandit routing bias",
          ("none", "ucb", "exp3")),
    Alias("bandit_scale", "brain.bandit_scale", "float", "scale of the bandit routing bias"),
    Alias("prune_threshold", "brain.prune_threshold", "float", "prune below this utilisation"),
    Alias("prune_patience", "brain.prune_patience", "integer", "steps below before pruning"),
    Alias("spawn_entropy", "brain.spawn_entropy", "float", "spawn when H / log(n) > this"),
    Alias("spawn_patience", "brain.spawn_patience", "integer", "steps above before spawning"),
    Alias("teach_steps", "brain.teach_steps", "integer", "clone/teach phase length"),
    Alias("personality", "brain.traits", "string", "traits, e.g. curiosity=0.8,caution=0.3"),
    Alias("emc_lambda", "loss.emc_lambda", "float", "EMC soft-freeze penalty"),
    Alias("distill", "loss.distill_mode", "enum", "teacher of a new expert", ("pair", "committee")),
)  # fmt: skip
define_aliases(ALIASES)
define_mesh_flags()
flags.DEFINE_string("data", None, "npz with images uint8 [N,28,28] + labels, or tfds:mnist")
flags.DEFINE_string("eval_data", None, "held-out npz (default: a fixed split of --data)")
flags.DEFINE_string("workdir", "checkpoints/mnist", "checkpoints, metrics, plots")
flags.DEFINE_boolean("resume", True, "resume from the latest checkpoint in --workdir")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard event files")


def build():
    c = apply_aliases(FLAGS.config, ALIASES)
    mesh = resolve_mesh(c.mesh, FLAGS.mesh, FLAGS.pmap)
    return run_config(c, workdir=FLAGS.workdir, data=FLAGS.data, eval_data=FLAGS.eval_data,
                      resume=FLAGS.resume, tensorboard=FLAGS.tensorboard, mesh=mesh)  # fmt: skip


def main(argv):
    del argv
    cfg = validated(build)
    result = guarded(lambda: validated(lambda: train(cfg)))
    emit_result(result, FLAGS.metrics_out)
