"""``python -m aura.build mnist``: the MNIST expert POC with growth, cloning and routing.

Trains conv stem -> phasor map -> spiking attention -> LiquidMoE -> classifier on the embedded
8,000 digits (or ``--data``), growing experts 1 -> 3 -> 6 by default, and prints one JSON line:
test accuracy on held-out digits, per-expert utilisation, experts active, wall seconds, steps.

    python -m aura.build mnist --epochs 15 --workdir checkpoints/mnist --metrics_out mnist.json
"""

from __future__ import annotations

from absl import flags

from aura.brain.orchestrator import BrainConfig
from aura.commands.common import emit_result, guarded, validated
from aura.models.mnist_poc import default_config
from aura.train.poc_step import LossConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "npz with images uint8 [N,28,28] + labels, or tfds:mnist")
flags.DEFINE_string("eval_data", None, "held-out npz (default: a fixed split of --data)")
flags.DEFINE_integer("epochs", 15, "training epochs")
flags.DEFINE_integer("batch_size", 128, "batch size")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_float("lr", 3e-3, "peak learning rate (cosine one-cycle)")
flags.DEFINE_string("workdir", "checkpoints/mnist", "checkpoints, metrics, plots")
flags.DEFINE_boolean("resume", True, "resume from the latest checkpoint in --workdir")
flags.DEFINE_string("metrics_out", None, "also write the final JSON result here")
flags.DEFINE_integer("num_experts", 6, "expert capacity (fixed; growth activates experts)")
flags.DEFINE_integer("top_k", 2, "experts per sample")
flags.DEFINE_string("expert_kind", "mlp", "mlp | conv1d")
flags.DEFINE_string("growth_schedule", "0:1,2:3,4:6", "epoch:active_experts,...")
flags.DEFINE_float("emc_lambda", 1e-4, "EMC soft-freeze penalty on non-selected experts")
flags.DEFINE_float("thalamic_scale", 1.0, "thalamic feedback head: scale of its gate bias")
flags.DEFINE_float("predictive_weight", 0.0, "predictive gating head: weight of its gate bias")
flags.DEFINE_string("bandit_policy", "none", "merit bandit routing bias: none | ucb | exp3")
flags.DEFINE_float("bandit_scale", 0.5, "scale of the bandit routing bias")
flags.DEFINE_float("prune_threshold", 0.0, "prune experts whose utilisation stays below this")
flags.DEFINE_integer("prune_patience", 200, "steps below the threshold before pruning")
flags.DEFINE_float("spawn_entropy", 0.0, "neurogenesis: spawn when gate entropy / log(n) > this")
flags.DEFINE_integer("spawn_patience", 200, "steps above the entropy threshold before spawning")
flags.DEFINE_integer("teach_steps", 100, "clone/teach phase length after an expert activates")
flags.DEFINE_string("distill", "pair", "teacher of a new expert: pair (one expert) | committee")
flags.DEFINE_string("personality", "", "traits, e.g. curiosity=0.8,caution=0.3 (empty: off)")
flags.DEFINE_boolean("tensorboard", True, "write TensorBoard event files")


def build_config():
    from aura.train.poc_loop import RunConfig

    model = default_config()
    model.num_experts = FLAGS.num_experts
    model.top_k = FLAGS.top_k
    model.capacity_factor = FLAGS.num_experts / FLAGS.top_k  # dropless: C = batch
    model.expert_kind = FLAGS.expert_kind
    model.thalamic_scale = FLAGS.thalamic_scale
    model.predictive_weight = FLAGS.predictive_weight
    if not 1 <= FLAGS.top_k <= FLAGS.num_experts:
        raise ValueError(f"--top_k={FLAGS.top_k} must be in [1, --num_experts={FLAGS.num_experts}]")
    if FLAGS.epochs < 1 or FLAGS.batch_size < 1:
        raise ValueError(
            f"--epochs={FLAGS.epochs} and --batch_size={FLAGS.batch_size} must be >= 1"
        )
    brain = BrainConfig(
        capacity=FLAGS.num_experts,
        growth_schedule=FLAGS.growth_schedule,
        bandit_policy=FLAGS.bandit_policy,
        bandit_scale=FLAGS.bandit_scale,
        prune_threshold=FLAGS.prune_threshold,
        prune_patience=FLAGS.prune_patience,
        spawn_entropy=FLAGS.spawn_entropy,
        spawn_patience=FLAGS.spawn_patience,
        teach_steps=FLAGS.teach_steps,
        traits=FLAGS.personality,
    )
    loss = LossConfig(emc_lambda=FLAGS.emc_lambda, distill_mode=FLAGS.distill)
    return RunConfig(
        workdir=FLAGS.workdir,
        data=FLAGS.data,
        eval_data=FLAGS.eval_data,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
        lr=FLAGS.lr,
        resume=FLAGS.resume,
        model=model,
        loss=loss,
        brain=brain,
        tensorboard=FLAGS.tensorboard,
    )


def main(argv):
    del argv
    cfg = validated(build_config)
    from aura.train.poc_loop import train

    result = guarded(lambda: train(cfg))
    emit_result(result, FLAGS.metrics_out)
